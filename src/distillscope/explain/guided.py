"""Guided backpropagation and Guided Grad-CAM, on whole batches.

Paper 004's "GradCAM" adherence column is captum's ``GuidedGradCam`` on the last conv block
(the authors' published code); this module computes the same maps in-house:

* Guided backpropagation (Springenberg et al. 2015): the gradient of the selected logit
  ``z_c`` with respect to the input, where every ReLU passes back only the positive part of
  the gradient, and only where its input was positive:

      g_in = ReLU(g_out) * 1[x > 0]                          at every ``nn.ReLU`` module

* Guided Grad-CAM (Selvaraju et al. 2017, section 3.1): guided backpropagation times the
  ReLU-ed GradCAM map of the chosen layer, upsampled to the input by nearest neighbour
  (captum's default) and broadcast over the input channels:

      GGC = GB(x) * nearest_resize(ReLU(sum_k w_k A_k))      (B, C, H, W), signed

As in captum, the GradCAM factor uses ordinary gradients, and only ``nn.ReLU`` *modules* are
guided: a ``torch.nn.functional.relu`` call inside ``forward`` is not seen and keeps its plain
gradient (the project's models use modules for every activation).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from distillscope.explain.gradcam import gradcam

__all__ = ["guided_backprop", "guided_gradcam"]


class _PositiveGradient(torch.autograd.Function):
    """Identity forward; backward keeps only the positive part of the incoming gradient."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad.clamp(min=0)


def _guide(_module: nn.Module, _inputs: Any, output: Tensor) -> Tensor:
    # Placed after the ReLU: its own backward then masks by 1[x > 0], giving ReLU(g) * 1[x > 0].
    return _PositiveGradient.apply(output)


def guided_backprop(model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
    """Guided backpropagation maps of ``model``'s logit ``target``.

    Args:
        model: A network returning ``(B, K)`` logits, in eval mode.
        inputs: ``(B, ...)`` model inputs.
        target: ``(B,)`` class index per sample.

    Returns:
        ``(B, ...)`` detached maps, shaped like ``inputs``.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
        >>> with torch.no_grad():
        ...     _ = net[0].weight.copy_(torch.eye(2)); _ = net[0].bias.zero_()
        ...     _ = net[2].weight.copy_(torch.tensor([[1.0, -1.0]])); _ = net[2].bias.zero_()
        >>> guided_backprop(net, torch.tensor([[1.0, 1.0]]), torch.tensor([0]))
        tensor([[1., 0.]])
    """
    handles = [m.register_forward_hook(_guide) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.enable_grad():
            x = inputs.detach().requires_grad_(True)
            logits = model(x)  # (B, K)
            selected = logits.gather(1, target.view(-1, 1).to(logits.device)).sum()
            (grad,) = torch.autograd.grad(selected, x)  # (B, ...)
    finally:
        for handle in handles:
            handle.remove()
    return grad.detach()


def guided_gradcam(model: nn.Module, layer_path: str, inputs: Tensor, target: Tensor) -> Tensor:
    """Guided Grad-CAM maps: guided backprop times the nearest-upsampled GradCAM of a layer.

    Args:
        model: A network returning ``(B, K)`` logits, in eval mode.
        layer_path: Module path of the layer whose output is ``(B, C, h, w)`` (the last conv
            block, ``model.cam_layer``).
        inputs: ``(B, C_in, H, W)`` model inputs.
        target: ``(B,)`` class index per sample.

    Returns:
        ``(B, C_in, H, W)`` detached, signed maps.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(),
        ...                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
        >>> guided_gradcam(net, "1", torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])).shape
        torch.Size([4, 1, 8, 8])
    """
    cam = gradcam(model, layer_path, inputs, target, resize="nearest")  # (B, H, W)
    return guided_backprop(model, inputs, target) * cam[:, None]  # (B, C_in, H, W)
