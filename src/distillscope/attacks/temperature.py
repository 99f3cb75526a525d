"""Model wrappers that change what an attack sees: temperature-scaled logits and pixel inputs.

Strong ("CW") attacks, paper 004 (Trustworthy Distillation?) section 4.2 after Carlini & Wagner
(2016, 2017): a model trained with ``softmax(z / T)`` learns logits ``T`` times larger; at
inference (``T = 1``) its softmax saturates, the cross-entropy gradient underflows to zero and
gradient attacks fail (gradient masking). Attacking ``z / T`` instead restores the gradient:

    strong_attack(f) = attack(x -> f(x) / T_train).

Attacks perturb images in pixel space (bounds, ``eps = 8/255``), while models take normalised
inputs; :class:`PixelSpaceModel` puts the normalisation inside the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["PixelSpaceModel", "TemperatureScaled", "to_pixels"]


class TemperatureScaled(nn.Module):
    """``x -> model(x) / T``: the logits at the model's training temperature.

    Args:
        model: A network returning ``(B, K)`` logits.
        temperature: The training temperature ``T > 0``.

    Example:
        >>> TemperatureScaled(nn.Identity(), 4.0)(torch.tensor([[8.0, -4.0]]))
        tensor([[ 2., -1.]])
    """

    def __init__(self, model: nn.Module, temperature: float) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.model = model
        self.temperature = float(temperature)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) / self.temperature  # (B, K)


def _channel_view(values: Sequence[float], like: Tensor) -> Tensor:
    """``(1, C, 1, ...)`` tensor broadcasting per channel (dim 1) against ``like``."""
    t = torch.as_tensor(values, dtype=like.dtype, device=like.device)  # (C,)
    return t.view(1, -1, *([1] * (like.dim() - 2)))


def to_pixels(x: Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> Tensor:
    """Undo the per-channel normalisation: ``x * std + mean`` (identity when either is None).

    Example:
        >>> to_pixels(torch.zeros(1, 2, 1, 1), (0.5, 0.25), (0.5, 1.0)).flatten()
        tensor([0.5000, 0.2500])
    """
    if mean is None or std is None:
        return x
    return x * _channel_view(std, x) + _channel_view(mean, x)


class PixelSpaceModel(nn.Module):
    """``x_pixel -> model((x_pixel - mean) / std)``: a model that takes un-normalised inputs.

    Args:
        model: A network taking normalised inputs.
        mean: Per-channel mean (``DatasetInfo.mean``); None means no normalisation.
        std: Per-channel std (``DatasetInfo.std``).

    Example:
        >>> m = PixelSpaceModel(nn.Identity(), (0.5,), (0.5,))
        >>> m(torch.tensor([[1.0]]))
        tensor([[1.]])
    """

    def __init__(
        self, model: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None
    ) -> None:
        super().__init__()
        self.model = model
        self.mean = None if mean is None or std is None else tuple(mean)
        self.std = None if mean is None or std is None else tuple(std)

    def forward(self, x: Tensor) -> Tensor:
        if self.mean is not None and self.std is not None:
            x = (x - _channel_view(self.mean, x)) / _channel_view(self.std, x)
        return self.model(x)  # (B, K)
