"""The loss-term contract.

A :class:`LossTerm` is one registered distillation loss. It never reaches into a model: the
trainer hands it the student's and the teacher's :class:`~distillscope.contracts.Outputs`
(logits and the tapped features it asked for) and the :class:`~distillscope.contracts.Batch`.
Terms may own trainable modules (regressors, paraphrasers); the trainer optimises their
parameters together with the student's. A term that needs a pre-training stage (FT's
paraphraser, IE-KD's auto-encoder) overrides :meth:`LossTerm.prepare`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from torch import Tensor, nn

from distillscope.contracts import Batch, Outputs


class LossTerm(nn.Module):
    """One distillation loss; ``forward`` returns ``{"loss": total, "<name>/<part>": part, ...}``.

    Class attributes:
        name: Registered name, used as the prefix of the logged parts.
        needs: What the term reads: subset of ``{"logits", "features", "teacher", "explanation"}``.
        feature_paths: Module paths the term needs tapped on ``("student", "teacher")``.
    """

    name: ClassVar[str] = "loss"
    needs: ClassVar[set[str]] = {"logits"}

    def __init__(self) -> None:
        # Explicit so the registry sees the real parameters of parameterless terms (nn.Module's
        # own __init__ takes **kwargs, which would let unknown config keys through).
        super().__init__()

    def student_paths(self) -> list[str]:
        """Student module paths whose features this term reads (tapped by the trainer)."""
        return []

    def teacher_paths(self) -> list[str]:
        """Teacher module paths whose features this term reads."""
        return []

    @property
    def needs_teacher(self) -> bool:
        return "teacher" in self.needs

    def prepare(self, teacher: nn.Module | None, batches: Iterable[Batch]) -> None:
        """Optional pre-training stage run once before the student's training (default: none)."""

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        raise NotImplementedError
