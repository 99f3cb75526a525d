"""One batched entry point to the attribution methods the probes compare.

Paper 004 (Trustworthy Distillation?), section 4.2 compares teacher and student attributions of
three methods; the constants follow SPEC section 2:

* ``"saliency"``: ``|d z_c / d x|`` (Simonyan et al. 2014; captum ``Saliency``, ``abs=True``).
* ``"integrated_gradients"``: ``(x - x') * mean_{a} d z_c(x' + a (x - x')) / d x`` over ``n_steps``
  points of the path from the baseline ``x'`` (Sundararajan et al. 2017; captum
  ``IntegratedGradients``, Gauss-Legendre points); signed.
* ``"gradcam"``: :func:`~distillscope.explain.gradcam.gradcam` on ``model.cam_layer``
  (ReLU-ed, bilinear resize, one channel).
* ``"guided_gradcam"``: :func:`~distillscope.explain.guided.guided_gradcam` on
  ``model.cam_layer``: guided backprop times the nearest-upsampled GradCAM, shaped like the
  input and signed; what captum's ``GuidedGradCam`` gives, paper 004's "GradCAM" column.
* ``"bcos"``: a B-cos model's dynamic weights ``W(x)`` of the class (its ``dynamic_weights``:
  the gradient w.r.t. the encoded input ``[p, 1 - p]`` in explanation mode, ``(B, 2C, H, W)``),
  the explanation paper 001's e2KD distils between B-cos models (3.1).

Every method runs on the whole batch (IG on ``internal_batch_size`` path points at a time).
"""

from __future__ import annotations

from typing import Any

from captum.attr import IntegratedGradients, Saliency
from torch import Tensor, nn

from distillscope.errors import ConfigError, ModelError
from distillscope.explain.gradcam import gradcam
from distillscope.explain.guided import guided_gradcam
from distillscope.models.bcos_layers import is_bcos

__all__ = ["BCOS_METHODS", "CAM_METHODS", "IG_STEPS", "METHODS", "attribute"]

#: Attribution methods :func:`attribute` knows.
METHODS = ("saliency", "integrated_gradients", "gradcam", "guided_gradcam", "bcos")
#: Methods that need ``model.cam_layer`` (and image inputs).
CAM_METHODS = ("gradcam", "guided_gradcam")
#: Methods that need a B-cos model (``dynamic_weights``).
BCOS_METHODS = ("bcos",)
#: Integrated Gradients path points: 50, the value of SPEC section 2 and captum's default.
IG_STEPS = 50


def attribute(
    model: nn.Module,
    inputs: Tensor,
    target: Tensor,
    method: str,
    *,
    n_steps: int = IG_STEPS,
    baseline: float = 0.0,
    internal_batch_size: int | None = None,
) -> Tensor:
    """Attributions of ``model``'s logit ``target`` to ``inputs`` for one ``method``.

    Args:
        model: A network returning ``(B, K)`` logits, in eval mode. ``"gradcam"`` and
            ``"guided_gradcam"`` need its ``cam_layer`` attribute (module path of the last
            conv block), ``"bcos"`` a B-cos model.
        inputs: ``(B, ...)`` model inputs (normalised, as the model sees them).
        target: ``(B,)`` class index per sample.
        method: One of :data:`METHODS`.
        n_steps: Integrated Gradients path points.
        baseline: Integrated Gradients baseline value, in model-input space (0 = the zero input,
            SPEC section 2).
        internal_batch_size: Integrated Gradients path points evaluated per forward pass
            (default: all ``B * n_steps`` at once).

    Returns:
        Detached attributions: ``(B, ...)`` like ``inputs`` for saliency, Integrated Gradients
        and Guided Grad-CAM, ``(B, H, W)`` for GradCAM, ``(B, 2C, H, W)`` for B-cos.

    Raises:
        ConfigError: Unknown method.
        ModelError: (Guided) GradCAM on a model without ``cam_layer``; ``"bcos"`` on a model
            that is not a B-cos network.

    Example:
        >>> import torch
        >>> net = nn.Linear(2, 3)
        >>> x, y = torch.randn(4, 2), torch.tensor([0, 1, 2, 0])
        >>> torch.allclose(attribute(net, x, y, "saliency"), net.weight[y].abs())
        True
    """
    target = target.to(inputs.device)
    if method in ("saliency", "integrated_gradients"):
        inputs = inputs.detach().requires_grad_(True)  # what captum would set, without warning
    if method == "saliency":
        return _detached(Saliency(model).attribute(inputs, target=target, abs=True))
    if method == "integrated_gradients":
        ig = IntegratedGradients(model)
        out = ig.attribute(
            inputs,
            baselines=baseline,
            target=target,
            n_steps=n_steps,
            internal_batch_size=internal_batch_size,
        )
        return _detached(out)
    if method in CAM_METHODS:
        layer = getattr(model, "cam_layer", None)
        if layer is None:
            raise ModelError(
                f"{type(model).__name__} has no cam_layer; {method} needs the module path of its "
                "last conv block in model.cam_layer"
            )
        if method == "guided_gradcam":
            return guided_gradcam(model, layer, inputs, target)
        return gradcam(model, layer, inputs, target)
    if method == "bcos":
        if not is_bcos(model) or not hasattr(model, "dynamic_weights"):
            raise ModelError(
                f"{type(model).__name__} is not a B-cos model; the bcos method explains bcos_* "
                "models with their dynamic weights W(x)"
            )
        return model.dynamic_weights(inputs, target).detach()
    raise ConfigError(f"unknown attribution method {method!r}; valid: {', '.join(METHODS)}")


def _detached(out: Any) -> Tensor:
    """Captum returns a tensor for a tensor input; keep the contract explicit."""
    if not isinstance(out, Tensor):
        raise TypeError(f"expected a tensor from captum, got {type(out).__name__}")
    return out.detach()
