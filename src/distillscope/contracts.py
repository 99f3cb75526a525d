"""The data contracts that flow between the data pipeline, models, losses and probes.

Text (sentence classification, paper 000 5.4) uses the same :class:`Batch`: ``inputs`` are
``(B, L)`` int64 token ids of a word-level vocabulary, padded with :data:`PAD_ID`; a model's
attention mask is ``inputs != PAD_ID`` (:func:`attention_mask`). Word labels for attribution
scores are ``(N, L)`` int64 per token: :data:`POSITIVE` (1), :data:`NEGATIVE` (-1), or 0 for a
neutral word, padding and special tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

#: Token id of padding; the vocabulary's first entry is :data:`PAD`.
PAD_ID = 0
#: Token id of an out-of-vocabulary word; the vocabulary's second entry is :data:`UNK`.
UNK_ID = 1
PAD = "[PAD]"
UNK = "[UNK]"
#: Word polarity labels of text data (``TensorDataset.token_labels``).
POSITIVE = 1
NEGATIVE = -1


def attention_mask(ids: Tensor) -> Tensor:
    """``(B, L)`` long mask, 1 on real tokens and 0 on padding, of ``(B, L)`` token ids."""
    return (ids != PAD_ID).long()


@dataclass
class Batch:
    """What the data pipeline yields.

    Attributes:
        inputs: ``(B, ...)`` model inputs, already normalised.
        targets: ``(B,)`` class indices.
        index: ``(B,)`` dataset indices (teacher cache, memory banks, frozen explanations).
        augmentation: The parameters of the geometric augmentation applied to ``inputs``
            (e.g. :class:`~distillscope.data.vision.CropFlipParams`), so a frozen teacher
            explanation can be moved exactly as its image was; ``None``: not augmented.
    """

    inputs: Tensor
    targets: Tensor
    index: Tensor
    augmentation: Any = None

    def to(self, device: str | object, non_blocking: bool = False) -> Batch:
        """A copy of the batch on ``device``; ``non_blocking`` copies pinned host tensors to
        CUDA asynchronously (the stream orders them before the kernels that read them)."""
        aug = self.augmentation
        return Batch(
            self.inputs.to(device, non_blocking=non_blocking),
            self.targets.to(device, non_blocking=non_blocking),
            self.index.to(device, non_blocking=non_blocking),
            aug.to(device) if aug is not None else None,
        )

    def __len__(self) -> int:
        return int(self.targets.shape[0])


@dataclass
class Outputs:
    """What a forward pass yields to losses and probes.

    ``logits`` are the network's logits divided by ``temperature``. Probes, caches and the
    teacher side of a loss see ``temperature == 1`` (the raw logits). The student side of a loss
    sees its logits divided by the student's *training* temperature (paper 004, section 4.1:
    a network trained at temperature ``T`` computes its softmax over ``z / T``), and
    ``temperature`` says so: ``logits * temperature`` are always the raw logits.

    Attributes:
        logits: ``(B, K)`` logits divided by ``temperature``.
        features: module path -> activation, only the tapped ones.
        temperature: The divisor already applied to ``logits`` (1.0: raw logits).
        explanation: The teacher's explanation of its top-1 class, detached (``(B, H, W)``
            GradCAM maps or ``(B, C, H, W)`` B-cos weights), for terms that need
            ``"explanation"`` (e2KD, paper 001); ``None`` otherwise.
    """

    logits: Tensor
    features: dict[str, Tensor] = field(default_factory=dict)
    temperature: float = 1.0
    explanation: Tensor | None = None

    def split(self, n: int) -> tuple[Outputs, Outputs]:
        """The first ``n`` rows and the rest, as two :class:`Outputs` (one pass over a batch
        and its transformed views, e.g. SSKD's rotations)."""
        head = Outputs(self.logits[:n], {k: v[:n] for k, v in self.features.items()},
                       self.temperature)  # fmt: skip
        tail = Outputs(self.logits[n:], {k: v[n:] for k, v in self.features.items()},
                       self.temperature)  # fmt: skip
        return head, tail

    @property
    def raw_logits(self) -> Tensor:
        """``(B, K)`` logits at temperature 1, whatever ``temperature`` was applied."""
        return self.logits if self.temperature == 1.0 else self.logits * self.temperature

    def detach(self) -> Outputs:
        """A copy cut from the autograd graph."""
        features = {k: v.detach() for k, v in self.features.items()}
        explanation = None if self.explanation is None else self.explanation.detach()
        return Outputs(self.logits.detach(), features, self.temperature, explanation)


@dataclass
class Views:
    """Outputs on transformed copies of a batch, for terms that need ``"views"``.

    SSKD (paper 000 B.4.4) runs the student and the teacher on rotated copies of every image;
    the term makes the copies (``make_views``), the trainer runs them in the same pass as the
    batch and hands the outputs over.

    Attributes:
        student: The student's outputs on the views, ``(V * B, ...)``, view-major.
        teacher: The teacher's, or ``None`` for a term without a teacher.
    """

    student: Outputs
    teacher: Outputs | None = None
