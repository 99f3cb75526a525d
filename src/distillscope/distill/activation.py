"""Pre-ReLU feature methods of Heo et al.: OFD (margin ReLU, partial L2) and AB (activation
boundaries). Both read the teacher's features *before* its ReLU and put a 1x1-conv + batch-norm
connector on the student, built at bind from the two features' shapes.

Pre-ReLU tap points in the zoo: the CIFAR ResNets' blocks end in ``preact``, an identity on
``F(x) + shortcut(x)`` just before the block's last ReLU, so ``layer2.2.preact`` is the
pre-ReLU output of ResNet-20's second stage (``layer2.0.preact`` for ResNet-8) and
``layer2.2.bn2`` is the batch norm whose statistics give OFD's margin there (the references'
``get_bn_before_relu``). In a network whose ReLU follows a batch norm directly, the batch norm
itself is the pre-ReLU tap point.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import torch
from torch import Tensor, nn

from distillscope.checks import check_int, check_positive
from distillscope.contracts import Batch, Outputs
from distillscope.distill.base import BindContext, LossTerm
from distillscope.distill.feature_pairs import (
    MAPS_OR_VECTORS,
    build_connector,
    check_layer,
    check_layer_pairs,
    features,
    pair_shapes,
    stage_weights,
)
from distillscope.distill.logit import require_teacher
from distillscope.errors import ConfigError, TrainingError
from distillscope.functional.feature import ab_loss, match_spatial, ofd_loss, ofd_margin
from distillscope.models.forward import forward_outputs
from distillscope.models.taps import FeatureTap, check_module_paths
from distillscope.registry import register_loss

# Heo et al. 2019 (AB), section 3.2: the margin mu of the alternative loss is 1.
AB_MARGIN = 1.0
# The AB authors' code (and RepDistiller) scales the summed, per-image loss by 3 / 1000.
AB_SCALE = 3.0 / 1000.0
# RepDistiller's ``init_epochs`` and learning rate for AB's initialisation stage (SGD,
# momentum 0.9, weight decay 5e-4).
AB_STAGE1_EPOCHS = 30
AB_STAGE1_LR = 0.05
STAGE1_MOMENTUM = 0.9
STAGE1_WEIGHT_DECAY = 5e-4


class _ConnectedPairs(LossTerm):
    """Layer pairs with a connector on each student feature (OFD, AB)."""

    needs: ClassVar[set[str]] = {"features", "teacher"}

    def __init__(self, student_layers: list[str], teacher_layers: list[str]) -> None:
        super().__init__()
        self.student_layers, self.teacher_layers = check_layer_pairs(
            self.name, student_layers, teacher_layers
        )
        self.connectors: nn.ModuleList | None = None

    def student_paths(self) -> list[str]:
        return list(self.student_layers)

    def teacher_paths(self) -> list[str]:
        return list(self.teacher_layers)

    def bind(self, ctx: BindContext) -> None:
        connectors = []
        for s_path, t_path in zip(self.student_layers, self.teacher_layers):
            s, t = pair_shapes(self.name, ctx, s_path, t_path, MAPS_OR_VECTORS)
            connectors.append(build_connector(s[0], t[0], map_kind=len(s) == 3))
        device = ctx.student_outputs.features[self.student_layers[0]].device
        self.connectors = nn.ModuleList(connectors).to(device)

    def connected(self, student: Outputs, teacher: Outputs) -> list[tuple[Tensor, Tensor]]:
        """``(connector(s), t)`` per pair, the larger map pooled to the smaller first."""
        if self.connectors is None:
            raise TrainingError(
                f"{self.name} was not bound; bind the loss (Trainer.fit does) first"
            )
        pairs = []
        s_feats = features(student, self.student_layers)
        t_feats = features(teacher, self.teacher_layers, detach=True)
        for connector, s, t in zip(self.connectors, s_feats, t_feats):
            s, t = match_spatial(s, t)
            pairs.append((connector(s.contiguous()), t))  # (B, C_t, ...) each
        return pairs

    def extra_repr(self) -> str:
        return f"student_layers={self.student_layers}, teacher_layers={self.teacher_layers}"


@register_loss("ofd")
class OverhaulFeatureDistillation(_ConnectedPairs):
    """OFD (Heo et al. 2019, "A Comprehensive Overhaul of Feature Distillation", ICCV).

    ``L = sum_i 2^(i-n+1) mean_b sum_{c,h,w} d_p(r_i(s_i), max(t_i, m_i))``

    over ``n`` layer pairs of *pre-ReLU* features: ``max(t, m)`` is the margin ReLU of the
    teacher's feature (paper, eq. 2), ``m`` the per-channel expectation of its negative
    responses (eq. 3, :func:`~distillscope.functional.feature.ofd_margin`), ``d_p`` the partial
    L2 (eq. 4: zero where ``s <= t' <= 0``), ``r_i`` a 1x1 convolution + batch norm connector
    on the student's pre-ReLU feature (section 3.4), built at bind from the shapes. The layer
    weights ``2^(i-n+1)``, the sum over elements and the mean over the batch follow the
    authors' code and mdistiller, whose remaining ``/ 1000`` is the term's weight here (give
    ``weight: 0.001``). Where the maps differ in size the larger is average-pooled to the
    smaller (mdistiller pools the teacher's). Vector pairs ``(D,)`` get a linear + batch-norm
    connector (ours: the paper uses maps).

    The margin. With ``teacher_bns`` (the batch norms right before the tapped pre-ReLU
    features, e.g. ``layer2.2.bn2`` for ``layer2.2.preact`` of a CIFAR ResNet), it comes from
    their affine parameters as in the paper (``std = |gamma|``, ``mean = beta``). Without, it
    comes from the per-channel mean and standard deviation of the teacher's tapped features
    measured over the training set (ours: for teachers without a batch norm before the ReLU).
    It is computed in :meth:`prepare` from the trained teacher and saved with the student's
    checkpoint; the value set at bind (from the teacher as it is then, possibly untrained) is
    only a placeholder for the start-up dry run.

    Pre-ReLU tap points: see :mod:`distillscope.distill.activation` (``layerK.J.preact`` in
    the CIFAR ResNets).

    Args:
        student_layers: Student module paths of pre-ReLU features (paper: the end of each
            stage, before its ReLU).
        teacher_layers: Teacher module paths of pre-ReLU features, one per student path.
        teacher_bns: The teacher's batch norms before those features, one per teacher path;
            ``None``: measure the margin instead.

    Parts:
        ``ofd/<student layer>``: each pair's weighted loss (they sum to ``loss``).

    Raises:
        ConfigError: At bind, a pair that is not two maps or two vectors; a ``teacher_bns``
            module that is not an affine batch norm with the teacher feature's channels.
    """

    name: ClassVar[str] = "ofd"

    def __init__(
        self,
        student_layers: list[str],
        teacher_layers: list[str],
        teacher_bns: list[str] | None = None,
    ) -> None:
        super().__init__(student_layers, teacher_layers)
        self.teacher_bns = None if teacher_bns is None else _check_bns(teacher_bns, teacher_layers)
        self.weights = stage_weights(len(self.student_layers))

    def bind(self, ctx: BindContext) -> None:
        super().bind(ctx)
        assert ctx.teacher_outputs is not None  # checked by the pairs
        t_feats = features(ctx.teacher_outputs, self.teacher_layers, detach=True)
        if ctx.teacher is not None and self.teacher_bns is not None:
            margins = self._bn_margins(ctx.teacher, [t.shape[1] for t in t_feats])
        else:  # measured, or only a cache at hand: from the sample (prepare sets the real one)
            margins = [ofd_margin(*_std_mean(_channel_sums(t))) for t in t_feats]
        for i, margin in enumerate(margins):
            self.register_buffer(f"margin_{i}", margin.to(t_feats[i]))

    def prepare(
        self, student: nn.Module, teacher: nn.Module | None, batches: Iterable[Batch]
    ) -> None:
        """Set the margins from the trained teacher (its batch norms, or measured features)."""
        if teacher is None:
            raise TrainingError("ofd's margin needs the teacher network; pass it")
        channels = [self.margin(i).shape[0] for i in range(len(self.teacher_layers))]
        if self.teacher_bns is not None:
            margins = self._bn_margins(teacher, channels)
        else:
            margins = self._measured_margins(teacher, batches)
        for i, margin in enumerate(margins):
            self.margin(i).copy_(margin)

    def margin(self, i: int) -> Tensor:
        """``(C_t,)`` margin of pair ``i``."""
        if not hasattr(self, f"margin_{i}"):
            raise TrainingError("ofd was not bound; bind the loss (Trainer.fit does) first")
        return getattr(self, f"margin_{i}")

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        teacher = require_teacher(self.name, teacher)
        parts = [
            w * ofd_loss(s, t, self.margin(i))
            for i, (w, (s, t)) in enumerate(zip(self.weights, self.connected(student, teacher)))
        ]  # each ()
        out = {f"ofd/{p}": v for p, v in zip(self.student_layers, parts)}
        return {"loss": torch.stack(parts).sum(), **out}

    def _bn_margins(self, teacher: nn.Module, channels: list[int]) -> list[Tensor]:
        assert self.teacher_bns is not None
        margins = []
        modules = check_module_paths(teacher, self.teacher_bns)
        for i, path in enumerate(self.teacher_bns):
            bn = modules[path]
            weight, bias, c = getattr(bn, "weight", None), getattr(bn, "bias", None), channels[i]
            if not (
                isinstance(bn, nn.modules.batchnorm._BatchNorm)
                and isinstance(weight, Tensor)
                and isinstance(bias, Tensor)
                and weight.shape == (c,)
            ):
                raise ConfigError(
                    f"ofd.teacher_bns: {path!r} ({type(bn).__name__}) is not an affine batch "
                    f"norm over the {c} channels of teacher layer "
                    f"{self.teacher_layers[i]!r}; name the batch norm right before it"
                )
            margins.append(ofd_margin(weight, bias))
        return margins

    def _measured_margins(self, teacher: nn.Module, batches: Iterable[Batch]) -> list[Tensor]:
        teacher.eval()
        sums: list[Tensor | None] = [None] * len(self.teacher_layers)
        with FeatureTap(teacher, self.teacher_layers, detach=True) as tap, torch.no_grad():
            for batch in batches:
                out = forward_outputs(teacher, batch.inputs, tap)
                for i, f in enumerate(features(out, self.teacher_layers)):
                    moments = _channel_sums(f)  # (3, C)
                    sums[i] = moments if sums[i] is None else sums[i] + moments
        return [ofd_margin(*_std_mean(s)) if s is not None else _no_batches() for s in sums]


def _check_bns(teacher_bns: object, teacher_layers: list[str]) -> list[str]:
    if isinstance(teacher_bns, str) or not isinstance(teacher_bns, (list, tuple)):
        raise ConfigError(
            f"ofd.teacher_bns={teacher_bns!r} is not a list of module paths; give one batch norm "
            "path per teacher layer, e.g. ['layer2.2.bn2'], or leave it out"
        )
    if len(teacher_bns) != len(teacher_layers):
        raise ConfigError(
            f"ofd.teacher_bns has {len(teacher_bns)} paths and ofd.teacher_layers "
            f"{len(teacher_layers)}; give one batch norm per teacher layer"
        )
    return [check_layer(f"ofd.teacher_bns[{i}]", p) for i, p in enumerate(teacher_bns)]


def _channel_sums(f: Tensor) -> Tensor:
    """``(3, C)``: per-channel count, sum and sum of squares of ``f`` (B, C, ...), in float64."""
    x = f.detach().double().transpose(0, 1).reshape(f.shape[1], -1)  # (C, B * ...)
    n = torch.full((x.shape[0],), float(x.shape[1]), dtype=x.dtype, device=x.device)  # (C,)
    return torch.stack([n, x.sum(1), x.pow(2).sum(1)])  # (3, C)


def _std_mean(sums: Tensor) -> tuple[Tensor, Tensor]:
    """``(std, mean)`` per channel from :func:`_channel_sums` (population variance)."""
    n, total, squares = sums  # (C,) each
    mean = total / n  # (C,)
    return (squares / n - mean.pow(2)).clamp_min(0.0).sqrt(), mean


def _no_batches() -> Tensor:
    raise TrainingError("ofd's margin needs at least one training batch; got none")


@register_loss("ab")
class ActivationBoundaries(_ConnectedPairs):
    """AB (Heo et al. 2019, "Knowledge Transfer via Distillation of Activation Boundaries
    Formed by Hidden Neurons", AAAI).

    ``L = 3/1000 sum_i 2^(i-n+1) mean_b |rho(t_i) relu(mu - r_i(s_i))^2
    + (1 - rho(t_i)) relu(mu + r_i(s_i))^2|_1``, ``rho(t) = 1[t > 0]``

    over ``n`` layer pairs of *pre-ReLU* features (paper, eq. 6: the student's connected
    response must exceed ``+mu`` where the teacher's neuron fires and stay below ``-mu`` where
    it does not). ``r_i`` is a 1x1 convolution + batch norm connector (the paper's, built at
    bind; a linear layer for vector pairs, ours). The layer weights, the mean over the batch and
    the factor ``3 / 1000`` are the authors' code's (also RepDistiller's). Where the maps differ
    in size the larger is average-pooled to the smaller (ours, as the other pair methods).

    The method is an initialisation: :meth:`prepare` trains the student (the layers up to the
    tapped ones receive gradients) and the connectors on ``L`` alone for ``stage1_epochs``
    passes (SGD, momentum 0.9, weight decay 5e-4, as RepDistiller's ``init``), before ordinary
    training. In that training RepDistiller gives ``L`` the weight 0 (cross-entropy alone):
    give the term ``weight: 0`` to do the same while still logging ``L``, or a positive weight
    to keep it.

    Pre-ReLU tap points: see :mod:`distillscope.distill.activation`.

    Args:
        student_layers: Student module paths of pre-ReLU features (the end of each stage).
        teacher_layers: Teacher module paths of pre-ReLU features, one per student path.
        margin: ``mu > 0``; the paper's 1.
        stage1_epochs: Passes of the initialisation stage (0: none); RepDistiller's 30.
        stage1_lr: Its learning rate; RepDistiller's 0.05.

    Parts:
        ``ab/<student layer>``: each pair's weighted loss (they sum to ``loss``).

    Raises:
        ConfigError: At bind, a pair that is not two maps or two vectors.
    """

    name: ClassVar[str] = "ab"

    def __init__(
        self,
        student_layers: list[str],
        teacher_layers: list[str],
        margin: float = AB_MARGIN,
        stage1_epochs: int = AB_STAGE1_EPOCHS,
        stage1_lr: float = AB_STAGE1_LR,
    ) -> None:
        super().__init__(student_layers, teacher_layers)
        self.margin = check_positive("ab.margin", margin)
        self.stage1_epochs = check_int("ab.stage1_epochs", stage1_epochs, minimum=0)
        self.stage1_lr = check_positive("ab.stage1_lr", stage1_lr)
        self.weights = [AB_SCALE * w for w in stage_weights(len(self.student_layers))]

    def prepare(
        self, student: nn.Module, teacher: nn.Module | None, batches: Iterable[Batch]
    ) -> None:
        """Train the student and the connectors on the AB loss alone (the initialisation)."""
        if self.stage1_epochs == 0:
            return
        if teacher is None:
            raise TrainingError("ab's initialisation stage needs the teacher network; pass it")
        assert self.connectors is not None, "ab was not bound"
        params = [*student.parameters(), *self.connectors.parameters()]
        optimizer = torch.optim.SGD(
            [p for p in params if p.requires_grad],
            lr=self.stage1_lr,
            momentum=STAGE1_MOMENTUM,
            weight_decay=STAGE1_WEIGHT_DECAY,
        )
        was_training = student.training
        student.train()
        self.connectors.train()
        teacher.eval()
        with (
            FeatureTap(student, self.student_layers) as s_tap,
            FeatureTap(teacher, self.teacher_layers, detach=True) as t_tap,
        ):
            for _ in range(self.stage1_epochs):
                for batch in batches:
                    with torch.no_grad():
                        t = forward_outputs(teacher, batch.inputs, t_tap)
                    s = forward_outputs(student, batch.inputs, s_tap)
                    loss = self.forward(s, t, batch)["loss"]  # ()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
        student.train(was_training)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        teacher = require_teacher(self.name, teacher)
        parts = [
            w * ab_loss(s, t, self.margin)
            for w, (s, t) in zip(self.weights, self.connected(student, teacher))
        ]  # each ()
        out = {f"ab/{p}": v for p, v in zip(self.student_layers, parts)}
        return {"loss": torch.stack(parts).sum(), **out}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, margin={self.margin:g}"
