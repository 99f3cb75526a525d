"""Factor transfer (FT): the student's translated factor matches the teacher's paraphrased one.

Kim, Park & Kwak 2018, "Paraphrasing Complex Network: Network Compression via Factor
Transfer" (NeurIPS). A paraphraser (a convolutional auto-encoder) is first trained to
reconstruct the teacher's feature map; its encoder then gives the teacher's *factor*, and a
translator on the student learns to produce the same factor.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillscope.checks import check_int, check_positive
from distillscope.contracts import Batch, Outputs
from distillscope.distill.base import BindContext, LossTerm
from distillscope.distill.feature_pairs import MAPS, check_layer, pair_shapes
from distillscope.distill.logit import require_teacher
from distillscope.errors import TrainingError
from distillscope.functional.feature import factor_loss
from distillscope.models.forward import forward_outputs
from distillscope.models.taps import FeatureTap
from distillscope.registry import register_loss

# Kim et al. 2018, section 4: the paraphrase rate k = 0.5 (factor channels = k * C_t).
FT_RATE = 0.5
# RepDistiller's ``init_epochs``: the paraphraser's reconstruction stage lasts 30 epochs.
FT_STAGE1_EPOCHS = 30
# RepDistiller trains the paraphraser with SGD at 0.01 for ResNet / WRN students (momentum 0.9,
# weight decay 5e-4 as its main training).
FT_STAGE1_LR = 0.01
STAGE1_MOMENTUM = 0.9
STAGE1_WEIGHT_DECAY = 5e-4
# The paraphraser's and translator's activations (paper, section 3.1; RepDistiller).
LEAKY_SLOPE = 0.1


def _conv_block(c_in: int, c_out: int, *, transposed: bool = False, bn: bool) -> list[nn.Module]:
    conv = nn.ConvTranspose2d if transposed else nn.Conv2d
    layers: list[nn.Module] = [conv(c_in, c_out, 3, 1, 1)]
    if bn:
        layers.append(nn.BatchNorm2d(c_out))
    return [*layers, nn.LeakyReLU(LEAKY_SLOPE)]


class Paraphraser(nn.Module):
    """Three 3x3 convolutions down to ``m`` channels, three transposed ones back (stride 1).

    The paper's paraphraser (section 3.1) in RepDistiller's form: LeakyReLU(0.1) after every
    layer and no batch norm, so a frozen paraphraser computes the same in train and eval mode.
    """

    def __init__(self, channels: int, factor_channels: int) -> None:
        super().__init__()
        c, m = channels, factor_channels
        self.encoder = nn.Sequential(
            *_conv_block(c, c, bn=False), *_conv_block(c, m, bn=False), *_conv_block(m, m, bn=False)
        )
        self.decoder = nn.Sequential(
            *_conv_block(m, m, transposed=True, bn=False),
            *_conv_block(m, c, transposed=True, bn=False),
            *_conv_block(c, c, transposed=True, bn=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))  # (B, C, H, W) reconstruction


def translator(channels: int, factor_channels: int) -> nn.Sequential:
    """The student's translator: three 3x3 convolutions with batch norm and LeakyReLU(0.1)."""
    c, m = channels, factor_channels
    return nn.Sequential(
        *_conv_block(c, c, bn=True), *_conv_block(c, m, bn=True), *_conv_block(m, m, bn=True)
    )


@register_loss("ft")
class FactorTransfer(LossTerm):
    """Factor transfer (Kim et al. 2018, "Paraphrasing Complex Network", NeurIPS).

    ``L = mean |F_s / |F_s|_2 - F_t / |F_t|_2|``, ``F_t = P_enc(f_t)``, ``F_s = T(f_s)``

    (paper, eq. 3 with ``p = 1``). ``P`` is the paraphraser (:class:`Paraphraser`), trained
    in :meth:`prepare` to reconstruct the teacher's feature (``mean (P(f_t) - f_t)^2``, paper
    eq. 1) and frozen afterwards; ``T`` the translator, trained with the student. Both are
    built at bind from the two features' shapes, with ``m = max(1, int(k C_t))`` factor
    channels. The factors are flattened per image and L2-normalised; the L1 distance is
    averaged over the elements as torchdistill, the KD-Zoo and mmrazor do (RepDistiller
    instead reduces each factor to a channel mean of squares before normalising, an attention
    map rather than the paper's factor; not followed). Where the factors differ in size, the
    larger is average-pooled to the smaller (RepDistiller). RepDistiller weighs the loss by
    200 (give the term ``weight: 200``); the paper used the last residual group's output.

    The reconstruction stage uses SGD (momentum 0.9, weight decay 5e-4) at ``stage1_lr`` for
    ``stage1_epochs`` passes over the training set, as RepDistiller's ``init`` stage.

    Args:
        student_layer: Student module path (a feature map).
        teacher_layer: Teacher module path (a feature map).
        rate: The paraphrase rate ``k > 0``; the paper's 0.5.
        stage1_epochs: Passes of the paraphraser's reconstruction stage (>= 1: the method
            needs a trained paraphraser); RepDistiller's 30.
        stage1_lr: Learning rate of that stage; RepDistiller's 0.01.

    Parts:
        ``ft/factor``: the factor distance (equal to ``loss``).

    Raises:
        ConfigError: At bind, a pair that is not two feature maps ``(C, H, W)``.
    """

    name: ClassVar[str] = "ft"
    needs: ClassVar[set[str]] = {"features", "teacher"}

    def __init__(
        self,
        student_layer: str,
        teacher_layer: str,
        rate: float = FT_RATE,
        stage1_epochs: int = FT_STAGE1_EPOCHS,
        stage1_lr: float = FT_STAGE1_LR,
    ) -> None:
        super().__init__()
        self.student_layer = check_layer("ft.student_layer", student_layer)
        self.teacher_layer = check_layer("ft.teacher_layer", teacher_layer)
        self.rate = check_positive("ft.rate", rate)
        self.stage1_epochs = check_int("ft.stage1_epochs", stage1_epochs, minimum=1)
        self.stage1_lr = check_positive("ft.stage1_lr", stage1_lr)
        self.paraphraser: Paraphraser | None = None
        self.translator: nn.Module | None = None
        #: Mean reconstruction error of the paraphraser's last stage-1 pass (``None`` before).
        self.reconstruction_error: float | None = None

    def student_paths(self) -> list[str]:
        return [self.student_layer]

    def teacher_paths(self) -> list[str]:
        return [self.teacher_layer]

    def bind(self, ctx: BindContext) -> None:
        s, t = pair_shapes(self.name, ctx, self.student_layer, self.teacher_layer, MAPS)
        m = max(1, int(self.rate * t[0]))
        device = ctx.student_outputs.features[self.student_layer].device
        self.paraphraser = Paraphraser(t[0], m).to(device).requires_grad_(False)
        self.translator = translator(s[0], m).to(device)

    def prepare(
        self, student: nn.Module, teacher: nn.Module | None, batches: Iterable[Batch]
    ) -> None:
        """Train the paraphraser to reconstruct the teacher's feature, then freeze it."""
        if teacher is None:
            raise TrainingError("ft's paraphraser stage needs the teacher network; pass it")
        paraphraser = self._modules_bound()[0]
        paraphraser.requires_grad_(True).train()
        optimizer = torch.optim.SGD(
            paraphraser.parameters(),
            lr=self.stage1_lr,
            momentum=STAGE1_MOMENTUM,
            weight_decay=STAGE1_WEIGHT_DECAY,
        )
        teacher.eval()
        try:
            with FeatureTap(teacher, [self.teacher_layer], detach=True) as tap:
                for _ in range(self.stage1_epochs):
                    total, count = 0.0, 0
                    for batch in batches:
                        with torch.no_grad():
                            t = forward_outputs(teacher, batch.inputs, tap)
                        f_t = t.features[self.teacher_layer]  # (B, C, H, W)
                        loss = F.mse_loss(paraphraser(f_t), f_t)  # ()
                        optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                        optimizer.step()
                        total, count = total + loss.item(), count + 1
                    self.reconstruction_error = total / max(count, 1)
        finally:
            paraphraser.requires_grad_(False)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        teacher = require_teacher(self.name, teacher)
        paraphraser, translate = self._modules_bound()
        f_s = student.features[self.student_layer]  # (B, C_s, H_s, W_s)
        f_t = teacher.features[self.teacher_layer].detach()  # (B, C_t, H_t, W_t)
        with torch.no_grad():
            factor_t = paraphraser.encoder(f_t)  # (B, m, H_t, W_t)
        loss = factor_loss(translate(f_s.contiguous()), factor_t)  # ()
        return {"loss": loss, "ft/factor": loss}

    def _modules_bound(self) -> tuple[Paraphraser, nn.Module]:
        if self.paraphraser is None or self.translator is None:
            raise TrainingError("ft was not bound; bind the loss (Trainer.fit does) first")
        return self.paraphraser, self.translator

    def extra_repr(self) -> str:
        return (
            f"student_layer={self.student_layer!r}, teacher_layer={self.teacher_layer!r}, "
            f"rate={self.rate:g}"
        )
