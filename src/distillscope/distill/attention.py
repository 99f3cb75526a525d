"""Distillation of feature maps over one or more layer pairs: where and how they activate.

``at`` is attention transfer (Zagoruyko & Komodakis 2017), used by papers 000 and 002; ``nst``
is neuron selectivity transfer (Huang & Wang 2017); ``vid`` is variational information
distillation (Ahn et al. 2019); ``ab`` is activation-boundary distillation (Heo et al.
2019). All take ``student_layers`` and ``teacher_layers`` (lists of module paths, paired in
order; by default each model's feature maps, its ``feature_layers`` up to its ``cam_layer``,
paired from the deepest) whose outputs are feature maps ``(B, C, H, W)``; channel counts may
differ, and a larger map is average-pooled to the smaller one's size, as RepDistiller does.
The maths is in :mod:`distillscope.functional.attention`; the terms pick the maps and own the
modules (VID's mean networks, AB's connectors).
"""

from __future__ import annotations

import math
from functools import partial
from typing import ClassVar

import torch
from torch import Tensor, nn

from distillscope.checks import check_int, check_positive
from distillscope.contracts import Batch, Outputs
from distillscope.distill.base import BindContext, Stage
from distillscope.distill.feature_base import FeatureTerm, stage_loss
from distillscope.errors import ConfigError, TrainingError
from distillscope.functional.attention import (
    ab_loss,
    attention_map,
    attention_transfer_loss,
    boundary_loss,
    nst_loss,
    polynomial_mmd,
    same_size,
    vid_nll,
)
from distillscope.registry import register_loss

__all__ = [
    "ActivationBoundaries",
    "AttentionTransfer",
    "MapPairsTerm",
    "NeuronSelectivityTransfer",
    "VariationalInformation",
    "attention_map",
    "boundary_loss",
    "polynomial_mmd",
    "same_size",
]


class MapPairsTerm(FeatureTerm):
    """The family's part: pairs of feature maps (``student_layers[i]`` with
    ``teacher_layers[i]``), by default each model's declared feature maps (``"maps"``, see
    :data:`~distillscope.distill.feature_base.DEFAULT_RULES`), paired from the deepest."""

    default_layers: ClassVar[str | None] = "maps"

    def __init__(
        self, student_layers: list[str] | None = None, teacher_layers: list[str] | None = None
    ) -> None:
        super().__init__(student_layers, teacher_layers)

    def bind(self, ctx: BindContext) -> None:
        """Every pair must be two feature maps (``(B, C, H, W)``)."""
        teacher = self.bind_teacher(ctx)
        for s_path, t_path in self.layer_pairs():
            s = ctx.student_outputs.features[s_path]
            t = teacher.features[t_path]
            if s.dim() != 4 or t.dim() != 4:
                raise ConfigError(
                    f"{self.name} compares feature maps (B, C, H, W) but student {s_path!r} gives "
                    f"{tuple(s.shape[1:])} and teacher {t_path!r} {tuple(t.shape[1:])}; pick "
                    "convolutional layers of both networks"
                )

    def pairs(self, student: Outputs, teacher: Outputs | None) -> list[tuple[Tensor, Tensor]]:
        """``(f_s, f_t)`` per layer pair, the larger map pooled to the smaller's size."""
        return [same_size(s, t) for s, t in self.feature_pairs(student, teacher)]


@register_loss("at")
class AttentionTransfer(MapPairsTerm):
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

    def __init__(
        self,
        student_layers: list[str] | None = None,
        teacher_layers: list[str] | None = None,
        p: float = 2.0,
    ) -> None:
        super().__init__(student_layers, teacher_layers)
        self.p = check_positive("at.p", p)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        student_maps, teacher_maps = zip(*self.pairs(student, teacher))
        loss = attention_transfer_loss(student_maps, teacher_maps, self.p)  # ()
        return {"loss": loss, "at/at": loss}


@register_loss("nst")
class NeuronSelectivityTransfer(MapPairsTerm):
    """Neuron selectivity transfer (Huang & Wang 2017): MMD between the distributions of
    neuron (channel) activation patterns, polynomial kernel ``d = 2``, ``c = 0``.

    ``L = sum_pairs MMD^2(F_s, F_t)`` (:func:`polynomial_mmd`). As RepDistiller (its CIFAR
    setting weighs it 50); the paper's ``beta / 2`` factor is left to the term's weight.

    Parts: ``nst/nst`` (the sum over pairs).
    """

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        loss = nst_loss(*zip(*self.pairs(student, teacher)))  # ()
        return {"loss": loss, "nst/nst": loss}


def _conv1x1(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=1, bias=False)


@register_loss("vid")
class VariationalInformation(MapPairsTerm):
    """Variational information distillation (Ahn, Hu, Damianou, Lawrence & Dai 2019, eq. 2-6).

    Per layer pair, a Gaussian ``q(t | s) = N(mu(s), sigma^2)`` with ``mu`` a small network on
    the student's map (1x1 conv, ReLU, 1x1 conv, ReLU, 1x1 conv to the teacher's channels) and
    a variance per teacher channel ``sigma_c^2 = softplus(a_c) + eps``;
    ``L = sum_pairs mean_{b, c, h, w} 0.5 (log sigma_c^2 + (t - mu(s))^2 / sigma_c^2)``
    (the negative log-likelihood without its constant).

    As RepDistiller's ``VIDLoss``: hidden width = the teacher's channels, ``a`` initialised so
    that ``sigma^2`` starts at 5, ``eps = 1e-5``, and the larger map average-pooled to the
    smaller one's size; its CIFAR setting applies it to the three stages with weight 1. The
    networks ``mu`` and the variances are built at bind from the channel counts and trained
    with the student.

    Parts: ``vid/vid`` (the sum over pairs).
    """

    INIT_VARIANCE: ClassVar[float] = 5.0
    EPS: ClassVar[float] = 1e-5

    def __init__(
        self, student_layers: list[str] | None = None, teacher_layers: list[str] | None = None
    ) -> None:
        super().__init__(student_layers, teacher_layers)
        self.means = nn.ModuleList()
        self.log_scales = nn.ParameterList()

    def bind(self, ctx: BindContext) -> None:
        super().bind(ctx)
        teacher = self.bind_teacher(ctx)
        self.means = nn.ModuleList()
        self.log_scales = nn.ParameterList()
        for s_path, t_path in self.layer_pairs():
            c_s = ctx.student_outputs.features[s_path].shape[1]
            c_t = teacher.features[t_path].shape[1]
            mean = nn.Sequential(_conv1x1(c_s, c_t), nn.ReLU(), _conv1x1(c_t, c_t), nn.ReLU(),
                                 _conv1x1(c_t, c_t))  # fmt: skip
            self.means.append(mean.to(ctx.batch.inputs.device))
            start = math.log(math.exp(self.INIT_VARIANCE - self.EPS) - 1.0)  # softplus^-1
            self.log_scales.append(
                nn.Parameter(torch.full((c_t,), start, device=ctx.batch.inputs.device))
            )

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        if len(self.means) != len(self.layer_pairs()):
            raise TrainingError("vid was not bound; bind the loss (Trainer.fit does) first")
        losses = [
            vid_nll(t, mean(s), scale, self.EPS)  # ()
            for (s, t), mean, scale in zip(
                self.pairs(student, teacher), self.means, self.log_scales
            )
        ]
        loss = torch.stack(losses).sum()  # ()
        return {"loss": loss, "vid/vid": loss}


@register_loss("ab")
class ActivationBoundaries(MapPairsTerm):
    """Activation boundaries (Heo, Lee, Yun & Choi 2019, AAAI), the alternative L2 loss.

    Per layer pair ``i`` (``n`` pairs), the student's map goes through a connector (1x1 conv +
    batch norm to the teacher's channels, built at bind) to ``s``; with margin ``mu``:
    ``l_i = sum (s + mu)^2 [s > -mu and t <= 0] + (s - mu)^2 [s <= mu and t > 0]``,
    ``L = sum_i 2^(i - n + 1) * l_i / B * 3 / 1000``: the student learns on which side of zero
    each teacher neuron is, with a margin.

    As RepDistiller's ``ABLoss`` (margin 1, the weights ``2^(i - n + 1)``, the ``/ B * 3 / 1000``
    scaling, its connectors). RepDistiller uses AB only in a 30-epoch initialisation stage and
    then trains with CE alone; ``stage1_epochs`` passes of that stage (``ab/stage1``, run by the
    trainer's stage runner) train the student and the connectors with Adam at ``stage1_lr`` (a
    CPU-sized choice of ours) before the student's training, and the term's
    weight decides whether it also acts during training (0: RepDistiller's form). The paper
    and RepDistiller read pre-ReLU responses of both networks: tap the zoo ResNet blocks'
    ``preact`` points (``configs/methods/ab.yaml`` does); on a post-ReLU tap ``t <= 0`` still
    marks the teacher's inactive neurons, but the connector never sees negative responses.

    Args:
        margin: ``mu > 0`` (1).
        stage1_epochs: Passes of the AB-only initialisation stage (0: none).
        stage1_lr: Adam learning rate of that stage (0.001).

    Parts: ``ab/ab``.
    """

    def __init__(
        self,
        student_layers: list[str] | None = None,
        teacher_layers: list[str] | None = None,
        margin: float = 1.0,
        stage1_epochs: int = 0,
        stage1_lr: float = 0.001,
    ) -> None:
        super().__init__(student_layers, teacher_layers)
        self.margin = check_positive("ab.margin", margin)
        self.stage1_epochs = check_int("ab.stage1_epochs", stage1_epochs, minimum=0)
        self.stage1_lr = check_positive("ab.stage1_lr", stage1_lr)
        self.connectors = nn.ModuleList()

    def bind(self, ctx: BindContext) -> None:
        super().bind(ctx)
        teacher = self.bind_teacher(ctx)
        self.connectors = nn.ModuleList()
        for s_path, t_path in self.layer_pairs():
            c_s = ctx.student_outputs.features[s_path].shape[1]
            c_t = teacher.features[t_path].shape[1]
            connector = nn.Sequential(_conv1x1(c_s, c_t), nn.BatchNorm2d(c_t))
            self.connectors.append(connector.to(ctx.batch.inputs.device))

    def stages(self, student: nn.Module, teacher: nn.Module | None) -> list[Stage]:
        """The AB-only initialisation stage (``stage1_epochs > 0``): the student and the
        connectors, Adam at ``stage1_lr``, the teacher frozen. (Only the student is put in
        train mode, as before the stage runner: the connectors stay in the mode they are in.)"""
        if self.stage1_epochs == 0:
            return []
        if teacher is None:
            raise TrainingError("ab's initialisation stage needs the teacher network; pass it")
        params = [p for p in (*student.parameters(), *self.connectors.parameters())
                  if p.requires_grad]  # fmt: skip

        return [
            Stage(
                "stage1",
                self.stage1_epochs,
                params,
                partial(torch.optim.Adam, lr=self.stage1_lr),
                partial(
                    stage_loss,
                    teacher,
                    self.layers("teacher"),
                    self._loss,
                    student,
                    self.layers("student"),
                ),  # fmt: skip
                train=(student,),
                eval=(teacher,),
            )
        ]

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        loss = self._loss(student, teacher)
        return {"loss": loss, "ab/ab": loss}

    def _loss(self, student: Outputs, teacher: Outputs | None) -> Tensor:
        if len(self.connectors) != len(self.layer_pairs()):
            raise TrainingError("ab was not bound; bind the loss (Trainer.fit does) first")
        pairs = [
            same_size(connector(s), t)
            for connector, (s, t) in zip(self.connectors, self.feature_pairs(student, teacher))
        ]  # (s, t) per pair, s through its connector
        return ab_loss([s for s, _ in pairs], [t for _, t in pairs], self.margin)
