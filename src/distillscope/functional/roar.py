"""Pixel removal by attribution rank: the data side of ROAR and DiffROAR.

ROAR ("remove and retrain", Hooker et al. 2019) removes the pixels an attribution ranks highest
and retrains a fresh model on what is left; DiffROAR (Shah, Jain & Netrapalli 2021, "Do Input
Gradients Highlight Discriminative Features?", and paper 000, section 5.2) compares removing the
top-``k`` with removing the bottom-``k`` share of each image's pixels:

    DiffROAR(k) = acc(retrained without the bottom k) - acc(retrained without the top k)

positive when the attribution ranks the discriminative pixels first. These functions rank and
remove; retraining is the probe's (:mod:`distillscope.probes.roar`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["removal_mask", "remove_pixels"]


def removal_mask(attributions: Tensor, fraction: float, top: bool) -> Tensor:
    """The ``round(fraction * H * W)`` pixels of each image with the largest (``top``) or
    smallest attribution magnitude, as a ``(N, H, W)`` bool mask.

    Pixels are ranked by ``|attribution|`` per image (Shah et al. rank the magnitudes); ties go
    to the lower flat index in both directions (a stable sort), so the mask is deterministic.

    Args:
        attributions: ``(N, H, W)`` one map per image.
        fraction: Share of pixels removed, in ``[0, 1]``.
        top: Remove the highest-ranked pixels (else the lowest).

    Example:
        >>> a = torch.tensor([[[0.1, -0.9], [0.5, 0.0]]])
        >>> removal_mask(a, 0.5, top=True).int().tolist()
        [[[0, 1], [1, 0]]]
        >>> removal_mask(a, 0.5, top=False).int().tolist()
        [[[1, 0], [0, 1]]]
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction={fraction} is out of range; use a value in [0, 1]")
    n, h, w = attributions.shape
    k = int(math.floor(fraction * h * w + 0.5))
    magnitude = attributions.abs().reshape(n, h * w)
    order = torch.sort(magnitude, dim=1, descending=top, stable=True).indices  # (N, H*W)
    mask = torch.zeros(n, h * w, dtype=torch.bool)
    mask.scatter_(1, order[:, :k], True)
    return mask.view(n, h, w)


def remove_pixels(inputs: Tensor, mask: Tensor, value: float | Tensor = 0.0) -> Tensor:
    """``inputs`` ``(N, C, H, W)`` with the pixels of ``mask`` ``(N, H, W)`` set to ``value`` in
    every channel (a float, or a ``(C,)`` per-channel value); a new tensor."""
    fill = torch.as_tensor(value, dtype=inputs.dtype).reshape(1, -1, 1, 1)
    return torch.where(mask.unsqueeze(1), fill.expand_as(inputs), inputs)
