"""Differentiable GradCAM on whole batches.

Selvaraju et al. 2017 (Grad-CAM), as used by paper 001 (e2KD) and paper 004
(attribution adherence): for the selected logit ``z_c`` and the activation ``A`` of the chosen
layer (the last conv block),

    w_c = mean_{i,j} dz_c / dA_{:,i,j}                 (channel weights, spatial mean of gradient)
    CAM = ReLU(sum_k w_k A_k)                           (B, h, w)
    map = bilinear_resize(CAM, input H x W)             (B, H, W)

(``resize="nearest"`` gives the nearest-neighbour upsampling that captum's ``GuidedGradCam``
uses, see :mod:`distillscope.explain.guided`.)

With ``create_graph=True`` the map keeps its graph, so a loss on it trains the model (double
backpropagation, e2KD's student explanation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillscope.errors import ModelError
from distillscope.models.taps import check_module_paths

__all__ = ["find_layer", "gradcam", "gradcam_from"]


def find_layer(model: nn.Module, layer_path: str) -> nn.Module:
    """The submodule of ``model`` at the dotted ``layer_path``.

    Raises:
        ModelError: No such submodule; the message lists the valid paths.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
        >>> find_layer(net, "0")
        Conv2d(1, 2, kernel_size=(3, 3), stride=(1, 1))
    """
    return check_module_paths(model, [layer_path])[layer_path]


def gradcam(
    model: nn.Module,
    layer_path: str,
    inputs: Tensor,
    target: Tensor,
    create_graph: bool = False,
    resize: str = "bilinear",
) -> Tensor:
    """GradCAM maps of ``model`` for class ``target``, resized to the input's height and width.

    Args:
        model: A network returning ``(B, K)`` logits; put it in eval mode first.
        layer_path: Module path of the layer whose output ``A`` is ``(B, C, h, w)``.
        inputs: ``(B, C_in, H, W)`` model inputs.
        target: ``(B,)`` class index per sample.
        create_graph: Keep the graph of the map (for training on it); otherwise the result is
            detached.
        resize: Upsampling to the input size: ``"bilinear"`` (Grad-CAM paper, e2KD) or
            ``"nearest"`` (captum's Guided Grad-CAM).

    Returns:
        ``(B, H, W)`` non-negative maps.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(),
        ...                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
        >>> gradcam(net, "1", torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])).shape
        torch.Size([4, 8, 8])
    """
    if resize not in ("bilinear", "nearest"):
        raise ValueError(f"resize must be 'bilinear' or 'nearest', got {resize!r}")
    layer = find_layer(model, layer_path)
    captured: list[Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        with torch.enable_grad():
            if not inputs.requires_grad:
                # Frozen models still need a graph from the inputs to the layer's activation.
                inputs = inputs.detach().requires_grad_(True)
            logits = model(inputs)  # (B, K)
            if not captured:
                raise ModelError(f"layer {layer_path!r} was not called in the forward pass")
            acts = captured[-1]  # (B, C, h, w)
            if acts.dim() != 4:
                raise ModelError(
                    f"GradCAM needs a (B, C, h, w) activation at {layer_path!r}, "
                    f"got shape {tuple(acts.shape)}; pass a convolutional layer"
                )
            cam = gradcam_from(logits, acts, target, inputs.shape[-2:], create_graph, resize)
    finally:
        handle.remove()
    return cam


def gradcam_from(
    logits: Tensor,
    acts: Tensor,
    target: Tensor,
    size: Sequence[int],
    create_graph: bool = False,
    resize: str = "bilinear",
) -> Tensor:
    """GradCAM maps from a forward pass that already ran: no second pass through the model.

    The e2KD loss uses this on the student's training forward (its tapped last conv block), so
    BatchNorm statistics move once per step (paper 001; the authors' code does the same).

    Args:
        logits: ``(B, K)`` logits of the pass, in the graph of ``acts``.
        acts: ``(B, C, h, w)`` activation of the explained layer in that pass.
        target: ``(B,)`` class index per sample.
        size: ``(H, W)`` of the maps returned (the input's).
        create_graph: Keep the graph of the map (training on it); else the map is detached.
        resize: ``"bilinear"`` or ``"nearest"`` upsampling.

    Returns:
        ``(B, H, W)`` non-negative maps.

    Raises:
        ModelError: ``acts`` is not a 4-D activation, or not in the graph of ``logits``.
    """
    if acts.dim() != 4:
        raise ModelError(
            f"GradCAM needs a (B, C, h, w) activation, got shape {tuple(acts.shape)}; "
            "explain a convolutional layer"
        )
    if not acts.requires_grad:
        raise ModelError(
            "GradCAM's activation is not in the autograd graph; run the forward pass with "
            "gradients enabled"
        )
    selected = logits.gather(1, target.view(-1, 1).to(logits.device)).sum()
    (grads,) = torch.autograd.grad(selected, acts, create_graph=create_graph)
    weights = grads.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    cam = F.relu((weights * acts).sum(1, keepdim=True))  # (B, 1, h, w)
    align = False if resize == "bilinear" else None
    cam = F.interpolate(cam, size=tuple(size), mode=resize, align_corners=align)[:, 0]
    return cam if create_graph else cam.detach()  # (B, H, W)
