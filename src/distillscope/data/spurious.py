"""Fashion-MNIST objects on natural backgrounds whose kind is correlated with the label.

In the spirit of Waterbirds (Sagawa et al. 2020; paper 001 4.2 uses Waterbirds-100): a binary
task whose label is predicted by the object, while the background is a shortcut that agrees
with the label on ``correlation`` of the training images and on ``test_correlation`` of the
held-out ones. Ours, at CPU scale:

- objects: Fashion-MNIST items of two super-classes; ``task = garments`` (default): **light**
  (T-shirt/top, shirt: label 0) against **warm** (pullover, coat: label 1), the four classes
  Fashion-MNIST confuses most, so the object is a hard cue (as birds are in Waterbirds) and the
  background shortcut competes with it; ``task = tops-footwear``: tops (T-shirt, pullover,
  coat, shirt) against footwear (sandal, sneaker, ankle boot), an easy cue; the other classes
  are left out;
- backgrounds: 28x28 patches cut at random places from scikit-image's bundled photos, two
  groups that differ in texture and colour: **land** (``grass``, tinted green) and **water**
  (``gravel``, tinted blue); group ``g`` "agrees" with label ``g``;
- composition: the object's grey value ``p`` in [0, 1] is its alpha,
  ``image = p * object + (1 - p) * background`` (the object in grey), and the object mask is
  ``p > 0.1`` (:data:`MASK_THRESHOLD`; Fashion-MNIST's background is 0);
- ``groups`` holds each image's background group; an image is in the majority when its group
  equals its label.

The default held-out split is balanced (``test_correlation = 0.5``): half its images are in the
majority (in-distribution) and half in the minority (the label/background pairs that are rare in
training, out-of-distribution), so one run measures both through a group probe
(``group_gap``); ``test_correlation = 0`` gives only minority images. Inputs are normalised with
fixed constants (:data:`MEAN`, :data:`STD`: the middle of the range, not measured).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.data.fashion_mnist import fashion_mnist
from distillscope.data.photos import cut_patches, photo
from distillscope.data.subsets import check_split
from distillscope.data.vision import RandomCropFlip
from distillscope.errors import ConfigError
from distillscope.registry import register_dataset

__all__ = ["GROUPS", "SUPERCLASSES", "spurious_fashion"]

#: Fashion-MNIST classes of each label, per task.
SUPERCLASSES = {
    "garments": (("light", (0, 6)), ("warm", (2, 4))),
    "tops-footwear": (("top", (0, 2, 4, 6)), ("footwear", (5, 7, 9))),
}
#: Background groups: name, scikit-image photo, RGB tint; group g agrees with label g.
GROUPS = (("land", "grass", (0.45, 0.75, 0.30)), ("water", "gravel", (0.30, 0.50, 0.90)))
#: Object pixels: grey value above this (Fashion-MNIST's own background is exactly 0).
MASK_THRESHOLD = 0.1
#: Fixed normalisation (mid-range constants, not measured on the data).
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


def _backgrounds(n: int, groups: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(n, 3, 28, 28)`` background patches in [0, 1], each of its row's group."""
    out = np.empty((n, 3, 28, 28), dtype=np.float32)
    for g, (_, name, tint) in enumerate(GROUPS):
        rows = np.flatnonzero(groups == g)
        image = photo(name)  # (1, H, W) grey
        h, w = image.shape[-2:]
        ys = rng.integers(0, h - 28, size=len(rows))
        xs = rng.integers(0, w - 28, size=len(rows))
        patches = cut_patches(image, torch.from_numpy(ys), torch.from_numpy(xs), 28, 28)
        out[rows] = patches.numpy() * np.asarray(tint, dtype=np.float32)[None, :, None, None]
    return out


@register_dataset("spurious-fashion")
def spurious_fashion(
    split: str,
    root: str | None = None,
    correlation: float = 0.95,
    test_correlation: float = 0.5,
    max_items: int | None = None,
    data_seed: int = 0,
    augment: bool = False,
    task: str = "garments",
) -> TensorDataset:
    """Two Fashion-MNIST super-classes on land or water backgrounds (module docstring).

    Args:
        split: ``"train"`` or ``"test"``.
        root: Folder of the Fashion-MNIST IDX files (its usual search order otherwise).
        correlation: Share of training images whose background group equals their label.
        test_correlation: The same for the held-out split (0.5: balanced; 0: all minority).
        max_items: Keep at most this many items of the split (the first of a seeded order).
        data_seed: Seed of the backgrounds, their places and the item order.
        augment: Random crop with padding 2 on the training split.
        task: ``garments`` (hard object cue) or ``tops-footwear`` (easy).

    Returns:
        ``(N, 3, 28, 28)`` normalised images with ``masks`` (objects) and ``groups``
        (background groups).
    """
    train = check_split(split)
    for key, value in (("correlation", correlation), ("test_correlation", test_correlation)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ConfigError(f"spurious-fashion.{key}={value!r} is invalid; use a share in [0, 1]")
    if max_items is not None and (isinstance(max_items, bool) or not isinstance(max_items, int)
                                  or max_items < 2):  # fmt: skip
        raise ConfigError(
            f"spurious-fashion.max_items={max_items!r} is invalid; use an integer >= 2 or null"
        )
    if task not in SUPERCLASSES:
        raise ConfigError(
            f"spurious-fashion.task={task!r} is invalid; use one of {', '.join(SUPERCLASSES)}"
        )
    base = fashion_mnist(split, root=root)
    pixels = base.inputs[:, 0] * base.info.std[0] + base.info.mean[0]  # (N, 28, 28) in [0, 1]
    labels = torch.full_like(base.targets, -1)
    for label, (_, classes) in enumerate(SUPERCLASSES[task]):
        labels[torch.isin(base.targets, torch.tensor(classes))] = label
    keep = torch.nonzero(labels >= 0)[:, 0]  # (M,)
    rng = np.random.default_rng([data_seed, int(train)])
    order = torch.from_numpy(rng.permutation(len(keep)))
    keep = keep[order][: max_items or len(keep)]
    y = labels[keep].numpy()
    share = correlation if train else test_correlation
    agree = rng.random(len(y)) < share
    groups = np.where(agree, y, 1 - y)
    back = torch.from_numpy(_backgrounds(len(y), groups, rng))  # (N, 3, 28, 28)
    p = pixels[keep].clamp(0, 1)[:, None]  # (N, 1, 28, 28) the object's alpha
    images = p * p + (1 - p) * back  # the object in grey: its value p at alpha p
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    info = DatasetInfo(
        name="spurious-fashion",
        num_classes=2,
        input_shape=(3, 28, 28),
        class_names=[name for name, _ in SUPERCLASSES[task]],
        mean=MEAN,
        std=STD,
        pixel_range=(0.0, 1.0),
        group_names=tuple(name for name, _, _ in GROUPS),
    )
    fill = tuple(-m / s for m, s in zip(MEAN, STD))
    transform = RandomCropFlip(2, flip=False, fill=fill) if augment and train else None
    return TensorDataset(
        (images - mean) / std,
        torch.from_numpy(y.astype(np.int64)),
        info,
        transform,
        masks=p[:, 0] > MASK_THRESHOLD,
        groups=torch.from_numpy(groups.astype(np.int64)),
    )


def group_agreement(dataset: TensorDataset) -> Tensor:
    """``(N,)`` whether each item's background group equals its label (the majority)."""
    assert dataset.groups is not None
    return dataset.groups == dataset.targets
