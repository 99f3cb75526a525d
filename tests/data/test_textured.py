"""textured-fashion: class / random / conflict textures, masks, groups, seeds, bad params."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from distillscope.data import dataset_names, load_dataset
from distillscope.data import fashion_mnist as fm
from distillscope.data.idx import write_idx
from distillscope.data.textured import MEAN, STD
from distillscope.data.textures import hue_colours
from distillscope.errors import ConfigError


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Stand-in Fashion-MNIST: 60 / 40 items, a grey block (the object) in each image."""
    folder = tmp_path_factory.mktemp("fm")
    for split, n in (("train", 60), ("test", 40)):
        images, labels = fm.FILES[split]
        data = np.zeros((n, 28, 28), dtype=np.uint8)
        data[:, 6:22, 9:19] = 150
        write_idx(folder / images, data)
        write_idx(folder / labels, (np.arange(n) % 10).astype(np.uint8))
    return folder


def pixels(dataset) -> torch.Tensor:
    return dataset.inputs * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)


def object_colour(dataset) -> torch.Tensor:
    """``(N, 3)`` mean colour inside each object."""
    x = pixels(dataset).permute(0, 2, 3, 1)  # (N, H, W, 3)
    return torch.stack([x[i][dataset.masks[i]].mean(0) for i in range(len(dataset))])


def test_class_textures_follow_the_label_and_conflicts_another_class(root):
    assert "textured-fashion" in dataset_names()
    train = load_dataset("textured-fashion", "train", root=str(root))
    assert tuple(train.inputs.shape) == (60, 3, 28, 28) and train.info.num_classes == 10
    expected = torch.zeros(28, 28, dtype=torch.bool)
    expected[6:22, 9:19] = True
    assert all(torch.equal(m, expected) for m in train.masks)
    assert torch.equal(train.groups, train.targets)
    tint = hue_colours(train.targets / 10)  # (N, 3)
    colour = object_colour(train)
    assert torch.allclose(colour / colour.sum(1, keepdim=True), tint / tint.sum(1, keepdim=True))
    outside = pixels(train).permute(0, 2, 3, 1)[:, ~expected]
    assert outside.abs().max() < 1e-6  # the background stays black
    test = load_dataset("textured-fashion", "test", root=str(root))
    assert (test.groups != test.targets).all()
    colour = object_colour(test)
    tint = hue_colours(test.groups / 10)  # the texture is B's
    assert torch.allclose(colour / colour.sum(1, keepdim=True), tint / tint.sum(1, keepdim=True))


def test_random_and_plain_objects_have_no_texture_class(root):
    shape = load_dataset("textured-fashion", "train", root=str(root), texture="random")
    assert shape.groups is None and shape.masks is not None
    plain = load_dataset("textured-fashion", "test", root=str(root), test_texture="none")
    x = pixels(plain)
    assert torch.allclose(x[:, 0], x[:, 2]) and abs(float(x[0, 0, 10, 10]) - 150 / 255) < 1e-5
    same = load_dataset("textured-fashion", "test", root=str(root), test_texture="class")
    assert torch.equal(same.groups, same.targets)


def test_seed_order_and_size(root):
    a = load_dataset("textured-fashion", "train", root=str(root), max_items=20)
    b = load_dataset("textured-fashion", "train", root=str(root), max_items=20)
    c = load_dataset("textured-fashion", "train", root=str(root), max_items=20, data_seed=1)
    assert len(a) == 20 and torch.equal(a.inputs, b.inputs) and not torch.equal(a.inputs, c.inputs)
    augmented = load_dataset("textured-fashion", "train", root=str(root), augment=True)
    assert augmented.augmented


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"texture": "plaid"}, "textured-fashion.texture='plaid' is invalid; use one of class"),
        ({"test_texture": 1}, "textured-fashion.test_texture=1 is invalid"),
        ({"max_items": 0}, "textured-fashion.max_items=0 is invalid"),
    ],
)
def test_bad_params_raise(root, params, message):
    with pytest.raises(ConfigError, match=message):
        load_dataset("textured-fashion", "train", root=str(root), **params)
