"""Paper 004's Full and Reduced CNNs: layer sizes, parameter counts and input adaptation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distillscope.errors import ModelError
from distillscope.models import FeatureTap, count_parameters, create_model


def layer_shapes(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    """(kind, (in, out)) of every conv and linear layer, in order."""
    out = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            assert m.kernel_size == (3, 3) and m.padding == (1, 1)  # 3x3, "same"
            out.append(("conv", (m.in_channels, m.out_channels)))
        elif isinstance(m, nn.Linear):
            out.append(("fc", (m.in_features, m.out_features)))
    return out


def test_full_is_papernots_cifar_network() -> None:
    model = create_model("p004_full", num_classes=10)
    assert layer_shapes(model) == [
        ("conv", (3, 64)),
        ("conv", (64, 64)),
        ("conv", (64, 128)),
        ("conv", (128, 128)),
        ("fc", (128 * 8 * 8, 256)),
        ("fc", (256, 256)),
        ("fc", (256, 10)),
    ]
    # 1,792 + 36,928 + 73,856 + 147,584 + 2,097,408 + 65,792 + 2,570
    assert count_parameters(model) == 2_425_930
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 2


def test_reduced_drops_every_other_layer_and_halves_the_rest() -> None:
    model = create_model("p004_reduced", num_classes=10)
    assert layer_shapes(model) == [
        ("conv", (3, 32)),
        ("conv", (32, 64)),
        ("fc", (64 * 8 * 8, 128)),
        ("fc", (128, 10)),
    ]
    assert count_parameters(model) == 896 + 18_496 + 524_416 + 1_290 == 545_098
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.5]


@pytest.mark.parametrize(
    ("name", "fc_inputs", "params"),
    [
        # Full on 1x28x28: first conv 1*64*9 + 64 = 640, fc1 6,272*256 + 256
        ("p004_full", 128 * 7 * 7, 640 + 36_928 + 73_856 + 147_584 + 1_605_888 + 65_792 + 2_570),
        ("p004_reduced", 64 * 7 * 7, 320 + 18_496 + 401_536 + 1_290),
    ],
)
def test_sizes_follow_the_data(name: str, fc_inputs: int, params: int) -> None:
    """Fashion-MNIST's 1x28x28: the fc layer is sized from the pooled 7x7 maps."""
    model = create_model(name, num_classes=10, in_channels=1, input_size=28)
    assert model.fc1.in_features == fc_inputs
    assert count_parameters(model) == params
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize(("name", "channels"), [("p004_full", 128), ("p004_reduced", 64)])
def test_cam_layer_is_the_pooled_second_block(name: str, channels: int) -> None:
    model = create_model(name, num_classes=10).eval()
    with FeatureTap(model, [model.cam_layer]) as tap:
        model(torch.randn(2, 3, 32, 32))
        assert tuple(tap.features["block2"].shape) == (2, channels, 8, 8)


def test_too_small_inputs_are_refused() -> None:
    with pytest.raises(ModelError, match=r"p004_full needs input_size >= 4"):
        create_model("p004_full", num_classes=10, input_size=3)
