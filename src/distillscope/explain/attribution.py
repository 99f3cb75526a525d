"""One batched entry point to the attribution methods the probes compare.

Paper 004 (Trustworthy Distillation?), section 4.2 compares teacher and student attributions of
three methods; the constants are captum's defaults where the paper gives none:

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

Each method is an :class:`Explainer` registered in :data:`~distillscope.registry.EXPLAINERS`
with one verb, ``attribute(model, inputs, target) -> Tensor`` (captum's pattern); the function
:func:`attribute` looks the method up by name.
"""

from __future__ import annotations

from typing import Any, ClassVar

from captum.attr import IntegratedGradients, Saliency
from torch import Tensor, nn

from distillscope.errors import ConfigError, ModelError
from distillscope.explain.gradcam import gradcam
from distillscope.explain.guided import guided_gradcam
from distillscope.models.bcos_layers import is_bcos
from distillscope.registry import EXPLAINERS, accepted_params, register_explainer

__all__ = [
    "BCOS_METHODS",
    "CAM_METHODS",
    "IG_STEPS",
    "METHODS",
    "Explainer",
    "attribute",
    "create_explainer",
]

#: Integrated Gradients path points: 50, captum's default.
IG_STEPS = 50


class Explainer:
    """One attribution method: ``attribute(model, inputs, target) -> Tensor``, detached.

    Class attributes:
        name: Registered name (set by :func:`~distillscope.registry.register_explainer`).
        needs: What the model must have: ``"cam_layer"``, ``"bcos"`` (a B-cos model),
            ``"explain"`` (its own ``explain`` method) or ``None``.
        gives_map: Whether :func:`~distillscope.explain.maps.explanation_maps` offers it (its
            :meth:`to_map` turns the attributions into one ``(B, H, W)`` map per image).
        label: The method's name in messages (``"GradCAM"``).
        needs_images: Whether the method needs image inputs ``(B, C, H, W)``.
        advice: What to do instead when a model lacks what the method needs.
    """

    name: ClassVar[str] = "explainer"
    needs: ClassVar[str | None] = None
    gives_map: ClassVar[bool] = True
    label: ClassVar[str] = "explainer"
    needs_images: ClassVar[bool] = False
    advice: ClassVar[str] = ""

    def __init__(self) -> None:
        """No options (explicit, so :func:`create_explainer` sees that it takes none)."""

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
        """Detached attributions of ``model``'s logit ``target`` (``(B,)``) to ``inputs``."""
        raise NotImplementedError

    def to_map(self, attributions: Tensor) -> Tensor:
        """One ``(B, H, W)`` map per image from :meth:`attribute`'s output (default: as is)."""
        return attributions

    @classmethod
    def lacks(cls, model: nn.Module) -> str | None:
        """What ``model`` lacks for this method, as the words after its name (``"has no
        cam_layer"``), or ``None`` when it has all it needs (default: always has)."""
        return None

    @classmethod
    def why_not(cls, model: nn.Module) -> str | None:
        """Why this method cannot explain ``model`` and what to do instead, one line, or
        ``None`` when it can."""
        missing = cls.lacks(model)
        if missing is None:
            return None
        return f"{type(model).__name__} {missing}; {cls.advice}"


def create_explainer(name: str, **options: Any) -> Explainer:
    """The registered explainer ``name``, given those of ``options`` it takes.

    Options a method does not use are left out (``n_steps`` means nothing to saliency), as the
    string-dispatch :func:`attribute` always did.

    Raises:
        ConfigError: Unknown name (the registry's message lists the valid ones).

    Example:
        >>> create_explainer("integrated_gradients", n_steps=8, baseline=0.0).n_steps
        8
        >>> type(create_explainer("saliency", n_steps=8)).__name__
        'SaliencyExplainer'
    """
    cls = EXPLAINERS.get(name)
    valid = accepted_params(cls)
    return cls(**{k: v for k, v in options.items() if valid is None or k in valid})


def _detached(out: Any) -> Tensor:
    """Captum returns a tensor for a tensor input; keep the contract explicit."""
    if not isinstance(out, Tensor):
        raise TypeError(f"expected a tensor from captum, got {type(out).__name__}")
    return out.detach()


@register_explainer("saliency")
class SaliencyExplainer(Explainer):
    """``|d z_c / d x|`` (Simonyan et al. 2014; captum ``Saliency``, ``abs=True``); as a map,
    the maximum over the input channels (their section 3.1).

    Example:
        >>> import torch
        >>> net = nn.Linear(2, 3)
        >>> x, y = torch.randn(4, 2), torch.tensor([0, 1, 2, 0])
        >>> torch.allclose(SaliencyExplainer().attribute(net, x, y), net.weight[y].abs())
        True
    """

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
        target = target.to(inputs.device)
        inputs = inputs.detach().requires_grad_(True)  # what captum would set, without warning
        return _detached(Saliency(model).attribute(inputs, target=target, abs=True))

    def to_map(self, attributions: Tensor) -> Tensor:
        return attributions.amax(1)  # (B, H, W): max over channels of |grad|


@register_explainer("integrated_gradients")
class IntegratedGradientsExplainer(Explainer):
    """``(x - x') * mean_a d z_c(x' + a (x - x')) / d x`` (Sundararajan et al. 2017; captum
    ``IntegratedGradients``, Gauss-Legendre points); signed. As a map, the sum over the input
    channels (additive contributions: this keeps completeness).

    Args:
        n_steps: Path points.
        baseline: Baseline value ``x'`` in model-input space (0 = the zero input).
        internal_batch_size: Path points per forward pass (default: all ``B * n_steps``).

    Example:
        >>> import torch
        >>> net = nn.Linear(2, 1)
        >>> x = torch.tensor([[1.0, 2.0]])
        >>> ig = IntegratedGradientsExplainer(n_steps=4).attribute(net, x, torch.tensor([0]))
        >>> torch.allclose(ig, x * net.weight)  # linear: exact
        True
    """

    def __init__(
        self,
        n_steps: int = IG_STEPS,
        baseline: float = 0.0,
        internal_batch_size: int | None = None,
    ) -> None:
        self.n_steps = n_steps
        self.baseline = baseline
        self.internal_batch_size = internal_batch_size

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
        target = target.to(inputs.device)
        inputs = inputs.detach().requires_grad_(True)  # what captum would set, without warning
        out = IntegratedGradients(model).attribute(
            inputs,
            baselines=self.baseline,
            target=target,
            n_steps=self.n_steps,
            internal_batch_size=self.internal_batch_size,
        )
        return _detached(out)

    def to_map(self, attributions: Tensor) -> Tensor:
        return attributions.sum(1)  # (B, H, W): a pixel's contribution, summed over channels


def _cam_layer(model: nn.Module, method: str) -> str:
    layer = getattr(model, "cam_layer", None)
    if layer is None:
        raise ModelError(
            f"{type(model).__name__} has no cam_layer; {method} needs the module path of its "
            "last conv block in model.cam_layer"
        )
    return layer


class _CamExplainer(Explainer):
    needs: ClassVar[str | None] = "cam_layer"
    needs_images: ClassVar[bool] = True
    advice: ClassVar[str] = "use method: auto (a model's own explain) or saliency"

    @classmethod
    def lacks(cls, model: nn.Module) -> str | None:
        return "has no cam_layer" if getattr(model, "cam_layer", None) is None else None


@register_explainer("gradcam")
class GradCamExplainer(_CamExplainer):
    """:func:`~distillscope.explain.gradcam.gradcam` on ``model.cam_layer`` (ReLU-ed, bilinear
    resize, one channel): ``(B, H, W)``, already a map."""

    label: ClassVar[str] = "GradCAM"

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
        target = target.to(inputs.device)
        return gradcam(model, _cam_layer(model, self.name), inputs, target)


@register_explainer("guided_gradcam")
class GuidedGradCamExplainer(_CamExplainer):
    """:func:`~distillscope.explain.guided.guided_gradcam` on ``model.cam_layer``: guided
    backprop times the nearest-upsampled GradCAM, shaped like the input and signed (captum's
    ``GuidedGradCam``, paper 004's "GradCAM" column). As a map, the sum over channels."""

    label: ClassVar[str] = "Guided Grad-CAM"

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
        target = target.to(inputs.device)
        return guided_gradcam(model, _cam_layer(model, self.name), inputs, target)

    def to_map(self, attributions: Tensor) -> Tensor:
        return attributions.sum(1)  # (B, H, W): a pixel's contribution, summed over channels


@register_explainer("bcos")
class BcosExplainer(Explainer):
    """A B-cos model's dynamic weights ``W(x)`` of the class (its ``dynamic_weights``: the
    gradient w.r.t. the encoded input ``[p, 1 - p]`` in explanation mode, ``(B, 2C, H, W)``),
    what e2KD distils between B-cos models (paper 001, 3.1). Not a map method."""

    needs: ClassVar[str | None] = "bcos"
    gives_map: ClassVar[bool] = False
    label: ClassVar[str] = "B-cos"
    advice: ClassVar[str] = "the bcos method explains bcos_* models with their dynamic weights W(x)"

    @classmethod
    def lacks(cls, model: nn.Module) -> str | None:
        if is_bcos(model) and hasattr(model, "dynamic_weights"):
            return None
        return "is not a B-cos model"

    def attribute(self, model: nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
        target = target.to(inputs.device)
        reason = self.why_not(model)
        if reason is not None:
            raise ModelError(reason)
        return model.dynamic_weights(inputs, target).detach()


#: Attribution methods :func:`attribute` knows, in the order its error message lists them.
METHODS = ("saliency", "integrated_gradients", "gradcam", "guided_gradcam", "bcos")
#: Methods that need ``model.cam_layer`` (and image inputs).
CAM_METHODS = tuple(m for m in METHODS if EXPLAINERS.get(m).needs == "cam_layer")
#: Methods that need a B-cos model (``dynamic_weights``).
BCOS_METHODS = tuple(m for m in METHODS if EXPLAINERS.get(m).needs == "bcos")


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

    The registered :class:`Explainer` of that name (:func:`create_explainer`), its
    ``attribute`` verb.

    Args:
        model: A network returning ``(B, K)`` logits, in eval mode. ``"gradcam"`` and
            ``"guided_gradcam"`` need its ``cam_layer`` attribute (module path of the last
            conv block), ``"bcos"`` a B-cos model.
        inputs: ``(B, ...)`` model inputs (normalised, as the model sees them).
        target: ``(B,)`` class index per sample.
        method: One of :data:`METHODS`.
        n_steps: Integrated Gradients path points.
        baseline: Integrated Gradients baseline value, in model-input space (0 = the zero input).
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
    if method not in METHODS:
        raise ConfigError(f"unknown attribution method {method!r}; valid: {', '.join(METHODS)}")
    explainer = create_explainer(
        method, n_steps=n_steps, baseline=baseline, internal_batch_size=internal_batch_size
    )
    return explainer.attribute(model, inputs, target)
