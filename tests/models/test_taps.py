"""FeatureTap: recorded shapes, gradients, clearing, removal and path errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distillscope.errors import ModelError
from distillscope.models import FeatureTap, check_module_paths, create_model


@pytest.fixture
def resnet() -> nn.Module:
    return create_model("resnet8", num_classes=4)


def test_tap_records_the_tapped_shapes(resnet: nn.Module) -> None:
    with FeatureTap(resnet, ["layer3", "layer1", "pool"]) as tap:
        resnet(torch.randn(2, 3, 16, 16))
        shapes = {p: tuple(f.shape) for p, f in tap.features.items()}
    assert list(shapes) == ["layer3", "layer1", "pool"]  # the order asked for
    assert shapes == {"layer3": (2, 64, 4, 4), "layer1": (2, 16, 16, 16), "pool": (2, 64)}


def test_gradient_flows_from_a_tapped_feature(resnet: nn.Module) -> None:
    tap = FeatureTap(resnet, ["layer2"])
    resnet(torch.randn(2, 3, 16, 16))
    tap.features["layer2"].pow(2).mean().backward()
    assert resnet.conv1.weight.grad is not None and resnet.conv1.weight.grad.abs().sum() > 0
    assert resnet.layer3[0].conv1.weight.grad is None  # downstream of the tap: untouched


def test_detached_features_carry_no_graph(resnet: nn.Module) -> None:
    tap = FeatureTap(resnet, ["layer2"], detach=True)
    resnet(torch.randn(2, 3, 16, 16))
    assert not tap.features["layer2"].requires_grad


def test_features_belong_to_the_last_forward(resnet: nn.Module) -> None:
    tap = FeatureTap(resnet, ["layer1", "layer1"])
    assert tap.paths == ("layer1",)
    resnet(torch.randn(2, 3, 8, 8))
    resnet(torch.randn(5, 3, 8, 8))
    assert tap.features["layer1"].shape[0] == 5
    tap.clear()
    assert tap.features == {}


def test_remove_detaches_every_hook(resnet: nn.Module) -> None:
    with FeatureTap(resnet, ["layer1"]) as tap:
        assert len(resnet.layer1._forward_hooks) == 1
    assert len(resnet.layer1._forward_hooks) == 0 and len(resnet._forward_pre_hooks) == 0
    resnet(torch.randn(1, 3, 8, 8))
    assert tap.features == {}
    tap.remove()  # a second removal is harmless
    assert tap.features == {}


def test_wrong_path_fails_at_construction_with_close_matches_first() -> None:
    model = create_model("resnet56", num_classes=4)
    with pytest.raises(ModelError) as info:
        FeatureTap(model, ["layer1", "layer33"])
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("no module 'layer33' in ResNetCifar; valid paths: layer3")
    assert "more in model.named_modules()" in message  # resnet56 has far too many to list


def test_wrong_path_on_a_small_model_lists_them_all() -> None:
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    with pytest.raises(ModelError, match=r"no module 'relu' in Sequential; valid paths: 0, 1;"):
        check_module_paths(net, ["relu"])


def test_a_single_string_is_not_a_list_of_paths(resnet: nn.Module) -> None:
    with pytest.raises(ModelError, match=r"got the string 'layer1'; pass \['layer1'\]"):
        FeatureTap(resnet, "layer1")


def test_tapping_a_module_that_returns_no_tensor_fails_plainly() -> None:
    class Pair(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x, x

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pair = Pair()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.pair(x)[0]

    net = Net()
    FeatureTap(net, ["pair"])
    with pytest.raises(ModelError, match="'pair' \\(Pair\\) returned tuple, not a tensor"):
        net(torch.zeros(1, 2))
