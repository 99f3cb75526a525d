"""Variants of logit distillation: decoupled KD and teacher-free KD."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from distillscope.checks import check_int, check_range
from distillscope.contracts import Batch, Outputs
from distillscope.distill.base import LossTerm
from distillscope.distill.logit import require_teacher
from distillscope.functional.logit import dkd_parts, virtual_teacher_kl
from distillscope.registry import register_loss


@register_loss("dkd")
class DecoupledKD(LossTerm):
    """Decoupled knowledge distillation (Zhao, Cui, Song, Qiu & Liang 2022, eq. 7).

    With ``b = [p_gt, 1 - p_gt]`` (target vs all non-target probability at temperature ``T``)
    and ``p_hat`` the distribution over the non-target classes alone:
    ``TCKD = T^2 KL(b_t || b_s)``, ``NCKD = T^2 KL(p_hat_t || p_hat_s)``,
    ``L = CE(z_s, y) + w * (alpha * TCKD + beta * NCKD)``,
    ``w = min((step + 1) / warmup_steps, 1)`` at the ``step``-th step from 0 (1 without warm-up).

    As mdistiller (the authors' code): KL summed over classes and averaged over the batch, the
    non-target distribution from logits with the target class masked out, ``alpha = 1``,
    ``beta = 8``, ``T = 4``, CE weight 1, and a linear warm-up of the distillation part (20 of
    240 epochs there; ours counts optimizer steps, as the term cannot see epochs: set
    ``warmup_steps`` to 20 epochs' worth of steps for the same schedule). The step count is a
    buffer saved with the student's checkpoint, so a resumed run continues the warm-up.

    Args:
        alpha: Weight of TCKD (1).
        beta: Weight of NCKD (8).
        temperature: ``T > 0`` (4).
        warmup_steps: Steps over which the distillation part ramps up linearly (0: none).

    Parts: ``dkd/ce``, ``dkd/tckd``, ``dkd/nckd`` (unweighted).
    """

    needs: ClassVar[set[str]] = {"logits", "teacher"}

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 8.0,
        temperature: float = 4.0,
        warmup_steps: int = 0,
    ) -> None:
        super().__init__()
        self.alpha = check_range("dkd.alpha", alpha, 0.0)
        self.beta = check_range("dkd.beta", beta, 0.0)
        self.temperature = check_range("dkd.temperature", temperature, 0.0, low_open=True)
        self.warmup_steps = check_int("dkd.warmup_steps", warmup_steps, minimum=0)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        z_t = require_teacher(self.name, teacher).logits.detach()
        z_s, y = student.logits, batch.targets
        tckd, nckd = dkd_parts(z_s, z_t, y, self.temperature)  # (), ()
        ce = F.cross_entropy(z_s, y)  # ()
        weight = 1.0
        if self.warmup_steps:
            weight = min((float(self.steps.item()) + 1.0) / self.warmup_steps, 1.0)
        if self.training:
            self.steps += 1
        loss = ce + weight * (self.alpha * tckd + self.beta * nckd)
        return {"loss": loss, "dkd/ce": ce, "dkd/tckd": tckd, "dkd/nckd": nckd}

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, temperature={self.temperature}"


@register_loss("tf_kd")
class TeacherFreeKD(LossTerm):
    """Teacher-free KD with a virtual teacher, Tf-KD_reg (Yuan, Tay, Li, Wang & Feng 2020).

    The virtual teacher puts ``a`` on the true class and ``(1 - a) / (K - 1)`` on each other
    class (``p_d``); ``L = (1 - alpha) CE(z, y) + alpha * m * KL(softmax(p_d / T) || softmax(z))``.
    No teacher network is needed (paper 002's tables list it as "Tf-KD").

    As the authors' published loss function: the virtual distribution is softened by applying
    a softmax to ``p_d / T`` (to the probabilities, not to logits), the student side is at
    temperature 1, the KL is averaged over every element (PyTorch's ``KLDivLoss()`` default,
    i.e. the batch mean divided by ``K``), and ``m`` is their ``multiplier``; ``a = 0.99``.
    ``alpha``, ``T`` and ``m`` were tuned per network there; the defaults (0.1, 20, 100) are
    their ResNet18 setting on CIFAR-100 (``experiments/base_experiments/base_resnet18/
    params.json`` of their repository: ``reg_alpha`` 0.1, ``reg_temperature`` 20,
    ``multiplier`` 100). Their other networks use other values (T 10 or 40, alpha up to 0.95,
    ``m`` 1 or 50 where set); tune likewise. The self-training form Tf-KD_self is ``kd``
    from a teacher of the student's own architecture (``configs/methods/born-again.yaml``).

    Args:
        alpha: Weight of the virtual-teacher term in ``[0, 1]`` (0.1).
        temperature: ``T > 0`` (20).
        multiplier: ``m >= 0`` (100).
        correct_prob: ``a`` in ``(0, 1)`` (0.99).

    Parts: ``tf_kd/ce``, ``tf_kd/virtual`` (the KL times ``m``, unweighted by ``alpha``).
    """

    def __init__(
        self,
        alpha: float = 0.1,
        temperature: float = 20.0,
        multiplier: float = 100.0,
        correct_prob: float = 0.99,
    ) -> None:
        super().__init__()
        self.alpha = check_range("tf_kd.alpha", alpha, 0.0, 1.0)
        self.temperature = check_range("tf_kd.temperature", temperature, 0.0, low_open=True)
        self.multiplier = check_range("tf_kd.multiplier", multiplier, 0.0)
        self.correct_prob = check_range(
            "tf_kd.correct_prob", correct_prob, 0.0, 1.0, low_open=True, high_open=True
        )

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        z, y = student.logits, batch.targets
        virtual = virtual_teacher_kl(z, y, self.temperature, self.correct_prob, self.multiplier)
        ce = F.cross_entropy(z, y)  # ()
        loss = (1.0 - self.alpha) * ce + self.alpha * virtual
        return {"loss": loss, "tf_kd/ce": ce, "tf_kd/virtual": virtual}

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, temperature={self.temperature}, multiplier={self.multiplier}"
