"""scikit-learn's digits: split, normalisation constants, categories."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from distillscope.config import load_config_dict
from distillscope.data import digits as digits_module
from distillscope.data import load_dataset
from distillscope.errors import ConfigError
from distillscope.splits import load_splits


def test_split_sizes_and_stratification():
    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    assert len(train) == 1438 and len(test) == 359
    assert train.inputs.shape == (1438, 1, 8, 8) and train.inputs.dtype == torch.float32
    counts = np.bincount(load_digits().target)
    expected = np.round(counts * 0.2)
    assert torch.bincount(test.targets).tolist() == expected.astype(int).tolist()


def test_splits_partition_the_images():
    bunch = load_digits()
    pixels = {}
    for split in ("train", "test"):
        ds = load_dataset("digits", split)
        raw = ds.inputs * digits_module.STD + digits_module.MEAN  # back to [0, 1]
        pixels[split] = np.round(raw.numpy().reshape(len(ds), 64) * 16).astype(np.int64)
    together = np.concatenate([pixels["train"], pixels["test"]])
    assert sorted(map(tuple, together)) == sorted(map(tuple, bunch.data.astype(np.int64)))


def test_hard_coded_constants_are_the_train_statistics():
    train = load_dataset("digits", "train")
    assert abs(train.inputs.mean().item()) < 1e-3
    assert abs(train.inputs.std().item() - 1.0) < 1e-3
    info = train.info
    assert info.mean == (digits_module.MEAN,) and info.pixel_range == (0.0, 1.0)
    assert info.class_names == [str(d) for d in range(10)]


def test_categories_partition_the_classes():
    categories = load_dataset("digits", "test").info.categories
    assert sorted(c for cs in categories.values() for c in cs) == list(range(10))
    assert categories["round"] == [0, 6, 8, 9]


def test_size_resizes_in_pixel_space_and_bad_sizes_are_one_line():
    import pytest

    from distillscope.data import load_dataset
    from distillscope.errors import ConfigError

    small = load_dataset("digits", "test")
    big = load_dataset("digits", "test", size=28)
    assert tuple(big.inputs.shape[1:]) == (1, 28, 28) and big.info.input_shape == (1, 28, 28)
    assert torch.equal(big.targets, small.targets)
    # bilinear resizing keeps each image's mean pixel close to the original's
    assert (big.inputs.mean((1, 2, 3)) - small.inputs.mean((1, 2, 3))).abs().max() < 0.15
    with pytest.raises(ConfigError, match="digits.size"):
        load_dataset("digits", "test", size=4)


@pytest.mark.parametrize("split", ["train", "test"])
def test_a_per_class_count_too_large_states_the_real_maximum_and_its_key(split):
    """The stated maximum is the smallest class of the split as loaded (after the held-out
    share is taken away): that count loads, one more is refused."""
    most = int(torch.bincount(load_dataset("digits", split).targets).min())
    key = f"{split}_per_class"
    with pytest.raises(ConfigError) as info:
        load_splits(load_config_dict({"data": {"name": "digits", key: most + 1}}))
    text = str(info.value)
    assert f"data.{key}={most + 1}" in text and text.endswith(f"at most {most}"), text
    assert f"has only {most} examples" in text
    splits = load_splits(load_config_dict({"data": {"name": "digits", key: most}}))
    held = splits.train if split == "train" else splits.test
    assert torch.bincount(held.targets_tensor()).tolist() == [most] * 10
