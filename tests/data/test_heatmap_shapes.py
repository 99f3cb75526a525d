"""heatmap-shapes (paper 000 5.1, Tjoa & Guan 2020): classes, heat maps, backgrounds, seeds."""

from __future__ import annotations

import pytest
import torch

from distillscope.data import dataset_names, load_dataset
from distillscope.data.heatmap_shapes import (
    BACKGROUNDS,
    CATEGORIES,
    CLASS_NAMES,
    MEAN,
    N_TEST,
    N_TRAIN,
    NO_OBJECT,
    STD,
)
from distillscope.errors import ConfigError

N = 200  # 20 images per class


def pixels_of(data) -> torch.Tensor:
    """``(N, 3, S, S)`` images in [0, 1] (normalisation undone)."""
    return data.inputs * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)


def colours(image: torch.Tensor, where: torch.Tensor) -> set[tuple[float, ...]]:
    """The distinct RGB colours of ``image`` (3, S, S) at the pixels ``where`` (S, S)."""
    return {tuple(round(float(c), 5) for c in p) for p in image[:, where].T}


@pytest.fixture(scope="module")
def data():
    return load_dataset("heatmap-shapes", "test", n_test=N)


def test_registered_with_the_paper_s_sizes_classes_and_hierarchy(data) -> None:
    assert "heatmap-shapes" in dataset_names()
    assert (N_TRAIN, N_TEST) == (6400, 1600)  # paper 000 appendix D
    assert len(data) == N and tuple(data.inputs.shape[1:]) == (3, 32, 32)
    assert data.info.class_names == list(CLASS_NAMES) and data.info.num_classes == 10
    assert data.info.categories == CATEGORIES
    assert sorted(i for c in CATEGORIES.values() for i in c) == list(range(10))
    assert data.info.group_names == BACKGROUNDS == ("dark", "blurred", "noisy")
    assert data.heatmaps.dtype == torch.uint8 and data.heatmaps.shape == (N, 32, 32)
    assert torch.equal(data.masks, data.heatmaps > 0)


def test_classes_are_balanced_and_backgrounds_all_drawn(data) -> None:
    assert torch.bincount(data.targets, minlength=10).tolist() == [N // 10] * 10
    counts = torch.bincount(data.groups, minlength=3)
    assert (counts > N // 6).all()  # uniform over three kinds
    odd = load_dataset("heatmap-shapes", "train", n_train=23)
    assert torch.bincount(odd.targets).tolist() == [3, 3, 3] + [2] * 7


def test_same_seed_same_data_other_seed_or_split_other_data(data) -> None:
    again = load_dataset("heatmap-shapes", "test", n_test=N)
    for name in ("inputs", "targets", "heatmaps", "groups"):
        assert torch.equal(getattr(data, name), getattr(again, name)), name
    other = load_dataset("heatmap-shapes", "test", n_test=N, data_seed=1)
    train = load_dataset("heatmap-shapes", "train", n_train=N)
    assert not torch.equal(data.heatmaps, other.heatmaps)
    assert not torch.equal(data.heatmaps, train.heatmaps)
    assert data.fingerprint() == again.fingerprint() != other.fingerprint()


def test_heat_maps_mark_exactly_the_drawn_object() -> None:
    # The same seed draws the same shapes whatever the backgrounds: the two images agree
    # exactly on the object's pixels and (noise against blur) nowhere else.
    noisy = load_dataset("heatmap-shapes", "test", n_test=N, backgrounds=["noisy"])
    blurred = load_dataset("heatmap-shapes", "test", n_test=N, backgrounds=["blurred"])
    assert torch.equal(noisy.heatmaps, blurred.heatmaps)
    same = (pixels_of(noisy) == pixels_of(blurred)).all(1)  # (N, S, S)
    assert torch.equal(same, noisy.heatmaps > 0)
    assert (noisy.groups == 2).all() and (blurred.groups == 1).all()


def test_each_part_is_one_colour_and_the_feature_is_exactly_its_part(data) -> None:
    images, heat = pixels_of(data), data.heatmaps
    for i in range(len(data)):
        k = int(data.targets[i])
        if k == NO_OBJECT:
            assert heat[i].max() == 0
            continue
        feature, body = colours(images[i], heat[i] == 2), colours(images[i], heat[i] == 1)
        assert len(feature) == 1, CLASS_NAMES[k]  # one flat colour (ring, border, bar or tails)
        if k in (0, 3, 4, 5):  # circle: the ring; rectangles: the border; inside one colour
            assert len(body) <= 1 and not body & feature
        elif k in (1, 2):  # bars have the ring's colour; the ring is part of the object here
            assert len(body) == 2 and feature <= body
        else:  # tails: 0.75 of the ring's colour, on a disc with its ring
            assert len(body) == 2 and not body & feature
            assert any(
                all(abs(0.75 * r - t) < 1e-5 for r, t in zip(ring, *feature)) for ring in body
            )
        if k in (3, 4, 5):  # the rectangles differ by their border's channel
            (colour,) = feature
            assert max(range(3), key=lambda c: colour[c]) == k - 3


def test_feature_areas_follow_the_hierarchy(data) -> None:
    area = (data.heatmaps == 2).flatten(1).sum(1).float()  # (N,)
    mean = [float(area[data.targets == k].mean()) for k in range(10)]
    assert mean[6] < mean[7] < mean[8]  # one, three, eight tails
    assert mean[1] < mean[2]  # a bar, a cross
    assert mean[9] == 0.0
    objects = data.targets != NO_OBJECT
    assert ((data.heatmaps[objects] == 2).flatten(1).any(1)).all()  # every object has a feature
    edge = torch.cat(
        [data.heatmaps[:, [0, -1], :].flatten(1), data.heatmaps[:, :, [0, -1]].flatten(1)], 1
    )
    assert edge.max() == 0  # objects lie wholly inside the image


def test_backgrounds_are_dark_blurred_or_noisy(data) -> None:
    images = pixels_of(data)
    off = (data.heatmaps == 0)[:, None].expand_as(images)  # (N, 3, S, S)
    for kind, low, high in ((0, 0.0, 0.0), (1, 0.2, 0.7), (2, 0.0, 0.5)):
        rows = data.groups == kind
        values = images[rows][off[rows]]
        assert low - 1e-5 <= float(values.min()) and float(values.max()) <= high + 1e-5
    blurred = images[data.groups == 1][:, :, 1:, :] - images[data.groups == 1][:, :, :-1, :]
    noisy = images[data.groups == 2][:, :, 1:, :] - images[data.groups == 2][:, :, :-1, :]
    assert blurred.abs().mean() < noisy.abs().mean() / 3  # smooth against pixel noise


@pytest.mark.parametrize("size", [16, 48])
def test_image_size_is_configurable(size) -> None:
    small = load_dataset("heatmap-shapes", "train", n_train=30, image_size=size)
    assert tuple(small.inputs.shape) == (30, 3, size, size) and small.info.input_shape[1] == size
    objects = small.targets != NO_OBJECT
    assert ((small.heatmaps[objects] == 2).flatten(1).any(1)).all()


def test_subsets_carry_the_heat_maps(data) -> None:
    few = load_dataset("heatmap-shapes", "test", n_test=N, per_class=2, seed=1)
    assert len(few) == 20 and few.heatmaps.shape == (20, 32, 32)
    assert torch.equal(few.masks, few.heatmaps > 0)


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"n_test": 0}, "heatmap-shapes.n_test=0"),
        ({"n_train": 2.5}, "heatmap-shapes.n_train=2.5"),
        ({"image_size": 8}, "heatmap-shapes.image_size=8"),
        ({"backgrounds": ["foggy"]}, "heatmap-shapes.backgrounds=['foggy']"),
        ({"backgrounds": []}, "heatmap-shapes.backgrounds=[]"),
        ({"backgrounds": ["dark", "dark"]}, "heatmap-shapes.backgrounds="),
        ({"data_seed": -1}, "heatmap-shapes.data_seed=-1"),
    ],
)
def test_bad_parameters_raise_one_line_config_errors(params, fragment) -> None:
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.").replace("[", r"\[")) as err:
        load_dataset("heatmap-shapes", "test", **params)
    assert "\n" not in str(err.value)
