"""load_dataset and the dataset registry, over every dataset that loads offline."""

from __future__ import annotations

import pytest
import torch

from distillscope.data import DistillDataset, dataset_names, iter_batches, load_dataset
from distillscope.errors import ConfigError

OFFLINE = ["digits", "toy2d-ring"]


def test_every_dataset_module_registers():
    assert {"fashion-mnist", "digits", "toy2d-ring", "cifar10", "imagefolder"} <= set(
        dataset_names()
    )
    assert dataset_names("toy*") == ["toy2d-ring"]


@pytest.mark.parametrize("name", OFFLINE)
@pytest.mark.parametrize("split", ["train", "test"])
def test_offline_datasets_honour_the_contract(name, split):
    ds = load_dataset(name, split)
    assert isinstance(ds, DistillDataset)
    info = ds.info
    assert info.name == name and len(info.class_names) == info.num_classes
    x, y, i = ds[3]
    assert tuple(x.shape) == info.input_shape and i == 3 and 0 <= int(y) < info.num_classes
    assert ds.targets_tensor().unique().tolist() == list(range(info.num_classes))
    for members in info.categories.values():
        assert all(0 <= c < info.num_classes for c in members)
    batch = next(iter_batches(ds, 16))
    assert batch.inputs.shape == (16, *info.input_shape) and torch.isfinite(batch.inputs).all()


def test_user_errors_name_the_fix():
    with pytest.raises(ConfigError, match="valid splits: train, test"):
        load_dataset("digits", "validation")
    with pytest.raises(ConfigError, match="valid choices: .*fashion-mnist"):
        load_dataset("fashion_mnist")
    with pytest.raises(ConfigError, match="unknown parameter 'noise' for dataset 'digits'"):
        load_dataset("digits", noise=0.1)
