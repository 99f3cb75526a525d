"""Distillation of where and how feature maps activate, over one or more layer pairs.

``at`` is attention transfer (Zagoruyko & Komodakis 2017), used by papers 000 and 002; ``nst``
is neuron selectivity transfer (Huang & Wang 2017). Both take ``student_layers`` and
``teacher_layers`` (lists of module paths, paired in order) whose outputs are feature maps
``(B, C, H, W)``; channel counts may differ, and a larger map is average-pooled to the smaller
one's size, as RepDistiller does.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from distillscope.checks import check_positive
from distillscope.contracts import Batch, Outputs
from distillscope.distill.base import BindContext, LossTerm
from distillscope.distill.feature import check_paths
from distillscope.distill.logit import require_teacher
from distillscope.errors import ConfigError
from distillscope.registry import register_loss


class LayerPairsTerm(LossTerm):
    """A term over pairs of feature maps (``student_layers[i]`` with ``teacher_layers[i]``)."""

    needs: ClassVar[set[str]] = {"features", "teacher"}

    def __init__(self, student_layers: list[str], teacher_layers: list[str]) -> None:
        super().__init__()
        self.student_layers, self.teacher_layers = check_paths(
            self.name, student_layers, teacher_layers
        )

    def student_paths(self) -> list[str]:
        return list(self.student_layers)

    def teacher_paths(self) -> list[str]:
        return list(self.teacher_layers)

    def bind(self, ctx: BindContext) -> None:
        """Every pair must be two feature maps (``(B, C, H, W)``)."""
        if ctx.teacher_outputs is None:
            raise ConfigError(f"{self.name} needs a teacher; give the student one")
        for s_path, t_path in zip(self.student_layers, self.teacher_layers):
            s = ctx.student_outputs.features[s_path]
            t = ctx.teacher_outputs.features[t_path]
            if s.dim() != 4 or t.dim() != 4:
                raise ConfigError(
                    f"{self.name} compares feature maps (B, C, H, W) but student {s_path!r} gives "
                    f"{tuple(s.shape[1:])} and teacher {t_path!r} {tuple(t.shape[1:])}; pick "
                    "convolutional layers of both networks"
                )

    def pairs(self, student: Outputs, teacher: Outputs | None) -> list[tuple[Tensor, Tensor]]:
        """``(f_s, f_t)`` per layer pair, the larger map pooled to the smaller's size."""
        teacher = require_teacher(self.name, teacher)
        out = []
        for s_path, t_path in zip(self.student_layers, self.teacher_layers):
            s, t = student.features[s_path], teacher.features[t_path].detach()
            out.append(same_size(s, t))
        return out

    def extra_repr(self) -> str:
        return f"student_layers={self.student_layers}, teacher_layers={self.teacher_layers}"


def same_size(s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Average-pool the larger of two maps ``(B, C, H, W)`` to the smaller one's ``H x W``."""
    hs, ht = s.shape[-2:], t.shape[-2:]
    if hs == ht:
        return s, t
    if hs[0] * hs[1] > ht[0] * ht[1]:
        return F.adaptive_avg_pool2d(s, tuple(ht)), t
    return s, F.adaptive_avg_pool2d(t, tuple(hs))


def attention_map(f: Tensor, p: float = 2.0) -> Tensor:
    """``(B, H*W)`` L2-normalised spatial attention ``mean_c |A_c|^p`` (Zagoruyko & Komodakis)."""
    return F.normalize(f.abs().pow(p).mean(1).reshape(f.shape[0], -1), dim=1)


@register_loss("at")
class AttentionTransfer(LayerPairsTerm):
    """Attention transfer (Zagoruyko & Komodakis 2017, eq. 2; papers 000 and 002).

    ``Q = mean_c |A_c|^p`` flattened and L2-normalised per sample;
    ``L = sum_pairs mean((Q_s - Q_t)^2)``.

    The paper writes ``beta / 2 * sum_j || Q_s / ||Q_s|| - Q_t / ||Q_t|| ||_p`` with
    ``beta = 1000``; the authors' code and RepDistiller use the mean squared difference per pair,
    summed over pairs, which we follow (weight the term 1000 as RepDistiller's CIFAR setting).

    Args:
        p: Power of the activations (2).

    Parts: ``at/at`` (the sum over pairs).
    """

    def __init__(self, student_layers: list[str], teacher_layers: list[str], p: float = 2.0):
        super().__init__(student_layers, teacher_layers)
        self.p = check_positive("at.p", p)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        losses = [
            (attention_map(s, self.p) - attention_map(t, self.p)).pow(2).mean()
            for s, t in self.pairs(student, teacher)
        ]
        loss = torch.stack(losses).sum()  # ()
        return {"loss": loss, "at/at": loss}


def polynomial_mmd(s: Tensor, t: Tensor) -> Tensor:
    """Squared MMD with the kernel ``k(x, y) = (x . y)^2`` between the channels of two maps.

    Each channel's ``H*W`` activations are L2-normalised; the channels of a sample are the
    samples of its distribution (Huang & Wang 2017, eq. 6 with ``d = 2``, ``c = 0``). Returns
    ``mean k(t, t') + mean k(s, s') - 2 mean k(s, t)``, averaged over the batch.
    """
    s = F.normalize(s.flatten(2), dim=2)  # (B, C_s, HW)
    t = F.normalize(t.flatten(2), dim=2)  # (B, C_t, HW)

    def k(a: Tensor, b: Tensor) -> Tensor:
        return torch.bmm(a, b.transpose(1, 2)).pow(2).mean()  # ()

    return k(t, t) + k(s, s) - 2 * k(s, t)


@register_loss("nst")
class NeuronSelectivityTransfer(LayerPairsTerm):
    """Neuron selectivity transfer (Huang & Wang 2017): MMD between the distributions of
    neuron (channel) activation patterns, polynomial kernel ``d = 2``, ``c = 0``.

    ``L = sum_pairs MMD^2(F_s, F_t)`` (:func:`polynomial_mmd`). As RepDistiller (its CIFAR
    setting weighs it 50); the paper's ``beta / 2`` factor is left to the term's weight.

    Parts: ``nst/nst`` (the sum over pairs).
    """

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        loss = torch.stack([polynomial_mmd(s, t) for s, t in self.pairs(student, teacher)]).sum()
        return {"loss": loss, "nst/nst": loss}
