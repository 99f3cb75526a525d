"""Inheritance and exploration between two networks learning together (IE-DML; Huang et al.
2021, paper 002, section 3.3).

Deep mutual learning's KL between peers is replaced by two IE-KD processes in opposite
directions: each network is the student of the other. Since neither is trained beforehand, the
factor auto-encoders train together with the networks, with a reconstruction loss weighted
``lambda_rec`` (eqs. 5-6). The single-teacher form is :mod:`distillscope.distill.inheritance`.
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from distillscope.checks import check_range
from distillscope.contracts import Batch, Outputs
from distillscope.distill.base import BindContext, LossTerm
from distillscope.distill.feature_base import check_optional_path
from distillscope.distill.inheritance import (
    FactorAutoEncoder,
    build_parts,
    check_settings,
    inherit_explore,
    split_size,
)
from distillscope.errors import ConfigError, TrainingError
from distillscope.functional.attention import same_size
from distillscope.models.taps import check_module_paths
from distillscope.registry import register_loss

__all__ = ["InheritanceExplorationDML"]


@register_loss("ie_dml")
class InheritanceExplorationDML(LossTerm):
    """IE-DML: a network learns from its peer by inheritance and exploration (paper 002, eq. 5).

    For the network ``k`` this term belongs to, with ``j`` its peer (the other member of its
    group, whose outputs arrive detached):
    ``L_k = lambda_rec * L_rec + lambda_inh * L_inh + lambda_exp * L_exp`` (the task loss is the
    ``ce`` term beside it), where ``L_rec = mean |R(f_j) - f_j|`` trains a factor auto-encoder
    (:class:`~distillscope.distill.inheritance.FactorAutoEncoder`) on the peer's map ``f_j``,
    ``F_j = E(f_j)`` is the peer's factor, and ``L_inh`` / ``L_exp`` are ``ie_ft``'s (eqs. 2-3)
    between the encoded inheritance / exploration parts of ``f_k`` and ``F_j``.

    The authors publish no IE-DML code (their repository has DML only); our reading of eq. 5,
    labelled as ours: the auto-encoder of ``F_j`` is trained on the peer's detached map, so
    the reconstruction shapes the auto-encoder and not the peer's backbone, and ``F_j`` is
    detached in ``L_inh`` / ``L_exp``, so they move ``k``'s backbone and encoders only (as in
    IE-KD, where the teacher's factor is fixed). The auto-encoder lives in this term, and its
    loss in ``L_k``: since ``f_j`` is detached, where it lives changes no gradient. Both
    networks are updated from one forward pass (as our ``dml``; the DML paper alternates).

    Defaults: the weights 0.8 / 50 / 50 (section 4.5), the split, distance and rate of
    ``ie_ft`` (ratio 0.5, natural, ``l1``, factor channels half the peer's).

    Args:
        layer: This network's feature map, default its ``cam_layer`` (the last stage).
        peer_layer: The peer's feature map (default: the same path as ``layer``; give it when
            the peers' architectures differ).
        reconstruction: ``lambda_rec >= 0`` (0.8).
        ratio: Share of this network's channels that inherit, in ``[0, 1]`` (0.5).
        split: ``natural`` or ``random`` (``natural``).
        distance: One of ``l1``, ``l2``, ``cosine``, ``cka`` (``l1``).
        inheritance: ``lambda_inh >= 0`` (50).
        exploration: ``lambda_exp >= 0`` (50).
        rate: Factor channels per peer channel, in ``(0, 1]`` (0.5).

    Parts: ``ie_dml/rec``, ``ie_dml/inh``, ``ie_dml/exp``.
    """

    needs: ClassVar[set[str]] = {"logits", "features", "peers"}

    def __init__(
        self,
        layer: str | None = None,
        peer_layer: str | None = None,
        reconstruction: float = 0.8,
        ratio: float = 0.5,
        split: str = "natural",
        distance: str = "l1",
        inheritance: float = 50.0,
        exploration: float = 50.0,
        rate: float = 0.5,
    ) -> None:
        super().__init__()
        key = self.name
        self.layer = check_optional_path(f"{key}.layer", layer)
        self.peer_layer = check_optional_path(f"{key}.peer_layer", peer_layer)
        check_settings(self, ratio, split, distance, inheritance, exploration, rate)
        self.reconstruction = check_range(f"{key}.reconstruction", reconstruction, 0.0)
        self.autoencoder: FactorAutoEncoder | None = None
        self.inh_encoder: nn.Module | None = None
        self.exp_encoder: nn.Module | None = None

    # ------------------------------------------------------------------ the networks
    def attach(self, student: nn.Module, teacher: nn.Module | None) -> None:
        """Fill ``layer`` from the network's ``cam_layer`` (and ``peer_layer`` from ``layer``)
        and check that ``layer`` is a module of the network; the peer's layer is checked when
        the peer is run at bind."""
        if self.layer is None:
            cam = getattr(student, "cam_layer", None)
            if not cam:
                raise ConfigError(
                    f"{self.name}.layer defaults to the network's cam_layer, but "
                    f"{type(student).__name__} declares none; give {self.name}.layer"
                )
            self.layer = cam
        check_module_paths(student, [self.layer])
        if self.peer_layer is None:
            self.peer_layer = self.layer

    def student_paths(self) -> list[str]:
        return [self.layer] if self.layer else []

    def peer_paths(self) -> list[str]:
        return [self.peer_layer] if self.peer_layer else []

    def bind(self, ctx: BindContext) -> None:
        peers = ctx.peer_outputs
        if not peers:
            raise ConfigError(
                f"{self.name} learns from a peer; put two students with {self.name} in one "
                "group (students.<name>.group: <group name>)"
            )
        if len(peers) != 1:
            raise ConfigError(
                f"{self.name} is defined for two networks (paper 002's IE-DML), but the group "
                f"has {len(peers) + 1}; put two students in the group"
            )
        s = ctx.student_outputs.features[self.layer]
        p = peers[0].features[self.peer_layer]
        if s.dim() != 4 or p.dim() != 4:
            raise ConfigError(
                f"{self.name} splits feature maps (B, C, H, W) but {self.layer!r} gives "
                f"{tuple(s.shape[1:])} and the peer's {self.peer_layer!r} {tuple(p.shape[1:])}; "
                "pick convolutional layers of both networks"
            )
        c_s, c_p = int(s.shape[1]), int(p.shape[1])
        n_inh = split_size(self.name, self.ratio, c_s, str(self.layer))
        c_f = max(1, int(c_p * self.rate))
        self.autoencoder = FactorAutoEncoder(c_p, c_f).to(s.device)
        build_parts(self, n_inh, c_s, c_f, s.device)

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        student: Outputs,
        teacher: Outputs | None,
        batch: Batch,
        peers: list[Outputs] | None = None,
    ) -> dict[str, Tensor]:
        if self.autoencoder is None:
            raise TrainingError(f"{self.name} was not bound; bind the loss (Trainer.fit does)")
        if not peers:
            raise TrainingError(f"{self.name} needs its peer's outputs; train it in a group")
        s, f_j = same_size(student.features[self.layer], peers[0].features[self.peer_layer])
        f_j = f_j.detach()  # (B, C_j, H, W): the peer is not moved by this network's loss
        code = self.autoencoder.encoder(f_j)  # (B, C_f, H, W)
        l_rec = (self.autoencoder.decoder(code) - f_j).abs().mean()  # ()
        l_inh, l_exp = inherit_explore(self, s, code.detach())
        loss = self.reconstruction * l_rec + self.inheritance * l_inh + self.exploration * l_exp
        return {
            "loss": loss,
            f"{self.name}/rec": l_rec,
            f"{self.name}/inh": l_inh,
            f"{self.name}/exp": l_exp,
        }

    def reduce(self, code: Tensor) -> Tensor:
        """What the distances compare: the factor itself (as IE-FT)."""
        return code

    def extra_repr(self) -> str:
        return (
            f"layer={self.layer!r}, peer_layer={self.peer_layer!r}, ratio={self.ratio:g}, "
            f"split={self.split!r}, distance={self.distance!r}, "
            f"reconstruction={self.reconstruction:g}, inheritance={self.inheritance:g}, "
            f"exploration={self.exploration:g}"
        )
