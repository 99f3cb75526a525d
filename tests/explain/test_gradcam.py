"""In-house differentiable GradCAM against captum's LayerGradCam on a tiny CNN."""

from __future__ import annotations

import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam
from torch import nn

from distillscope.errors import ModelError
from distillscope.explain.gradcam import find_layer, gradcam


def tiny_cnn(seed: int = 0) -> nn.Sequential:
    """Conv -> ReLU -> conv (4x4 output) -> ReLU -> pool -> linear, on 1x8x8 inputs."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 5, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 3),
    )
    return net.eval()


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 1, 8, 8, generator=g), torch.tensor([0, 1, 2, 2, 1, 0])


def test_matches_captum_layer_gradcam(batch) -> None:
    x, y = batch
    net = tiny_cnn()
    ours = gradcam(net, "3", x, y)
    cam = LayerGradCam(net, net[3]).attribute(x, target=y, relu_attributions=True)  # (B, 1, 4, 4)
    ref = LayerAttribution.interpolate(cam, (8, 8), interpolate_mode="bilinear")[:, 0]
    assert ours.shape == (6, 8, 8)
    assert ref.abs().sum() > 0  # the comparison is not between two zero maps
    torch.testing.assert_close(ours, ref.detach())


def test_maps_are_non_negative_and_detached_by_default(batch) -> None:
    x, y = batch
    cam = gradcam(tiny_cnn(), "3", x, y)
    assert (cam >= 0).all()
    assert not cam.requires_grad


def test_batch_equals_one_sample_at_a_time(batch) -> None:
    x, y = batch
    net = tiny_cnn()
    whole = gradcam(net, "3", x, y)
    single = torch.cat([gradcam(net, "3", x[i : i + 1], y[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(whole, single)


def test_create_graph_lets_a_loss_on_the_map_train_the_model(batch) -> None:
    x, y = batch
    net = tiny_cnn()
    cam = gradcam(net, "3", x, y, create_graph=True)
    assert cam.requires_grad
    cam.sum().backward()
    grad = net[0].weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_frozen_model_still_gets_maps(batch) -> None:
    x, y = batch
    net = tiny_cnn()
    expected = gradcam(net, "3", x, y)
    for p in net.parameters():
        p.requires_grad_(False)
    torch.testing.assert_close(gradcam(net, "3", x, y), expected)
    with torch.no_grad():  # a caller's no_grad does not break it either
        torch.testing.assert_close(gradcam(net, "3", x, y), expected)


def test_hook_is_removed(batch) -> None:
    x, y = batch
    net = tiny_cnn()
    gradcam(net, "3", x, y)
    assert not net[3]._forward_hooks


def test_wrong_layer_path_names_the_valid_ones() -> None:
    with pytest.raises(ModelError, match=r"'conv9'.*valid paths: .*0.*1.*2"):
        find_layer(tiny_cnn(), "conv9")


def test_non_spatial_layer_is_rejected(batch) -> None:
    x, y = batch
    with pytest.raises(ModelError, match="convolutional"):
        gradcam(tiny_cnn(), "6", x, y)
