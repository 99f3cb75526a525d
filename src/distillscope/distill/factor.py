"""Factor transfer (FT; Kim, Park & Kwak 2018, "Paraphrasing Complex Network").

A paraphraser (a convolutional auto-encoder on the teacher's feature map) is first trained to
reconstruct the teacher's features; its code is the teacher's "factor". A translator on the
student's feature map produces the student's factor, and the student learns to match the
teacher's. Paper 002 builds IE-FT on it.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillscope.checks import check_int, check_positive, check_range
from distillscope.contracts import Batch, Outputs
from distillscope.distill.base import BindContext, Stage
from distillscope.distill.feature_base import SingleLayerTerm, stage_loss
from distillscope.errors import TrainingError
from distillscope.functional.attention import same_size
from distillscope.functional.feature_transfer import factor, factor_transfer_loss
from distillscope.registry import register_loss

__all__ = ["FactorTransfer", "factor"]


def _conv_stack(channels: list[int], transpose: bool = False) -> nn.Sequential:
    """3x3 (transposed) convolutions, stride 1, each followed by LeakyReLU(0.1)."""
    conv = nn.ConvTranspose2d if transpose else nn.Conv2d
    layers: list[nn.Module] = []
    for c_in, c_out in zip(channels, channels[1:]):
        layers += [conv(c_in, c_out, 3, stride=1, padding=1), nn.LeakyReLU(0.1)]
    return nn.Sequential(*layers)


@register_loss("ft")
class FactorTransfer(SingleLayerTerm):
    """Factor transfer (Kim et al. 2018, eq. 1-3; paper 002's FT).

    Paraphraser on the teacher's map ``(C_t, H, W)``: encoder ``C_t -> C_t -> k C_t -> k C_t``,
    decoder back to ``C_t`` (3x3 convolutions, LeakyReLU 0.1), trained in a stage before the
    student's training (``ft/paraphraser``, run by the trainer's stage runner) to reconstruct the
    teacher's features (mean squared error) and then frozen (:meth:`prepare`). Translator on the
    student's map: ``C_s -> C_s -> k C_t -> k C_t``, trained with the student.
    ``L = mean |F_t / ||F_t|| - F_s / ||F_s|| |`` between the flattened factors (p = 1).

    The loss and the modules follow the FT authors' code (``Jangho-Kim/Factor-Transfer-pytorch``:
    ``FT(x) = normalize(x.view(B, -1))`` and ``nn.L1Loss()``; paraphraser and translator without
    batch norm), and torchdistill's ``FTLoss`` (``p = 1``, mean reduction) computes the same
    loss: rate ``k = 0.5``, LeakyReLU 0.1, L1 between the L2-normalised flattened factors.
    RepDistiller's ``FactorTransfer`` is another loss: its factor is the channel mean of the
    squared code, a ``H x W`` map per sample (as AT's), L2-normalised, then the mean L1; its
    translator has batch norm. Its CIFAR weight of 200 was set for that form; on the same codes
    ours is smaller (2.4 times on a fresh ResNet-20 / ResNet-8 pair at ``layer3``), so
    ``ft.yaml``'s 200 pulls less than RepDistiller's (the authors weigh theirs 500 on
    CIFAR-10). The paraphraser's pre-training is ours: ``paraphraser_epochs`` passes of Adam at
    ``paraphraser_lr`` on the mean squared reconstruction error (a CPU-sized choice;
    RepDistiller: 30 epochs of SGD at 0.01 for its ResNets, squared error; the authors: SGD at
    0.1, L1 reconstruction, a few epochs). A larger map is average-pooled to the smaller one's
    size. Both modules are built at bind from the two maps' shapes.

    The layers (``student_layer``, ``teacher_layer``: feature maps) default to each model's
    ``cam_layer``, its last feature map (``layer3`` of the zoo's CIFAR ResNets).

    Args:
        rate: ``k`` in ``(0, 1]``, the factor's channels per teacher channel (0.5).
        paraphraser_epochs: Passes over the training set to pre-train the paraphraser (1).
        paraphraser_lr: Adam learning rate of that stage (0.001).

    Parts: ``ft/ft``; the paraphraser's last reconstruction error is ``paraphraser_loss``.
    """

    default_layers: ClassVar[str | None] = "cam"

    def __init__(
        self,
        student_layer: str | None = None,
        teacher_layer: str | None = None,
        rate: float = 0.5,
        paraphraser_epochs: int = 1,
        paraphraser_lr: float = 0.001,
    ) -> None:
        super().__init__(student_layer, teacher_layer)
        self.rate = check_range("ft.rate", rate, 0.0, 1.0, low_open=True)
        self.paraphraser_epochs = check_int("ft.paraphraser_epochs", paraphraser_epochs, minimum=0)
        self.paraphraser_lr = check_positive("ft.paraphraser_lr", paraphraser_lr)
        self.encoder: nn.Module | None = None
        self.decoder: nn.Module | None = None
        self.translator: nn.Module | None = None
        self.paraphraser_loss = float("nan")

    def bind(self, ctx: BindContext) -> None:
        s, t = self.bound_maps(ctx, "paraphrases")
        c_s, c_t = s.shape[1], t.shape[1]
        c_f = max(1, int(c_t * self.rate))
        device = s.device
        self.encoder = _conv_stack([c_t, c_t, c_f, c_f]).to(device)
        self.decoder = _conv_stack([c_f, c_f, c_t, c_t], transpose=True).to(device)
        self.translator = _conv_stack([c_s, c_s, c_f, c_f]).to(device)

    def stages(self, student: nn.Module, teacher: nn.Module | None) -> list[Stage]:
        """The paraphraser's stage (``paraphraser_epochs > 0``): encoder and decoder learn to
        reconstruct the teacher's map (mean squared error), Adam at ``paraphraser_lr``."""
        encoder, decoder = self._paraphraser()
        if not self.paraphraser_epochs:
            return []
        if teacher is None:
            raise TrainingError("ft's paraphraser stage needs the teacher network; pass it")

        def reconstruction(_: Outputs | None, teacher_out: Outputs) -> Tensor:
            t = teacher_out.features[self.teacher_layer]
            loss = F.mse_loss(decoder(encoder(t)), t)
            self.paraphraser_loss = float(loss.detach())
            return loss

        return [
            Stage(
                "paraphraser",
                self.paraphraser_epochs,
                [*encoder.parameters(), *decoder.parameters()],
                partial(torch.optim.Adam, lr=self.paraphraser_lr),
                partial(stage_loss, teacher, [self.teacher_layer], reconstruction),
                eval=(teacher,),
            )
        ]

    def prepare(
        self, student: nn.Module, teacher: nn.Module | None, batches: Iterable[Batch]
    ) -> None:
        """Freeze the paraphraser (trained by its stage, :meth:`stages`)."""
        encoder, decoder = self._paraphraser()
        for p in (*encoder.parameters(), *decoder.parameters()):
            p.requires_grad_(False)  # frozen while the student trains (not optimised)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        encoder, _ = self._paraphraser()
        assert self.translator is not None
        s, t = same_size(*self.pair(student, teacher))
        with torch.no_grad():
            code_t = encoder(t)  # (B, k C_t, H, W), fixed
        loss = factor_transfer_loss(self.translator(s), code_t)  # ()
        return {"loss": loss, "ft/ft": loss}

    def _paraphraser(self) -> tuple[nn.Module, nn.Module]:
        if self.encoder is None or self.decoder is None or self.translator is None:
            raise TrainingError("ft was not bound; bind the loss (Trainer.fit does) first")
        return self.encoder, self.decoder
