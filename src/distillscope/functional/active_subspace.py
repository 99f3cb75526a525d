"""Active directions of a representation: the spectrum of its loss-gradient second moment.

For per-sample gradients ``g_i = d loss(x_i) / d z_i`` of a layer's (flattened)
representation ``z``, the active subspace (Cui et al. 2019, "Active subspace of neural networks:
structural analysis and universal attacks") is spanned by the leading eigenvectors of

    G = 1/N sum_i g_i g_i^T        (D x D, uncentred, positive semi-definite)

and the number of *active directions* is the smallest ``k`` whose leading eigenvalues hold a
share ``share`` of the trace: ``min{k : (lambda_1 + ... + lambda_k) / tr(G) >= share}``.

``G`` is never formed when ``N < D``: its non-zero eigenvalues are those of the ``N x N`` Gram
matrix ``1/N g g^T``, so the spectrum costs ``O(min(N, D)^3)``; it has ``min(N, D)`` entries,
and the count can never exceed that (audit more samples than the directions you expect).
"""

from __future__ import annotations

import torch
from torch import Tensor

from distillscope.errors import ConfigError

__all__ = ["active_count", "active_directions", "gradient_spectrum"]


def gradient_spectrum(grads: Tensor) -> Tensor:
    """Eigenvalues of ``G = 1/N sum_i g_i g_i^T``, descending, in float64.

    Args:
        grads: ``(N, ...)`` per-sample gradients; each row is flattened to ``D`` entries.

    Returns:
        ``(min(N, D),)`` eigenvalues, largest first, clipped at 0 (rounding can make the
        smallest ones slightly negative).

    Example:
        >>> g = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, -2.0], [1.0, 0.0]])
        >>> gradient_spectrum(g).tolist()
        [2.0, 0.5]
    """
    if len(grads) == 0:  # before the reshape, which cannot infer D from no rows
        raise ValueError("gradient_spectrum needs at least one gradient")
    g = grads.reshape(len(grads), -1).to(torch.float64)  # (N, D)
    n, d = g.shape
    gram = g @ g.T / n if n < d else g.T @ g / n  # (min(N, D), min(N, D))
    return torch.linalg.eigvalsh(gram).flip(0).clamp_min(0.0)


def active_count(eigenvalues: Tensor, share: float) -> int:
    """The smallest ``k`` whose ``k`` largest eigenvalues hold ``share`` of their sum.

    Args:
        eigenvalues: ``(n,)`` non-negative eigenvalues, largest first.
        share: In ``(0, 1]``.

    Returns:
        ``k`` in ``1..n``; 0 when every eigenvalue is 0 (the loss is flat in every direction).

    Example:
        >>> active_count(torch.tensor([3.0, 1.0, 0.0]), 0.75)
        1
        >>> active_count(torch.tensor([3.0, 1.0, 0.0]), 0.99)
        2
    """
    if not 0.0 < share <= 1.0:
        raise ConfigError(f"share={share!r} is invalid; use a number in (0, 1]")
    lam = eigenvalues.to(torch.float64)
    total = float(lam.sum())
    if total <= 0.0:
        return 0
    captured = torch.cumsum(lam, 0) / total  # (n,)
    # a share of exactly 1 would otherwise depend on the last bit of the cumulative sum
    reached = captured >= share * (1.0 - 1e-12)
    return int(reached.to(torch.int64).argmax()) + 1 if bool(reached.any()) else len(lam)


def active_directions(grads: Tensor, share: float) -> int:
    """The number of active directions of per-sample gradients ``grads`` ``(N, ...)``.

    ``active_count(gradient_spectrum(grads), share)``: invariant to any orthogonal change of
    basis of the representation (``g -> g Q``), to the order of the samples and to a common
    scale of the gradients.

    Example:
        >>> gen = torch.Generator().manual_seed(0)
        >>> g = torch.randn(50, 2, generator=gen) @ torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        >>> active_directions(g, 0.999)
        2
    """
    return active_count(gradient_spectrum(grads), share)
