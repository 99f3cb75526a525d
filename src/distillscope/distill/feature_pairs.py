"""Shared plumbing of the feature methods that read layer pairs (AT, NST, FT, OFD, AB, VID).

Layer paths are parameters (lists of module paths, one student path per teacher path); every
shape comes from the features the two networks produce at bind time, never from the config.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from distillscope.contracts import Outputs
from distillscope.distill.base import BindContext
from distillscope.errors import ConfigError

#: What a method may accept: feature maps ``(C, H, W)`` and/or feature vectors ``(D,)``.
MAPS = frozenset({"map"})
MAPS_OR_VECTORS = frozenset({"map", "vector"})


def check_layer(name: str, value: object) -> str:
    """``value`` if it is a module path (a non-empty string without surrounding blanks).

    Example:
        >>> check_layer("ft.student_layer", "layer3")
        'layer3'
    """
    if not isinstance(value, str) or not value or value.strip() != value:
        raise ConfigError(
            f"{name}={value!r} is not a module path; give a path of model.named_modules(), "
            "e.g. 'layer2'"
        )
    return value


def check_layer_pairs(
    term: str, student_layers: object, teacher_layers: object
) -> tuple[list[str], list[str]]:
    """Two equally long, non-empty lists of module paths; each student path at most once.

    Raises:
        ConfigError: One line naming the parameter, the value and the fix.

    Example:
        >>> check_layer_pairs("at", ["layer1", "layer2"], ["layer1", "layer2"])
        (['layer1', 'layer2'], ['layer1', 'layer2'])
    """
    layers = []
    for side, value in (("student_layers", student_layers), ("teacher_layers", teacher_layers)):
        if isinstance(value, str):
            raise ConfigError(
                f"{term}.{side}={value!r} is a single path; give a list, e.g. [{value!r}]"
            )
        if not isinstance(value, Sequence) or not value:
            raise ConfigError(
                f"{term}.{side}={value!r} is not a list of module paths; give a non-empty "
                "list, e.g. ['layer2']"
            )
        layers.append([check_layer(f"{term}.{side}[{i}]", p) for i, p in enumerate(value)])
    student, teacher = layers
    if len(student) != len(teacher):
        raise ConfigError(
            f"{term}.student_layers has {len(student)} paths and {term}.teacher_layers "
            f"{len(teacher)}; give one teacher layer per student layer"
        )
    repeated = sorted({p for p in student if student.count(p) > 1})
    if repeated:
        raise ConfigError(
            f"{term}.student_layers names {repeated[0]!r} twice; pair each student layer once"
        )
    return student, teacher


def kind(shape: Sequence[int]) -> str:
    """``"map"`` for ``(C, H, W)``, ``"vector"`` for ``(D,)``, else ``"other"`` (no batch axis).

    Example:
        >>> kind((16, 7, 7)), kind((64,)), kind((197, 768))
        ('map', 'vector', 'other')
    """
    return {3: "map", 1: "vector"}.get(len(shape), "other")


def pair_shapes(
    term: str,
    ctx: BindContext,
    student_layer: str,
    teacher_layer: str,
    accepted: frozenset[str],
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The (batch-less) shapes of one pair's features in ``ctx``, checked to suit the method.

    Args:
        term: The method's name, for messages.
        ctx: The bind context.
        student_layer: Student module path.
        teacher_layer: Teacher module path.
        accepted: :data:`MAPS` or :data:`MAPS_OR_VECTORS`; both features must be of one kind.

    Raises:
        ConfigError: No teacher outputs, or the pair is not two maps (or two vectors where
            accepted): one line naming the layers, their shapes and what to tap instead.
    """
    if ctx.teacher_outputs is None:
        raise ConfigError(f"{term} needs a teacher; give the student one")
    s = tuple(ctx.student_outputs.features[student_layer].shape[1:])
    t = tuple(ctx.teacher_outputs.features[teacher_layer].shape[1:])
    if kind(s) != kind(t) or kind(s) not in accepted:
        need = (
            "feature maps (C, H, W) on both sides; tap convolutional layers"
            if accepted == MAPS
            else "both maps (C, H, W) or both vectors (D,); tap layers of one kind"
        )
        raise ConfigError(
            f"{term} cannot pair student layer {student_layer!r} {s} with teacher layer "
            f"{teacher_layer!r} {t}: it needs {need}"
        )
    return s, t


def pooled(s: tuple[int, ...], t: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The shapes after :func:`~distillscope.functional.feature.match_spatial`.

    Example:
        >>> pooled((8, 14, 14), (16, 7, 7))
        ((8, 7, 7), (16, 7, 7))
    """
    if len(s) != 3:
        return s, t
    h, w = min(s[1], t[1]), min(s[2], t[2])
    return (s[0], h, w), (t[0], h, w)


def build_connector(channels_in: int, channels_out: int, map_kind: bool) -> nn.Sequential:
    """A 1x1 convolution (a linear layer for vectors) without bias, then batch norm.

    The student-side connector of OFD and AB (Heo et al. 2019: "a 1x1 convolutional layer and
    a batch normalization layer"), initialised as in the OFD authors' code: weights
    ``N(0, 2 / (k^2 C_out))``, batch norm weight 1 and bias 0.

    Example:
        >>> conv, norm = build_connector(8, 16, map_kind=True)
        >>> conv.kernel_size, conv.bias, type(norm).__name__
        ((1, 1), None, 'BatchNorm2d')
    """
    if map_kind:
        layer: nn.Module = nn.Conv2d(channels_in, channels_out, 1, bias=False)
        norm: nn.Module = nn.BatchNorm2d(channels_out)
    else:
        layer = nn.Linear(channels_in, channels_out, bias=False)
        norm = nn.BatchNorm1d(channels_out)
    nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0 / channels_out))
    nn.init.ones_(norm.weight)
    nn.init.zeros_(norm.bias)
    return nn.Sequential(layer, norm)


def features(outputs: Outputs, paths: Sequence[str], *, detach: bool = False) -> list[Tensor]:
    """The features at ``paths`` (detached for the teacher side)."""
    found = [outputs.features[p] for p in paths]
    return [f.detach() for f in found] if detach else found


def stage_weights(n: int) -> list[float]:
    """``2^(i - n + 1)`` for pair ``i`` of ``n``: the last pair weighs 1, each earlier one half.

    The per-layer weights of OFD's and AB's reference code (the authors', RepDistiller's,
    mdistiller's).

    Example:
        >>> stage_weights(3)
        [0.25, 0.5, 1.0]
    """
    return [2.0 ** (i - n + 1) for i in range(n)]
