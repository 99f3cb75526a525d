"""Every registered zoo model, generated from the registry, plus each family's own checks."""

from __future__ import annotations

import fnmatch

import pytest
import torch
from torch import nn

from distillscope.errors import ConfigError, ModelError
from distillscope.models import FeatureTap, create_model, model_names
from distillscope.registry import MODELS

K = 3

#: The natural input of each zoo family (one sample); a model missing here fails its tests.
NATURAL_INPUT = {
    "mlp*": (2,),
    "mnist_cnn": (1, 28, 28),
    "lenet5": (1, 28, 28),
    "resnet*": (3, 32, 32),
    "p004_*": (3, 32, 32),
    "vit_tiny": (1, 28, 28),
    "bcos_mnist_cnn": (1, 28, 28),
    "bcos_resnet*": (3, 32, 32),
    "bcos_vit_tiny": (1, 28, 28),
}

ZOO = MODELS.list()


def natural_input(name: str, batch: int = 2) -> torch.Tensor:
    shapes = [s for pattern, s in NATURAL_INPUT.items() if fnmatch.fnmatch(name, pattern)]
    assert shapes, f"add the natural input shape of model {name!r} to NATURAL_INPUT"
    return torch.randn(batch, *shapes[0])


def test_zoo_holds_the_promised_models() -> None:
    expected = {"mlp", "mlp_full", "mlp_reduced", "mlp_full_deep", "mlp_reduced_deep"}
    expected |= {"mnist_cnn", "lenet5", "resnet_cifar"}
    expected |= {f"resnet{d}" for d in (8, 14, 20, 32, 56)}
    expected |= {"vit_tiny", "bcos_mnist_cnn", "bcos_resnet_cifar", "bcos_resnet8", "bcos_vit_tiny"}
    assert expected <= set(ZOO)
    assert "torchvision:<name>" in model_names() and "timm:<name>" in model_names()


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_gives_logits_and_gradients(name: str) -> None:
    model = create_model(name, num_classes=K)
    logits = model(natural_input(name))  # (2, K)
    assert logits.shape == (2, K)
    assert torch.isfinite(logits).all()
    logits.logsumexp(1).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_layer_paths_are_tappable(name: str) -> None:
    model = create_model(name, num_classes=K).eval()
    paths = list(model.feature_layers) + ([model.cam_layer] if model.cam_layer else [])
    assert model.feature_layers, "a zoo model names at least one feature layer"
    with FeatureTap(model, paths) as tap:
        model(natural_input(name))
        features = tap.features
    assert list(features) == list(dict.fromkeys(paths))
    assert all(f.shape[0] == 2 for f in features.values())
    if model.cam_layer is not None:
        assert features[model.cam_layer].dim() == 4  # (B, C, H, W): a conv block's output


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_is_deterministic_under_a_seed(name: str) -> None:
    x = natural_input(name)
    outputs = []
    for _ in range(2):
        torch.manual_seed(7)
        outputs.append(create_model(name, num_classes=K).eval()(x))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)


def test_unknown_model_name_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match="unknown model 'resnet21'.*resnet20.*torchvision:<name>"):
        create_model("resnet21", num_classes=K)


def test_unknown_parameter_is_named() -> None:
    with pytest.raises(ConfigError, match="'hidden'.*valid parameters: .*width"):
        create_model("resnet20", num_classes=K, hidden=8)


@pytest.mark.parametrize("num_classes", [0, -1, 2.5, True])
def test_num_classes_must_be_a_positive_integer(num_classes: object) -> None:
    with pytest.raises(ConfigError, match="num_classes must be a positive integer"):
        create_model("mlp", num_classes=num_classes)


def test_mlp_widths_follow_paper_004() -> None:
    """The authors' code: Linear(2, 32) - ReLU - Linear(32, 3); 16 hidden units for Reduced."""
    for name, hidden, params in (("mlp_full", 32, 195), ("mlp_reduced", 16, 99)):
        model = create_model(name, num_classes=K)
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        assert [(m.in_features, m.out_features) for m in linears] == [(2, hidden), (hidden, K)]
        assert sum(p.numel() for p in model.parameters()) == params  # 2h + h + hK + K
        assert model.feature_layers == ["body.act1"]


def test_deep_mlps_have_two_hidden_layers() -> None:
    for name, hidden in (("mlp_full_deep", 32), ("mlp_reduced_deep", 16)):
        model = create_model(name, num_classes=K)
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        assert [m.out_features for m in linears] == [hidden, hidden, K]


def test_mlp_flattens_images_and_checks_their_size() -> None:
    model = create_model("mlp", num_classes=K, in_features=12, depth=2)
    assert model(torch.randn(2, 3, 2, 2)).shape == (2, K)
    with pytest.raises(ModelError, match="in_features=12.*16 features.*in_features=16"):
        model(torch.randn(2, 1, 4, 4))


def test_mlp_takes_in_features_not_in_channels() -> None:
    with pytest.raises(ConfigError, match="'in_channels'.*in_features"):
        create_model("mlp", num_classes=K, in_channels=1)


@pytest.mark.parametrize(
    ("name", "size", "fc_inputs"),
    [
        ("mnist_cnn", 28, 9216),  # the PyTorch example's 9216
        ("mnist_cnn", 32, 64 * 14 * 14),
        ("lenet5", 28, 16 * 5 * 5),  # LeNet-5's 400
        ("lenet5", 32, 16 * 6 * 6),
    ],
)
def test_small_cnns_size_their_fc_from_input_size(name: str, size: int, fc_inputs: int) -> None:
    model = create_model(name, num_classes=K, in_channels=3, input_size=size)
    assert model.fc1.in_features == fc_inputs
    assert model(torch.randn(2, 3, size, size)).shape == (2, K)


def test_small_cnns_reject_too_small_inputs() -> None:
    with pytest.raises(ModelError, match=r"lenet5 needs input_size >= 12 \(.*\), got 8;"):
        create_model("lenet5", num_classes=K, input_size=8)


@pytest.mark.parametrize("depth", [8, 20, 56])
def test_resnet_cifar_has_6n_plus_2_weighted_layers(depth: int) -> None:
    model = create_model(f"resnet{depth}", num_classes=K)
    convs3x3 = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs3x3) + 1 == depth  # 3x3 convs + the classifier; 1x1 shortcuts not counted
    assert model.depth == depth


def test_resnet_cifar_stage_shapes_follow_the_width() -> None:
    model = create_model("resnet_cifar", num_classes=K, depth=14, width=8, in_channels=1)
    with FeatureTap(model, model.feature_layers) as tap:
        model(torch.randn(2, 1, 32, 32))
        shapes = {p: tuple(f.shape) for p, f in tap.features.items()}
    assert shapes == {
        "layer1": (2, 8, 32, 32),
        "layer2": (2, 16, 16, 16),
        "layer3": (2, 32, 8, 8),
        "pool": (2, 32),
    }


@pytest.mark.parametrize("depth", [21, 2, 0])
def test_resnet_cifar_rejects_depths_not_6n_plus_2(depth: int) -> None:
    with pytest.raises(ModelError, match=f"6n\\+2.*got {depth}; valid depths: 8, 14, 20, 32"):
        create_model("resnet_cifar", num_classes=K, depth=depth)
