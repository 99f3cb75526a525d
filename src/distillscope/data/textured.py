"""Fashion-MNIST objects filled with textures: texture- vs shape-biased training, cue conflicts.

Ours, at CPU scale, after paper 003 appendix C.3: its shape-biased teacher is a ResNet-50
trained on Stylized-ImageNet (texture made uninformative, so the network must use shape),
its texture-biased student an ordinary ImageNet network; shape bias is measured on
cue-conflict images (Geirhos et al. 2019). Here every Fashion-MNIST object (luminance above
0.1, :data:`~distillscope.data.domain_shifts.MASK_THRESHOLD`) is filled with a colour texture
(:mod:`distillscope.data.textures`), on its black background:

- ``class``: the texture of the item's own class (pattern ``k % 6``, hue ``k / 10``): texture
  and colour predict the label as well as the shape does, and are easier to read, so a network
  trained on it is **texture-biased**;
- ``random``: a random texture per item (random pattern and hue): only the shape predicts the
  label, so a network trained on it is **shape-biased** (Stylized-ImageNet's recipe);
- ``conflict``: the texture of another class B (uniform over the other nine): cue-conflict
  images, the shape says the label, the texture says B (``groups`` holds B);
- ``none``: the grey object as it is, repeated over three channels (a plain baseline in the
  same input format).

``texture`` renders the training split, ``test_texture`` the held-out one (``conflict`` by
default, so accuracy on it is the share of shape decisions and the ``shape_bias`` probe has
textures the models know). Items keep their shape label as ``targets``; ``groups`` is the
texture's class (``class``: the label; ``conflict``: B; none for ``random`` / ``none``);
``masks`` are the objects. Inputs are ``(3, 28, 28)``, normalised with fixed mid-range
constants (:data:`MEAN`, :data:`STD`, not measured).
"""

from __future__ import annotations

import numpy as np
import torch

from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.data.domain_shifts import cue_conflict, object_masks, stylised, to_rgb
from distillscope.data.fashion_mnist import CATEGORIES, CLASS_NAMES, fashion_mnist
from distillscope.data.subsets import check_split
from distillscope.data.textures import class_textures, conflict_labels
from distillscope.data.vision import RandomCropFlip
from distillscope.errors import ConfigError
from distillscope.registry import register_dataset

__all__ = ["TEXTURES", "textured_fashion"]

#: How the objects of a split are filled (module docstring).
TEXTURES = ("class", "random", "conflict", "none")
#: Fixed normalisation (mid-range constants, not measured on the data).
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
#: Items rendered at once (bounds the memory of the texture patches).
CHUNK = 8192


@register_dataset("textured-fashion")
def textured_fashion(
    split: str,
    root: str | None = None,
    texture: str = "class",
    test_texture: str = "conflict",
    max_items: int | None = None,
    data_seed: int = 0,
    augment: bool = False,
) -> TensorDataset:
    """Fashion-MNIST with textured objects (module docstring).

    Args:
        split: ``"train"`` or ``"test"``.
        root: Folder of the Fashion-MNIST IDX files (its usual search order otherwise).
        texture: How training objects are filled: ``class`` (texture-biased recipe),
            ``random`` (shape-biased recipe), ``conflict`` or ``none``.
        test_texture: The same for the held-out split (default ``conflict``).
        max_items: Keep at most this many items of the split (the first of a seeded order).
        data_seed: Seed of the item order, the texture places and the conflicting classes.
        augment: Random crop with padding 2 on the training split.

    Returns:
        ``(N, 3, 28, 28)`` normalised images with ``masks`` (objects) and, for ``class`` and
        ``conflict``, ``groups`` (the class whose texture fills the object).
    """
    train = check_split(split)
    for key, value in (("texture", texture), ("test_texture", test_texture)):
        if value not in TEXTURES:
            raise ConfigError(
                f"textured-fashion.{key}={value!r} is invalid; use one of {', '.join(TEXTURES)}"
            )
    if max_items is not None and (isinstance(max_items, bool) or not isinstance(max_items, int)
                                  or max_items < 1):  # fmt: skip
        raise ConfigError(
            f"textured-fashion.max_items={max_items!r} is invalid; use an integer >= 1 or null"
        )
    base = fashion_mnist(split, root=root)
    order = torch.from_numpy(np.random.default_rng([data_seed, int(train)]).permutation(len(base)))
    keep = order[: max_items or len(base)]  # (N,)
    labels = base.targets[keep]
    generator = torch.Generator().manual_seed(2 * data_seed + int(train))
    fill = texture if train else test_texture
    k = len(CLASS_NAMES)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    inputs = torch.empty(len(keep), 3, 28, 28)
    masks = torch.empty(len(keep), 28, 28, dtype=torch.bool)
    groups = labels.clone() if fill == "class" else torch.empty_like(labels)
    for start in range(0, len(keep), CHUNK):  # chunks bound the memory; no per-image loop
        rows = slice(start, start + CHUNK)
        x = base.inputs[keep[rows]]  # (n, 1, 28, 28) normalised
        pixels = (x * base.info.std[0] + base.info.mean[0]).clamp(0, 1)  # (n, 1, 28, 28)
        m = object_masks(pixels)  # (n, 28, 28)
        if fill == "class":
            image = cue_conflict(pixels, m, class_textures(labels[rows], k, 28, 28, generator))
        elif fill == "conflict":
            groups[rows] = conflict_labels(labels[rows], k, generator)
            image = cue_conflict(pixels, m, class_textures(groups[rows], k, 28, 28, generator))
        elif fill == "random":
            image = stylised(pixels, generator, m)
        else:
            image = to_rgb(pixels)
        inputs[rows] = (image - mean) / std
        masks[rows] = m
    info = DatasetInfo(
        name="textured-fashion",
        num_classes=k,
        input_shape=(3, 28, 28),
        class_names=list(CLASS_NAMES),
        categories={name: list(v) for name, v in CATEGORIES.items()},
        mean=MEAN,
        std=STD,
        pixel_range=(0.0, 1.0),
    )
    black = tuple(-m / s for m, s in zip(MEAN, STD))
    transform = RandomCropFlip(2, flip=False, fill=black) if augment and train else None
    has_groups = fill in ("class", "conflict")
    return TensorDataset(
        inputs, labels, info, transform, masks=masks, groups=groups if has_groups else None
    )
