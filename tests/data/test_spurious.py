"""spurious-fashion: correlation of backgrounds with labels, masks, groups, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from distillscope.data import dataset_names, load_dataset
from distillscope.data import fashion_mnist as fm
from distillscope.data.idx import write_idx
from distillscope.data.spurious import GROUPS, MEAN, STD
from distillscope.errors import ConfigError


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Stand-in Fashion-MNIST: 400 / 200 items, an object block in the middle of each image."""
    folder = tmp_path_factory.mktemp("fm")
    for split, n in (("train", 400), ("test", 200)):
        images, labels = fm.FILES[split]
        data = np.zeros((n, 28, 28), dtype=np.uint8)
        data[:, 8:20, 10:18] = 200
        write_idx(folder / images, data)
        write_idx(folder / labels, (np.arange(n) % 10).astype(np.uint8))
    return folder


def test_backgrounds_follow_the_label_in_training_and_are_balanced_at_test(root):
    train = load_dataset("spurious-fashion", "train", root=str(root))
    test = load_dataset("spurious-fashion", "test", root=str(root))
    assert train.info.num_classes == 2 and tuple(train.inputs.shape[1:]) == (3, 28, 28)
    assert len(train) == 160 and len(test) == 80  # T-shirt, shirt, pullover, coat: 4 of 10
    easy = load_dataset("spurious-fashion", "train", root=str(root), task="tops-footwear")
    assert len(easy) == 280 and easy.info.class_names == ["top", "footwear"]
    assert abs((train.groups == train.targets).float().mean().item() - 0.95) < 0.05
    assert abs((test.groups == test.targets).float().mean().item() - 0.5) < 0.12
    reversed_ = load_dataset("spurious-fashion", "test", root=str(root), test_correlation=0.0)
    assert (reversed_.groups != reversed_.targets).all()


def test_masks_cover_the_pasted_object_and_backgrounds_carry_their_group_s_tint(root):
    data = load_dataset("spurious-fashion", "train", root=str(root), max_items=40)
    expected = torch.zeros(28, 28, dtype=torch.bool)
    expected[8:20, 10:18] = True
    assert all(torch.equal(m, expected) for m in data.masks)
    pixels = data.inputs * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
    outside = pixels[:, :, ~expected]  # (N, 3, P) background pixels only
    green = outside[:, 1].mean(1) > outside[:, 2].mean(1)  # land is tinted green, water blue
    assert torch.equal(green, data.groups == 0)
    assert GROUPS[0][0] == "land"


def test_the_same_seed_repeats_and_another_seed_differs(root):
    a = load_dataset("spurious-fashion", "train", root=str(root), max_items=50)
    b = load_dataset("spurious-fashion", "train", root=str(root), max_items=50)
    c = load_dataset("spurious-fashion", "train", root=str(root), max_items=50, data_seed=1)
    assert torch.equal(a.inputs, b.inputs) and not torch.equal(a.inputs, c.inputs)
    assert a.fingerprint() != c.fingerprint()
    other = load_dataset("spurious-fashion", "train", root=str(root), max_items=50,
                         correlation=0.5)  # fmt: skip
    assert a.fingerprint() != other.fingerprint()


@pytest.mark.parametrize(
    ("params", "needle"),
    [({"correlation": 1.5}, "correlation"), ({"test_correlation": -0.1}, "test_correlation"),
     ({"max_items": 1}, "max_items"), ({"task": "birds"}, "spurious-fashion.task")],
)  # fmt: skip
def test_bad_parameters_are_one_line(root, params, needle):
    with pytest.raises(ConfigError, match=needle):
        load_dataset("spurious-fashion", "train", root=str(root), **params)


def test_it_is_listed():
    assert "spurious-fashion" in dataset_names()


def test_a_group_composition_keeps_its_share_of_each_group(root):
    """train_groups (paper 003 6.2): a skewed teacher split drops most of one group."""
    from distillscope.config import load_config_dict
    from distillscope.splits import load_splits

    cfg = load_config_dict(
        {
            "data": {"name": "spurious-fashion", "root": str(root)},
            "teacher": {"model": {"name": "mlp"}},
            "teachers": {},
            "students": {
                "skewed": {"loss": "ce", "data": {"train_groups": {1: 0.1}}},
                "one_group": {"loss": "ce", "data": {"train_groups": {0: 0.0}}},
            },
        }
    )
    splits = load_splits(cfg)
    whole, skewed = splits.train, splits.train_of("skewed")
    for g, share in ((0, 1.0), (1, 0.1)):
        for c in (0, 1):
            n = int(((whole.groups == g) & (whole.targets == c)).sum())
            kept = int(((skewed.groups == g) & (skewed.targets == c)).sum())
            assert kept == round(share * n)
    assert set(splits.train_of("one_group").groups.tolist()) == {1}


def test_a_group_composition_names_only_groups_that_exist(root):
    from distillscope.config import load_config_dict
    from distillscope.splits import load_splits

    cfg = {"data": {"name": "spurious-fashion", "root": str(root), "train_groups": {5: 0.5}},
           "teacher": {"model": {"name": "mlp"}}}  # fmt: skip
    with pytest.raises(ConfigError, match=r"data.train_groups.*group 5.*groups \[0, 1\]"):
        load_splits(load_config_dict(cfg))
    with pytest.raises(ConfigError, match="train_groups"):
        load_config_dict({**cfg, "data": {"name": "spurious-fashion", "train_groups": {0: 2}}})
