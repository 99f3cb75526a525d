"""Fixtures of the probe tests: tiny data sets, tiny models and their roles."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.probes.base import ProbeData, Roles
from tests.probes.tiny_probe_models import NUM_CLASSES, TinyCNN, TinyMLP, image_info, seeded


@pytest.fixture
def image_data() -> ProbeData:
    """24 random 1x8x8 images normalised with mean 0.5, std 0.25; 4 classes in 2 categories."""
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(24, 1, 8, 8, generator=g)
    info = image_info("tiny-images")
    targets = torch.arange(24) % NUM_CLASSES
    return ProbeData(TensorDataset((pixels - 0.5) / 0.25, targets, info), info)


@pytest.fixture
def point_data() -> ProbeData:
    """30 unbounded 2-D points in 3 classes."""
    g = torch.Generator().manual_seed(1)
    info = DatasetInfo(
        name="tiny-points",
        num_classes=3,
        input_shape=(2,),
        class_names=["a", "b", "c"],
        pixel_range=None,
    )
    targets = torch.arange(30) % 3
    inputs = torch.randn(30, 2, generator=g) + targets[:, None].float()
    return ProbeData(TensorDataset(inputs, targets, info), info)


@pytest.fixture
def image_models() -> dict[str, nn.Module]:
    return {
        "teacher": seeded(TinyCNN, 0, width=6),
        "independent": seeded(TinyCNN, 1),
        "student": seeded(TinyCNN, 2),
    }


@pytest.fixture
def point_models() -> dict[str, nn.Module]:
    return {
        "teacher": seeded(TinyMLP, 0, hidden=16),
        "independent": seeded(TinyMLP, 1),
        "student": seeded(TinyMLP, 2),
    }


@pytest.fixture
def roles() -> Roles:
    return Roles(
        teachers=["teacher"],
        independent=["independent"],
        students=["student"],
        teacher_of={"independent": "teacher", "student": "teacher"},
        temperature={"teacher": 4.0, "student": 4.0},
    )
