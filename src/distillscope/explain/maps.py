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

Each method is an :class:`~distillscope.explain.attribution.Explainer` of the registry
:data:`~distillscope.registry.EXPLAINERS` (``"explain"`` is :class:`OwnExplainer`, here); its
``attribute`` verb then its ``to_map`` give the map.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from distillscope.errors import ConfigError, ModelError
from distillscope.explain.attribution import IG_STEPS, Explainer, create_explainer
from distillscope.registry import EXPLAINERS, register_explainer

__all__ = [
    "MAP_METHODS",
    "OwnExplainer",
    "check_map_method",
    "explanation_maps",
    "map_method",
    "why_not",
]

#: Methods :func:`explanation_maps` knows (``"auto"`` and the explainers that give maps), in
#: the order its error message lists them.
MAP_METHODS = (
    "auto",
    "explain",
    "gradcam",
    "saliency",
    "integrated_gradients",
    "guided_gradcam",
)


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
    if method in EXPLAINERS.list():
        return EXPLAINERS.get(method).why_not(model)
    return None


@register_explainer("explain")
class OwnExplainer(Explainer):
    """The model's own ``model.explain(inputs, target) -> (B, H, W)`` (B-cos models: the
    contribution map ``sum_c W(x)_c x_c`` of their dynamic linear weights, paper 001, 3.1).

    A map method only: :func:`~distillscope.explain.attribution.attribute` does not offer it.

    Example:
        >>> OwnExplainer.why_not(nn.Linear(2, 2))
        'Linear has no explain(inputs, target) method; use method: auto'
    """

    needs = "explain"

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
        target = target.to(inputs.device)
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

    label: ClassVar[str] = "explain"
    advice: ClassVar[str] = "use method: auto"

    @classmethod
    def lacks(cls, model: nn.Module) -> str | None:
        return None if _has_explain(model) else "has no explain(inputs, target) method"


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
    explainer = create_explainer(chosen, n_steps=n_steps, internal_batch_size=internal_batch_size)
    return explainer.to_map(explainer.attribute(model, inputs, target))  # (B, H, W)
