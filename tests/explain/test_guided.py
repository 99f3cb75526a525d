"""In-house guided backprop and Guided Grad-CAM against captum's, on a tiny CNN."""

from __future__ import annotations

import warnings

import pytest
import torch
from captum.attr import GuidedBackprop, GuidedGradCam
from torch import nn

from distillscope.explain.guided import guided_backprop, guided_gradcam


class Blocks(nn.Module):
    """Two conv blocks (the second one is the CAM layer, 4x4 output) and a ReLU MLP head."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(inplace))
        self.block2 = nn.Sequential(
            nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(inplace), nn.MaxPool2d(2)
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(6 * 16, 12), nn.ReLU(inplace), nn.Linear(12, 3)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block2(self.block1(x)))


def blocks(seed: int = 0, inplace: bool = False) -> Blocks:
    torch.manual_seed(seed)
    return Blocks(inplace).eval()


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(5, 2, 8, 8, generator=g), torch.tensor([0, 1, 2, 1, 0])


def captum_quietly(fn, *args, **kwargs) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # captum warns that it sets hooks on ReLUs
        return fn(*args, **kwargs).detach()


def test_guided_backprop_matches_captum(batch) -> None:
    x, y = batch
    net = blocks()
    ref = captum_quietly(GuidedBackprop(net).attribute, x.clone().requires_grad_(), target=y)
    ours = guided_backprop(net, x, y)
    plain = torch.autograd.grad(net(x.requires_grad_()).gather(1, y[:, None]).sum(), x)[0]
    assert not torch.allclose(ref, plain)  # the guidance changes the gradient here
    torch.testing.assert_close(ours, ref)


@pytest.mark.parametrize("inplace", [False, True])
def test_guided_gradcam_matches_captum(batch, inplace: bool) -> None:
    x, y = batch
    net = blocks(1, inplace)
    ref = captum_quietly(
        GuidedGradCam(net, net.block2).attribute, x.clone().requires_grad_(), target=y
    )
    ours = guided_gradcam(net, "block2", x, y)
    assert ours.shape == x.shape and ref.abs().sum() > 0
    torch.testing.assert_close(ours, ref)


def test_batch_equals_one_sample_at_a_time_and_hooks_are_removed(batch) -> None:
    x, y = batch
    net = blocks(2)
    whole = guided_gradcam(net, "block2", x, y)
    single = torch.cat(
        [guided_gradcam(net, "block2", x[i : i + 1], y[i : i + 1]) for i in range(5)]
    )
    torch.testing.assert_close(whole, single)
    assert all(not m._forward_hooks for m in net.modules())
    assert all(p.grad is None for p in net.parameters())
