"""Inheritance and exploration distillation (IE-KD; Huang et al. 2021, paper 002).

The student's feature map is split by channels into an inheritance part and an exploration
part. A factor auto-encoder, trained first on the teacher's map, gives the teacher's factor; two
encoders embed the two student parts into the same factor space. The inheritance factor learns
to resemble the teacher's (eq. 2), the exploration factor to differ from it (eq. 3), and the
task loss keeps what the exploration part finds useful (eq. 4).

``ie_ft`` compares the factors themselves (the paper's IE-FT), ``ie_at`` their spatial attention
maps (IE-AT), ``ie_od`` their positive parts (IE-OD). ``ie_dml``, the mutual-learning form, is in
:mod:`distillscope.distill.inheritance_mutual`. The maths is in
:mod:`distillscope.functional.inheritance`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from functools import partial
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from distillscope.checks import check_choice, check_int, check_positive, check_range
from distillscope.contracts import Batch, Outputs
from distillscope.distill.base import BindContext, Stage
from distillscope.distill.feature_base import SingleLayerTerm, stage_loss
from distillscope.errors import ConfigError, TrainingError
from distillscope.functional.attention import attention_map, same_size
from distillscope.functional.inheritance import (
    IE_DISTANCES,
    ie_distance,
    ie_exploration,
    split_channels,
)
from distillscope.registry import register_loss

__all__ = [
    "FactorAutoEncoder",
    "InheritanceExploration",
    "InheritanceExplorationAT",
    "InheritanceExplorationOD",
    "build_parts",
    "check_settings",
    "coder",
    "inherit_explore",
    "split_size",
]

#: How the student's channels are split: first/second share, or a seeded permutation.
SPLITS = ("natural", "random")


def coder(c_in: int, c_out: int) -> nn.Sequential:
    """Three 3x3 convolutions (stride 1, padding 1) ``c_in -> c_in -> c_out -> c_out``, each
    followed by batch norm and LeakyReLU(0.1) (paper 002, supplement Table 3).

    Convolutions without bias (batch norm follows), He-normal initialised over the fan-out,
    batch norm at ``(1, 0)``, as the authors' ``Coder``. The authors' ``Coder`` also starts with
    a LeakyReLU on its input; Table 3 does not, and neither do we.
    """
    layers: list[nn.Module] = []
    for a, b in ((c_in, c_in), (c_in, c_out), (c_out, c_out)):
        conv = nn.Conv2d(a, b, 3, stride=1, padding=1, bias=False)
        nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / (9 * b)))
        layers += [conv, nn.BatchNorm2d(b), nn.LeakyReLU(0.1)]
    return nn.Sequential(*layers)


def check_settings(
    term: Any, ratio: float, split: str, distance: str, inheritance: float,
    exploration: float, rate: float,
) -> None:  # fmt: skip
    """Check the settings every IE term shares (one-line ConfigErrors naming
    ``<term>.<setting>``) and set them on ``term``."""
    key = term.name
    term.ratio = check_range(f"{key}.ratio", ratio, 0.0, 1.0)
    term.split = check_choice(f"{key}.split", split, SPLITS)
    term.distance = check_choice(f"{key}.distance", distance, IE_DISTANCES)
    term.inheritance = check_range(f"{key}.inheritance", inheritance, 0.0)
    term.exploration = check_range(f"{key}.exploration", exploration, 0.0)
    term.rate = check_range(f"{key}.rate", rate, 0.0, 1.0, low_open=True)


def split_size(name: str, ratio: float, channels: int, layer: str) -> int:
    """How many of ``channels`` inherit at ``ratio`` (rounded); a one-line ConfigError when a
    ratio strictly between 0 and 1 leaves either part empty."""
    n_inh = int(round(ratio * channels))
    if 0 < ratio < 1 and not 0 < n_inh < channels:
        raise ConfigError(
            f"{name}.ratio={ratio:g} leaves a part of the student's {channels} channels "
            f"at {layer!r} empty; use 0 or 1 for one part only, or a ratio "
            f"between {1 / channels:.3g} and {1 - 1 / channels:.3g}"
        )
    return n_inh


def build_parts(term: nn.Module, n_inh: int, channels: int, factor: int, device: Any) -> None:
    """Give ``term`` its two encoders (:func:`coder`, ``None`` for an empty part) and the split's
    channel indices as buffers ``inh_index`` / ``exp_index``: the first ``n_inh`` channels
    (``term.split == "natural"``) or the first ``n_inh`` of a permutation drawn here
    (``"random"``), after the encoders so both splits build the same encoders."""
    term.inh_encoder = coder(n_inh, factor).to(device) if n_inh else None
    term.exp_encoder = coder(channels - n_inh, factor).to(device) if n_inh < channels else None
    order = torch.randperm(channels) if term.split == "random" else torch.arange(channels)
    term.register_buffer("inh_index", order[:n_inh].to(device))
    term.register_buffer("exp_index", order[n_inh:].to(device))


def inherit_explore(term: Any, s: Tensor, f_t: Tensor) -> tuple[Tensor, Tensor]:
    """``(L_inh, L_exp)`` of the student map ``s`` ``(B, C_s, H, W)`` against the (reduced)
    factor ``f_t`` (paper 002, eqs. 2-3): each part of ``s`` through its encoder and
    ``term.reduce``, at ``term.distance``; an empty part's loss is 0."""
    f_inh, f_exp = split_channels(s, term.inh_index, term.exp_index)
    l_inh = l_exp = s.new_zeros(())
    if term.inh_encoder is not None:
        l_inh = ie_distance(term.reduce(term.inh_encoder(f_inh)), f_t, term.distance)
    if term.exp_encoder is not None:
        l_exp = ie_exploration(term.reduce(term.exp_encoder(f_exp)), f_t, term.distance)
    return l_inh, l_exp


class FactorAutoEncoder(nn.Module):
    """The teacher's factor auto-encoder (paper 002, section 3.1 and supplement Table 3).

    Encoder :func:`coder` ``C -> C -> C_f -> C_f``, decoder ``C_f -> C_f -> C -> C``. The paper
    names the decoder's layers transposed convolutions; the authors' code uses plain ones, and so
    do we (at stride 1 and padding 1 a 3x3 transposed convolution is a 3x3 convolution with
    flipped kernels, so the two describe the same functions).
    """

    def __init__(self, channels: int, factor_channels: int) -> None:
        super().__init__()
        self.encoder = coder(channels, factor_channels)
        self.decoder = coder(factor_channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        """The reconstruction ``R(x)`` of ``x`` ``(B, C, H, W)``."""
        return self.decoder(self.encoder(x))


@register_loss("ie_ft")
class InheritanceExploration(SingleLayerTerm):
    """Inheritance and exploration on factors (paper 002's IE-FT, eqs. 1-4).

    ``L = lambda_inh * L_inh + lambda_exp * L_exp`` (the task loss is the ``ce`` term beside it),
    with ``L_inh = d(E_inh(f_inh), F_T)`` (:func:`~distillscope.functional.inheritance.ie_distance`)
    and ``L_exp`` its opposite (:func:`~distillscope.functional.inheritance.ie_exploration`:
    ``-d``, or ``|cos|`` for ``cosine``); for ``l1``,
    ``L_inh = mean |F_inh/||F_inh|| - F_T/||F_T|| |``.

    ``F_T`` is the encoder of a factor auto-encoder (:class:`FactorAutoEncoder`, factor channels
    ``rate * C_t``) trained in the stage ``<name>/autoencoder`` to reconstruct the teacher's map
    (mean absolute error, as the authors' code; eq. 1 writes a squared error) and then frozen, in
    eval mode. ``E_inh`` and ``E_exp`` (:func:`coder`, ``C_part -> C_part -> C_f -> C_f``) train
    with the student. A larger map is average-pooled to the smaller one's size.

    The split: ``ratio * C_s`` channels (rounded) inherit and the rest explore; ``natural`` takes
    the first ones (the authors' code's default), ``random`` a permutation drawn once at bind
    (the paper), under the bind seed. The indices are buffers (``inh_index``, ``exp_index``), so a
    checkpoint holds them. ``ratio`` 0 (exploration only) and 1 (inheritance only) are the
    paper's Table 5 ablation ends; in between, both parts need at least one channel.

    Defaults: ``ratio`` 0.5, ``rate`` 0.5 and the weights 50 / 50 are the paper's CIFAR setting
    (section 4.2), ``l1`` its eq. 2. The auto-encoder's training is SGD with Nesterov momentum
    0.9 and weight decay 5e-4 at ``autoencoder_lr`` 0.1 as the authors' (their 30 epochs;
    ``autoencoder_epochs`` 1 is ours, a CPU-sized choice).

    The layers default to each model's ``cam_layer``, its last feature map (the paper's last
    stage).

    Args:
        ratio: Share of the student's channels that inherit, in ``[0, 1]`` (0.5).
        split: ``natural`` or ``random`` (``natural``).
        distance: One of ``l1``, ``l2``, ``cosine``, ``cka`` (``None``: the class's
            :attr:`default_distance`, ``l1``; ``l2`` for ``ie_od``).
        inheritance: ``lambda_inh >= 0`` (50).
        exploration: ``lambda_exp >= 0`` (50).
        rate: Factor channels per teacher channel, in ``(0, 1]`` (0.5, compression ratio 2).
        autoencoder_epochs: Passes of the auto-encoder's stage (1; 0 leaves it untrained).
        autoencoder_lr: The stage's SGD learning rate (0.1).

    Parts: ``<name>/inh`` (``L_inh``), ``<name>/exp`` (``L_exp``); the auto-encoder's last
    reconstruction error is ``autoencoder_loss``.
    """

    default_layers: ClassVar[str | None] = "cam"
    #: The distance when the config gives none.
    default_distance: ClassVar[str] = "l1"

    def __init__(
        self,
        student_layer: str | None = None,
        teacher_layer: str | None = None,
        ratio: float = 0.5,
        split: str = "natural",
        distance: str | None = None,
        inheritance: float = 50.0,
        exploration: float = 50.0,
        rate: float = 0.5,
        autoencoder_epochs: int = 1,
        autoencoder_lr: float = 0.1,
    ) -> None:
        super().__init__(student_layer, teacher_layer)
        key = self.name
        distance = type(self).default_distance if distance is None else distance
        check_settings(self, ratio, split, distance, inheritance, exploration, rate)
        self.autoencoder_epochs = check_int(
            f"{key}.autoencoder_epochs", autoencoder_epochs, minimum=0
        )
        self.autoencoder_lr = check_positive(f"{key}.autoencoder_lr", autoencoder_lr)
        self.autoencoder: FactorAutoEncoder | None = None
        self.inh_encoder: nn.Module | None = None
        self.exp_encoder: nn.Module | None = None
        self.autoencoder_loss = float("nan")

    # ------------------------------------------------------------------ bind
    def bind(self, ctx: BindContext) -> None:
        s, t = self.bound_maps(ctx, "splits")
        c_s, c_t = int(s.shape[1]), int(t.shape[1])
        n_inh = split_size(self.name, self.ratio, c_s, self.student_layer)
        c_f = max(1, int(c_t * self.rate))
        self.autoencoder = FactorAutoEncoder(c_t, c_f).to(s.device)
        build_parts(self, n_inh, c_s, c_f, s.device)

    def train(self, mode: bool = True) -> InheritanceExploration:
        """Train mode for the encoders; the trained auto-encoder stays in eval mode (its batch
        norm statistics are frozen with it). Its stage sets its mode itself."""
        super().train(mode)
        if self.autoencoder is not None:
            self.autoencoder.eval()
        return self

    # ------------------------------------------------------------------ preparation
    def stages(self, student: nn.Module, teacher: nn.Module | None) -> list[Stage]:
        """The auto-encoder's stage (``autoencoder_epochs > 0``): it learns to reconstruct the
        teacher's map (mean absolute error), SGD at ``autoencoder_lr``."""
        autoencoder = self._autoencoder()
        if not self.autoencoder_epochs:
            return []
        if teacher is None:
            raise TrainingError(f"{self.name}'s auto-encoder stage needs the teacher network")

        def reconstruction(_: Outputs | None, teacher_out: Outputs) -> Tensor:
            t = teacher_out.features[self.teacher_layer]  # (B, C_t, H, W)
            loss = (autoencoder(t) - t).abs().mean()  # ()
            self.autoencoder_loss = float(loss.detach())
            return loss

        optimizer = partial(torch.optim.SGD, lr=self.autoencoder_lr, momentum=0.9,
                            nesterov=True, weight_decay=5e-4)  # fmt: skip
        return [
            Stage(
                "autoencoder",
                self.autoencoder_epochs,
                list(autoencoder.parameters()),
                optimizer,
                partial(stage_loss, teacher, [self.teacher_layer], reconstruction),
                train=(autoencoder,),
                eval=(teacher,),
            )
        ]

    def prepare(
        self, student: nn.Module, teacher: nn.Module | None, batches: Iterable[Batch]
    ) -> None:
        """Freeze the auto-encoder (trained by its stage, :meth:`stages`)."""
        autoencoder = self._autoencoder()
        for p in autoencoder.parameters():
            p.requires_grad_(False)  # the teacher's factors are fixed while the student trains
        autoencoder.eval()

    # ------------------------------------------------------------------ forward
    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        autoencoder = self._autoencoder()
        s, t = same_size(*self.pair(student, teacher))
        with torch.no_grad():
            f_t = self.reduce(autoencoder.encoder(t))  # (B, C_f, H, W) or (B, H*W), fixed
        l_inh, l_exp = inherit_explore(self, s, f_t)
        loss = self.inheritance * l_inh + self.exploration * l_exp  # ()
        return {"loss": loss, f"{self.name}/inh": l_inh, f"{self.name}/exp": l_exp}

    def reduce(self, code: Tensor) -> Tensor:
        """What the distances compare: the factor itself (IE-FT)."""
        return code

    def _autoencoder(self) -> FactorAutoEncoder:
        if self.autoencoder is None:
            raise TrainingError(f"{self.name} was not bound; bind the loss (Trainer.fit does)")
        return self.autoencoder

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, ratio={self.ratio:g}, split={self.split!r}, "
            f"distance={self.distance!r}, inheritance={self.inheritance:g}, "
            f"exploration={self.exploration:g}"
        )


@register_loss("ie_at")
class InheritanceExplorationAT(InheritanceExploration):
    """Inheritance and exploration on attention maps (paper 002's IE-AT, section 4.2).

    As ``ie_ft`` (:class:`InheritanceExploration`: same auto-encoder, split, encoders, weights
    and distances), but the factors are first reduced to spatial attention maps
    (:func:`~distillscope.functional.attention.attention_map`: the channel mean of the squared
    factor, flattened and L2-normalised), and the distances compare those maps.

    Parts: ``ie_at/inh``, ``ie_at/exp``.
    """

    def reduce(self, code: Tensor) -> Tensor:
        """The factor's spatial attention map ``(B, H*W)``."""
        return attention_map(code)


@register_loss("ie_od")
class InheritanceExplorationOD(InheritanceExploration):
    """Inheritance and exploration with overhaul-distillation distances (paper 002's IE-OD,
    section 4.2).

    The paper: ``L_inh = ||max(F_inh, 0) - max(F_T, 0)||_2`` and
    ``L_exp = -||max(F_exp, 0) - max(F_T, 0)||_2`` (after OD, Heo et al. 2019, which compares
    features after the ReLU). We take the factors' positive parts (:meth:`reduce`) and then the
    ``l2`` distance of ``ie_ft`` (:func:`~distillscope.functional.inheritance.ie_distance`: per
    sample L2-normalised, ``sqrt(mean(d^2))``, the authors' ``NormLoss(p=2)``). The
    normalisation is ours: the paper's formula writes the plain norm, under which the
    exploration term ``-||.||`` has no lower bound (the exploration encoder could grow its
    output without limit), and every distance of the authors' code normalises the factors
    first. Everything else (auto-encoder, split, encoders, weights) as ``ie_ft``; ``distance``
    may still be set (default ``l2``).

    Parts: ``ie_od/inh``, ``ie_od/exp``.
    """

    default_distance: ClassVar[str] = "l2"

    def reduce(self, code: Tensor) -> Tensor:
        """The factor's positive part ``max(F, 0)`` (the encoders end in LeakyReLU(0.1), so
        their negative outputs are small but not zero)."""
        return code.clamp_min(0.0)
