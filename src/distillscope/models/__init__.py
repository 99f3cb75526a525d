"""The model zoo, adapters for torchvision and timm, and feature taps.

Importing this package registers every zoo model in :data:`distillscope.registry.MODELS`.
Every model built by :func:`create_model` returns logits ``(B, K)`` from ``forward(x)`` and
carries two attributes other areas rely on:

- ``cam_layer: str | None``: module path of the last convolutional block, whose output
  GradCAM weighs (``None`` for MLPs and transformers);
- ``feature_layers: list[str]``: module paths worth comparing (stage outputs, the penultimate
  layer) for feature distillation and CKA.

Text classifiers (``hf:<name>``, :mod:`distillscope.models.hf`) take ``(B, L)`` token ids and
also carry ``embedding_layer``, the module path of their word embedding.
"""

from __future__ import annotations

import fnmatch
import numbers
from typing import Any

from torch import nn

from distillscope.errors import ConfigError, ModelError
from distillscope.models import (  # noqa: F401  (registers the zoo)
    adapters,
    bcos,
    hf,
    paper004,
    resnet_cifar,
    small,
    vit,
)
from distillscope.models.forward import count_parameters, forward_outputs, model_device
from distillscope.models.taps import FeatureTap, check_module_paths
from distillscope.registry import MODELS

__all__ = [
    "FeatureTap",
    "check_module_paths",
    "count_parameters",
    "create_model",
    "forward_outputs",
    "model_device",
    "model_names",
]


def create_model(
    name: str, *, num_classes: int, in_channels: int | None = None, **params: Any
) -> nn.Module:
    """Build a registered model by name.

    Args:
        name: A zoo name (``"resnet20"``, ``"mlp_full"``, ...; see :func:`model_names`), an
            adapter name, ``"torchvision:<name>"`` or ``"timm:<name>"``, or a text classifier,
            ``"hf:<preset or local directory>"`` (:mod:`distillscope.models.hf`).
        num_classes: Number of classes K.
        in_channels: Input channels of image models; ``None`` keeps the model's default (1 for
            the MNIST networks, 3 otherwise). MLPs take ``in_features`` instead.
        **params: Model parameters (``depth``, ``width``, ``hidden``, ``weights``, ...).

    Returns:
        The model, with ``cam_layer`` and ``feature_layers`` set.

    Raises:
        ConfigError: Unknown name or parameter, or a non-positive size.
        ModelError: The model cannot be built with these parameters.

    Example:
        >>> model = create_model("resnet8", num_classes=10)
        >>> model.cam_layer, model.feature_layers
        ('layer3', ['layer1', 'layer2', 'layer3', 'pool'])
    """
    _check_size("num_classes", num_classes, "the number of classes of your dataset")
    if in_channels is not None:
        _check_size("in_channels", in_channels, "1 for grey or 3 for colour images")
        params["in_channels"] = in_channels
    model = MODELS.create(name, num_classes=num_classes, **params)
    for attr in ("cam_layer", "feature_layers"):
        if not hasattr(model, attr):
            raise ModelError(
                f"model {name!r} ({type(model).__name__}) has no {attr!r} attribute; set "
                "self.cam_layer (module path or None) and self.feature_layers in its __init__"
            )
    check_module_paths(model, [p for p in (model.cam_layer, *model.feature_layers) if p])
    return model


def model_names(pattern: str = "*") -> list[str]:
    """Registered model names matching an fnmatch ``pattern``, then the adapter forms.

    Example:
        >>> model_names("resnet2*")
        ['resnet20']
    """
    return [n for n in MODELS.names() if fnmatch.fnmatch(n, pattern)]


def _check_size(key: str, value: Any, hint: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{key} must be a positive integer, got {value!r}; pass {hint}")
