"""Feature methods without owned modules: attention transfer (AT) and neuron selectivity
transfer (NST). Both compare spatial statistics of feature maps, so channel counts may differ
between teacher and student; a pair that is not two feature maps fails at bind."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from distillscope.checks import check_positive
from distillscope.contracts import Batch, Outputs
from distillscope.distill.base import BindContext, LossTerm
from distillscope.distill.feature_pairs import MAPS, check_layer_pairs, features, pair_shapes
from distillscope.distill.logit import require_teacher
from distillscope.functional.feature import at_loss, nst_loss
from distillscope.registry import register_loss

# Zagoruyko & Komodakis 2017, section 3: "we use p = 2" for the attention map F_sum^p.
AT_P = 2.0


class _MapPairs(LossTerm):
    """A term summing ``loss(s_i, t_i)`` over layer pairs of feature maps."""

    needs: ClassVar[set[str]] = {"features", "teacher"}

    def __init__(self, student_layers: list[str], teacher_layers: list[str]) -> None:
        super().__init__()
        self.student_layers, self.teacher_layers = check_layer_pairs(
            self.name, student_layers, teacher_layers
        )

    def student_paths(self) -> list[str]:
        return list(self.student_layers)

    def teacher_paths(self) -> list[str]:
        return list(self.teacher_layers)

    def bind(self, ctx: BindContext) -> None:
        for s, t in zip(self.student_layers, self.teacher_layers):
            pair_shapes(self.name, ctx, s, t, MAPS)

    def pair_loss(self, s: Tensor, t: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        teacher = require_teacher(self.name, teacher)
        s_feats = features(student, self.student_layers)
        t_feats = features(teacher, self.teacher_layers, detach=True)
        parts = [self.pair_loss(s, t) for s, t in zip(s_feats, t_feats)]  # each ()
        out = {f"{self.name}/{p}": v for p, v in zip(self.student_layers, parts)}
        return {"loss": torch.stack(parts).sum(), **out}

    def extra_repr(self) -> str:
        return f"student_layers={self.student_layers}, teacher_layers={self.teacher_layers}"


@register_loss("at")
class AttentionTransfer(_MapPairs):
    """Attention transfer (Zagoruyko & Komodakis 2017, "Paying More Attention to Attention").

    ``L = sum_j mean_{b,k}(Q_s^j / |Q_s^j|_2 - Q_t^j / |Q_t^j|_2)_k^2``,
    ``Q^j = vec(mean_c |A_c^j|^p)``

    over layer pairs ``j`` of feature maps (paper, eq. 2). The paper writes
    ``beta / 2 * sum_j |...|_p`` with the unsquared norm; the authors' code, RepDistiller and
    mdistiller all compute the squared difference averaged over batch and positions, summed
    over pairs, times ``beta = 1000``: we follow them (give the term ``weight: 1000``). Where
    the maps of a pair differ in size, the larger is average-pooled to the smaller
    (RepDistiller). Channel counts may differ. The teacher's maps are detached.

    Args:
        student_layers: Student module paths, e.g. ``[layer1, layer2, layer3]`` (RepDistiller:
            the outputs of the residual stages).
        teacher_layers: Teacher module paths, one per student path.
        p: Power of the attention map; the paper's 2.

    Parts:
        ``at/<student layer>``: each pair's loss (they sum to ``loss``).

    Raises:
        ConfigError: At bind, a pair that is not two feature maps ``(C, H, W)`` (e.g. a CNN
            map and an MLP vector).
    """

    name: ClassVar[str] = "at"

    def __init__(
        self, student_layers: list[str], teacher_layers: list[str], p: float = AT_P
    ) -> None:
        super().__init__(student_layers, teacher_layers)
        self.p = check_positive("at.p", p)

    def pair_loss(self, s: Tensor, t: Tensor) -> Tensor:
        return at_loss(s, t, self.p)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p:g}"


@register_loss("nst")
class NeuronSelectivityTransfer(_MapPairs):
    """Neuron selectivity transfer (Huang & Wang 2017, "Like What You Like: Knowledge Distill
    via Neuron Selectivity Transfer").

    ``L = sum_j MMD^2(S^j, T^j)``, with the polynomial kernel ``k(x, y) = (x^T y + c)^d``,
    ``d = 2``, ``c = 0`` (the paper's best), where each channel's spatial response,
    L2-normalised, is one sample of a layer's distribution (paper, eqs. 4 and 7):
    ``MMD^2 = mean k(t_i, t_i') + mean k(s_j, s_j') - 2 mean k(s_j, t_i)`` per image, averaged
    over the batch, summed over pairs. The paper's ``lambda / 2`` is left to the term's weight;
    RepDistiller and mdistiller weigh this sum by 50 (give the term ``weight: 50``). Where the
    maps of a pair differ in size, the larger is average-pooled to the smaller (RepDistiller).
    The teacher's maps are detached, so its ``k(t, t)`` part is a constant.

    Args:
        student_layers: Student module paths (RepDistiller: the residual stages' outputs).
        teacher_layers: Teacher module paths, one per student path.

    Parts:
        ``nst/<student layer>``: each pair's MMD^2 (they sum to ``loss``).

    Raises:
        ConfigError: At bind, a pair that is not two feature maps ``(C, H, W)``.
    """

    name: ClassVar[str] = "nst"

    def __init__(self, student_layers: list[str], teacher_layers: list[str]) -> None:
        super().__init__(student_layers, teacher_layers)

    def pair_loss(self, s: Tensor, t: Tensor) -> Tensor:
        return nst_loss(s, t)
