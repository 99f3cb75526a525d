"""One dataset drawn in several domains, the domain kept as each item's group.

Paper 003 6.1 trains a teacher on MNIST, MNIST-Color (a random background colour) and MNIST-M
(digits on natural photo patches), distils students on MNIST alone, and evaluates every student
on the three domains. Ours applies the domain shifts of
:mod:`distillscope.data.domain_shifts` to any grey base dataset (Fashion-MNIST by default, or the
8x8 digits resized to 28x28):

- every item of a split is drawn in **one** domain, chosen uniformly at random (seeded) from
  ``domains`` (``original`` = the grey image itself, repeated over three channels);
- ``groups`` holds the domain's index in ``domains``, so ``train_groups`` composes a member's
  training split by domain (``students.X.data.train_groups: {1: 0, 2: 0}`` distils on the
  original domain alone) and the ``group_gap`` probe (``grouping: groups``) reports accuracy
  per domain;
- ``masks`` are the objects (base pixels above the threshold of the domains module);
- images are RGB ``(N, 3, H, W)``, normalised with fixed mid-range constants (:data:`MEAN`,
  :data:`STD`, as ``spurious-fashion``).
"""

from __future__ import annotations

import numpy as np
import torch

from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.data.digits import digits
from distillscope.data.domain_shifts import DOMAINS, apply_domain, object_masks, to_rgb
from distillscope.data.fashion_mnist import fashion_mnist
from distillscope.data.subsets import check_split
from distillscope.data.vision import ColourJitter, RandomCropFlip
from distillscope.errors import ConfigError
from distillscope.registry import register_dataset

__all__ = ["BASES", "DEFAULT_DOMAINS", "MEAN", "STD", "multi_domain"]

#: The grey datasets a multi-domain set can be drawn from.
BASES = ("fashion-mnist", "digits")
#: Paper 003 6.1's three domains: the original, a colour background (MNIST-Color), natural
#: photo patches behind the object (MNIST-M).
DEFAULT_DOMAINS = ("original", "colour_background", "natural_background")
#: Fixed normalisation (mid-range constants, not measured on the data).
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


def _check(domains: object, base: object, max_items: object) -> tuple[str, ...]:
    if base not in BASES:
        raise ConfigError(f"multi-domain.base={base!r} is invalid; use one of {', '.join(BASES)}")
    known = ("original", *DOMAINS)
    if (
        not isinstance(domains, (list, tuple))
        or not domains
        or any(d not in known for d in domains)
        or len(set(domains)) != len(domains)
    ):
        raise ConfigError(
            f"multi-domain.domains={domains!r} is invalid; list distinct names of "
            f"{', '.join(known)}"
        )
    if max_items is not None and (
        isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 2
    ):
        raise ConfigError(
            f"multi-domain.max_items={max_items!r} is invalid; use an integer >= 2 or null"
        )
    return tuple(domains)


@register_dataset("multi-domain")
def multi_domain(
    split: str,
    root: str | None = None,
    base: str = "fashion-mnist",
    domains: list[str] | tuple[str, ...] = DEFAULT_DOMAINS,
    max_items: int | None = None,
    data_seed: int = 0,
    augment: bool = False,
    jitter: float = 0.0,
) -> TensorDataset:
    """A grey base dataset, each item drawn in one of ``domains`` (module docstring).

    Args:
        split: ``"train"`` or ``"test"``.
        root: Folder of the base dataset's files (its own search order otherwise).
        base: ``fashion-mnist`` (default) or ``digits`` (resized to 28x28).
        domains: Names among ``original`` and the domains of
            :data:`~distillscope.data.domain_shifts.DOMAINS`; item ``i``'s group is the index of
            its domain here.
        max_items: Keep at most this many items of the split (the first of a seeded order).
        data_seed: Seed of the domain draw, the item order and the domains' own randomness.
        augment: Random crop with padding 2 on the training split.
        jitter: Colour jitter of strength ``s`` on the training split (0: none; paper 003
            4.3's colour-invariant teacher: 0.4); not together with ``augment``.

    Returns:
        ``(N, 3, 28, 28)`` normalised images with ``groups`` (domains) and ``masks`` (objects).
    """
    train = check_split(split)
    names = _check(domains, base, max_items)
    if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not 0 <= jitter <= 1:
        raise ConfigError(f"multi-domain.jitter={jitter!r} is invalid; use a strength in [0, 1]")
    if jitter and augment:
        raise ConfigError(
            "multi-domain: augment and jitter together are not supported; choose one of them"
        )
    source = fashion_mnist(split, root=root) if base == "fashion-mnist" else digits(split, size=28)
    pixels = source.inputs * source.info.std[0] + source.info.mean[0]  # (N, 1, 28, 28)
    pixels = pixels.clamp(0.0, 1.0)
    rng = np.random.default_rng([data_seed, int(train)])
    order = torch.from_numpy(rng.permutation(len(source)))[: max_items or len(source)]
    pixels, targets = pixels[order], source.targets[order]
    groups = torch.from_numpy(rng.integers(0, len(names), size=len(order)))  # (N,)
    generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
    images = torch.empty(len(order), 3, *pixels.shape[-2:])
    for g, name in enumerate(names):
        rows = torch.nonzero(groups == g)[:, 0]
        if len(rows) == 0:
            continue
        part = pixels[rows]  # (n, 1, H, W)
        images[rows] = to_rgb(part) if name == "original" else apply_domain(name, part, generator)
    info = DatasetInfo(
        name="multi-domain",
        num_classes=source.info.num_classes,
        input_shape=(3, *pixels.shape[-2:]),
        class_names=list(source.info.class_names),
        mean=MEAN,
        std=STD,
        pixel_range=(0.0, 1.0),
        group_names=names,
    )
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    fill = tuple(-m / s for m, s in zip(MEAN, STD))
    transform: RandomCropFlip | ColourJitter | None = None
    if augment and train:
        transform = RandomCropFlip(2, flip=False, fill=fill)
    elif jitter and train:
        transform = ColourJitter(jitter, MEAN, STD)
    return TensorDataset(
        (images - mean) / std,
        targets,
        info,
        transform,
        masks=object_masks(pixels),
        groups=groups.long(),
    )
