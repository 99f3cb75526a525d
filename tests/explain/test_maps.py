"""The explanation dispatch: a model's own explain, GradCAM, channel-reduced attributions."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from distillscope.errors import ConfigError, ModelError
from distillscope.explain import attribute, gradcam
from distillscope.explain.maps import explanation_maps, map_method

X = torch.randn(3, 2, 5, 5, generator=torch.Generator().manual_seed(0))
Y = torch.tensor([0, 1, 2])


class Explaining(nn.Module):
    """A tiny model that explains itself: the map is the target's weight times the input."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.w = nn.Parameter(torch.randn(3, 2, 5, 5))
        self.calls = 0

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("bchw,kchw->bk", x, self.w)  # (B, K)

    def explain(self, x: Tensor, target: Tensor) -> Tensor:
        self.calls += 1
        return (self.w[target] * x).sum(1)  # (B, H, W), keeps its graph


def conv_net(cam: str | None = "1") -> nn.Module:
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()
    net.cam_layer = cam
    return net


def test_auto_uses_the_models_own_explain_and_detaches_it() -> None:
    model = Explaining()
    maps = explanation_maps(model, X, Y)
    assert model.calls == 1 and map_method(model, "auto") == "explain"
    torch.testing.assert_close(maps, (model.w[Y] * X).sum(1).detach())
    assert not maps.requires_grad


def test_auto_falls_back_to_gradcam_on_cam_layer() -> None:
    net = conv_net()
    assert map_method(net, "auto") == "gradcam"
    torch.testing.assert_close(explanation_maps(net, X, Y), gradcam(net, "1", X, Y))


def test_auto_without_explain_or_cam_layer_names_the_fix() -> None:
    with pytest.raises(ModelError, match="explain.*cam_layer.*saliency") as err:
        explanation_maps(conv_net(cam=None), X, Y)
    assert "\n" not in str(err.value)


def test_saliency_takes_the_channel_maximum_of_the_absolute_gradient() -> None:
    net = conv_net()
    full = attribute(net, X, Y, "saliency")  # (B, C, H, W)
    torch.testing.assert_close(explanation_maps(net, X, Y, "saliency"), full.amax(1))


def test_integrated_gradients_sum_over_channels_keeps_completeness() -> None:
    # For a linear model IG from 0 is x * w exactly; its channel sum sums to z(x) - z(0).
    model = Explaining()
    maps = explanation_maps(model, X, Y, "integrated_gradients")
    torch.testing.assert_close(maps, (model.w[Y] * X).sum(1).detach(), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        logit = model(X).gather(1, Y[:, None])[:, 0]
    torch.testing.assert_close(maps.sum((1, 2)), logit, rtol=1e-4, atol=1e-4)


def test_guided_gradcam_is_reduced_to_one_channel() -> None:
    assert explanation_maps(conv_net(), X, Y, "guided_gradcam").shape == (3, 5, 5)


def test_errors_are_one_line_and_name_the_problem() -> None:
    with pytest.raises(ConfigError, match="method='lime'"):
        explanation_maps(conv_net(), X, Y, "lime")
    with pytest.raises(ModelError, match="no explain"):
        explanation_maps(conv_net(), X, Y, "explain")
    with pytest.raises(ModelError, match="no cam_layer"):
        explanation_maps(Explaining(), X, Y, "gradcam")
    with pytest.raises(ModelError, match=r"\(B, C, H, W\) images"):
        explanation_maps(nn.Linear(4, 3), torch.randn(2, 4), Y[:2])


def test_an_explain_of_the_wrong_shape_is_refused() -> None:
    class Bad(Explaining):
        def explain(self, x: Tensor, target: Tensor) -> Tensor:
            return x  # (B, C, H, W): one channel too many

    with pytest.raises(ModelError, match=r"Bad\.explain returned \(3, 2, 5, 5\)"):
        explanation_maps(Bad(), X, Y)
