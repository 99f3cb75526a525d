"""B-cos layers: dynamic linear networks whose explanation is part of the model.

Böhle et al., "B-cos Networks: Alignment is All We Need for Interpretability" (CVPR 2022) and
"B-cos Alignment for Inherently Interpretable CNNs and Vision Transformers" (TPAMI 2024), the
models paper 001 explains with their dynamic weights. A B-cos unit with unit weight ``w^``
replaces ``w^T x`` by

    B-cos(x; w) = |cos(x, w^)|^(B - 1) * (w^T x),      cos(x, w^) = w^T x / ||x||

(B = 2 here, so ``(w^T x) |w^T x| / ||x||``), optionally the maximum over ``max_out`` units
(MaxOut, the first paper). A stack of such units with no bias is *dynamic linear*:
``y(x) = W(x) x``. In **explanation mode** every input-dependent factor (the ``|cos|`` scale,
the normalisers' ``1 / std``, attention) is a constant of the gradient, so the gradient of a
logit w.r.t. the input is exactly the row of ``W(x)``, and ``sum(W(x) * x)`` equals the logit
(minus the constant logit bias): the explanation paper 001 distils (3.1, "we use the dynamic
weights W(x) as explanations").

The factors are not detached, though: in explanation mode each layer multiplies by its factor
through :func:`dynamic_product`, whose backward leaves the factor out only while the layer is
still in explanation mode. ``W(x)`` is computed there (``create_graph=True`` for e2KD); the
training step's ``loss.backward()`` runs after the mode is left, so the gradient of a loss on
``W(x)`` w.r.t. the parameters keeps every factor's dependence on them (double backward), and
a loss on the logits gets the ordinary gradient. This follows the e2KD authors' code
(GitHub m-parchami/GoodTeachersExplain, ``bcos/modules/common.py``, ``_DynamicMultiplication``,
used by their ``BcosConv2d``, ``BcosLinear``, uncentred batch norm, layer norms and ViT
attention); the B-cos v2 code detaches instead, which loses that dependence.

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
from typing import Any

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
    "dynamic_product",
    "explanation_mode",
    "is_bcos",
]

#: The alignment exponent of paper 001's B-cos models (and the authors' default).
B = 2.0
_EPS = 1e-6


class Detachable(nn.Module):
    """A module with an explanation mode: with ``detach = True`` its dynamic factors are constants
    of the gradients taken while the mode lasts (see :func:`dynamic_product`)."""

    detach: bool = False


class _DynamicProduct(torch.autograd.Function):
    """``factor * x`` (or ``factor @ x``) whose backward drops the factor's gradient while
    ``owner`` is in explanation mode; see :func:`dynamic_product`."""

    @staticmethod
    def forward(ctx: Any, factor: Tensor, x: Tensor, owner: Detachable, matmul: bool) -> Tensor:
        ctx.save_for_backward(factor, x)
        ctx.owner, ctx.matmul = owner, matmul
        return factor @ x if matmul else factor * x

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        # differentiable ops on the saved tensors: with create_graph=True they are recorded,
        # so a loss on this gradient reaches the factor's own graph (the double backward)
        factor, x = ctx.saved_tensors
        grad_x = grad_factor = None
        if ctx.needs_input_grad[1]:
            grad_x = factor.mT @ grad if ctx.matmul else grad * factor
            grad_x = grad_x.sum_to_size(x.shape)
        if ctx.needs_input_grad[0] and not ctx.owner.detach:  # read now, not at the forward
            grad_factor = grad @ x.mT if ctx.matmul else grad * x
            grad_factor = grad_factor.sum_to_size(factor.shape)
        return grad_factor, grad_x, None, None


def dynamic_product(factor: Tensor, x: Tensor, owner: Detachable, matmul: bool = False) -> Tensor:
    """``factor * x`` (``factor @ x`` with ``matmul``) for a layer in explanation mode.

    The value is the plain product. A backward pass run while ``owner`` is still in explanation
    mode treats ``factor`` as a constant: the gradient w.r.t. ``x`` is ``factor * grad`` and
    ``factor`` gets none, so a logit's gradient w.r.t. the input is the dynamic weight ``W(x)``
    exactly as if the factors were detached. Made with ``create_graph=True``, that gradient
    keeps ``factor`` (not a detached copy) in its graph, and a backward pass run after the mode
    is left (the training step's) differentiates the product fully. So the gradient of a loss
    on ``W(x)`` w.r.t. the parameters includes the factors' dependence on them, which detaching
    loses. The state is read when the backward runs, as in the e2KD authors' code
    (m-parchami/GoodTeachersExplain, ``bcos/modules/common.py``: ``_DynamicMultiplication``
    and ``_DynamicMatrixMultiplication``, whose ``fixed_weights`` state is a dict of the
    module read in ``backward``), written here from that maths.

    Args:
        factor: The dynamic factor, with its graph (broadcast against ``x``).
        x: The input it multiplies.
        owner: The layer whose ``detach`` flag (explanation mode) the backward reads.
        matmul: Matrix product (attention) instead of the elementwise one.

    Example:
        >>> layer = BcosLinear(3, 1)
        >>> x = torch.ones(3, requires_grad=True)
        >>> with explanation_mode(layer):
        ...     out = layer(x)
        ...     (w,) = torch.autograd.grad(out.sum(), x, create_graph=True)
        >>> torch.allclose((w * x).sum(), out)  # W(x) x = y: the factor was a constant
        True
        >>> w.sum().backward()  # after the mode: through the factor too
        >>> layer.weight.grad.abs().sum() > 0
        tensor(True)
    """
    return _DynamicProduct.apply(factor, x, owner, matmul)


def _scale(out: Tensor, norm: Tensor, b: float, owner: Detachable) -> Tensor:
    """``|cos|^(b-1) * out`` with ``cos = out / norm``; a dynamic product in explanation mode."""
    if b == 1:
        return out
    factor = out.abs() / norm if b == 2 else (out / norm).abs().add(_EPS).pow(b - 1)
    return dynamic_product(factor, out, owner) if owner.detach else factor * out


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
        return _scale(out, norm, self.b, self)

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
        return _scale(out, norm, self.b, self)

    def extra_repr(self) -> str:
        out, inp = self.weight.shape
        return f"{inp}, {out // self.max_out}, b={self.b:g}, max_out={self.max_out}"


class UncenteredBatchNorm2d(nn.BatchNorm2d, Detachable):
    """Batch norm that only rescales: ``gamma * x / sqrt(var + eps)``, no centring, no bias.

    A per-channel scale keeps the network dynamic linear. In explanation mode ``1 / std`` is a
    dynamic factor (:func:`dynamic_product`) multiplied before ``gamma``, as the e2KD authors'
    uncentred batch norm does (GoodTeachersExplain,
    ``bcos/modules/norms/uncentered_norms/batchnorm_uncentered.py``); in training mode its batch
    variance then enters ``W(x)``'s graph but not ``W(x)`` itself.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.bias = None

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            var = x.var(dim=(0, 2, 3), unbiased=False)  # (C,)
            assert self.running_var is not None
            with torch.no_grad():
                self.running_var.lerp_(var.detach(), self.momentum or 0.1)
                self.num_batches_tracked.add_(1)  # type: ignore[union-attr]
        else:
            assert self.running_var is not None
            var = self.running_var
        if self.detach:
            inv_std = (var + self.eps).rsqrt()[None, :, None, None]  # (1, C, 1, 1)
            return dynamic_product(inv_std, x, self) * self.weight[None, :, None, None]
        scale = self.weight * (var + self.eps).rsqrt()  # (C,)
        return x * scale[None, :, None, None]


class DetachableLayerNorm(Detachable):
    """Layer norm without bias whose ``1 / std`` is a dynamic factor in explanation mode.

    ``gamma * (x - mean(x)) / std(x)``: the centring is linear in ``x`` and the scale is a
    dynamic factor (:func:`dynamic_product`, as the e2KD authors' ``DetachableLayerNorm``), so
    the layer is dynamic linear (B-cos ViTs).
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        centred = x - x.mean(-1, keepdim=True)  # (..., D)
        std = (centred.pow(2).mean(-1, keepdim=True) + self.eps).sqrt()  # (..., 1)
        if self.detach:
            return self.weight * dynamic_product(1.0 / std, centred, self)
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
    """Explanation mode for every B-cos layer of ``model`` inside the block (restored after it).

    Forward values are unchanged; only gradients taken inside the block differ: their dynamic
    factors are constants, so a logit's gradient w.r.t. the encoded input is the dynamic weight
    ``W(x)``. Backward passes run after the block differentiate through the factors again
    (:func:`dynamic_product`), including those reaching a ``W(x)`` made with
    ``create_graph=True`` inside it.

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
