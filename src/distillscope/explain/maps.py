"""One explanation map per image, whatever the model: the dispatch the explanation probes use.

:func:`explanation_maps` returns ``(B, H, W)`` maps, one channel, at the input's resolution:

* ``"explain"``: the model's own ``model.explain(inputs, target) -> (B, H, W)`` (B-cos models:
  the contribution map ``sum_c W(x)_c x_c`` of their dynamic linear weights, paper 001, 3.1).
* ``"gradcam"``: GradCAM on ``model.cam_layer`` (ReLU-ed, bilinear resize; see
  :mod:`distillscope.explain.gradcam`); paper 001's explanation of standard models and paper
  003's Grad-CAM.
* ``"auto"`` (default): ``"explain"`` if the model has an ``explain`` method, else
  ``"gradcam"`` if it has a ``cam_layer``, else an error naming both fixes.
* The input-shaped attribution methods of :mod:`distillscope.explain.attribution`, reduced over
  the input channels: ``"saliency"`` by the maximum of ``|d z_c / d x|`` over channels (Simonyan
  et al. 2014, section 3.1); ``"integrated_gradients"`` and ``"guided_gradcam"`` by the sum over
  channels (their values are additive contributions, so a pixel's contribution is the sum of
  its channels'; for IG this keeps completeness).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from distillscope.errors import ConfigError, ModelError
from distillscope.explain.attribution import IG_STEPS, attribute

__all__ = ["MAP_METHODS", "check_map_method", "explanation_maps", "map_method", "why_not"]

#: Methods :func:`explanation_maps` knows.
MAP_METHODS = (
    "auto",
    "explain",
    "gradcam",
    "saliency",
    "integrated_gradients",
    "guided_gradcam",
)
_CHANNEL_SUM = ("integrated_gradients", "guided_gradcam")


def check_map_method(owner: str, method: object) -> str:
    """``method`` if it is one of :data:`MAP_METHODS`, else :class:`ConfigError` naming
    ``owner`` (e.g. ``"localisation.method"``).

    Example:
        >>> check_map_method("localisation.method", "gradcam")
        'gradcam'
    """
    if not isinstance(method, str) or method not in MAP_METHODS:
        raise ConfigError(f"{owner}={method!r} is invalid; use one of {', '.join(MAP_METHODS)}")
    return method


def _has_explain(model: nn.Module) -> bool:
    return callable(getattr(model, "explain", None))


def map_method(model: nn.Module, method: str) -> str:
    """The method ``"auto"`` resolves to for ``model`` (other methods are returned as given).

    Raises:
        ModelError: ``"auto"`` on a model with neither ``explain`` nor ``cam_layer``.

    Example:
        >>> net = nn.Linear(2, 2)
        >>> net.cam_layer = None
        >>> map_method(net, "saliency")
        'saliency'
    """
    if method != "auto":
        return method
    if _has_explain(model):
        return "explain"
    if getattr(model, "cam_layer", None) is not None:
        return "gradcam"
    raise ModelError(str(why_not(model, "auto")))


def why_not(model: nn.Module, method: str) -> str | None:
    """Why ``model`` cannot be explained by ``method``, or ``None`` when it can.

    Example:
        >>> why_not(nn.Linear(2, 2), "explain")
        'Linear has no explain(inputs, target) method; use method: auto'
    """
    name = type(model).__name__
    if method == "auto" and not _has_explain(model) and getattr(model, "cam_layer", None) is None:
        return (
            f"{name} has neither an explain(inputs, target) method nor a cam_layer; add one or "
            "use method: saliency"
        )
    if method == "explain" and not _has_explain(model):
        return f"{name} has no explain(inputs, target) method; use method: auto"
    if method in ("gradcam", "guided_gradcam") and getattr(model, "cam_layer", None) is None:
        return f"{name} has no cam_layer; use method: auto (a model's own explain) or saliency"
    return None


def explanation_maps(
    model: nn.Module,
    inputs: Tensor,
    target: Tensor,
    method: str = "auto",
    *,
    n_steps: int = IG_STEPS,
    internal_batch_size: int | None = None,
) -> Tensor:
    """Detached ``(B, H, W)`` explanations of ``model``'s logit ``target`` on image ``inputs``.

    Args:
        model: A network returning ``(B, K)`` logits, in eval mode.
        inputs: ``(B, C, H, W)`` images, normalised as the model sees them.
        target: ``(B,)`` class index per image.
        method: One of :data:`MAP_METHODS` (see the module docstring).
        n_steps: Integrated Gradients path points.
        internal_batch_size: Integrated Gradients path points per forward pass.

    Returns:
        ``(B, H, W)`` detached maps.

    Raises:
        ConfigError: Unknown method.
        ModelError: The model lacks what the method needs, its ``explain`` returns another
            shape, or the inputs are not images.

    Example:
        >>> class Toy(nn.Module):
        ...     def forward(self, x):
        ...         return x.flatten(1)[:, :3]
        ...     def explain(self, x, target):
        ...         return x[:, 0] * 2
        >>> x = torch.ones(2, 1, 4, 4)
        >>> explanation_maps(Toy(), x, torch.tensor([0, 1])).sum().item()
        64.0
    """
    check_map_method("method", method)
    if inputs.dim() != 4:
        raise ModelError(
            f"explanation maps need (B, C, H, W) images, got shape {tuple(inputs.shape)}"
        )
    chosen = map_method(model, method)
    reason = why_not(model, chosen)
    if reason is not None:
        raise ModelError(reason)
    target = target.to(inputs.device)
    if chosen == "explain":
        with torch.enable_grad():
            maps = model.explain(inputs, target)
        expected = (inputs.shape[0], *inputs.shape[-2:])
        if not isinstance(maps, Tensor) or tuple(maps.shape) != expected:
            got = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
            raise ModelError(
                f"{type(model).__name__}.explain returned {got}; it must return a (B, H, W) = "
                f"{expected} map per image"
            )
        return maps.detach()
    maps = attribute(
        model,
        inputs,
        target,
        chosen,
        n_steps=n_steps,
        internal_batch_size=internal_batch_size,
    )
    if chosen == "gradcam":
        return maps  # (B, H, W)
    if chosen == "saliency":
        return maps.amax(1)  # (B, H, W): max over channels of |grad|
    if chosen in _CHANNEL_SUM:
        return maps.sum(1)  # (B, H, W): a pixel's contribution, summed over its channels
    raise AssertionError(chosen)  # unreachable: every method is handled above
