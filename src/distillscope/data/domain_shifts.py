"""Domain shifts of image batches, and cue-conflict images (paper 003, 4.4, 6.1 and C.3).

Paper 003 measures teacher-student consensus on the unseen domains of Geirhos et al. (2021):
sketch, stylized, edge, silhouette, cue conflict (ImageNet images redrawn), and trains
multi-domain teachers on MNIST, MNIST-Color (random background colour) and MNIST-M (digits on
patches of natural photos). Ours are batched tensor transforms of any image batch, at CPU
scale; every function takes **pixels** in ``[0, 1]``, ``(N, C, H, W)`` with ``C`` in
``{1, 3}``, and returns **RGB** ``(N, 3, H, W)`` in ``[0, 1]`` (grey inputs are repeated over
three channels; :func:`to_channels` brings the result back to a model's own channel count,
luminance for one channel). The **object** is a boolean ``(N, H, W)`` mask: the one given, or
the pixels whose luminance exceeds :data:`MASK_THRESHOLD` (objects on a dark background, as in
Fashion-MNIST and MNIST; for other data pass masks).

- ``colour_background``: the object on a uniformly random RGB colour (MNIST-Color);
- ``natural_background``: the object on a patch cut at a random place of a random colour photo
  of scikit-image (:data:`~distillscope.data.photos.COLOUR_PHOTOS`), as MNIST-M puts digits on
  BSDS500 patches (MNIST-M blends ``|patch - digit|``; we paste, so object pixels stay as they
  are);
- ``edges``: the Sobel gradient magnitude of the luminance, divided by its per-image maximum:
  bright edges on black (Geirhos's edge images are Canny edges, black on white);
- ``silhouette``: the object mask, black (0) on white (1); binary;
- ``sketch``: black strokes on white paper where the edge map above is at least
  :data:`SKETCH_LEVEL` (thresholded, inverted gradients): a binary line drawing that also
  keeps inner contours;
- ``stylised``: the object filled with a random texture (pattern and colour,
  :mod:`distillscope.data.textures`), the background kept: a texture swap;
- :func:`cue_conflict`: the object of an item of class A filled with the texture associated
  with class B (the shape says A, the texture says B).

Every transform draws its randomness from the ``generator`` passed to :func:`apply_domain`, so
one seed gives the same images on every run. ``edges``, ``silhouette`` and ``sketch`` draw
nothing.

Example:
    >>> x = torch.zeros(2, 1, 8, 8)
    >>> x[:, :, 2:6, 2:6] = 1.0  # a white square on black
    >>> out = apply_domain("silhouette", x, torch.Generator().manual_seed(0))
    >>> out.shape, out[0, :, 3, 3].tolist(), out[0, :, 0, 0].tolist()
    (torch.Size([2, 3, 8, 8]), [0.0, 0.0, 0.0], [1.0, 1.0, 1.0])
    >>> sorted(DOMAINS)
    ['colour_background', 'edges', 'natural_background', 'silhouette', 'sketch', 'stylised']
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from distillscope.data.photos import COLOUR_PHOTOS, photo, random_patches
from distillscope.data.textures import random_textures
from distillscope.errors import ConfigError

__all__ = [
    "DOMAINS",
    "MASK_THRESHOLD",
    "apply_domain",
    "colour_background",
    "cue_conflict",
    "edges",
    "luminance",
    "natural_background",
    "object_masks",
    "silhouette",
    "sketch",
    "stylised",
    "to_channels",
    "to_rgb",
]

#: Object pixels: luminance above this (Fashion-MNIST's and MNIST's background is exactly 0;
#: the same threshold as spurious-fashion's masks).
MASK_THRESHOLD = 0.1
#: Luminance weights of R, G, B (ITU-R BT.601, as PIL's and torchvision's grey conversion).
LUMA = (0.299, 0.587, 0.114)
#: Sketch strokes: edge-map values (per-image max = 1) at or above this.
SKETCH_LEVEL = 0.2

DomainFn = Callable[[Tensor, torch.Generator, Tensor | None], Tensor]


def _check(images: Tensor, masks: Tensor | None = None) -> None:
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, C, H, W) with C in {{1, 3}}, got {images.shape}")
    if masks is not None and (
        masks.dim() != 3 or masks.shape[0] != images.shape[0] or masks.shape[1:] != images.shape[2:]
    ):
        raise ValueError(f"masks must be (N, H, W) like the images, got {tuple(masks.shape)}")


def luminance(images: Tensor) -> Tensor:
    """``(N, 1, H, W)`` luminance of grey or RGB images (:data:`LUMA` weights)."""
    if images.shape[1] == 1:
        return images
    weights = torch.tensor(LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)  # (N, 1, H, W)


def to_rgb(images: Tensor) -> Tensor:
    """``(N, 3, H, W)``: grey images repeated over three channels, RGB ones as they are."""
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def to_channels(images: Tensor, channels: int) -> Tensor:
    """Images with ``channels`` channels: luminance for 1, repeated grey for 3.

    Example:
        >>> rgb, grey = torch.ones(1, 3, 2, 2), torch.ones(1, 1, 2, 2)
        >>> tuple(to_channels(rgb, 1).shape), tuple(to_channels(grey, 3).shape)
        ((1, 1, 2, 2), (1, 3, 2, 2))
    """
    if channels == images.shape[1]:
        return images
    if channels == 1:
        return luminance(images)
    if channels == 3:
        return to_rgb(images)
    raise ValueError(f"cannot convert {images.shape[1]}-channel images to {channels} channels")


def object_masks(images: Tensor, threshold: float = MASK_THRESHOLD) -> Tensor:
    """``(N, H, W)`` object masks: luminance above ``threshold`` (objects on a dark background)."""
    return luminance(images)[:, 0] > threshold


def _masks(images: Tensor, masks: Tensor | None) -> Tensor:
    _check(images, masks)
    return object_masks(images) if masks is None else masks.to(images.device).bool()


def _edge_map(images: Tensor) -> Tensor:
    """``(N, 1, H, W)`` Sobel gradient magnitude of the luminance, per-image max scaled to 1."""
    grey = F.pad(luminance(images), (1, 1, 1, 1), mode="replicate")  # (N, 1, H+2, W+2)
    gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=grey.device)
    kernels = torch.stack([gx, gx.T])[:, None].to(grey.dtype)  # (2, 1, 3, 3)
    grad = F.conv2d(grey, kernels)  # (N, 2, H, W)
    magnitude = grad.pow(2).sum(1, keepdim=True).sqrt()  # (N, 1, H, W)
    top = magnitude.amax(dim=(1, 2, 3), keepdim=True)  # (N, 1, 1, 1)
    return torch.where(top > 0, magnitude / top.clamp_min(1e-12), torch.zeros_like(magnitude))


def colour_background(
    images: Tensor, generator: torch.Generator, masks: Tensor | None = None
) -> Tensor:
    """The object on a uniformly random RGB colour per image (MNIST-Color, paper 003 6.1)."""
    m = _masks(images, masks)
    colours = torch.rand(len(images), 3, 1, 1, generator=generator)  # (N, 3, 1, 1)
    colours = colours.to(images.device, images.dtype)
    return torch.where(m[:, None], to_rgb(images), colours)  # (N, 3, H, W)


def natural_background(
    images: Tensor, generator: torch.Generator, masks: Tensor | None = None
) -> Tensor:
    """The object on a random patch of a random scikit-image colour photo (MNIST-M-like)."""
    m = _masks(images, masks)
    n, _, h, w = images.shape
    which = torch.randint(0, len(COLOUR_PHOTOS), (n,), generator=generator)  # (N,)
    back = torch.empty(n, 3, h, w)
    for p, name in enumerate(COLOUR_PHOTOS):  # a loop over the photos, not over images
        rows = torch.nonzero(which == p)[:, 0]
        if len(rows):
            back[rows] = random_patches(photo(name), len(rows), h, w, generator)
    back = back.to(images.device, images.dtype)
    return torch.where(m[:, None], to_rgb(images), back)  # (N, 3, H, W)


def edges(images: Tensor, generator: torch.Generator, masks: Tensor | None = None) -> Tensor:
    """Bright Sobel edges on black, each image's strongest edge at 1 (draws nothing)."""
    _check(images, masks)
    return to_rgb(_edge_map(images))  # (N, 3, H, W)


def silhouette(images: Tensor, generator: torch.Generator, masks: Tensor | None = None) -> Tensor:
    """The object mask black on white: values in ``{0, 1}`` (draws nothing)."""
    m = _masks(images, masks)
    return to_rgb((~m[:, None]).to(images.dtype))  # (N, 3, H, W)


def sketch(images: Tensor, generator: torch.Generator, masks: Tensor | None = None) -> Tensor:
    """Black strokes on white where the edge map is at least :data:`SKETCH_LEVEL` (binary)."""
    _check(images, masks)
    strokes = _edge_map(images) >= SKETCH_LEVEL  # (N, 1, H, W)
    return to_rgb((~strokes).to(images.dtype))  # (N, 3, H, W)


def stylised(images: Tensor, generator: torch.Generator, masks: Tensor | None = None) -> Tensor:
    """The object filled with a random texture (pattern and colour), the background kept."""
    m = _masks(images, masks)
    n, _, h, w = images.shape
    textures = random_textures(n, h, w, generator).to(images.device, images.dtype)
    return cue_conflict(images, m, textures)


def cue_conflict(images_a: Tensor, masks_a: Tensor, textures_b: Tensor) -> Tensor:
    """The shape of each image (its mask) filled with another texture; the background kept.

    With ``textures_b`` the texture of a class B other than the image's class A
    (:func:`~distillscope.data.textures.class_textures` of
    :func:`~distillscope.data.textures.conflict_labels`), the shape says A and the texture says
    B: Geirhos et al.'s cue-conflict images (paper 003, C.3), ours by masking, not by style
    transfer.

    Args:
        images_a: ``(N, C, H, W)`` pixels in ``[0, 1]``, ``C`` in ``{1, 3}``.
        masks_a: ``(N, H, W)`` boolean object masks of ``images_a``.
        textures_b: ``(N, 3, H, W)`` texture patches in ``[0, 1]``.

    Returns:
        ``(N, 3, H, W)``: ``textures_b`` inside the masks, ``images_a`` (as RGB) outside.
    """
    _check(images_a, masks_a)
    if textures_b.shape != (images_a.shape[0], 3, *images_a.shape[2:]):
        raise ValueError(f"textures_b must be (N, 3, H, W), got {tuple(textures_b.shape)}")
    inside = masks_a.to(images_a.device).bool()[:, None]  # (N, 1, H, W)
    return torch.where(inside, textures_b.to(images_a.device, images_a.dtype), to_rgb(images_a))


#: Domain name -> transform ``f(images, generator, masks) -> (N, 3, H, W)``.
DOMAINS: dict[str, DomainFn] = {
    "colour_background": colour_background,
    "natural_background": natural_background,
    "edges": edges,
    "silhouette": silhouette,
    "sketch": sketch,
    "stylised": stylised,
}


def apply_domain(
    name: str, images: Tensor, generator: torch.Generator, masks: Tensor | None = None
) -> Tensor:
    """Move a batch of images to the domain ``name`` of :data:`DOMAINS`.

    Args:
        name: A key of :data:`DOMAINS`.
        images: ``(N, C, H, W)`` pixels in ``[0, 1]``, ``C`` in ``{1, 3}``.
        generator: A CPU generator; every random draw comes from it.
        masks: ``(N, H, W)`` boolean object masks; by default the pixels whose luminance
            exceeds :data:`MASK_THRESHOLD`.

    Returns:
        ``(N, 3, H, W)`` RGB pixels in ``[0, 1]`` (see :func:`to_channels`).

    Raises:
        ConfigError: Unknown domain name.
    """
    if name not in DOMAINS:
        raise ConfigError(f"domain {name!r} is unknown; use one of {', '.join(DOMAINS)}")
    return DOMAINS[name](images, generator, masks)
