"""B-cos layers: dynamic linear networks whose explanation is part of the model.

Böhle et al., "B-cos Networks: Alignment is All We Need for Interpretability" (CVPR 2022) and
"B-cos Alignment for Inherently Interpretable CNNs and Vision Transformers" (TPAMI 2024), the
models paper 001 explains with their dynamic weights. A B-cos unit with unit weight ``w^``
replaces ``w^T x`` by

    B-cos(x; w) = |cos(x, w^)|^(B - 1) * (w^T x),      cos(x, w^) = w^T x / ||x||

(B = 2 here, so ``(w^T x) |w^T x| / ||x||``), optionally the maximum over ``max_out`` units
(MaxOut, the first paper). A stack of such units with no bias is *dynamic linear*:
``y(x) = W(x) x``. In **explanation mode** every input-dependent factor (the ``|cos|`` scale,
the normalisers' statistics, attention) is detached, so the gradient of a logit w.r.t. the
input is exactly the row of ``W(x)``, and ``sum(W(x) * x)`` equals the logit (minus the
constant logit bias): the explanation paper 001 distils (3.1, "we use the dynamic weights
W(x) as explanations").

Inputs are pixels in ``[0, 1]`` encoded as ``[x, 1 - x]`` (:class:`BcosEncode`): every colour
then has a non-zero norm and black pixels can contribute. Choices follow the authors' v2 code
(GitHub B-cos/B-cos-v2, read for reference only): unit-norm weights with a ``1e-6``
stabiliser, patch norms by an average pool, batch norm without centring and bias, a logit bias
``log(1 / (K - 1))``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillscope.errors import ConfigError

__all__ = [
    "B",
    "BcosConv2d",
    "BcosEncode",
    "BcosLinear",
    "Detachable",
    "DetachableLayerNorm",
    "LogitBias",
    "UncenteredBatchNorm2d",
    "explanation_mode",
    "is_bcos",
]

#: The alignment exponent of paper 001's B-cos models (and the authors' default).
B = 2.0
_EPS = 1e-6


class Detachable(nn.Module):
    """A module with an explanation mode: ``detach = True`` detaches its dynamic factors."""

    detach: bool = False


def _scale(out: Tensor, norm: Tensor, b: float, detach: bool) -> Tensor:
    """``|cos|^(b-1) * out`` with ``cos = out / norm``; the factor detached in explanation mode."""
    if b == 1:
        return out
    ref, norm = (out.detach(), norm.detach()) if detach else (out, norm)
    factor = ref.abs() / norm if b == 2 else (ref / norm).abs().add(_EPS).pow(b - 1)
    return factor * out


def _max_out(out: Tensor, units: int, dim: int) -> Tensor:
    """The maximum over groups of ``units`` consecutive outputs along ``dim``."""
    if units == 1:
        return out
    return out.unflatten(dim, (out.shape[dim] // units, units)).amax(dim + 1 if dim >= 0 else dim)


def _check_b(owner: str, b: float, max_out: int) -> None:
    if not isinstance(b, (int, float)) or isinstance(b, bool) or b < 1:
        raise ConfigError(f"{owner}.b must be a number >= 1, got {b!r}; paper 001 uses 2")
    if isinstance(max_out, bool) or not isinstance(max_out, int) or max_out < 1:
        raise ConfigError(f"{owner}.max_out must be a positive integer, got {max_out!r}")


class BcosConv2d(Detachable):
    """B-cos convolution: ``|cos(patch, w^)|^(B-1) * (w^ * patch)`` per output position.

    ``||patch||`` is the norm of the whole ``C x k x k`` input patch (zero padding included).

    Args:
        in_channels: Input channels.
        out_channels: Output channels (after MaxOut).
        kernel_size: Square kernel side.
        stride: Stride.
        padding: Zero padding.
        b: Alignment exponent B >= 1 (1 = a plain conv with unit-norm weights).
        max_out: MaxOut units per output channel (1 = none).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        b: float = B,
        max_out: int = 1,
    ) -> None:
        super().__init__()
        _check_b("BcosConv2d", b, max_out)
        self.b, self.max_out = float(b), max_out
        self.stride, self.padding, self.kernel_size = stride, padding, kernel_size
        self.weight = nn.Parameter(
            torch.empty(out_channels * max_out, in_channels, kernel_size, kernel_size)
        )
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        w = F.normalize(self.weight.flatten(1), dim=1, eps=_EPS).view_as(self.weight)
        out = F.conv2d(x, w, None, self.stride, self.padding)  # (B, O * M, h, w)
        out = _max_out(out, self.max_out, 1)  # (B, O, h, w)
        k, s, p = self.kernel_size, self.stride, self.padding
        squares = x.pow(2).sum(1, keepdim=True)  # (B, 1, H, W)
        norm = (F.avg_pool2d(squares, k, s, p, divisor_override=1) + _EPS).sqrt()  # (B, 1, h, w)
        return _scale(out, norm, self.b, self.detach)

    def extra_repr(self) -> str:
        c_out, c_in = self.weight.shape[0] // self.max_out, self.weight.shape[1]
        return (
            f"{c_in}, {c_out}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, b={self.b:g}, max_out={self.max_out}"
        )


class BcosLinear(Detachable):
    """B-cos linear layer on the last dimension (tokens or flattened features).

    Args:
        in_features: Input width.
        out_features: Output width (after MaxOut).
        b: Alignment exponent.
        max_out: MaxOut units per output.
    """

    def __init__(self, in_features: int, out_features: int, b: float = B, max_out: int = 1):
        super().__init__()
        _check_b("BcosLinear", b, max_out)
        self.b, self.max_out = float(b), max_out
        self.weight = nn.Parameter(torch.empty(out_features * max_out, in_features))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        out = F.linear(x, F.normalize(self.weight, dim=1, eps=_EPS))  # (..., O * M)
        out = _max_out(out, self.max_out, -1)  # (..., O)
        norm = (x.pow(2).sum(-1, keepdim=True) + _EPS).sqrt()  # (..., 1)
        return _scale(out, norm, self.b, self.detach)

    def extra_repr(self) -> str:
        out, inp = self.weight.shape
        return f"{inp}, {out // self.max_out}, b={self.b:g}, max_out={self.max_out}"


class UncenteredBatchNorm2d(nn.BatchNorm2d, Detachable):
    """Batch norm that only rescales: ``gamma * x / sqrt(var + eps)``, no centring, no bias.

    A per-channel scale keeps the network dynamic linear; in training mode the batch variance
    is detached in explanation mode (B-cos v2's uncentred norm).
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.bias = None

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            ref = x.detach() if self.detach else x
            var = ref.var(dim=(0, 2, 3), unbiased=False)  # (C,)
            assert self.running_var is not None
            with torch.no_grad():
                self.running_var.lerp_(var.detach(), self.momentum or 0.1)
                self.num_batches_tracked.add_(1)  # type: ignore[union-attr]
        else:
            assert self.running_var is not None
            var = self.running_var
        scale = self.weight * (var + self.eps).rsqrt()  # (C,)
        return x * scale[None, :, None, None]


class DetachableLayerNorm(Detachable):
    """Layer norm without bias whose standard deviation is detached in explanation mode.

    ``gamma * (x - mean(x)) / std(x)``: the centring is linear in ``x`` and the scale is a
    dynamic factor, so the layer is dynamic linear (B-cos ViTs).
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        centred = x - x.mean(-1, keepdim=True)  # (..., D)
        std = (centred.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()  # (..., 1)
        if self.detach:
            std = std.detach()
        return self.weight * centred / std


class BcosEncode(Detachable):
    """Normalised images -> pixels ``p`` in ``[0, 1]`` -> ``[p, 1 - p]`` (``2C`` channels).

    The data pipeline normalises with ``(p - mean) / std``; this undoes it first. In
    explanation mode the encoded input is made a leaf that requires a gradient, so a logit's
    gradient w.r.t. this module's output, ``W(x)``, exists even for inputs without one.

    Args:
        mean: Per-channel mean the inputs were normalised with (``None``: inputs are pixels).
        std: Per-channel std the inputs were normalised with.
    """

    def __init__(self, mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        if (mean is None) != (std is None) or (std is not None and min(std) <= 0):
            raise ConfigError(
                f"B-cos input_mean={mean!r} / input_std={std!r} are invalid; give both (std > 0) "
                "or neither (inputs already pixels in [0, 1])"
            )
        self.register_buffer("mean", torch.tensor(mean or (0.0,)).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std or (1.0,)).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        pixels = x * self.std + self.mean  # (B, C, H, W) in [0, 1]
        out = torch.cat([pixels, 1.0 - pixels], dim=1)  # (B, 2C, H, W)
        if self.detach and torch.is_grad_enabled() and not out.requires_grad:
            out = out.detach().requires_grad_(True)
        return out


class LogitBias(nn.Module):
    """Adds the constant ``log(1 / (K - 1))`` to every logit (B-cos v2): with a binary
    cross-entropy, untrained outputs then start near the class prior ``1 / K``."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.bias = math.log(1.0 / (num_classes - 1)) if num_classes > 1 else 0.0

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bias

    def extra_repr(self) -> str:
        return f"bias={self.bias:.4f}"


def is_bcos(model: nn.Module) -> bool:
    """Whether ``model`` is a B-cos network of the zoo (has an explanation mode)."""
    return bool(getattr(model, "is_bcos", False))


@contextmanager
def explanation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Detach every dynamic factor of ``model`` inside the block (restored after it).

    Forward values are unchanged; only gradients differ: a logit's gradient w.r.t. the encoded
    input is then the dynamic weight ``W(x)``.

    Example:
        >>> layer = BcosLinear(3, 2)
        >>> with explanation_mode(layer):
        ...     layer.detach
        True
        >>> layer.detach
        False
    """
    saved = [(m, m.detach) for m in model.modules() if isinstance(m, Detachable)]
    try:
        for m, _ in saved:
            m.detach = True
        yield model
    finally:
        for m, was in saved:
            m.detach = was
