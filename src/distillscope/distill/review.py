"""ReviewKD: the student's stages, fused from deep to shallow, match the teacher's stages.

``reviewkd`` is Chen, Liu, Zhao & Jia 2021, "Distilling Knowledge via Knowledge Review"
(CVPR), one of the comparisons of e2KD (paper 001, tables 1-3). Its attention-based fusion
(ABF) modules are sized at bind time from the features the two networks produce, so no
channel count or spatial size is typed into a config.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillscope.checks import check_int, check_range
from distillscope.contracts import Batch, Outputs
from distillscope.distill.base import BindContext
from distillscope.distill.feature_base import FeatureTerm
from distillscope.errors import ConfigError, TrainingError
from distillscope.functional.feature_maps import hcl_loss
from distillscope.registry import register_loss

# Both reference implementations (the authors' CIFAR code and mdistiller) ramp the loss weight
# up linearly over the first 20 epochs (of 240).
REVIEWKD_WARMUP_EPOCHS = 20.0
# Both cap the ABFs' shared middle width at 512 channels.
REVIEWKD_MAX_MID_CHANNELS = 512


class ABF(nn.Module):
    """ReviewKD's attention-based fusion of one student stage with the deeper stages' residual.

    ``x' = BN(conv1x1(x))``; with a residual ``y`` (the deeper ABF's fused map), ``y`` is
    resized to ``x'`` (nearest), ``[a, b] = sigmoid(conv1x1([x', y]))`` and
    ``x' = a * x' + b * y``. ``x'`` is resized (nearest) to the teacher's stage and
    ``BN(conv3x3(x'))`` is the output; ``x'`` is the residual handed to the shallower stage.
    As both reference implementations: convolutions without bias except the attention's,
    Kaiming-uniform (``a = 1``) weights for the two main convolutions.

    Args:
        in_channels: Channels of the student's stage.
        mid_channels: Width of the fused maps (shared by all ABFs).
        out_channels: Channels of the teacher's stage.
        fuse: Whether a deeper residual is fused in (every stage but the deepest).
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool) -> None:
        super().__init__()
        self.reduce = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, 1, bias=False), nn.BatchNorm2d(mid_channels)
        )
        self.out = nn.Sequential(
            nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.attention: nn.Module | None = None
        if fuse:
            self.attention = nn.Sequential(nn.Conv2d(2 * mid_channels, 2, 1), nn.Sigmoid())
        nn.init.kaiming_uniform_(self.reduce[0].weight, a=1)
        nn.init.kaiming_uniform_(self.out[0].weight, a=1)

    def forward(
        self, x: Tensor, residual: Tensor | None, out_size: tuple[int, int]
    ) -> tuple[Tensor, Tensor]:
        """``(output (B, C_t, *out_size), fused map (B, mid, *out_size))``."""
        x = self.reduce(x)  # (B, mid, H_s, W_s)
        if self.attention is not None:
            if residual is None:
                raise TrainingError("reviewkd: a fusing ABF got no residual; bind the loss again")
            y = F.interpolate(residual, size=x.shape[-2:], mode="nearest")  # (B, mid, H_s, W_s)
            gates = self.attention(torch.cat([x, y], dim=1))  # (B, 2, H_s, W_s)
            x = x * gates[:, :1] + y * gates[:, 1:]  # (B, mid, H_s, W_s)
        if tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, size=out_size, mode="nearest")  # (B, mid, H_t, W_t)
        return self.out(x), x


def _as_map(x: Tensor) -> Tensor:
    """A pooled vector ``(B, C)`` as a ``(B, C, 1, 1)`` map (the references' last stage)."""
    return x[:, :, None, None] if x.dim() == 2 else x


@register_loss("reviewkd")
class ReviewKD(FeatureTerm):
    """ReviewKD (Chen, Liu, Zhao & Jia 2021; a comparison in paper 001, tables 1-3).

    ``L = w(e) * sum_i HCL(F_i, T_i)`` with ``F_n = ABF_n(S_n)`` and
    ``F_i = ABF_i(S_i, residual of ABF_{i+1})`` for ``i < n``: the student's stages ``S_i``
    (listed from shallow to deep) are fused from the deepest one upwards by attention-based
    fusion (:class:`ABF`) so each stage's output sees the deeper ones ("knowledge review"), and
    every output ``F_i`` matches the teacher's stage ``T_i`` under the hierarchical context loss
    (:func:`~distillscope.functional.feature_maps.hcl_loss`: MSE on the full map and on 4x4,
    2x2, 1x1 average pools, weighted 1, 1/2, 1/4, 1/8). The teacher's maps are detached.

    Choices of the reference implementations (the authors' CIFAR code and mdistiller), followed:
    the ABFs share a middle width ``min(512, C of the deepest student stage)``; a stage may be
    a pooled vector ``(C,)`` (the references' last stage is the pooled feature), used as a 1x1
    map; the loss weight warms up as ``w(e) = min(1, e / warmup_epochs)`` with ``e`` the 1-based
    epoch (mdistiller's count; the authors' code counts from 0, giving the first epoch weight 0).
    The term does not see the trainer's epoch: it counts the items it has been trained on (a
    buffer saved with its state) and takes ``e = 1 + items // num_train``, exact for full
    epochs (with ``train.max_batches`` the warm-up lasts longer). One difference: the
    references match the teacher's *pre-ReLU* stage outputs; a tap records module outputs, so
    here the teacher's stages are whatever the tapped modules return (post-ReLU for our
    ResNets' ``layerN``).

    The references' weights: 1.0 by default in both; the authors' CIFAR scripts use 0.6 for
    resnet56 -> resnet20, 1.0 for resnet110 -> resnet32 and 5.0 for resnet32x4 -> resnet8x4
    (mdistiller's CIFAR config: 5.0), always with cross-entropy at weight 1.

    Args:
        student_layers: Student module paths, shallow to deep (e.g. ``[layer1, layer2, layer3,
            pool]`` for our CIFAR ResNets, as the references), each once; default: the
            student's ``model.feature_layers`` (paired from the deepest with the teacher's).
        teacher_layers: Teacher module paths, one per student layer, each once; default: the
            teacher's ``model.feature_layers``.
        warmup_epochs: Epochs over which the weight ramps up to 1 (0: no warm-up).
        max_mid_channels: Cap on the ABFs' middle width.

    Parts:
        ``reviewkd/hcl``: the HCL sum before the warm-up factor; ``reviewkd/warmup``: ``w(e)``.
    """

    name: ClassVar[str] = "reviewkd"
    default_layers: ClassVar[str | None] = "all"
    distinct: ClassVar[tuple[str, ...]] = ("student", "teacher")

    def __init__(
        self,
        student_layers: Sequence[str] | None = None,
        teacher_layers: Sequence[str] | None = None,
        warmup_epochs: float = REVIEWKD_WARMUP_EPOCHS,
        max_mid_channels: int = REVIEWKD_MAX_MID_CHANNELS,
    ) -> None:
        super().__init__(student_layers, teacher_layers)
        self.warmup_epochs = check_range("reviewkd.warmup_epochs", warmup_epochs, 0.0)
        self.max_mid_channels = check_int("reviewkd.max_mid_channels", max_mid_channels)
        self.abfs: nn.ModuleList | None = None
        self.num_train = 0
        self.register_buffer("items_seen", torch.zeros((), dtype=torch.long))

    def bind(self, ctx: BindContext) -> None:
        teacher = self.bind_teacher(ctx)
        shapes = [
            (
                _stage_shape("student", s, ctx.student_outputs.features[s]),
                _stage_shape("teacher", t, teacher.features[t]),
            )
            for s, t in self.layer_pairs()
        ]
        for i, ((s_shape, t_shape), (s, t)) in enumerate(zip(shapes, self.layer_pairs())):
            if len(s_shape) != len(t_shape):
                kinds = ["a vector" if len(x) == 1 else "a map" for x in (s_shape, t_shape)]
                raise ConfigError(
                    f"reviewkd: student layer {s!r} gives {kinds[0]} {s_shape} but teacher layer "
                    f"{t!r} gives {kinds[1]} {t_shape}; pair maps with maps and pooled vectors "
                    "with pooled vectors"
                )
            if i and _larger(s_shape, shapes[i - 1][0]):
                raise ConfigError(
                    f"reviewkd.student_layers: {s!r} {s_shape} is larger than the layer before "
                    f"it {shapes[i - 1][0]}; list the student's layers from shallow to deep"
                )
        deepest = shapes[-1][0][0]
        mid = min(self.max_mid_channels, deepest)
        last = len(shapes) - 1
        self.abfs = nn.ModuleList(
            ABF(s_shape[0], mid, t_shape[0], fuse=i < last)
            for i, (s_shape, t_shape) in enumerate(shapes)
        ).to(ctx.student_outputs.logits.device)
        self.num_train = ctx.num_train

    def data_parallel_issue(self) -> str | None:
        """Its warm-up counts the items it saw, which a rank sees a share of."""
        if not self.warmup_epochs:
            return None
        return (
            "counts the items it saw for its warm-up (warmup_epochs > 0), and a data-parallel "
            "rank sees only its share"
        )

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        features = self.feature_pairs(student, teacher)
        if self.abfs is None:
            raise TrainingError("reviewkd was not bound; bind the loss (Trainer.fit does) first")
        s_maps = [_as_map(s) for s, _ in features]
        t_maps = [_as_map(t) for _, t in features]  # detached
        outputs: list[Tensor] = [s_maps[0]] * len(s_maps)
        residual: Tensor | None = None
        for i in reversed(range(len(s_maps))):  # deepest first: each stage reviews the deeper
            size = (int(t_maps[i].shape[-2]), int(t_maps[i].shape[-1]))
            outputs[i], residual = self.abfs[i](s_maps[i].contiguous(), residual, size)
        hcl = hcl_loss(outputs, t_maps)  # ()
        factor = self._warmup_factor().to(hcl)
        if self.training:
            self.items_seen += len(batch)
        return {"loss": factor * hcl, "reviewkd/hcl": hcl, "reviewkd/warmup": factor}

    def _warmup_factor(self) -> Tensor:
        """``min(1, e / warmup_epochs)`` with ``e = 1 + items_seen // num_train``."""
        if self.warmup_epochs == 0 or self.num_train == 0:
            return torch.ones((), device=self.items_seen.device)
        epoch = (self.items_seen // self.num_train + 1).double()  # ()
        return (epoch / self.warmup_epochs).clamp(max=1.0).float()  # ()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, warmup_epochs={self.warmup_epochs:g}"


def _stage_shape(role: str, path: str, feature: Tensor) -> tuple[int, ...]:
    """The per-item shape of a stage, ``(C, H, W)`` or ``(C,)``, else one-line ConfigError."""
    shape = tuple(int(d) for d in feature.shape[1:])
    if len(shape) not in (1, 3):
        raise ConfigError(
            f"reviewkd: {role} layer {path!r} gives a feature of shape {shape}; ReviewKD reads "
            "feature maps (C, H, W) or pooled vectors (C,): tap convolutional stages"
        )
    return shape


def _larger(shape: tuple[int, ...], before: tuple[int, ...]) -> bool:
    """Whether a stage's map is taller or wider than the stage before it (vectors are 1x1)."""
    h, w = (shape[1], shape[2]) if len(shape) == 3 else (1, 1)
    ph, pw = (before[1], before[2]) if len(before) == 3 else (1, 1)
    return h > ph or w > pw
