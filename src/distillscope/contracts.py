"""The two data contracts that flow between the data pipeline, models, losses and probes."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class Batch:
    """What the data pipeline yields.

    Attributes:
        inputs: ``(B, ...)`` model inputs, already normalised.
        targets: ``(B,)`` class indices.
        index: ``(B,)`` dataset indices (teacher cache, memory banks, frozen explanations).
    """

    inputs: Tensor
    targets: Tensor
    index: Tensor

    def to(self, device: str | object) -> Batch:
        """A copy of the batch on ``device``."""
        return Batch(self.inputs.to(device), self.targets.to(device), self.index.to(device))

    def __len__(self) -> int:
        return int(self.targets.shape[0])


@dataclass
class Outputs:
    """What a forward pass yields to losses and probes.

    Attributes:
        logits: ``(B, K)`` raw logits at temperature 1.
        features: module path -> activation, only the tapped ones.
    """

    logits: Tensor
    features: dict[str, Tensor] = field(default_factory=dict)

    def detach(self) -> Outputs:
        """A copy cut from the autograd graph."""
        return Outputs(self.logits.detach(), {k: v.detach() for k, v in self.features.items()})
