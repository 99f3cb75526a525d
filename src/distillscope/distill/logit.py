"""Logit distillation: the student matches the teacher's softened class distribution.

``kd`` is Hinton et al.'s knowledge distillation as written in paper 000, eq. 1 (paper 003
calls it "KL"); ``soft_targets`` is the defensive-distillation objective of paper 004, where
the student learns from the teacher's soft labels alone.
"""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from distillscope.checks import check_range
from distillscope.contracts import Batch, Outputs
from distillscope.distill.base import LossTerm
from distillscope.errors import TrainingError
from distillscope.functional.soft_targets import kd_loss, soft_cross_entropy, soft_labels
from distillscope.registry import register_loss

# Paper 000, appendix B.2: "We set the temperature to four" for every KD student.
KD_TEMPERATURE = 4.0
# Paper 000, appendix B.2 (its main setting): "alpha ... was set to 0.5 for training"; appendix
# C sweeps {0.1, 0.5, 0.9} around it, and B.3's class-similarity runs use 0.5 too.
KD_ALPHA = 0.5
# Paper 004, section 4.1: high-temperature teachers and students use T >= 20; 20 is the lowest.
SOFT_TARGETS_TEMPERATURE = 20.0


def require_teacher(term: str, teacher: Outputs | None) -> Outputs:
    """Return ``teacher`` or raise :class:`TrainingError` if a teacher-based term got none.

    Args:
        term: Name of the loss term, for the message.
        teacher: The teacher's outputs handed to the term.

    Returns:
        ``teacher``, now known not to be ``None``.
    """
    if teacher is None:
        raise TrainingError(
            f"loss term {term!r} needs the teacher's outputs but got none; give the student "
            f"a teacher (or a teacher cache), or remove {term!r} from its loss"
        )
    return teacher


@register_loss("kd")
class KnowledgeDistillation(LossTerm):
    """Knowledge distillation (Hinton et al. 2015; paper 000, eq. 1; paper 003, eq. 1).

    ``L = (1 - alpha) CE(z_s, y) + alpha T^2 KL(sigma(z_t / T) || sigma(z_s / T))``

    The ``T^2`` factor keeps the soft term's gradients on the scale of the hard term's
    (Hinton et al.), so ``alpha`` means the same at every temperature. The teacher's logits
    are detached: it is a fixed target.

    Args:
        temperature: ``T > 0``; paper 000 uses 4.
        alpha: Weight of the ``T^2 KL`` term in ``[0, 1]``; ``1 - alpha`` weighs the CE. Paper
            000's main setting (appendix B.2): 0.5.

    Parts:
        ``kd/soft``: ``T^2 KL(...)``, unweighted.
        ``kd/hard``: ``CE(z_s, y)``, unweighted.
    """

    needs: ClassVar[set[str]] = {"logits", "teacher"}

    def __init__(self, temperature: float = KD_TEMPERATURE, alpha: float = KD_ALPHA) -> None:
        super().__init__()
        self.temperature = check_range("kd.temperature", temperature, 0.0, low_open=True)
        self.alpha = check_range("kd.alpha", alpha, 0.0, 1.0)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        teacher = require_teacher(self.name, teacher)
        soft = kd_loss(student.logits, teacher.logits.detach(), self.temperature)  # ()
        hard = F.cross_entropy(student.logits, batch.targets)  # ()
        return {
            "loss": (1.0 - self.alpha) * hard + self.alpha * soft,
            "kd/soft": soft,
            "kd/hard": hard,
        }

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, alpha={self.alpha}"


@register_loss("soft_targets")
class SoftTargets(LossTerm):
    """Training on the teacher's soft labels alone: defensive distillation (paper 004, 4.1).

    ``L = mean_b(-sum_k sigma(z_t / T)_bk log sigma(z_s)_bk)``

    The soft labels are always made by running the teacher at temperature ``T``, whatever
    temperature it was trained at (paper 004, section 4.1). The student's own training
    temperature is applied by the trainer before the loss sees its logits, so ``z_s`` is used
    as given. No hard-label term and no ``T^2`` factor: this is plain cross-entropy to soft
    labels, as in the paper. The teacher's logits are detached.

    Args:
        temperature: Temperature ``T > 0`` of the soft labels; paper 004 uses ``T >= 20``.

    Parts:
        ``soft_targets/soft``: the soft cross-entropy (equal to ``loss``).
    """

    needs: ClassVar[set[str]] = {"logits", "teacher"}

    def __init__(self, temperature: float = SOFT_TARGETS_TEMPERATURE) -> None:
        super().__init__()
        self.temperature = check_range("soft_targets.temperature", temperature, 0.0, low_open=True)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        teacher = require_teacher(self.name, teacher)
        target = soft_labels(teacher.logits.detach(), self.temperature)  # (B, K)
        soft = soft_cross_entropy(student.logits, target)  # ()
        return {"loss": soft, "soft_targets/soft": soft}

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
