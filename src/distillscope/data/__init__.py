"""Datasets: a registry of loaders that all return a :class:`DistillDataset`.

Importing this package registers every dataset module below. See ``docs/datasets.md``.

Example:
    >>> ds = load_dataset("digits", "train", per_class=5, seed=1)
    >>> len(ds), ds.info.num_classes
    (50, 10)
    >>> "fashion-mnist" in dataset_names()
    True
"""

from __future__ import annotations

from typing import Any

from distillscope.data import (  # noqa: F401  (registration)
    digits,
    fashion_mnist,
    heatmap_shapes,
    multidomain,
    sentiment_lexicon,
    spurious,
    sst,
    textured,
    toy2d,
    vision,
)
from distillscope.data.base import (
    DatasetInfo,
    DistillDataset,
    TensorDataset,
    iter_batches,
    num_batches,
)
from distillscope.data.subsets import SPLITS, check_split, take_subset
from distillscope.data.toy2d import toy2d_ring_arrays
from distillscope.registry import DATASETS

__all__ = [
    "SPLITS",
    "DatasetInfo",
    "DistillDataset",
    "TensorDataset",
    "dataset_names",
    "iter_batches",
    "load_dataset",
    "num_batches",
    "toy2d_ring_arrays",
]


def load_dataset(
    name: str,
    split: str = "train",
    *,
    root: str | None = None,
    per_class: int | None = None,
    fraction: float | None = None,
    seed: int = 0,
    **params: Any,
) -> DistillDataset:
    """Load a registered dataset, optionally keeping only part of it.

    Args:
        name: A registered name (:func:`dataset_names`), e.g. ``"fashion-mnist"``.
        split: ``"train"`` or ``"test"``.
        root: Folder to look for the data in first (datasets that read files).
        per_class: Keep ``per_class`` examples of every class, the first of a permutation
            seeded by ``seed`` within each class (few-shot distillation, paper 001).
        fraction: Keep this stratified fraction in ``(0, 1]`` of every class instead.
        seed: Seed of the ``per_class`` / ``fraction`` choice (not of the data itself).
        **params: The dataset's own parameters, e.g. ``augment=True``; unknown ones raise.

    Raises:
        ConfigError: Unknown name, split or parameter, or a subset a class cannot fill.
        DataError: The data cannot be found or read.
    """
    check_split(split)
    dataset = DATASETS.create(name, split=split, root=root, **params)
    return take_subset(dataset, per_class=per_class, fraction=fraction, seed=seed)


def dataset_names(pattern: str = "*") -> list[str]:
    """Registered dataset names matching an fnmatch ``pattern``, sorted."""
    return DATASETS.list(pattern)
