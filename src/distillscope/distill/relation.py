"""Relation-based distillation: the student matches relations between the samples of a batch.

Each term reads one student feature and one teacher feature (``student_layer``,
``teacher_layer``; by default the last of each model's ``feature_layers``; the examples read
them where RepDistiller does: the pooled penultimate features, ``pool`` of the
zoo's CIFAR ResNets, for RKD, PKT and CC, and the last stage's map, ``layer3``, for SP),
flattened per sample, so the two networks' feature sizes may differ. The maths, with its
reductions and constants (RepDistiller's, Tian et al. 2020, where the papers leave them open),
is in :mod:`distillscope.functional.relation`; the terms pick the features and own the heads.
"""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from distillscope.checks import check_int, check_range
from distillscope.contracts import Batch, Outputs
from distillscope.distill.base import BindContext
from distillscope.distill.feature_base import SingleLayerTerm
from distillscope.errors import ConfigError, TrainingError
from distillscope.functional.relation import (
    PKT_EPS,
    correlation_congruence_loss,
    pairwise_distances,
    pkt_loss,
    rkd_parts,
    similarity_preserving_loss,
)
from distillscope.registry import register_loss

__all__ = [
    "CorrelationCongruence",
    "Embed",
    "ProbabilisticKT",
    "RelationalKD",
    "SimilarityPreserving",
    "pairwise_distances",
]


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)  # (B, D)


def _check_batch(name: str, f: Tensor) -> None:
    if f.shape[0] < 2:
        raise TrainingError(f"{name} relates the samples of a batch and needs two or more")


#: Why the relation terms are refused data-parallel (:meth:`LossTerm.data_parallel_issue`).
ACROSS_BATCH = (
    "relates the items of each batch to each other, and a data-parallel rank sees only its "
    "share of the batch"
)


@register_loss("sp")
class SimilarityPreserving(SingleLayerTerm):
    """Similarity-preserving KD (Tung & Mori 2019, eq. 1-4).

    ``G = f f^T`` (``B x B``) over the flattened features, each row L2-normalised;
    ``L = ||G_t - G_s||_F^2 / B^2``.

    As the paper and RepDistiller. RepDistiller's CIFAR setting applies it to the last
    stage's feature map before pooling (its ``feat[-2]``; ``layer3`` of the zoo's CIFAR ResNets,
    as ``configs/methods/sp.yaml``) and weighs it 3000.

    Parts: ``sp/sp``.
    """

    default_layers: ClassVar[str | None] = "last"

    def data_parallel_issue(self) -> str | None:
        """Relates the items of a batch to each other; a rank sees only its share."""
        return ACROSS_BATCH

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        s, t = self.pair(student, teacher)
        _check_batch(self.name, s)
        loss = similarity_preserving_loss(s, t)  # ()
        return {"loss": loss, "sp/sp": loss}


@register_loss("rkd")
class RelationalKD(SingleLayerTerm):
    """Relational KD (Park, Kim, Lu & Cho 2019): distance-wise and angle-wise terms.

    Distance: ``psi_D(t_i, t_j) = ||t_i - t_j|| / mu`` with ``mu`` the mean distance over the
    pairs ``i != j`` of the batch; ``L_D = huber(psi_D(s), psi_D(t))``.
    Angle: ``psi_A(t_i, t_j, t_k) = <e_ij, e_kj>`` with ``e_ij = (t_i - t_j) / ||t_i - t_j||``;
    ``L_A = huber(psi_A(s), psi_A(t))`` over all triplets.
    ``L = distance_weight * L_D + angle_weight * L_A``.

    Huber is PyTorch's smooth L1 (``beta = 1``) averaged over all pairs / triplets; weights 25 and
    50 as the authors' code and RepDistiller.

    Args:
        distance_weight: Weight of ``L_D`` (25).
        angle_weight: Weight of ``L_A`` (50).

    Parts: ``rkd/distance``, ``rkd/angle`` (unweighted).
    """

    default_layers: ClassVar[str | None] = "last"

    def __init__(
        self,
        student_layer: str | None = None,
        teacher_layer: str | None = None,
        distance_weight: float = 25.0,
        angle_weight: float = 50.0,
    ) -> None:
        super().__init__(student_layer, teacher_layer)
        self.distance_weight = check_range("rkd.distance_weight", distance_weight, 0.0)
        self.angle_weight = check_range("rkd.angle_weight", angle_weight, 0.0)

    def data_parallel_issue(self) -> str | None:
        """Relates the items of a batch to each other; a rank sees only its share."""
        return ACROSS_BATCH

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        s, t = self.pair(student, teacher)
        _check_batch(self.name, s)
        distance, angle = rkd_parts(s, t)  # (), ()
        loss = self.distance_weight * distance + self.angle_weight * angle
        return {"loss": loss, "rkd/distance": distance, "rkd/angle": angle}


@register_loss("pkt")
class ProbabilisticKT(SingleLayerTerm):
    """Probabilistic knowledge transfer (Passalis & Tefas 2018), cosine-kernel form.

    Features are L2-normalised; ``K_ij = (cos(f_i, f_j) + 1) / 2``; each row is normalised to a
    conditional distribution ``p_{j|i} = K_ij / sum_j K_ij``;
    ``L = mean_ij p^t_{j|i} log((p^t_{j|i} + eps) / (p^s_{j|i} + eps))``, ``eps = 1e-7``.

    The mean over all ``B x B`` entries (not a per-row sum) and ``eps`` follow the authors' code
    and RepDistiller, whose CIFAR setting weighs it 30000.

    Parts: ``pkt/pkt``.
    """

    default_layers: ClassVar[str | None] = "last"

    EPS: ClassVar[float] = PKT_EPS

    def data_parallel_issue(self) -> str | None:
        """Relates the items of a batch to each other; a rank sees only its share."""
        return ACROSS_BATCH

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        loss = pkt_loss(*self.pair(student, teacher), eps=self.EPS)  # ()
        return {"loss": loss, "pkt/pkt": loss}


class Embed(nn.Module):
    """A linear projection of the flattened feature, L2-normalised per sample unless told not to.

    With ``normalize`` (the default) it is RepDistiller's ``Embed``, CRD's head; without, its
    ``LinearEmbed``, the head of its CC.

    Args:
        in_features: Size of the flattened feature.
        dim: Embedding size.
        normalize: Divide each embedding by its L2 norm.
    """

    def __init__(self, in_features: int, dim: int, normalize: bool = True) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, dim)
        self.normalize = normalize

    def forward(self, x: Tensor) -> Tensor:
        e = self.linear(_flat(x))  # (B, dim)
        return F.normalize(e, dim=1) if self.normalize else e


@register_loss("cc")
class CorrelationCongruence(SingleLayerTerm):
    """Correlation congruence (Peng et al. 2019), in RepDistiller's form.

    Both features are embedded by a linear layer to ``dim`` (heads built at bind from the
    feature sizes and trained with the student); with ``d_i = |e^s_i - e^t_i|``,
    ``L = mean_i sum_k d_ik d_(i+1)k`` over consecutive samples of the batch.

    The paper correlates the embeddings through a Gaussian-RBF kernel approximated by a Taylor
    series; RepDistiller, behind the comparison tables of papers 000 and 002, uses this simpler
    consecutive-pair correlation of the embedding differences, and so do we. The default follows
    RepDistiller throughout: its CC heads (``LinearEmbed`` in ``models/util.py``) are linear
    with no normalisation, embedding size 128, and its CIFAR setting weighs the term 0.02 beside
    CE. ``normalize: true`` (ours, not the reference's) L2-normalises both embeddings first, as
    CRD's heads do; the loss is then far smaller (about 44 times on a fresh ResNet-20 / ResNet-8
    pair) and the 0.02 weight leaves the term almost inactive.

    Args:
        dim: Embedding size (128).
        normalize: L2-normalise the embeddings (``False``, RepDistiller's form).

    Parts: ``cc/cc``.
    """

    default_layers: ClassVar[str | None] = "last"

    def __init__(
        self,
        student_layer: str | None = None,
        teacher_layer: str | None = None,
        dim: int = 128,
        normalize: bool = False,
    ) -> None:
        super().__init__(student_layer, teacher_layer)
        self.dim = check_int("cc.dim", dim)
        if not isinstance(normalize, bool):
            raise ConfigError(f"cc.normalize={normalize!r} is invalid; use true or false")
        self.normalize = normalize
        self.embed_s: Embed | None = None
        self.embed_t: Embed | None = None

    def bind(self, ctx: BindContext) -> None:
        teacher = self.bind_teacher(ctx)
        s = ctx.student_outputs.features[self.student_layer]
        t = teacher.features[self.teacher_layer]
        self.embed_s = Embed(_flat(s).shape[1], self.dim, self.normalize).to(s.device)
        self.embed_t = Embed(_flat(t).shape[1], self.dim, self.normalize).to(s.device)

    def data_parallel_issue(self) -> str | None:
        """Relates the items of a batch to each other; a rank sees only its share."""
        return ACROSS_BATCH

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        if self.embed_s is None or self.embed_t is None:
            raise TrainingError("cc was not bound; bind the loss (Trainer.fit does) first")
        s, t = self.pair(student, teacher)
        _check_batch(self.name, s)
        e_s = self.embed_s(s)  # (B, dim)
        e_t = self.embed_t(t)  # (B, dim)
        loss = correlation_congruence_loss(e_s, e_t)  # ()
        return {"loss": loss, "cc/cc": loss}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dim={self.dim}, normalize={self.normalize}"
