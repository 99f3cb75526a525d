"""A bank of colour textures, and the fixed texture of each class (cue-conflict images).

Ours, at CPU scale, in the spirit of Geirhos et al. (2019, "ImageNet-trained CNNs are biased
towards texture"), whose cue-conflict images carry the shape of one class and the texture of
another (paper 003, appendix C.3). A texture is a grey **pattern** times a colour **tint**:

- patterns (:data:`PATTERNS`): three of scikit-image's bundled textures (``brick``, ``grass``,
  ``gravel``, contrast-stretched to their 1st..99th percentiles) and three procedural ones
  (``stripes``: diagonal sine stripes of period 6 pixels; ``checker``: 4-pixel squares;
  ``dots``: discs of radius 2 on a 7-pixel grid), each ``512 x 512`` in ``[0, 1]``;
- tint: the colour of hue ``h`` at saturation 0.8 and value 1 (HSV), and the texture is
  ``tint * (0.4 + 0.6 * pattern)``, so it never goes black (a textured object stays visible
  on a black background);
- **the texture of class k of K** (:func:`class_textures`): pattern ``PATTERNS[k % 6]`` and
  hue ``k / K``. The association is fixed (no seed), so a dataset that trains on it
  (``textured-fashion``) and a probe that tests it (``shape_bias``) always agree; with K = 10,
  classes 0 and 6 share a pattern but not a colour. A **random texture** has a uniformly drawn
  pattern and hue.

Every image gets a patch cut at a random place of its texture, so the texture is a statistic,
not a fixed picture.

Example:
    >>> g = torch.Generator().manual_seed(0)
    >>> class_textures(torch.tensor([0, 3]), 10, 8, 8, g).shape
    torch.Size([2, 3, 8, 8])
    >>> [round(v, 2) for v in hue_colours(torch.tensor([0.0]))[0].tolist()]  # hue 0: red
    [1.0, 0.2, 0.2]
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from distillscope.data.photos import photo, random_patches

__all__ = [
    "PATTERNS",
    "class_textures",
    "conflict_labels",
    "hue_colours",
    "pattern",
    "random_textures",
    "texture_patches",
]

#: Grey patterns of the textures: scikit-image's bundled textures, then procedural ones.
PATTERNS = ("brick", "grass", "gravel", "stripes", "checker", "dots")
#: Side of every pattern (that of scikit-image's textures).
PATTERN_SIZE = 512
#: HSV saturation and value of the tints.
SATURATION, VALUE = 0.8, 1.0
#: Darkest share of a texture: ``tint * (FLOOR + (1 - FLOOR) * pattern)``.
FLOOR = 0.4


@functools.cache
def pattern(name: str) -> Tensor:
    """The grey pattern ``name`` of :data:`PATTERNS`, ``(512, 512)`` in ``[0, 1]`` (cached)."""
    if name not in PATTERNS:
        raise ValueError(f"unknown pattern {name!r}; use one of {', '.join(PATTERNS)}")
    y, x = torch.meshgrid(torch.arange(PATTERN_SIZE), torch.arange(PATTERN_SIZE), indexing="ij")
    if name == "stripes":
        grey = 0.5 + 0.5 * torch.sin(2 * torch.pi * (x + y).float() / 6)  # period 6 pixels
    elif name == "checker":
        grey = ((x // 4 + y // 4) % 2).float()
    elif name == "dots":
        dy, dx = (y % 7 - 3).float(), (x % 7 - 3).float()  # offset from the cell's centre
        grey = ((dy**2 + dx**2) <= 4.0).float()  # radius 2
    else:
        image = photo(name)[0]  # (512, 512)
        low, high = torch.quantile(image.flatten()[::7], torch.tensor([0.01, 0.99]))
        grey = ((image - low) / (high - low)).clamp(0, 1)
    return grey.float().contiguous()  # (512, 512)


def hue_colours(hues: Tensor) -> Tensor:
    """``(N, 3)`` RGB of hues in ``[0, 1)`` at saturation 0.8 and value 1 (HSV to RGB).

    ``f(n) = V - V S clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + 6 h) mod 6`` gives
    ``(R, G, B) = (f(5), f(3), f(1))``.
    """
    n = torch.tensor([5.0, 3.0, 1.0])  # (3,)
    k = (n[None] + 6 * hues.float()[:, None]) % 6  # (N, 3)
    return VALUE - VALUE * SATURATION * torch.minimum(k, 4 - k).clamp(0, 1)  # (N, 3)


def texture_patches(
    pattern_ids: Tensor, hues: Tensor, height: int, width: int, generator: torch.Generator
) -> Tensor:
    """``(N, 3, height, width)`` texture patches in ``[0, 1]``: pattern ``PATTERNS[id]``, tinted.

    Args:
        pattern_ids: ``(N,)`` indices into :data:`PATTERNS`.
        hues: ``(N,)`` tint hues in ``[0, 1)``.
        height: Patch height.
        width: Patch width.
        generator: Seeds the places the patches are cut at.
    """
    n = len(pattern_ids)
    grey = torch.empty(n, 1, height, width)
    for p, name in enumerate(PATTERNS):  # a loop over the six patterns, not over images
        rows = torch.nonzero(pattern_ids == p)[:, 0]
        if len(rows):
            source = pattern(name)[None]  # (1, 512, 512)
            grey[rows] = random_patches(source, len(rows), height, width, generator)
    tint = hue_colours(hues)[:, :, None, None]  # (N, 3, 1, 1)
    return tint * (FLOOR + (1 - FLOOR) * grey)  # (N, 3, H, W)


def class_textures(
    labels: Tensor, num_classes: int, height: int, width: int, generator: torch.Generator
) -> Tensor:
    """``(N, 3, H, W)`` patches of each label's texture: pattern ``k % 6``, hue ``k / K``."""
    labels = labels.long().cpu()
    hues = labels.float() / num_classes  # (N,)
    return texture_patches(labels % len(PATTERNS), hues, height, width, generator)


def random_textures(n: int, height: int, width: int, generator: torch.Generator) -> Tensor:
    """``(n, 3, H, W)`` patches of random textures: uniform pattern and hue per patch."""
    ids = torch.randint(0, len(PATTERNS), (n,), generator=generator)  # (n,)
    hues = torch.rand(n, generator=generator)  # (n,)
    return texture_patches(ids, hues, height, width, generator)


def conflict_labels(labels: Tensor, num_classes: int, generator: torch.Generator) -> Tensor:
    """``(N,)`` a class other than each label, uniformly: ``(y + U{1..K-1}) mod K``.

    Example:
        >>> y = torch.arange(6) % 3
        >>> bool((conflict_labels(y, 3, torch.Generator().manual_seed(0)) != y).all())
        True
    """
    if num_classes < 2:
        raise ValueError(f"cue conflicts need at least 2 classes, got {num_classes}")
    shift = torch.randint(1, num_classes, (len(labels),), generator=generator)  # (N,)
    return (labels.long().cpu() + shift) % num_classes
