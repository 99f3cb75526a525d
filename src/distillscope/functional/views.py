"""Random views of images: colour jitter, random resized crops, integer shifts (batched).

Pure tensor functions behind the ``invariance`` probe (paper 003, 4.3 and appendix C.4 / C.5),
written so that a training augmentation can reuse them. Every transform takes its random
parameters as tensors, one row per image, so a whole batch is transformed at once (no loop
over images); the ``*_params`` helpers turn uniform draws ``u ~ U[0, 1)`` into those
parameters. Drawing the uniforms once and scaling them by the strength gives *common random
numbers* across a sweep: image ``i`` is moved in the same direction at every strength, only
further.

* Colour jitter on RGB images in ``[0, 1]``, in torchvision's ``ColorJitter`` convention
  (which paper 003's "magnitudes sampled uniformly in [0, 0.4] ... and in [0, 0.2] for hue"
  reads as): brightness, contrast and saturation factors ``1 + s v`` with ``v ~ U[-1, 1]``
  (i.e. ``1 +/- u``, ``u ~ U[0, s]``), a hue shift ``(s / 2) v`` of the hue circle, applied in
  the fixed order brightness, contrast, saturation, hue (ColorJitter shuffles the order per
  call; the paper states neither), each followed by a clamp to ``[0, 1]``:

      brightness  x <- b x
      contrast    x <- c x + (1 - c) mean(L(x))        (mean over the image's pixels)
      saturation  x <- a x + (1 - a) L(x)              (per pixel)
      hue         h <- (h + d) mod 1                   (in HSV)

  with the luminance ``L = 0.299 R + 0.587 G + 0.114 B`` (ITU-R 601, as torchvision).
* Grey images are first *colourised* (ours; paper 003 jitters ImageNet's colour images):
  ``rgb = g * c_fg + (1 - g) * c_bg`` with per-image colours ``c_fg ~ U[0.5, 1]^3`` and
  ``c_bg ~ U[0, 0.5]^3``: the bright object gets one random colour, the dark background
  another, and the object stays brighter than its background in every channel. A model with
  one input channel then sees the luminance ``L`` of the (jittered) colour image.
* Random resized crop (paper 003, C.4): a box covering the share ``a`` of the image's area,
  aspect ratio (relative to the image's) log-uniform in ``[3/4, 4/3]`` as torchvision's
  ``RandomResizedCrop``, narrowed to ``[a, 1/a]`` so the box fits, placed uniformly, resized
  back to the image size by bilinear sampling (a continuous box, not rounded to pixels).
* Shift (paper 003, C.5): the image moved by whole pixels, the uncovered pixels filled with a
  given value. Two views with offsets drawn from ``{0, ..., m} - floor(m / 2)`` per axis differ
  by at most ``m`` pixels, as the paper's two ``224 x 224`` crops of a ``(224 + m)`` centre crop.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "CROP_RATIO",
    "LUMA",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "colour_jitter",
    "colourise",
    "colourise_params",
    "crop_params",
    "hsv_to_rgb",
    "jitter_params",
    "luminance",
    "resized_crop",
    "rgb_to_hsv",
    "shift_images",
    "shift_params",
]

#: Luminance weights of R, G, B (ITU-R BT.601), as torchvision's ``rgb_to_grayscale``.
LUMA = (0.299, 0.587, 0.114)
#: Aspect-ratio range of random resized crops: torchvision's ``RandomResizedCrop`` default.
CROP_RATIO = (3 / 4, 4 / 3)


def _per_image(values: Tensor, like: Tensor) -> Tensor:
    """``(B,)`` values as ``(B, 1, 1, 1)`` on ``like``'s device and dtype."""
    return values.to(like.device, like.dtype).view(-1, 1, 1, 1)


def luminance(rgb: Tensor) -> Tensor:
    """``(B, 1, H, W)`` luminance ``0.299 R + 0.587 G + 0.114 B`` of ``(B, 3, H, W)`` images.

    Example:
        >>> luminance(torch.ones(1, 3, 1, 1)).item()
        1.0
    """
    w = torch.tensor(LUMA, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    return (rgb * w).sum(1, keepdim=True)  # (B, 1, H, W)


def colourise_params(unit: Tensor) -> tuple[Tensor, Tensor]:
    """Foreground and background colours ``(B, 3)`` from ``(B, 6)`` uniforms in ``[0, 1)``.

    ``c_fg = 0.5 + 0.5 u[:, :3]`` in ``[0.5, 1)``, ``c_bg = 0.5 u[:, 3:]`` in ``[0, 0.5)``.
    """
    return 0.5 + 0.5 * unit[:, :3], 0.5 * unit[:, 3:6]


def colourise(grey: Tensor, foreground: Tensor, background: Tensor) -> Tensor:
    """Colour grey images: ``rgb = g * c_fg + (1 - g) * c_bg`` per pixel.

    Args:
        grey: ``(B, 1, H, W)`` intensities in ``[0, 1]``.
        foreground: ``(B, 3)`` colour of intensity 1.
        background: ``(B, 3)`` colour of intensity 0.

    Returns:
        ``(B, 3, H, W)`` colour images in ``[0, 1]``.

    Example:
        >>> g = torch.tensor([[[[0.0, 1.0]]]])
        >>> colourise(g, torch.tensor([[1.0, 0.5, 0.0]]), torch.zeros(1, 3))[0, :, 0].tolist()
        [[0.0, 1.0], [0.0, 0.5], [0.0, 0.0]]
    """
    fg = foreground.to(grey.device, grey.dtype)[:, :, None, None]  # (B, 3, 1, 1)
    bg = background.to(grey.device, grey.dtype)[:, :, None, None]  # (B, 3, 1, 1)
    return grey * fg + (1 - grey) * bg  # (B, 3, H, W)


def adjust_brightness(rgb: Tensor, factor: Tensor) -> Tensor:
    """``clamp(b x, 0, 1)`` with one factor ``b`` per image (``(B,)``)."""
    return (rgb * _per_image(factor, rgb)).clamp(0, 1)  # (B, C, H, W)


def adjust_contrast(rgb: Tensor, factor: Tensor) -> Tensor:
    """``clamp(c x + (1 - c) m, 0, 1)``, ``m`` the image's mean luminance, ``c`` per image."""
    mean = luminance(rgb).mean((1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    c = _per_image(factor, rgb)
    return (c * rgb + (1 - c) * mean).clamp(0, 1)  # (B, 3, H, W)


def adjust_saturation(rgb: Tensor, factor: Tensor) -> Tensor:
    """``clamp(a x + (1 - a) L(x), 0, 1)`` per pixel, ``a`` per image (0 = grey)."""
    a = _per_image(factor, rgb)
    return (a * rgb + (1 - a) * luminance(rgb)).clamp(0, 1)  # (B, 3, H, W)


def rgb_to_hsv(rgb: Tensor) -> Tensor:
    """``(B, 3, H, W)`` hue, saturation, value in ``[0, 1]`` of RGB images in ``[0, 1]``.

    Grey pixels get hue 0; black pixels saturation 0 (the ``colorsys`` convention).

    Example:
        >>> rgb_to_hsv(torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1)).flatten().tolist()
        [0.5833333134651184, 1.0, 1.0]
    """
    r, g, b = rgb.unbind(1)  # (B, H, W) each
    value, _ = rgb.max(1)  # (B, H, W)
    delta = value - rgb.min(1).values  # (B, H, W)
    sat = torch.where(value > 0, delta / value.clamp_min(1e-12), torch.zeros_like(value))
    d = delta.clamp_min(1e-12)
    hue = torch.where(
        value == r,
        (g - b) / d,
        torch.where(value == g, 2 + (b - r) / d, 4 + (r - g) / d),
    )  # (B, H, W) in sixths of the circle
    hue = torch.where(delta > 0, (hue / 6) % 1.0, torch.zeros_like(hue))
    return torch.stack([hue, sat, value], 1)  # (B, 3, H, W)


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_hsv`: ``(B, 3, H, W)`` RGB in ``[0, 1]``.

    Example:
        >>> x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
        >>> bool(torch.allclose(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-6))
        True
    """
    h, s, v = hsv.unbind(1)  # (B, H, W) each
    sector = h * 6
    i = torch.floor(sector)
    f = sector - i  # (B, H, W) position inside the sector
    i = i.long() % 6
    p = v * (1 - s)
    q = v * (1 - s * f)
    t = v * (1 - s * (1 - f))
    # Per sector i = 0..5, which of (v, q, p, t) is R, G and B.
    table = torch.stack(
        [
            torch.stack([v, q, p, p, t, v], 1),
            torch.stack([t, v, v, q, p, p], 1),
            torch.stack([p, p, t, v, v, q], 1),
        ],
        1,
    )  # (B, 3, 6, H, W)
    index = i[:, None, None].expand(-1, 3, 1, -1, -1)  # (B, 3, 1, H, W)
    return table.gather(2, index).squeeze(2)  # (B, 3, H, W)


def adjust_hue(rgb: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue by ``shift`` (a fraction of the circle, ``(B,)``, in ``[-0.5, 0.5]``).

    Returns the input itself when every shift is 0 (an HSV round trip is exact only to
    rounding).
    """
    if not bool(shift.ne(0).any()):
        return rgb
    hsv = rgb_to_hsv(rgb)  # (B, 3, H, W)
    hue = (hsv[:, :1] + _per_image(shift, rgb)) % 1.0  # (B, 1, H, W)
    return hsv_to_rgb(torch.cat([hue, hsv[:, 1:]], 1)).clamp(0, 1)  # (B, 3, H, W)


def jitter_params(strength: float, unit: Tensor) -> Tensor:
    """``(B, 4)`` brightness, contrast, saturation factors and hue shift at strength ``s``.

    From ``(B, 4)`` uniforms ``u`` in ``[0, 1)``: ``v = 2u - 1``; factors ``1 + s v[:, :3]``,
    hue shift ``(s / 2) v[:, 3]`` (paper 003: strength 0.4, hue 0.2). ``s`` in ``[0, 1]``
    keeps every factor ``>= 0`` and the hue shift within half the circle.

    Example:
        >>> jitter_params(0.4, torch.tensor([[0.0, 0.5, 1.0, 1.0]])).round(decimals=4).tolist()
        [[0.6000000238418579, 1.0, 1.399999976158142, 0.20000000298023224]]
    """
    v = 2 * unit - 1  # (B, 4) in [-1, 1)
    return torch.cat([1 + strength * v[:, :3], strength / 2 * v[:, 3:4]], 1)  # (B, 4)


def colour_jitter(rgb: Tensor, params: Tensor) -> Tensor:
    """Brightness, contrast, saturation, then hue, per image (see the module docstring).

    Args:
        rgb: ``(B, 3, H, W)`` images in ``[0, 1]``.
        params: ``(B, 4)`` from :func:`jitter_params`.

    Returns:
        ``(B, 3, H, W)`` jittered images in ``[0, 1]``.

    Example:
        >>> x = torch.full((1, 3, 2, 2), 0.5)
        >>> colour_jitter(x, torch.tensor([[1.5, 1.0, 1.0, 0.0]])).unique().tolist()
        [0.75]
    """
    x = adjust_brightness(rgb, params[:, 0])
    x = adjust_contrast(x, params[:, 1])
    x = adjust_saturation(x, params[:, 2])
    return adjust_hue(x, params[:, 3])  # (B, 3, H, W)


def crop_params(scale: float, unit: Tensor, ratio: tuple[float, float] = CROP_RATIO) -> Tensor:
    """``(B, 4)`` crop boxes ``(cx, cy, w, h)`` in ``[-1, 1]`` image coordinates.

    ``w`` and ``h`` are the box's width and height as shares of the image's; ``w h = scale``
    and ``w / h = rho``, log-uniform in ``ratio`` narrowed to ``[scale, 1 / scale]`` (so
    ``w, h <= 1``). The centre is uniform over the positions that keep the box inside.

    Args:
        scale: Share ``a`` of the image's area, in ``(0, 1]``.
        unit: ``(B, 3)`` uniforms in ``[0, 1)``: aspect ratio, x and y position.
        ratio: Aspect-ratio range, relative to the image's aspect.

    Example:
        >>> crop_params(1.0, torch.rand(2, 3))[:, 2:].tolist()  # the whole image
        [[1.0, 1.0], [1.0, 1.0]]
        >>> crop_params(0.25, torch.tensor([[0.5, 1.0, 0.5]])).tolist()  # square, right edge
        [[0.5, 0.0, 0.5, 0.5]]
    """
    low = math.log(max(ratio[0], scale))
    high = math.log(min(ratio[1], 1 / scale))
    rho = torch.exp(low + (high - low) * unit[:, 0])  # (B,)
    w = torch.sqrt(scale * rho).clamp(max=1.0)  # (B,)
    h = torch.sqrt(scale / rho).clamp(max=1.0)  # (B,)
    cx = (2 * unit[:, 1] - 1) * (1 - w)  # (B,)
    cy = (2 * unit[:, 2] - 1) * (1 - h)  # (B,)
    return torch.stack([cx, cy, w, h], 1)  # (B, 4)


def resized_crop(images: Tensor, boxes: Tensor) -> Tensor:
    """Cut each image's box and resize it to the image size (bilinear sampling).

    Bilinear interpolation is affine, so normalised model inputs can be cropped directly. A
    box ``(0, 0, 1, 1)`` returns the image (to rounding).

    Args:
        images: ``(B, C, H, W)`` images.
        boxes: ``(B, 4)`` boxes ``(cx, cy, w, h)`` from :func:`crop_params`.

    Returns:
        ``(B, C, H, W)`` crops.

    Example:
        >>> x = torch.arange(16.0).view(1, 1, 4, 4)
        >>> bool(torch.allclose(resized_crop(x, torch.tensor([[0.0, 0.0, 1.0, 1.0]])), x))
        True
        >>> resized_crop(x, torch.tensor([[-0.5, -0.5, 0.5, 0.5]]))[0, 0, 0].tolist()  # 2x2 corner
        [0.0, 0.25, 0.75, 1.25]
    """
    b = boxes.to(images.device, images.dtype)
    zero = torch.zeros_like(b[:, 0])
    theta = torch.stack(
        [torch.stack([b[:, 2], zero, b[:, 0]], 1), torch.stack([zero, b[:, 3], b[:, 1]], 1)], 1
    )  # (B, 2, 3): output [-1, 1] -> the box
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)  # (B, H, W, 2)
    # The outer half pixel of a box at the image's edge lies beyond the last pixel centre:
    # border padding repeats that pixel instead of blending in zeros.
    return F.grid_sample(
        images, grid, mode="bilinear", padding_mode="border", align_corners=False
    )  # (B, C, H, W)


def shift_params(max_shift: int, unit: Tensor) -> Tensor:
    """``(B, 2)`` integer offsets ``(dy, dx)`` in ``{0, ..., m} - floor(m / 2)``.

    Two views drawn this way differ by at most ``m`` pixels per axis (paper 003, C.5).

    Example:
        >>> shift_params(4, torch.tensor([[0.0, 0.999]])).tolist()
        [[-2, 2]]
    """
    steps = torch.floor(unit * (max_shift + 1)).long().clamp(max=max_shift)  # (B, 2)
    return steps - max_shift // 2


def shift_images(images: Tensor, offsets: Tensor, fill: Tensor) -> Tensor:
    """Move each image by whole pixels: ``out[y, x] = in[y - dy, x - dx]``, else ``fill``.

    Args:
        images: ``(B, C, H, W)`` images.
        offsets: ``(B, 2)`` integer ``(dy, dx)``: positive moves down / right.
        fill: ``(C,)`` value of the uncovered pixels (model-input space).

    Returns:
        ``(B, C, H, W)`` shifted images.

    Example:
        >>> x = torch.arange(9.0).view(1, 1, 3, 3)
        >>> shift_images(x, torch.tensor([[1, -1]]), torch.tensor([-1.0]))[0, 0].tolist()
        [[-1.0, -1.0, -1.0], [1.0, 2.0, -1.0], [4.0, 5.0, -1.0]]
    """
    n, c, h, w = images.shape
    off = offsets.to(images.device)
    rows = torch.arange(h, device=images.device)[None] - off[:, :1]  # (B, H)
    cols = torch.arange(w, device=images.device)[None] - off[:, 1:]  # (B, W)
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    batch = torch.arange(n, device=images.device)[:, None, None]  # (B, 1, 1)
    moved = images[batch, :, rows.clamp(0, h - 1)[:, :, None], cols.clamp(0, w - 1)[:, None, :]]
    moved = moved.permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
    value = fill.to(images.device, images.dtype).view(1, c, 1, 1).expand_as(images)
    return torch.where(inside[:, None], moved, value)  # (B, C, H, W)
