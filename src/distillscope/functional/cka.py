"""Centred kernel alignment (CKA): similarity of two representations of the same inputs.

Kornblith, Norouzi, Lee & Hinton (2019), "Similarity of Neural Network Representations
Revisited" (ICML). For ``X`` of shape ``(n, p1)`` and ``Y`` of shape ``(n, p2)`` (one row per
input, any number of features), with Gram matrices ``K = k(X, X)``, ``L = l(Y, Y)`` and the
centring matrix ``H = I - 11^T / n``:

    HSIC(K, L) = tr(K H L H) / (n - 1)^2
    CKA(K, L)  = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))

The ``(n - 1)^2`` cancels, so ``CKA = <HKH, HLH>_F / (||HKH||_F ||HLH||_F)``. With the linear
kernel ``K = X X^T`` this equals ``||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)`` on
column-centred features (the paper's eq. 5 family), invariant to orthogonal transforms and
isotropic scaling of either side, but not to arbitrary invertible linear maps.

The estimators here:

- :func:`linear_cka`: linear kernel, biased HSIC (the paper's default).
- :func:`rbf_cka`: ``k(x, x') = exp(-||x - x'||^2 / (2 sigma^2))`` with ``sigma`` a fraction of
  the median distance between examples (the paper uses 0.5). As in the authors' published demo,
  the median is that of the ``n x n`` squared-distance matrix (zero diagonal included) and
  ``sigma^2 = sigma_fraction^2 * median(D^2)``.
- :func:`debiased_cka`: linear kernel with HSIC replaced by the unbiased estimator of Song et
  al. (2012), "Feature selection via dependence maximization" (JMLR), eq. 5:

      HSIC_1(K, L) = [tr(K~ L~) + 1^T K~ 1 1^T L~ 1 / ((n - 1)(n - 2))
                      - 2 / (n - 2) 1^T K~ L~ 1] / (n (n - 3)),

  ``K~, L~`` being ``K, L`` with their diagonals set to zero; it needs ``n >= 4``. CKA from
  unbiased HSIC is still biased, less so for few samples; it can be negative.
- :class:`MinibatchCKA` / :func:`minibatch_cka`: Nguyen, Raghu & Kornblith (2021), "Do Wide and
  Deep Networks Learn the Same Things?" (ICLR), eq. 2: over ``k`` minibatches ``(X_i, Y_i)``,

      CKA_mb = mean_i HSIC_1(K_i, L_i) / sqrt(mean_i HSIC_1(K_i, K_i) mean_i HSIC_1(L_i, L_i)),

  linear kernel; memory grows with the batch, not with the number of samples. Its expectation
  matches that of the full debiased estimator up to the ratio's bias.

Everything is computed in float64. The functions return a Python ``float`` (NaN when a side has
no variance, i.e. a zero centred Gram matrix: CKA is undefined there). Errors are one-line
``ValueError``s, as in :mod:`distillscope.functional.similarity`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "MinibatchCKA",
    "center_gram",
    "debiased_cka",
    "gram_cka",
    "gram_linear",
    "gram_rbf",
    "linear_cka",
    "minibatch_cka",
    "rbf_cka",
    "unbiased_hsic",
]

#: Samples the unbiased HSIC estimator needs (its normaliser is ``n (n - 3)``).
MIN_UNBIASED_SAMPLES = 4


def _features(x: Tensor, y: Tensor, minimum: int = 2) -> tuple[Tensor, Tensor]:
    """``x, y`` as float64 ``(n, p)`` matrices; ValueError on a wrong shape or size."""
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise ValueError(f"cka needs two tensors, got {type(x).__name__} and {type(y).__name__}")
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(
            f"cka needs (n, p) matrices, got shapes {tuple(x.shape)} and {tuple(y.shape)}; "
            "flatten each sample first"
        )
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"cka needs the same inputs on both sides, got {x.shape[0]} and {y.shape[0]} rows"
        )
    if x.shape[0] < minimum:
        raise ValueError(f"cka needs at least {minimum} samples, got {x.shape[0]}")
    return x.double(), y.double()


def _gram(gram: Tensor) -> Tensor:
    """``gram`` as a float64 square matrix; ValueError otherwise."""
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"a Gram matrix must be square, got shape {tuple(gram.shape)}")
    return gram.double()


def gram_linear(x: Tensor) -> Tensor:
    """Linear-kernel Gram matrix ``X X^T`` of ``(n, p)`` features, ``(n, n)`` float64.

    Example:
        >>> gram_linear(torch.tensor([[1.0, 0.0], [1.0, 2.0]]))
        tensor([[1., 1.],
                [1., 5.]], dtype=torch.float64)
    """
    x = x.double()
    return x @ x.T


def _median(values: Tensor) -> Tensor:
    """Median of all entries, the mean of the two middle ones for an even count (as numpy)."""
    flat = values.flatten()
    m = flat.numel()
    upper = flat.kthvalue(m // 2 + 1).values
    return upper if m % 2 else (upper + flat.kthvalue(m // 2).values) / 2


def gram_rbf(x: Tensor, sigma_fraction: float = 0.5) -> Tensor:
    """RBF Gram matrix ``exp(-||x_i - x_j||^2 / (2 sigma^2))``, ``(n, n)`` float64.

    ``sigma^2 = sigma_fraction^2 * median_ij ||x_i - x_j||^2`` over all ``n^2`` pairs (the
    zeros of the diagonal included), Kornblith et al.'s bandwidth heuristic as their demo
    computes it. All-equal rows (median 0) give a Gram matrix of ones (no information).

    Example:
        >>> g = gram_rbf(torch.tensor([[0.0], [1.0], [3.0]]), sigma_fraction=1.0)
        >>> round(float(g[0, 1]), 4)  # median of [0,1,9,1,0,4,9,4,0] is 1: exp(-1/2)
        0.6065
    """
    if not (isinstance(sigma_fraction, (int, float)) and math.isfinite(sigma_fraction)):
        raise ValueError(f"rbf sigma_fraction must be a finite number, got {sigma_fraction!r}")
    if sigma_fraction <= 0:
        raise ValueError(f"rbf sigma_fraction must be > 0, got {sigma_fraction}")
    dots = gram_linear(x)  # (n, n)
    norms = dots.diagonal()  # (n,)
    sq = (norms[:, None] + norms[None, :] - 2 * dots).clamp_min(0.0)  # (n, n)
    sq.fill_diagonal_(0.0)
    sq_median = _median(sq)
    if sq_median <= 0:
        return torch.ones_like(sq)
    return torch.exp(-sq / (2 * sigma_fraction**2 * sq_median))


def center_gram(gram: Tensor, unbiased: bool = False) -> Tensor:
    """Centred Gram matrix, so that ``<center(K), center(L)>_F`` is a scaled HSIC.

    ``unbiased=False``: ``H K H`` with ``H = I - 11^T / n``; then
    ``<HKH, HLH>_F = (n - 1)^2 HSIC_0``. ``unbiased=True``: the "U-centred" matrix of Szekely &
    Rizzo (2014), zero on its diagonal, with off-diagonal entries
    ``K~_ij - r_i - r_j`` where ``r_i = sum_k K~_ik / (n - 2) - sum_kl K~_kl / (2 (n-1)(n-2))``;
    then ``<U(K), U(L)>_F = n (n - 3) HSIC_1`` of Song et al. (2012), the same estimator in a
    numerically steadier form. Needs ``n >= 4`` when unbiased.

    Example:
        >>> k = gram_linear(torch.tensor([[1.0], [2.0], [3.0]]))
        >>> center_gram(k).sum().abs().item() < 1e-12  # rows and columns sum to zero
        True
    """
    gram = _gram(gram).clone()
    n = gram.shape[0]
    if not unbiased:
        means = gram.mean(0)  # (n,)
        means = means - means.mean() / 2
        return gram - means[:, None] - means[None, :]
    if n < MIN_UNBIASED_SAMPLES:
        raise ValueError(f"unbiased HSIC needs at least {MIN_UNBIASED_SAMPLES} samples, got {n}")
    gram.fill_diagonal_(0.0)
    row = gram.sum(0) / (n - 2)  # (n,)
    row = row - row.sum() / (2 * (n - 1))
    gram = gram - row[:, None] - row[None, :]
    gram.fill_diagonal_(0.0)
    return gram


def gram_cka(centred_x: Tensor, centred_y: Tensor) -> float:
    """CKA of two centred Gram matrices (both from :func:`center_gram`, same ``unbiased``).

    ``<K_c, L_c>_F / (||K_c||_F ||L_c||_F)``; NaN when either matrix is zero.
    """
    kx, ky = _gram(centred_x), _gram(centred_y)
    if kx.shape != ky.shape:
        raise ValueError(f"Gram matrices differ in shape: {tuple(kx.shape)} vs {tuple(ky.shape)}")
    denom = float(torch.linalg.matrix_norm(kx) * torch.linalg.matrix_norm(ky))
    if denom == 0.0:
        return math.nan
    return float((kx * ky).sum()) / denom


def unbiased_hsic(gram_x: Tensor, gram_y: Tensor) -> float:
    """Unbiased HSIC estimator of Song et al. (2012), eq. 5, from two uncentred Gram matrices.

    ``[tr(K~ L~) + 1^T K~ 1 1^T L~ 1 / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n (n-3))`` with
    zero-diagonal ``K~, L~``; ``n >= 4``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(20, 3, generator=g)
        >>> k = gram_linear(x)
        >>> u = center_gram(k, unbiased=True)
        >>> abs(unbiased_hsic(k, k) - float((u * u).sum()) / (20 * 17)) < 1e-9
        True
    """
    k, l_ = _gram(gram_x).clone(), _gram(gram_y).clone()
    if k.shape != l_.shape:
        raise ValueError(f"Gram matrices differ in shape: {tuple(k.shape)} vs {tuple(l_.shape)}")
    n = k.shape[0]
    if n < MIN_UNBIASED_SAMPLES:
        raise ValueError(f"unbiased HSIC needs at least {MIN_UNBIASED_SAMPLES} samples, got {n}")
    k.fill_diagonal_(0.0)
    l_.fill_diagonal_(0.0)
    trace = (k * l_).sum()  # tr(K~ L~), both symmetric
    sums = k.sum() * l_.sum() / ((n - 1) * (n - 2))
    cross = 2.0 / (n - 2) * (k.sum(0) @ l_.sum(1))  # 1^T K~ L~ 1
    return float((trace + sums - cross) / (n * (n - 3)))


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA of ``(n, p1)`` and ``(n, p2)`` features (Kornblith et al. 2019).

    ``||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)`` on column-centred features when
    both sides have fewer features than samples, else the same value from the Gram matrices.

    Returns:
        A float in ``[0, 1]``; NaN when a side is constant.

    Example:
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [0.0, 3.0]])
        >>> round(linear_cka(x, 3 * x), 6)
        1.0
    """
    x, y = _features(x, y)
    n = x.shape[0]
    if max(x.shape[1], y.shape[1]) >= n:
        return gram_cka(center_gram(gram_linear(x)), center_gram(gram_linear(y)))
    x = x - x.mean(0)
    y = y - y.mean(0)
    denom = float(torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y))
    if denom == 0.0:
        return math.nan
    return float(torch.linalg.matrix_norm(y.T @ x) ** 2) / denom


def rbf_cka(x: Tensor, y: Tensor, sigma_fraction: float = 0.5) -> float:
    """CKA with RBF kernels, bandwidth ``sigma_fraction`` x the median distance (see
    :func:`gram_rbf`), biased HSIC (Kornblith et al. 2019, who use ``sigma_fraction = 0.5``).

    Example:
        >>> x = torch.tensor([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0], [3.0, 0.0]])
        >>> round(rbf_cka(x, x), 6)
        1.0
    """
    x, y = _features(x, y)
    kx = center_gram(gram_rbf(x, sigma_fraction))
    ky = center_gram(gram_rbf(y, sigma_fraction))
    return gram_cka(kx, ky)


def debiased_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA from the unbiased HSIC estimator (Song et al. 2012; Kornblith et al. 2019,
    "debiased"); ``n >= 4``. May be slightly negative for unrelated representations.

    Example:
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [0.0, 3.0], [1.0, 1.0]])
        >>> round(debiased_cka(x, -x), 6)
        1.0
    """
    x, y = _features(x, y, minimum=MIN_UNBIASED_SAMPLES)
    kx = center_gram(gram_linear(x), unbiased=True)
    ky = center_gram(gram_linear(y), unbiased=True)
    return gram_cka(kx, ky)


class MinibatchCKA:
    """Linear CKA accumulated over minibatches (Nguyen, Raghu & Kornblith 2021, eq. 2).

    Each :meth:`update` adds the unbiased HSIC (:func:`unbiased_hsic`) of one minibatch's
    ``K_i = X_i X_i^T`` and ``L_i = Y_i Y_i^T``, and of each with itself; :meth:`compute` returns

        mean_i HSIC_1(K_i, L_i) / sqrt(mean_i HSIC_1(K_i, K_i) * mean_i HSIC_1(L_i, L_i)).

    Minibatches need at least 4 samples; the paper uses equal sizes (a shorter last batch
    still gives an unbiased term, counted with the same weight).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(64, 5, generator=g)
        >>> acc = MinibatchCKA()
        >>> for xb in x.split(16):
        ...     acc.update(xb, 2 * xb)
        >>> round(acc.compute(), 6), acc.batches
        (1.0, 4)
    """

    def __init__(self) -> None:
        self.xy = 0.0
        self.xx = 0.0
        self.yy = 0.0
        self.batches = 0

    def update(self, x: Tensor, y: Tensor) -> None:
        """Add one minibatch of ``(b, p1)`` and ``(b, p2)`` features of the same inputs."""
        x, y = _features(x, y, minimum=MIN_UNBIASED_SAMPLES)
        self.update_grams(gram_linear(x), gram_linear(y))

    def update_grams(self, gram_x: Tensor, gram_y: Tensor) -> None:
        """Add one minibatch given its ``(b, b)`` Gram matrices (callers that share a Gram
        matrix across several comparisons compute it once)."""
        self.xy += unbiased_hsic(gram_x, gram_y)
        self.xx += unbiased_hsic(gram_x, gram_x)
        self.yy += unbiased_hsic(gram_y, gram_y)
        self.batches += 1

    def compute(self) -> float:
        """The minibatch CKA so far; NaN when a side has no variance.

        Raises:
            ValueError: No minibatch was added.
        """
        if not self.batches:
            raise ValueError("minibatch CKA has no minibatch yet; call update() first")
        denom = self.xx * self.yy
        if denom <= 0.0:
            return math.nan
        return self.xy / math.sqrt(denom)  # the 1/k of the three means cancels


def minibatch_cka(x: Tensor, y: Tensor, batch_size: int) -> float:
    """:class:`MinibatchCKA` over consecutive minibatches of ``batch_size`` rows of ``x, y``.

    A last minibatch of fewer than 4 rows is dropped (its HSIC is undefined).

    Example:
        >>> x = torch.randn(40, 3, generator=torch.Generator().manual_seed(1))
        >>> round(minibatch_cka(x, x, batch_size=10), 6)
        1.0
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise ValueError(f"minibatch_cka batch_size must be an integer, got {batch_size!r}")
    if batch_size < MIN_UNBIASED_SAMPLES:
        raise ValueError(
            f"minibatch_cka batch_size must be >= {MIN_UNBIASED_SAMPLES}, got {batch_size}"
        )
    x, y = _features(x, y, minimum=MIN_UNBIASED_SAMPLES)
    acc = MinibatchCKA()
    for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
        if len(xb) >= MIN_UNBIASED_SAMPLES:
            acc.update(xb, yb)
    return acc.compute()
