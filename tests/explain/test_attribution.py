"""The batched attribution entry point: closed forms on linear models, errors, GradCAM routing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distillscope.errors import ConfigError, ModelError
from distillscope.explain import attribute, gradcam, guided_gradcam


def linear(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(6, 3).eval()


X = torch.randn(5, 6, generator=torch.Generator().manual_seed(1))
Y = torch.tensor([0, 1, 2, 1, 0])


def test_saliency_of_a_linear_model_is_the_absolute_weight_row() -> None:
    net = linear()
    torch.testing.assert_close(attribute(net, X, Y, "saliency"), net.weight[Y].abs().detach())


def test_integrated_gradients_of_a_linear_model_is_input_times_weight() -> None:
    # For f(x) = Wx + b and baseline 0 the path gradient is constant: IG = x * W[y].
    net = linear()
    got = attribute(net, X, Y, "integrated_gradients", internal_batch_size=7)
    torch.testing.assert_close(got, X * net.weight[Y].detach(), rtol=1e-5, atol=1e-6)


def test_integrated_gradients_completeness_on_a_nonlinear_model() -> None:
    # sum_i IG_i = f(x) - f(0) for the target logit (Sundararajan et al. 2017), up to 50 steps.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
    ig = attribute(net, X, Y, "integrated_gradients")
    with torch.no_grad():
        gap = (
            net(X).gather(1, Y[:, None])[:, 0]
            - net(torch.zeros_like(X)).gather(1, Y[:, None])[:, 0]
        )
    torch.testing.assert_close(ig.sum(1), gap, rtol=1e-3, atol=1e-3)


def test_gradcam_uses_cam_layer() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(3, 2),
    ).eval()
    net.cam_layer = "1"
    x = torch.randn(4, 1, 6, 6)
    y = torch.tensor([0, 1, 1, 0])
    torch.testing.assert_close(attribute(net, x, y, "gradcam"), gradcam(net, "1", x, y))


def test_guided_gradcam_uses_cam_layer_and_keeps_the_input_shape() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(3, 2),
    ).eval()
    net.cam_layer = "1"
    x = torch.randn(4, 2, 6, 6)
    y = torch.tensor([0, 1, 1, 0])
    got = attribute(net, x, y, "guided_gradcam")
    assert got.shape == x.shape and not got.requires_grad
    torch.testing.assert_close(got, guided_gradcam(net, "1", x, y))


@pytest.mark.parametrize("method", ["gradcam", "guided_gradcam"])
def test_cam_methods_without_cam_layer_raise(method: str) -> None:
    with pytest.raises(ModelError, match=f"{method} needs the module path"):
        attribute(linear(), X, Y, method)


def test_unknown_method_raises() -> None:
    with pytest.raises(ConfigError, match="valid: saliency, integrated_gradients, gradcam"):
        attribute(linear(), X, Y, "lime")


def test_attributions_are_detached_and_leave_no_parameter_gradient() -> None:
    net = linear()
    for method in ("saliency", "integrated_gradients"):
        out = attribute(net, X, Y, method)
        assert not out.requires_grad
    assert net.weight.grad is None


def test_bcos_method_gives_the_dynamic_weights_and_refuses_other_models() -> None:
    from distillscope.models import create_model

    torch.manual_seed(0)
    net = create_model("bcos_mnist_cnn", num_classes=3, input_size=8).eval()
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    got = attribute(net, x, y, "bcos")
    assert got.shape == (4, 2, 8, 8) and not got.requires_grad
    # dynamic linear: the contributions W(x) * [p, 1 - p] sum to the logit minus its bias
    logits = net(x).gather(1, y[:, None]).squeeze(1)
    contributions = (got * torch.cat([x, 1 - x], 1)).flatten(1).sum(1)
    torch.testing.assert_close(contributions, logits - net.logit_bias.bias, atol=1e-4, rtol=1e-4)
    with pytest.raises(ModelError, match="not a B-cos model"):
        attribute(linear(), X, Y, "bcos")
