"""Feature distillation: the student matches the teacher's intermediate representations.

``hint`` is FitNets (Romero et al. 2015, "FitNets: Hints for Thin Deep Nets"), the feature
method of paper 003 (section 3: a regressor on the student's middle layer predicts the
teacher's, ``L = 0.5 * ||f_t - r(f_s)||^2``). Its regressor is sized at bind time from the
features the two networks actually produce, so no channel count is typed into a config.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillscope.checks import check_int, check_positive
from distillscope.contracts import Batch, Outputs
from distillscope.distill.base import BindContext, LossTerm, Stage
from distillscope.distill.logit import require_teacher
from distillscope.errors import ConfigError, TrainingError
from distillscope.models.forward import forward_outputs
from distillscope.models.taps import FeatureTap
from distillscope.registry import register_loss


def check_path(name: str, value: object) -> str:
    """``value`` if it can be a module path (a non-empty string), else a one-line ConfigError."""
    if not isinstance(value, str) or not value or value.strip() != value:
        raise ConfigError(
            f"{name}={value!r} is not a module path; give a path of model.named_modules(), "
            "e.g. 'layer2'"
        )
    return value


def check_paths(name: str, student: object, teacher: object) -> tuple[list[str], list[str]]:
    """Two equally long, non-empty lists of module paths (layer pairs), or a ConfigError."""
    for side, value in (("student_layers", student), ("teacher_layers", teacher)):
        if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
            raise ConfigError(
                f"{name}.{side}={value!r} is not a list of module paths; give e.g. "
                "[layer1, layer2, layer3]"
            )
    s = [check_path(f"{name}.student_layers", v) for v in student]  # type: ignore[union-attr]
    t = [check_path(f"{name}.teacher_layers", v) for v in teacher]  # type: ignore[union-attr]
    if len(s) != len(t):
        raise ConfigError(
            f"{name}: {len(s)} student layers but {len(t)} teacher layers; give one teacher "
            "layer per student layer"
        )
    return s, t


class PairedFeatureTerm(LossTerm):
    """A term reading one student feature and one teacher feature (``student_layer``,
    ``teacher_layer``), detaching the teacher's."""

    needs: ClassVar[set[str]] = {"features", "teacher"}

    def __init__(self, student_layer: str, teacher_layer: str) -> None:
        super().__init__()
        self.student_layer = check_path(f"{self.name}.student_layer", student_layer)
        self.teacher_layer = check_path(f"{self.name}.teacher_layer", teacher_layer)

    def student_paths(self) -> list[str]:
        return [self.student_layer]

    def teacher_paths(self) -> list[str]:
        return [self.teacher_layer]

    def pair(self, student: Outputs, teacher: Outputs | None) -> tuple[Tensor, Tensor]:
        """``(f_s, f_t)``: the student's feature and the teacher's, detached."""
        teacher = require_teacher(self.name, teacher)
        return student.features[self.student_layer], teacher.features[self.teacher_layer].detach()

    def extra_repr(self) -> str:
        return f"student_layer={self.student_layer!r}, teacher_layer={self.teacher_layer!r}"


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
class Hint(LossTerm):
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
        student_layer: Student module path of the guided layer (paper 003: the middle).
        teacher_layer: Teacher module path of the hint layer.
        stage1_epochs: Passes of the hint-only first stage (0: none, the single-stage form).
        stage1_lr: Learning rate of the first stage.

    Parts:
        ``hint/hint``: the mean squared error (equal to ``loss``).
    """

    needs: ClassVar[set[str]] = {"features", "teacher"}

    def __init__(
        self,
        student_layer: str,
        teacher_layer: str,
        stage1_epochs: int = 0,
        stage1_lr: float = 0.001,
    ) -> None:
        super().__init__()
        self.student_layer = check_path("hint.student_layer", student_layer)
        self.teacher_layer = check_path("hint.teacher_layer", teacher_layer)
        self.stage1_epochs = check_int("hint.stage1_epochs", stage1_epochs, minimum=0)
        self.stage1_lr = check_positive("hint.stage1_lr", stage1_lr)
        self.regressor: nn.Module | None = None

    def student_paths(self) -> list[str]:
        return [self.student_layer]

    def teacher_paths(self) -> list[str]:
        return [self.teacher_layer]

    def bind(self, ctx: BindContext) -> None:
        if ctx.teacher_outputs is None:
            raise ConfigError("hint needs a teacher; give the student one")
        s = ctx.student_outputs.features[self.student_layer]
        t = ctx.teacher_outputs.features[self.teacher_layer]
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

        @contextmanager
        def hint_only() -> Iterator[Callable[[Batch], Tensor]]:
            with (
                FeatureTap(student, [self.student_layer]) as s_tap,
                FeatureTap(teacher, [self.teacher_layer], detach=True) as t_tap,
            ):

                def loss_of(batch: Batch) -> Tensor:
                    with torch.no_grad():
                        t = forward_outputs(teacher, batch.inputs, t_tap)
                    return self._mse(forward_outputs(student, batch.inputs, s_tap), t)

                yield loss_of

        return [
            Stage(
                "stage1",
                self.stage1_epochs,
                [p for p in params if p.requires_grad],
                partial(torch.optim.Adam, lr=self.stage1_lr),
                hint_only,
                train=(student, regressor),
                eval=(teacher,),
            )
        ]

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        teacher = require_teacher(self.name, teacher)
        loss = self._mse(student, teacher)
        return {"loss": loss, "hint/hint": loss}

    def _mse(self, student: Outputs, teacher: Outputs) -> Tensor:
        s = student.features[self.student_layer]
        t = teacher.features[self.teacher_layer].detach()
        return F.mse_loss(self._regressor()(s.contiguous()), t)  # ()

    def _regressor(self) -> nn.Module:
        if self.regressor is None:
            raise TrainingError("hint was not bound; bind the loss (Trainer.fit does) first")
        return self.regressor

    def extra_repr(self) -> str:
        return f"student_layer={self.student_layer!r}, teacher_layer={self.teacher_layer!r}"
