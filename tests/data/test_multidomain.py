"""multi-domain: every item drawn in one domain, the domain kept as its group (paper 003 6.1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from distillscope.data import fashion_mnist as fm
from distillscope.data import load_dataset
from distillscope.data.idx import write_idx
from distillscope.data.multidomain import MEAN, STD
from distillscope.errors import ConfigError


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Stand-in Fashion-MNIST: 300 / 150 items, a bright block on black in each image."""
    folder = tmp_path_factory.mktemp("fm")
    for split, n in (("train", 300), ("test", 150)):
        images, labels = fm.FILES[split]
        data = np.zeros((n, 28, 28), dtype=np.uint8)
        data[:, 8:20, 10:18] = 200
        write_idx(folder / images, data)
        write_idx(folder / labels, (np.arange(n) % 10).astype(np.uint8))
    return folder


def pixels(data) -> torch.Tensor:
    return data.inputs * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)


def test_each_item_is_in_one_domain_and_its_group_names_it(root):
    data = load_dataset("multi-domain", "train", root=str(root))
    assert tuple(data.inputs.shape[1:]) == (3, 28, 28) and data.info.num_classes == 10
    assert data.info.group_names == ("original", "colour_background", "natural_background")
    counts = torch.bincount(data.groups, minlength=3)
    assert counts.min() > 60  # about a third each
    p = pixels(data)
    assert p.min() >= -1e-5 and p.max() <= 1 + 1e-5
    background = ~data.masks  # (N, H, W)
    grey = (p[:, 0] == p[:, 1]) & (p[:, 1] == p[:, 2])  # (N, H, W)
    original = data.groups == 0
    assert grey[original].all()  # the original domain stays grey
    assert (p[original][:, 0][background[original]] == 0).all()  # on its black background
    coloured = data.groups == 1
    assert not grey[coloured][background[coloured]].all()  # a colour behind the object
    # the object itself is kept in every domain
    assert torch.allclose(p[:, 0][data.masks], torch.full_like(p[:, 0][data.masks], 200 / 255))


def test_same_seed_same_images_other_seed_other_draw(root):
    a = load_dataset("multi-domain", "test", root=str(root))
    b = load_dataset("multi-domain", "test", root=str(root))
    c = load_dataset("multi-domain", "test", root=str(root), data_seed=1)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.groups, b.groups)
    assert not torch.equal(a.groups, c.groups)


def test_chosen_domains_and_digits(root):
    data = load_dataset("multi-domain", "test", root=str(root), domains=["silhouette", "edges"])
    assert data.info.group_names == ("silhouette", "edges") and set(data.groups.tolist()) == {0, 1}
    digits = load_dataset("multi-domain", "test", base="digits", max_items=50)
    assert len(digits) == 50 and tuple(digits.inputs.shape[1:]) == (3, 28, 28)


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"base": "cifar"}, "multi-domain.base"),
        ({"domains": ["original", "nope"]}, "multi-domain.domains"),
        ({"domains": []}, "multi-domain.domains"),
        ({"domains": ["edges", "edges"]}, "multi-domain.domains"),
        ({"max_items": 1}, "multi-domain.max_items"),
    ],
)
def test_bad_parameters_are_one_line(root, params, needle):
    with pytest.raises(ConfigError, match=needle) as err:
        load_dataset("multi-domain", "train", root=str(root), **params)
    assert "\n" not in str(err.value)


def test_colour_jitter_changes_colours_of_training_images_only(root):
    data = load_dataset("multi-domain", "train", root=str(root), jitter=0.4)
    held_out = load_dataset("multi-domain", "test", root=str(root), jitter=0.4)
    assert data.augmented and not held_out.augmented
    torch.manual_seed(0)
    jittered = data.transform(data.inputs[:32])
    p = jittered * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
    assert (
        p.min() >= -1e-5 and p.max() <= 1 + 1e-5 and not torch.allclose(jittered, data.inputs[:32])
    )
    torch.manual_seed(0)
    assert torch.equal(data.transform(data.inputs[:32]), jittered)  # torch's seed repeats it
    with pytest.raises(ConfigError, match="multi-domain.jitter"):
        load_dataset("multi-domain", "train", root=str(root), jitter=2)
    with pytest.raises(ConfigError, match="augment and jitter"):
        load_dataset("multi-domain", "train", root=str(root), jitter=0.4, augment=True)
