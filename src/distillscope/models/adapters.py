"""Models from other libraries: ``"torchvision:<name>"`` and ``"timm:<name>"``.

Both adapters return the library's own module, adapted to the zoo's contract: a classifier head
with ``num_classes`` outputs, a first conv taking ``in_channels``, and the attributes
``cam_layer`` and ``feature_layers`` (module paths), guessed by :func:`guess_layers` unless
given. Pretrained weights are never downloaded unless asked for (``weights=`` / ``pretrained=``).
"""

from __future__ import annotations

import difflib
import pickle
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from distillscope.errors import ConfigError, ModelError
from distillscope.models.taps import check_module_paths
from distillscope.registry import MODELS

#: How many stage outputs :func:`guess_layers` keeps as ``feature_layers`` (the deepest ones).
GUESSED_FEATURE_LAYERS = 4


@MODELS.register_prefix("torchvision")
def torchvision_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int = 3,
    weights: Any = None,
    cam_layer: str | None = None,
    feature_layers: Sequence[str] | None = None,
    **params: Any,
) -> nn.Module:
    """A torchvision classification model, e.g. ``create_model("torchvision:resnet18", ...)``.

    Args:
        name: Builder name in ``torchvision.models.list_models(module=torchvision.models)``.
        num_classes: Number of classes K; a pretrained head of another size is replaced.
        in_channels: Input channels; other than 3, the first conv is replaced (with pretrained
            weights, its kernels become the mean of the RGB kernels, rescaled by 3/C).
        weights: ``None`` (random init, no download), ``"DEFAULT"`` or a weights name such as
            ``"IMAGENET1K_V1"``; loaded through torchvision's hub cache.
        cam_layer: Overrides the guessed GradCAM layer.
        feature_layers: Overrides the guessed feature layers.
        **params: Passed to the torchvision builder (e.g. ``dropout``).

    Raises:
        ModelError: Unknown model or weights name, weights that cannot be loaded, or an override
            path that names no module.
        ConfigError: The builder rejects one of ``params``.
    """
    from torchvision import models as tvm

    valid = tvm.list_models(module=tvm)
    if name not in valid:
        raise ModelError(
            f"unknown torchvision model {name!r}; close matches: {_close(name, valid)}; "
            "see torchvision.models.list_models()"
        )
    if weights is None:
        model = _call(
            f"torchvision model {name!r}", tvm.get_model, name, num_classes=num_classes, **params
        )
    else:
        resolved = _resolve_weights(name, weights)
        try:
            model = _call(
                f"torchvision model {name!r}", tvm.get_model, name, weights=resolved, **params
            )
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
            raise ModelError(
                f"torchvision weights {resolved} for {name!r} could not be loaded "
                f"({type(exc).__name__}: {_first_line(exc)}); download them once into the torch "
                f"hub cache ({torch.hub.get_dir()}/checkpoints) on a machine online, "
                "or pass weights=None"
            ) from exc
        if len(resolved.meta["categories"]) != num_classes:
            replace_head(model, num_classes)
    if in_channels != 3:
        replace_input_conv(model, in_channels, keep_weights=weights is not None)
    return _annotate(model, cam_layer, feature_layers)


@MODELS.register_prefix("timm")
def timm_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int = 3,
    pretrained: bool = False,
    cam_layer: str | None = None,
    feature_layers: Sequence[str] | None = None,
    **params: Any,
) -> nn.Module:
    """A timm model, e.g. ``create_model("timm:resnet18", ...)``; needs ``pip install timm``.

    Args:
        name: Model name in ``timm.list_models()``.
        num_classes: Number of classes K (timm sizes the head).
        in_channels: Input channels (timm adapts the stem).
        pretrained: Load timm's pretrained weights (downloads unless cached).
        cam_layer: Overrides the guessed GradCAM layer.
        feature_layers: Overrides the guessed feature layers.
        **params: Passed to ``timm.create_model``.

    Raises:
        ModelError: timm is missing, the name is unknown or the weights cannot be loaded.
        ConfigError: timm rejects one of ``params``.
    """
    try:
        import timm
    except ImportError:
        raise ModelError("timm is not installed; pip install timm") from None
    if not timm.is_model(name):
        raise ModelError(
            f"unknown timm model {name!r}; close matches: {_close(name, timm.list_models())}; "
            "see timm.list_models()"
        )
    try:
        model = _call(
            f"timm model {name!r}",
            timm.create_model,
            name,
            pretrained=pretrained,
            num_classes=num_classes,
            in_chans=in_channels,
            **params,
        )
    except (OSError, RuntimeError) as exc:
        raise ModelError(
            f"timm model {name!r} could not be built ({type(exc).__name__}: {_first_line(exc)}); "
            "with pretrained=True, download the weights once on a machine online, "
            "or pass pretrained=False"
        ) from exc
    return _annotate(model, cam_layer, feature_layers)


def guess_layers(model: nn.Module) -> tuple[str | None, list[str]]:
    """Guess ``(cam_layer, feature_layers)`` of a convolutional network from its structure.

    The stages are the top-level children that contain an ``nn.Conv2d``, skipping auxiliary
    heads (children named ``aux*``) and the container of the classifier head (SqueezeNet's
    conv ``classifier``). When there is a single one (a ``features`` sequence, as in
    VGG, MobileNet, EfficientNet, DenseNet or ConvNeXt), its conv-containing children are the
    stages instead. ``cam_layer`` is the last stage (``"layer4"`` for ResNets,
    ``"features.8"`` for EfficientNet-B0) and ``feature_layers`` the last four. Networks with
    attention modules (ViT, Swin) or without convs get ``(None, [])``: pass the layers
    explicitly for them.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3), nn.Flatten())
        >>> guess_layers(net)
        ('2', ['0', '2'])
    """
    if any(_is_attention(m) for m in model.modules()):
        return None, []
    head_path, _ = _head(model)
    head_container = head_path.split(".")[0] if "." in head_path else None
    stages = [
        n
        for n, c in model.named_children()
        if _has_conv(c) and not n.lower().startswith("aux") and n != head_container
    ]
    if len(stages) == 1:
        inner = [
            f"{stages[0]}.{n}"
            for n, c in model.get_submodule(stages[0]).named_children()
            if _has_conv(c)
        ]
        stages = inner or stages
    if not stages:
        return None, []
    return stages[-1], stages[-GUESSED_FEATURE_LAYERS:]


def replace_head(model: nn.Module, num_classes: int) -> None:
    """Replace the last ``nn.Linear`` (or 1x1 ``nn.Conv2d``, SqueezeNet) by a fresh K-way one."""
    path, old = _head(model)
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    elif isinstance(old, nn.Conv2d) and old.kernel_size == (1, 1):
        new = nn.Conv2d(old.in_channels, num_classes, 1, bias=old.bias is not None)
    else:
        raise ModelError(
            f"cannot find the classifier head of {type(model).__name__} (its last layer "
            f"{path!r} is not a Linear or 1x1 conv); pass weights=None or the pretrained "
            "number of classes"
        )
    _set_submodule(model, path, new)


def replace_input_conv(model: nn.Module, in_channels: int, *, keep_weights: bool) -> None:
    """Replace the first ``nn.Conv2d`` by one taking ``in_channels`` inputs.

    With ``keep_weights`` the new kernels are the mean of the old ones over the input channels,
    scaled by ``old_C / in_channels`` so that a grey image replicated to every channel gives
    the same response as before.
    """
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs or convs[0][1].groups != 1:
        raise ModelError(
            f"cannot find a plain input conv in {type(model).__name__} to adapt to "
            f"in_channels={in_channels}; feed 3-channel inputs (in_channels=3)"
        )
    path, old = convs[0]
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        old.kernel_size,
        old.stride,
        old.padding,
        old.dilation,
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
    )
    if keep_weights:
        with torch.no_grad():
            mean = old.weight.mean(1, keepdim=True)  # (O, 1, kh, kw)
            new.weight.copy_(mean.expand_as(new.weight) * old.in_channels / in_channels)
            if old.bias is not None:
                new.bias.copy_(old.bias)
    _set_submodule(model, path, new)


def _annotate(
    model: nn.Module, cam_layer: str | None, feature_layers: Sequence[str] | None
) -> nn.Module:
    """Set ``cam_layer`` and ``feature_layers``: the given ones (checked) or the guessed ones."""
    guessed_cam, guessed_features = guess_layers(model)
    model.cam_layer = guessed_cam if cam_layer is None else cam_layer
    model.feature_layers = list(guessed_features if feature_layers is None else feature_layers)
    given = [p for p in (cam_layer, *(feature_layers or ())) if p is not None]
    check_module_paths(model, given)
    return model


def _resolve_weights(name: str, weights: Any) -> Any:
    """torchvision's weights enum member for ``weights`` (a name such as ``"DEFAULT"``)."""
    from torchvision import models as tvm

    try:
        enum = tvm.get_model_weights(name)
    except (KeyError, ValueError):
        raise ModelError(
            f"torchvision model {name!r} has no pretrained weights; pass weights=None"
        ) from None
    try:
        return enum.verify(weights)
    except (KeyError, TypeError):
        raise ModelError(
            f"unknown weights {weights!r} for torchvision model {name!r}; valid: "
            f"{', '.join(enum.__members__)}, or None for random initialisation"
        ) from None


def _call(what: str, builder: Any, *args: Any, **kwargs: Any) -> nn.Module:
    """``builder(*args, **kwargs)``; a rejected keyword becomes a :class:`ConfigError`."""
    try:
        return builder(*args, **kwargs)
    except TypeError as exc:
        raise ConfigError(
            f"{what} rejected its parameters ({_first_line(exc)}); remove or rename that parameter"
        ) from exc


def _set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def _head(model: nn.Module) -> tuple[str, nn.Module | None]:
    """Path and module of the classifier head: the last ``nn.Linear`` or ``nn.Conv2d``."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    return layers[-1] if layers else ("", None)


def _has_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


def _is_attention(module: nn.Module) -> bool:
    return isinstance(module, nn.MultiheadAttention) or type(module).__name__.endswith("Attention")


def _close(name: str, choices: Sequence[str]) -> str:
    matches = difflib.get_close_matches(name, choices, n=5, cutoff=0.5)
    return ", ".join(matches) if matches else "(none)"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
