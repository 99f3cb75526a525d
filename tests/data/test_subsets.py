"""Per-class subsets, fractions and stratified splits."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from distillscope.data import load_dataset
from distillscope.data.subsets import (
    fraction_indices,
    per_class_indices,
    stratified_split,
    take_subset,
)
from distillscope.errors import ConfigError

TARGETS = torch.tensor([0] * 10 + [1] * 7 + [2] * 5 + [1] * 3)  # 10 / 10 / 5, interleaved


def test_per_class_takes_k_of_each_class_sorted():
    idx = per_class_indices(TARGETS, 4, seed=0)
    assert torch.bincount(TARGETS[idx]).tolist() == [4, 4, 4]
    assert torch.equal(idx, idx.sort().values) and len(set(idx.tolist())) == 12


def test_per_class_is_the_prefix_of_a_seeded_permutation():
    small = per_class_indices(TARGETS, 2, seed=3)
    large = per_class_indices(TARGETS, 4, seed=3)
    assert set(small.tolist()) <= set(large.tolist())  # growing k only adds examples
    assert torch.equal(small, per_class_indices(TARGETS, 2, seed=3))
    draws = {tuple(per_class_indices(TARGETS, 2, seed=s).tolist()) for s in range(10)}
    assert len(draws) > 1


def test_per_class_errors_when_a_class_is_short():
    with pytest.raises(ConfigError, match="class 2, the smallest of this split, has only 5"):
        per_class_indices(TARGETS, 6)
    with pytest.raises(ConfigError, match="class 3 has no example"):
        per_class_indices(TARGETS, 1, num_classes=4)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ConfigError, match="per_class"):
            per_class_indices(TARGETS, bad)


def test_fraction_is_stratified_and_keeps_every_class():
    idx = fraction_indices(TARGETS, 0.5, seed=0)
    assert torch.bincount(TARGETS[idx]).tolist() == [5, 5, 2]  # round(2.5) = 2 (to even)
    tiny = fraction_indices(TARGETS, 0.01, seed=0)
    assert torch.bincount(TARGETS[tiny]).tolist() == [1, 1, 1]
    assert len(fraction_indices(TARGETS, 1.0)) == len(TARGETS)
    for bad in (0, 1.5, -0.1, "half"):
        with pytest.raises(ConfigError, match="fraction"):
            fraction_indices(TARGETS, bad)


@settings(max_examples=50, deadline=None)
@given(
    labels=st.lists(st.integers(0, 4), min_size=2, max_size=60),
    test_fraction=st.floats(0.05, 0.95),
    seed=st.integers(0, 2**31),
)
def test_stratified_split_partitions_the_indices(labels, test_fraction, seed):
    y = torch.tensor(labels)
    train, test = stratified_split(y, test_fraction, seed)
    assert sorted(train.tolist() + test.tolist()) == list(range(len(labels)))
    counts = torch.bincount(y, minlength=5)
    expected = torch.round(counts * test_fraction).long()
    assert torch.equal(torch.bincount(y[test], minlength=5), expected)
    again = stratified_split(y, test_fraction, seed)
    assert torch.equal(again[0], train) and torch.equal(again[1], test)


def test_load_dataset_applies_subsets_reindexed():
    full = load_dataset("digits", "train")
    sub = load_dataset("digits", "train", per_class=3, seed=5)
    assert len(sub) == 30 and torch.bincount(sub.targets).tolist() == [3] * 10
    idx = per_class_indices(full.targets, 3, seed=5)
    assert torch.equal(sub.inputs, full.inputs[idx])
    assert sub[0][2] == 0  # items carry indices of the subset, not of the full set
    frac = load_dataset("digits", "train", fraction=0.1)
    assert len(frac) == len(fraction_indices(full.targets, 0.1))


def test_per_class_and_fraction_together_are_rejected():
    ds = load_dataset("toy2d-ring", "test")
    with pytest.raises(ConfigError, match="not both"):
        take_subset(ds, per_class=2, fraction=0.5)
    assert take_subset(ds) is ds
