"""Feature distillation: the student matches the teacher's intermediate representations.

``hint`` is FitNets (Romero et al. 2015, "FitNets: Hints for Thin Deep Nets"), the feature
method of paper 003 (section 3: a regressor on the student's middle layer predicts the
teacher's, ``L = 0.5 * ||f_t - r(f_s)||^2``). Its regressor is sized at bind time from the
features the two networks actually produce, so no channel count is typed into a config.
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillscope.checks import check_int, check_positive
from distillscope.contracts import Batch, Outputs
from distillscope.distill.base import BindContext, Stage
from distillscope.distill.feature_base import SingleLayerTerm, stage_loss
from distillscope.errors import ConfigError, TrainingError
from distillscope.registry import register_loss


def build_regressor(student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> nn.Module:
    """A module mapping a student feature of ``student_shape`` to ``teacher_shape`` (no batch).

    Feature maps ``(C, H, W)``, following RepDistiller's ``ConvReg`` (the reference FitNets
    implementation behind paper 000's tables): a 3x3 stride-2 convolution when the student's map
    is twice as large, a 4x4 stride-2 transposed convolution when it is half as large, else a
    ``(1 + H_s - H_t) x (1 + W_s - W_t)`` convolution; then batch norm and ReLU as there. Vectors
    ``(D,)``: a linear layer. A map to a vector or a vector to a map (a CNN teacher and an MLP
    student): a linear layer on the flattened feature, reshaped to the teacher's.

    Raises:
        ConfigError: The student's map is smaller than the teacher's (other than by half), or a
            feature is neither a vector nor a map.
    """
    s, t = tuple(student_shape), tuple(teacher_shape)
    if len(s) == 3 and len(t) == 3:
        (cs, hs, ws), (ct, ht, wt) = s, t
        if hs == 2 * ht and ws == 2 * wt:
            conv: nn.Module = nn.Conv2d(cs, ct, 3, stride=2, padding=1)
        elif 2 * hs == ht and 2 * ws == wt:
            conv = nn.ConvTranspose2d(cs, ct, 4, stride=2, padding=1)
        elif hs >= ht and ws >= wt:
            conv = nn.Conv2d(cs, ct, (1 + hs - ht, 1 + ws - wt))
        else:
            raise ConfigError(
                f"hint: the student's feature map {s} is smaller than the teacher's {t}; pick a "
                "student layer at least as large (or exactly half as large)"
            )
        return nn.Sequential(conv, nn.BatchNorm2d(ct), nn.ReLU())
    if len(s) in (1, 3) and len(t) in (1, 3):
        d_s, d_t = int(torch.tensor(s).prod()), int(torch.tensor(t).prod())
        return nn.Sequential(nn.Flatten(), nn.Linear(d_s, d_t), nn.Unflatten(1, t))
    raise ConfigError(
        f"hint: cannot map a student feature of shape {s} to a teacher feature of shape {t}; "
        "tap layers that output vectors (D,) or maps (C, H, W)"
    )


@register_loss("hint")
class Hint(SingleLayerTerm):
    """FitNets hint loss (Romero et al. 2015; paper 003, section 3).

    ``L = mean((f_t - r(f_s))^2)``

    The paper writes ``0.5 * ||f_t - r(f_s)||^2`` per sample; the reference implementations
    (RepDistiller's ``HintLoss``, torchdistill's FitNet) average the squared error over every
    element instead. We follow them (the factor ``2 / (C H W)`` between the two is absorbed in
    the term's weight, e.g. ``hint: {weight: 100}`` as RepDistiller's CIFAR setting). ``r`` is
    :func:`build_regressor`, built at bind time from the two features' shapes and trained with
    the student. The teacher's feature is detached.

    With ``stage1_epochs > 0``, FitNets' first stage runs before ordinary training: the student
    (its layers up to the hint layer receive gradients) and ``r`` are trained on the hint loss
    alone for that many passes over the training set, with Adam at ``stage1_lr`` (a
    :class:`~distillscope.distill.base.Stage` named ``stage1``, run by the trainer's stage
    runner).

    Args:
        student_layer: Student module path of the guided layer (paper 003: the middle);
            default: the middle one of the student's ``model.feature_layers``
            (``feature_layers[(n - 1) // 2]``, ``layer2`` of the zoo's CIFAR ResNets).
        teacher_layer: Teacher module path of the hint layer; default: the middle one of the
            teacher's ``model.feature_layers``.
        stage1_epochs: Passes of the hint-only first stage (0: none, the single-stage form).
        stage1_lr: Learning rate of the first stage.

    Parts:
        ``hint/hint``: the mean squared error (equal to ``loss``).
    """

    default_layers: ClassVar[str | None] = "middle"

    def __init__(
        self,
        student_layer: str | None = None,
        teacher_layer: str | None = None,
        stage1_epochs: int = 0,
        stage1_lr: float = 0.001,
    ) -> None:
        super().__init__(student_layer, teacher_layer)
        self.stage1_epochs = check_int("hint.stage1_epochs", stage1_epochs, minimum=0)
        self.stage1_lr = check_positive("hint.stage1_lr", stage1_lr)
        self.regressor: nn.Module | None = None

    def bind(self, ctx: BindContext) -> None:
        teacher = self.bind_teacher(ctx)
        s = ctx.student_outputs.features[self.student_layer]
        t = teacher.features[self.teacher_layer]
        self.regressor = build_regressor(tuple(s.shape[1:]), tuple(t.shape[1:]))
        self.regressor.to(s.device)

    def stages(self, student: nn.Module, teacher: nn.Module | None) -> list[Stage]:
        """FitNets' first stage (``stage1_epochs > 0``): the student and ``r`` on the hint
        loss alone, Adam at ``stage1_lr``, the teacher frozen."""
        if self.stage1_epochs == 0:
            return []
        if teacher is None:
            raise TrainingError("hint's first stage needs the teacher network; pass it")
        regressor = self._regressor()
        params = [*student.parameters(), *regressor.parameters()]

        return [
            Stage(
                "stage1",
                self.stage1_epochs,
                [p for p in params if p.requires_grad],
                partial(torch.optim.Adam, lr=self.stage1_lr),
                partial(
                    stage_loss,
                    teacher,
                    [self.teacher_layer],
                    self._mse,
                    student,
                    [self.student_layer],
                ),  # fmt: skip
                train=(student, regressor),
                eval=(teacher,),
            )
        ]

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        loss = self._mse(student, teacher)
        return {"loss": loss, "hint/hint": loss}

    def _mse(self, student: Outputs, teacher: Outputs | None) -> Tensor:
        s, t = self.pair(student, teacher)
        return F.mse_loss(self._regressor()(s.contiguous()), t)  # ()

    def _regressor(self) -> nn.Module:
        if self.regressor is None:
            raise TrainingError("hint was not bound; bind the loss (Trainer.fit does) first")
        return self.regressor
