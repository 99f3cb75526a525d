"""Choosing indices: splits, per-class subsets (few-shot distillation, paper 001) and fractions.

Every choice here is stratified by class and deterministic for a given seed: the indices of
each class are ordered by one seeded permutation of the whole dataset, and the first ``k`` of
each class are taken. The functions on targets are pure; :func:`take_subset` applies their
indices to a dataset.

Example:
    >>> y = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
    >>> idx = per_class_indices(y, 2, seed=0)
    >>> torch.bincount(y[idx]).tolist()
    [2, 2, 2]
    >>> train, test = stratified_split(y, 0.34, seed=0)
    >>> torch.bincount(y[test]).tolist(), len(train) + len(test)
    ([1, 1, 1], 10)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import torch
from torch import Tensor

from distillscope.data.base import DistillDataset
from distillscope.errors import ConfigError, quoted

#: The splits every dataset provides.
SPLITS = ("train", "test")

D = TypeVar("D", bound=DistillDataset)


def check_split(split: str) -> bool:
    """Validate ``split``; returns ``True`` for the training split."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    return split == "train"


def _ranks_within_class(
    targets: Tensor, seed: int, num_classes: int = 0
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Group a seeded permutation of the indices by class.

    Returns:
        ``(idx, cls, rank, counts)``: ``idx`` (N,) the indices grouped by class, in permuted
        order within each class; ``cls`` (N,) their classes; ``rank`` (N,) the position of
        each index within its class; ``counts`` (K,) the class sizes, K at least
        ``num_classes``.
    """
    targets = targets.long().cpu()
    n = targets.shape[0]
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen)  # (N,)
    order = torch.argsort(targets[perm], stable=True)  # (N,) by class, permuted within
    idx = perm[order]  # (N,)
    cls = targets[idx]  # (N,)
    counts = torch.bincount(targets, minlength=num_classes)  # (K,)
    starts = torch.cumsum(counts, 0) - counts  # (K,) first position of each class
    rank = torch.arange(n) - starts[cls]  # (N,)
    return idx, cls, rank, counts


def per_class_indices(
    targets: Tensor, k: int, seed: int = 0, num_classes: int | None = None, key: str = "per_class"
) -> Tensor:
    """Indices of ``k`` examples of every class, sorted ascending.

    Args:
        targets: ``(N,)`` class indices.
        k: Examples per class: the first ``k`` of the class in a permutation seeded by ``seed``.
        seed: Seed of the permutation.
        num_classes: Classes that must each have ``k`` examples; defaults to ``max(targets) + 1``.
        key: The config key of ``k``, named in errors (e.g. ``data.train_per_class``).

    Raises:
        ConfigError: When ``k`` is not a positive integer or a class has fewer than ``k``; the
            message states the real maximum, the size of the smallest class of ``targets``.

    Example:
        >>> per_class_indices(torch.tensor([0, 0, 0, 1, 1]), 3, key="data.train_per_class")
        Traceback (most recent call last):
        ...
        distillscope.errors.ConfigError: data.train_per_class=3 but class 1, the smallest of \
this split, has only 2 examples; lower data.train_per_class to at most 2
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"{key} must be a positive integer, got {quoted(k)}")
    idx, cls, rank, counts = _ranks_within_class(targets, seed, num_classes or 0)
    if bool((counts < k).any()):
        c = int(counts.argmin())  # the smallest class bounds k
        most = int(counts[c])
        if not most:
            raise ConfigError(
                f"{key}={k} but class {c} has no example in this split; use a split with every "
                f"class, or drop {key}"
            )
        raise ConfigError(
            f"{key}={k} but class {c}, the smallest of this split, has only {most} examples; "
            f"lower {key} to at most {most}"
        )
    return idx[rank < k].sort().values


def fraction_indices(
    targets: Tensor, fraction: float, seed: int = 0, key: str = "fraction"
) -> Tensor:
    """Indices of a stratified ``fraction`` of the examples, sorted ascending.

    Each class keeps ``round(fraction * n_c)`` examples (at least one), the first of a
    permutation seeded by ``seed``; ``fraction=1`` keeps everything.

    Raises:
        ConfigError: When ``fraction`` is not in ``(0, 1]`` (``key`` names it).
    """
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, (int, float))
        or not (0 < fraction <= 1)
    ):
        raise ConfigError(f"{key} must be in (0, 1], got {quoted(fraction)}")
    idx, cls, rank, counts = _ranks_within_class(targets, seed)
    keep = torch.round(counts * float(fraction)).long().clamp(min=1)  # (K,)
    return idx[rank < keep[cls]].sort().values


def stratified_split(targets: Tensor, test_fraction: float, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Split indices into disjoint ``(train, test)`` index tensors, stratified by class.

    Each class puts ``round(test_fraction * n_c)`` examples in the test part; both parts are
    sorted ascending and together cover every index once.
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    idx, cls, rank, counts = _ranks_within_class(targets, seed)
    n_test = torch.round(counts * float(test_fraction)).long()  # (K,)
    is_test = rank < n_test[cls]  # (N,)
    return idx[~is_test].sort().values, idx[is_test].sort().values


def take_subset(
    dataset: D,
    per_class: int | None = None,
    fraction: float | None = None,
    seed: int = 0,
    keys: tuple[str, str] = ("per_class", "fraction"),
) -> D:
    """``dataset`` restricted to ``per_class`` examples per class or a ``fraction`` of it.

    At most one of ``per_class`` and ``fraction`` may be given; with neither, ``dataset`` is
    returned unchanged. The subset is re-indexed from 0. ``keys`` are the config keys of the
    two, named in errors (e.g. ``("data.train_per_class", "data.train_fraction")``).
    """
    if per_class is not None and fraction is not None:
        # config keys (dotted): the fix is an override; the library's own names: an argument
        fix = (
            f"to keep {keys[0]}, add the override {keys[1]}=null (or drop one from the config)"
            if "." in keys[1]
            else "pass one of them"
        )
        raise ConfigError(
            f"give {keys[0]} ({per_class}) or {keys[1]} ({fraction}), not both; {fix}"
        )
    if per_class is None and fraction is None:
        return dataset
    if not hasattr(dataset, "subset"):
        raise ConfigError(
            f"dataset {dataset.info.name!r} does not support {keys[0]} / {keys[1]}; remove them"
        )
    targets = dataset.targets_tensor()
    if per_class is not None:
        idx = per_class_indices(
            targets, per_class, seed, num_classes=dataset.info.num_classes, key=keys[0]
        )
    else:
        idx = fraction_indices(targets, fraction, seed, key=keys[1])  # type: ignore[arg-type]
    return dataset.subset(idx)  # type: ignore[attr-defined]


def group_share_indices(
    targets: Tensor, groups: Tensor, shares: Mapping[int, float], seed: int = 0
) -> Tensor:
    """Indices keeping ``shares[g]`` of each group ``g``'s items, stratified by class, sorted.

    Within each (group, class) cell the first ``round(share * n)`` items of a permutation seeded
    by ``seed`` are kept (a share of 0 drops the group; groups not in ``shares`` are kept whole).
    Paper 003 6.2 trains a teacher on a skewed group composition and its students on a fair one.

    Raises:
        ConfigError: A share outside ``[0, 1]`` or a group that no item has.

    Example:
        >>> y = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
        >>> g = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
        >>> group_share_indices(y, g, {1: 0.0}).tolist()
        [0, 1, 2, 3]
        >>> len(group_share_indices(y, g, {0: 0.5}))
        6
    """
    present = sorted(set(groups.tolist()))
    unknown = [g for g in shares if g not in present]
    if unknown:
        raise ConfigError(
            f"train_groups names group {unknown[0]} but the data has groups {present}; use those"
        )
    bad = {g: s for g, s in shares.items() if not 0 <= float(s) <= 1}
    if bad:
        raise ConfigError(f"train_groups shares must be in [0, 1], got {bad}")
    k = int(targets.max()) + 1 if targets.numel() else 1
    cells = groups.long() * k + targets.long()  # (N,) one id per (group, class)
    idx, cell, rank, counts = _ranks_within_class(cells, seed)
    share = torch.ones(counts.shape[0], dtype=torch.float64)  # (cells,)
    for g, s in shares.items():
        share[g * k : (g + 1) * k] = float(s)
    keep = torch.round(counts.double() * share[: counts.shape[0]]).long()  # (cells,)
    return idx[rank < keep[cell]].sort().values


def take_group_shares(dataset: D, shares: Mapping[int, float], seed: int = 0) -> D:
    """``dataset`` keeping ``shares`` of its groups (:func:`group_share_indices`).

    Raises:
        ConfigError: The dataset has no groups.
    """
    groups = getattr(dataset, "groups", None)
    if groups is None or not hasattr(dataset, "subset"):
        raise ConfigError(
            f"dataset {dataset.info.name!r} has no groups to compose; drop train_groups or use "
            "a dataset with groups (spurious-fashion, multi-domain)"
        )
    idx = group_share_indices(dataset.targets_tensor(), groups, shares, seed)
    return dataset.subset(idx)  # type: ignore[attr-defined]
