"""The attribution methods are registered explainers sharing one verb; the string functions look
them up, with the same outputs and the same one-line errors as their former if-chains."""

from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients, Saliency
from torch import nn

from distillscope.errors import ConfigError, ModelError
from distillscope.explain import attribute, explanation_maps, gradcam, guided_gradcam
from distillscope.explain.attribution import (
    BCOS_METHODS,
    CAM_METHODS,
    METHODS,
    Explainer,
    create_explainer,
)
from distillscope.explain.maps import MAP_METHODS, why_not
from distillscope.models import create_model
from distillscope.registry import EXPLAINERS

X = torch.randn(3, 2, 5, 5, generator=torch.Generator().manual_seed(0))
Y = torch.tensor([0, 1, 2])


def conv_net(cam: str | None = "1") -> nn.Module:
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, 3),
    )  # fmt: skip
    net.cam_layer = cam
    return net.eval()


def test_every_method_is_one_registered_explainer() -> None:
    assert set(EXPLAINERS.list()) == set(METHODS) | {"explain"}
    for name in EXPLAINERS.list():
        explainer = create_explainer(name)
        assert isinstance(explainer, Explainer) and explainer.name == name
    gives_map = {n for n in EXPLAINERS.list() if EXPLAINERS.get(n).gives_map}
    assert gives_map == set(MAP_METHODS) - {"auto"}
    assert CAM_METHODS == ("gradcam", "guided_gradcam") and BCOS_METHODS == ("bcos",)


def test_each_explainer_gives_what_its_method_gave() -> None:
    net, x = conv_net(), X.clone().requires_grad_(True)
    captum_sal = Saliency(net).attribute(x, target=Y, abs=True).detach()
    captum_ig = IntegratedGradients(net).attribute(x, baselines=0.0, target=Y, n_steps=7).detach()
    expected = {
        "saliency": captum_sal,
        "integrated_gradients": captum_ig,
        "gradcam": gradcam(net, "1", X, Y),
        "guided_gradcam": guided_gradcam(net, "1", X, Y),
    }
    for name, value in expected.items():
        got = create_explainer(name, n_steps=7).attribute(net, X, Y)
        assert torch.equal(got, value), name
        assert torch.equal(attribute(net, X, Y, name, n_steps=7), value), name
    maps = {
        "saliency": captum_sal.amax(1),
        "integrated_gradients": captum_ig.sum(1),
        "gradcam": expected["gradcam"],
        "guided_gradcam": expected["guided_gradcam"].sum(1),
    }
    for name, value in maps.items():
        assert torch.equal(explanation_maps(net, X, Y, name, n_steps=7), value), name


def test_bcos_explainer_is_the_models_dynamic_weights() -> None:
    torch.manual_seed(0)
    model = create_model("bcos_mnist_cnn", num_classes=3, in_channels=1).eval()
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    expected = model.dynamic_weights(x, Y).detach()
    assert torch.equal(attribute(model, x, Y, "bcos"), expected)
    with pytest.raises(ModelError, match="is not a B-cos model"):
        attribute(conv_net(), X, Y, "bcos")


def test_unknown_names_keep_their_one_line_errors() -> None:
    with pytest.raises(ConfigError) as info:
        attribute(conv_net(), X, Y, "explain")  # a map method, not an attribution method
    assert str(info.value) == (
        "unknown attribution method 'explain'; valid: saliency, integrated_gradients, gradcam, "
        "guided_gradcam, bcos"
    )
    with pytest.raises(ConfigError) as info:
        explanation_maps(conv_net(), X, Y, "bcos")
    assert str(info.value) == (
        "method='bcos' is invalid; use one of auto, explain, gradcam, saliency, "
        "integrated_gradients, guided_gradcam"
    )


def test_why_not_comes_from_the_explainer_classes() -> None:
    no_cam = conv_net(None)
    assert why_not(no_cam, "gradcam") == EXPLAINERS.get("gradcam").why_not(no_cam)
    assert why_not(no_cam, "guided_gradcam") == (
        "Sequential has no cam_layer; use method: auto (a model's own explain) or saliency"
    )
    assert why_not(no_cam, "explain") == (
        "Sequential has no explain(inputs, target) method; use method: auto"
    )
    assert why_not(conv_net(), "gradcam") is None and why_not(no_cam, "saliency") is None
    with pytest.raises(ModelError, match="has no cam_layer; gradcam needs"):
        attribute(no_cam, X, Y, "gradcam")


def test_options_a_method_does_not_take_are_left_out() -> None:
    ig = create_explainer("integrated_gradients", n_steps=3, baseline=0.5, internal_batch_size=2)
    assert (ig.n_steps, ig.baseline, ig.internal_batch_size) == (3, 0.5, 2)
    assert type(create_explainer("gradcam", n_steps=3)).__name__ == "GradCamExplainer"
