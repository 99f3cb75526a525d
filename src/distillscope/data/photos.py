"""scikit-image's bundled photos and textures, and random patches cut from them.

Shared by the spurious-background dataset (:mod:`distillscope.data.spurious`), the domain shifts
(:mod:`distillscope.data.domain_shifts`) and the texture bank (:mod:`distillscope.data.textures`).
The photos ship inside scikit-image (no download); each is read once per process.

Example:
    >>> tuple(photo("grass").shape), tuple(photo("coffee").shape)
    ((1, 512, 512), (3, 400, 600))
    >>> image = torch.arange(16.0).view(1, 4, 4)
    >>> cut_patches(image, torch.tensor([0, 2]), torch.tensor([1, 0]), 2, 2)[:, 0].tolist()
    [[[1.0, 2.0], [5.0, 6.0]], [[8.0, 9.0], [12.0, 13.0]]]
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from distillscope.errors import ConfigError

__all__ = ["COLOUR_PHOTOS", "cut_patches", "photo", "random_patches"]

#: Colour photos of everyday scenes (natural backgrounds, as MNIST-M cuts BSDS500 photos).
COLOUR_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


@functools.cache
def photo(name: str) -> Tensor:
    """The bundled scikit-image photo ``name`` as a float ``(C, H, W)`` tensor in ``[0, 1]``.

    ``C`` is 1 for grey photos (``grass``, ``gravel``, ``brick``, ...) and 3 for colour ones
    (an alpha channel is dropped). The tensor is cached: do not modify it in place.

    Raises:
        ConfigError: ``name`` is not a scikit-image photo.
    """
    import skimage.data

    loader = getattr(skimage.data, name, None)
    if not callable(loader) or name.startswith("_"):
        raise ConfigError(f"photo {name!r} is not one of scikit-image's bundled images")
    array = torch.from_numpy(loader().astype("float32") / 255.0)  # (H, W) or (H, W, C)
    if array.dim() == 2:
        return array[None].contiguous()  # (1, H, W)
    return array[..., :3].permute(2, 0, 1).contiguous()  # (3, H, W)


def cut_patches(image: Tensor, ys: Tensor, xs: Tensor, height: int, width: int) -> Tensor:
    """``(N, C, height, width)`` patches of a ``(C, H, W)`` image, the n-th at ``(ys[n], xs[n])``.

    One gather for all patches (no Python loop); corners must leave the patch inside the image.
    """
    rows = ys.long()[:, None] + torch.arange(height)  # (N, height)
    cols = xs.long()[:, None] + torch.arange(width)  # (N, width)
    patches = image[:, rows[:, :, None], cols[:, None, :]]  # (C, N, height, width)
    return patches.permute(1, 0, 2, 3)


def random_patches(
    image: Tensor, n: int, height: int, width: int, generator: torch.Generator
) -> Tensor:
    """``(n, C, height, width)`` patches of a ``(C, H, W)`` image at uniformly random places.

    An image smaller than the patch is first enlarged (bilinear, aspect ratio kept) until the
    patch fits.
    """
    h, w = image.shape[-2:]
    if h < height or w < width:
        scale = max(height / h, width / w)
        size = (max(height, round(h * scale)), max(width, round(w * scale)))
        image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
        h, w = size
    ys = torch.randint(0, h - height + 1, (n,), generator=generator)  # (n,)
    xs = torch.randint(0, w - width + 1, (n,), generator=generator)  # (n,)
    return cut_patches(image, ys, xs, height, width)
