"""OFD: "A Comprehensive Overhaul of Feature Distillation" (Heo, Kim, Yun, Park, Kwak & Choi
2019, ICCV). The student's pre-ReLU features, through a 1x1-conv + batch-norm connector, match
the teacher's pre-ReLU features after a margin ReLU, under a partial L2 distance.

Pre-ReLU tap points in the zoo: every block of the CIFAR ResNets ends in ``preact``, an identity
on ``F(x) + shortcut(x)`` just before the block's last ReLU. So ``layer2.2.preact`` is the
pre-ReLU output of ResNet-20's second stage (``layer2.0.preact`` for ResNet-8, one block per
stage), and ``layer2.2.bn2`` is the batch norm whose parameters give OFD's margin there (what
the references' ``get_bn_before_relu`` returns). In a network whose ReLU follows a batch norm
directly, that batch norm is itself the pre-ReLU tap point; in the toy MLPs, ``body.fcK`` is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import ClassVar

import torch
from torch import Tensor, nn

from distillscope.contracts import Batch, Outputs
from distillscope.distill.base import BindContext
from distillscope.distill.feature_base import FeatureTerm, check_layers
from distillscope.errors import ConfigError, TrainingError
from distillscope.functional.feature_transfer import match_spatial, ofd_loss, ofd_margin
from distillscope.models.forward import forward_outputs
from distillscope.models.taps import FeatureTap, check_module_paths
from distillscope.registry import register_loss


@register_loss("ofd")
class OverhaulFeatureDistillation(FeatureTerm):
    """OFD (Heo et al. 2019, "A Comprehensive Overhaul of Feature Distillation", ICCV).

    ``L = sum_i 2^(i-n+1) mean_b sum_{c,h,w} d_p(r_i(s_i), max(t_i, m_i))``

    over ``n`` layer pairs of *pre-ReLU* features: ``max(t, m)`` is the margin ReLU of the
    teacher's feature (paper, eq. 2), ``m`` the per-channel expectation of its negative
    responses (eq. 3, :func:`~distillscope.functional.feature_transfer.ofd_margin`), ``d_p``
    the partial L2 (eq. 4: zero where ``s <= t' <= 0``), ``r_i`` a 1x1 convolution + batch norm
    connector on the student's pre-ReLU feature (section 3.4), built at bind from the two shapes and
    trained with the student. The teacher's features are detached.

    Reference choices (the authors' code and mdistiller): the layer weights ``2^(i-n+1)``
    (the last pair weighs 1, each earlier one half), the sum over elements and the mean over
    the batch; their remaining ``/ 1000`` is the term's weight here (give ``weight: 0.001``).
    The connector's weights start at ``N(0, 2 / C_t)``, its batch norm at weight 1, bias 0.
    Where a pair's maps differ in size, the larger is average-pooled to the smaller (mdistiller
    pools the teacher's map to the student's). Vector pairs ``(D,)`` get a linear + batch-norm
    connector (ours: the paper works on maps). A map paired with a vector, or a token sequence,
    is refused at bind.

    The margin. With ``teacher_bns`` (the batch norms right before the tapped pre-ReLU
    features, e.g. ``layer2.2.bn2`` for ``layer2.2.preact``), it comes from their affine
    parameters as in the paper (``std = |gamma|``, ``mean = beta``). Without them, it comes from
    the per-channel mean and standard deviation of the teacher's tapped features measured over
    the training set (ours: for teachers without a batch norm right before the ReLU). Either
    way it is computed in :meth:`prepare` from the *trained* teacher and saved with the
    student's checkpoint (buffers ``margin_<i>``), so a resumed run keeps it. The value set at
    bind (from the teacher as it is then, untrained at start-up) is only a placeholder for the
    start-up dry run; it cannot equal the trained teacher's in general, hence ``prepare``.

    The layers have no default: OFD reads *pre-ReLU* features, which ``model.feature_layers``
    does not declare (the zoo's ResNets declare their stages' post-ReLU outputs, whose missing
    negative responses would leave the margin nothing to measure), so they must be given.

    Args:
        student_layers: Student module paths of pre-ReLU features (paper: the end of each
            stage, before its ReLU), e.g. ``[layer1.0.preact, layer2.0.preact, ...]``; each
            once (they name the parts).
        teacher_layers: Teacher module paths of pre-ReLU features, one per student path.
        teacher_bns: The teacher's batch norms right before those features, one per teacher
            path; ``None``: measure the margin instead.

    Parts:
        ``ofd/<student layer>``: each pair's weighted loss (they sum to ``loss``).

    Raises:
        ConfigError: Bad layer lists (at construction); at bind, a pair that is not two maps
            or two vectors, or a ``teacher_bns`` module that is not an affine batch norm over
            the teacher feature's channels.
    """

    name: ClassVar[str] = "ofd"
    distinct: ClassVar[tuple[str, ...]] = ("student",)

    def __init__(
        self,
        student_layers: list[str],
        teacher_layers: list[str],
        teacher_bns: list[str] | None = None,
    ) -> None:
        super().__init__(student_layers, teacher_layers)
        n = len(self.layers("student"))
        self.teacher_bns: list[str] | None = None
        if teacher_bns is not None:
            self.teacher_bns = check_layers("ofd.teacher_bns", teacher_bns)
            if len(self.teacher_bns) != n:
                raise ConfigError(
                    f"ofd.teacher_bns has {len(self.teacher_bns)} paths and ofd.teacher_layers "
                    f"{n}; give one batch norm per teacher layer"
                )
        self.weights = [2.0 ** (i - n + 1) for i in range(n)]
        self.connectors: nn.ModuleList | None = None

    def bind(self, ctx: BindContext) -> None:
        teacher = self.bind_teacher(ctx)
        connectors = []
        t_feats = [teacher.features[p].detach() for p in self.layers("teacher")]
        for (s_path, t_path), t in zip(self.layer_pairs(), t_feats):
            s_shape = tuple(ctx.student_outputs.features[s_path].shape[1:])
            t_shape = tuple(t.shape[1:])
            if len(s_shape) != len(t_shape) or len(s_shape) not in (1, 3):
                raise ConfigError(
                    f"ofd cannot pair student layer {s_path!r} {s_shape} with teacher layer "
                    f"{t_path!r} {t_shape}: it needs both maps (C, H, W) or both vectors (D,); "
                    "tap pre-ReLU layers of one kind"
                )
            connectors.append(connector(s_shape[0], t_shape[0], map_kind=len(s_shape) == 3))
        self.connectors = nn.ModuleList(connectors).to(t_feats[0].device)
        if ctx.teacher is not None and self.teacher_bns is not None:
            margins = self._bn_margins(ctx.teacher, [t.shape[1] for t in t_feats])
        else:  # measured, or only a cache at hand: from the sample (prepare sets the real one)
            margins = [ofd_margin(*_std_mean(_channel_sums(t))) for t in t_feats]
        for i, (margin, t) in enumerate(zip(margins, t_feats)):
            self.register_buffer(f"margin_{i}", margin.to(t))

    def prepare(
        self, student: nn.Module, teacher: nn.Module | None, batches: Iterable[Batch]
    ) -> None:
        """Set the margins from the trained teacher (its batch norms, or measured features)."""
        if teacher is None:
            raise TrainingError("ofd's margin needs the teacher network; pass it")
        channels = [self.margin(i).shape[0] for i in range(len(self.layers("teacher")))]
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
        features = self.feature_pairs(student, teacher)
        if self.connectors is None:
            raise TrainingError("ofd was not bound; bind the loss (Trainer.fit does) first")
        parts = []
        for i, (s, t) in enumerate(features):
            s, t = match_spatial(s, t)
            s = self.connectors[i](s.contiguous())  # (B, C_t, ...)
            parts.append(self.weights[i] * ofd_loss(s, t, self.margin(i)))  # ()
        out = {f"ofd/{p}": v for p, v in zip(self.layers("student"), parts)}
        return {"loss": torch.stack(parts).sum(), **out}

    def teacher_modules(self) -> list[str]:
        """The tapped teacher layers and ``teacher_bns`` (their parameters set the margin)."""
        return list(dict.fromkeys([*self.teacher_paths(), *(self.teacher_bns or [])]))

    def _bn_margins(self, teacher: nn.Module, channels: list[int]) -> list[Tensor]:
        assert self.teacher_bns is not None
        modules = check_module_paths(teacher, self.teacher_bns)
        margins = []
        for path, c, t_path in zip(self.teacher_bns, channels, self.layers("teacher")):
            bn = modules[path]
            weight, bias = getattr(bn, "weight", None), getattr(bn, "bias", None)
            if not (
                isinstance(bn, nn.modules.batchnorm._BatchNorm)
                and isinstance(weight, Tensor)
                and isinstance(bias, Tensor)
                and weight.shape == (c,)
            ):
                raise ConfigError(
                    f"ofd.teacher_bns: {path!r} ({type(bn).__name__}) is not an affine batch "
                    f"norm over the {c} channels of teacher layer {t_path!r}; "
                    "name the batch norm right before it"
                )
            margins.append(ofd_margin(weight, bias))
        return margins

    def _measured_margins(self, teacher: nn.Module, batches: Iterable[Batch]) -> list[Tensor]:
        teacher.eval()
        paths = self.layers("teacher")
        sums: list[Tensor | None] = [None] * len(paths)
        with FeatureTap(teacher, paths, detach=True) as tap, torch.no_grad():
            for batch in batches:
                out = forward_outputs(teacher, batch.inputs, tap)
                for i, path in enumerate(paths):
                    moments = _channel_sums(out.features[path])  # (3, C)
                    total = sums[i]
                    sums[i] = moments if total is None else total + moments
        if any(s is None for s in sums):
            raise TrainingError("ofd's margin needs at least one training batch; got none")
        return [ofd_margin(*_std_mean(s)) for s in sums if s is not None]

    def extra_repr(self) -> str:
        bns = "" if self.teacher_bns is None else f", teacher_bns={self.teacher_bns}"
        return f"{super().extra_repr()}{bns}"


def connector(channels_in: int, channels_out: int, map_kind: bool) -> nn.Sequential:
    """OFD's connector: a 1x1 convolution (a linear layer for vectors), no bias, then batch norm.

    Initialised as in the authors' code: weights ``N(0, 2 / (k^2 C_out))``, batch norm weight 1
    and bias 0.

    Example:
        >>> conv, norm = connector(8, 16, map_kind=True)
        >>> conv.kernel_size, conv.bias, type(norm).__name__
        ((1, 1), None, 'BatchNorm2d')
    """
    if map_kind:
        layer: nn.Module = nn.Conv2d(channels_in, channels_out, 1, bias=False)
        norm: nn.Module = nn.BatchNorm2d(channels_out)
    else:
        layer = nn.Linear(channels_in, channels_out, bias=False)
        norm = nn.BatchNorm1d(channels_out)
    nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0 / channels_out))
    nn.init.ones_(norm.weight)
    nn.init.zeros_(norm.bias)
    return nn.Sequential(layer, norm)


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
