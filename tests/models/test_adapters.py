"""torchvision and timm adapters, offline: no download ever happens here."""

from __future__ import annotations

import sys
import types
import urllib.error
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

from distillscope.errors import ConfigError, ModelError
from distillscope.models import create_model
from distillscope.models.adapters import guess_layers


def test_torchvision_resnet18_grey_ten_classes_without_download() -> None:
    model = create_model("torchvision:resnet18", num_classes=10, in_channels=1).eval()
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 10)
    assert model.conv1.in_channels == 1 and model.fc.out_features == 10
    assert model.cam_layer == "layer4"
    assert model.feature_layers == ["layer1", "layer2", "layer3", "layer4"]


def test_unknown_torchvision_name_lists_close_matches() -> None:
    with pytest.raises(
        ModelError, match="unknown torchvision model 'resnet181'; close matches: resnet18"
    ):
        create_model("torchvision:resnet181", num_classes=10)


def test_torchvision_builder_rejects_unknown_parameters() -> None:
    with pytest.raises(ConfigError, match="torchvision model 'resnet18' rejected its parameters"):
        create_model("torchvision:resnet18", num_classes=10, colour="red")


def test_unknown_torchvision_weights_list_the_valid_ones() -> None:
    with pytest.raises(ModelError, match="unknown weights 'IMAGENET9K'.*IMAGENET1K_V1, DEFAULT"):
        create_model("torchvision:resnet18", num_classes=10, weights="IMAGENET9K")


def test_weights_that_cannot_be_fetched_name_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url: str, *args: Any, **kwargs: Any) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(ModelError, match="could not be loaded .*hub cache.*or pass weights=None"):
        create_model("torchvision:resnet18", num_classes=10, weights="DEFAULT")


def test_pretrained_weights_get_a_new_head_and_a_grey_stem(monkeypatch: pytest.MonkeyPatch) -> None:
    pretrained = torchvision.models.resnet18().state_dict()  # stands in for the download
    monkeypatch.setattr(
        torchvision.models._api, "load_state_dict_from_url", lambda *a, **k: pretrained
    )
    model = create_model("torchvision:resnet18", num_classes=10, in_channels=1, weights="DEFAULT")
    assert model.fc.out_features == 10
    torch.testing.assert_close(model.layer4[1].conv2.weight, pretrained["layer4.1.conv2.weight"])
    rgb = pretrained["conv1.weight"]  # (64, 3, 7, 7)
    torch.testing.assert_close(model.conv1.weight, rgb.sum(1, keepdim=True))


def test_a_bad_layer_override_is_rejected() -> None:
    with pytest.raises(ModelError, match="no module 'layer5' in ResNet; valid paths: layer"):
        create_model("torchvision:resnet18", num_classes=10, cam_layer="layer5")


def test_timm_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` fail
    with pytest.raises(ModelError, match=r"^timm is not installed; pip install timm$"):
        create_model("timm:resnet18", num_classes=10)


def test_timm_models_are_built_with_classes_and_channels(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def create(name: str, **kwargs: Any) -> nn.Module:
        calls.append({"name": name, **kwargs})
        return nn.Sequential(
            nn.Conv2d(kwargs["in_chans"], 4, 3), nn.Flatten(), nn.LazyLinear(kwargs["num_classes"])
        )

    fake = types.ModuleType("timm")
    fake.list_models = lambda: ["resnet18", "resnet34"]
    fake.is_model = lambda name: name in fake.list_models()
    fake.create_model = create
    monkeypatch.setitem(sys.modules, "timm", fake)

    model = create_model("timm:resnet18", num_classes=7, in_channels=1)
    assert calls == [{"name": "resnet18", "pretrained": False, "num_classes": 7, "in_chans": 1}]
    assert model.cam_layer == "0"
    with pytest.raises(ModelError, match="unknown timm model 'resnet19'; close matches: resnet18"):
        create_model("timm:resnet19", num_classes=7)


class _Squeeze(nn.Module):
    """SqueezeNet-like: conv trunk, an auxiliary head, a conv classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
        self.aux = nn.Sequential(nn.Conv2d(4, 2, 1))
        self.classifier = nn.Sequential(nn.Dropout(), nn.Conv2d(4, 2, 1), nn.Flatten())


def test_guess_layers_skips_auxiliary_and_classifier_heads() -> None:
    assert guess_layers(_Squeeze()) == ("features.2", ["features.0", "features.2"])


def test_guess_layers_gives_up_on_attention_models() -> None:
    vit_like = nn.Sequential(nn.Conv2d(3, 8, 4, 4), nn.MultiheadAttention(8, 2))
    assert guess_layers(vit_like) == (None, [])
