"""Pure tensor functions behind the logit-distillation losses.

Everything here takes tensors and numbers and returns tensors: no modules, no state, no I/O.
The loss terms in :mod:`distillscope.distill` are thin wrappers around these functions.

Notation: ``z`` are logits ``(B, K)``, ``sigma`` the softmax over classes, ``T`` a temperature,
``y`` integer class targets ``(B,)``. Cross-entropies and divergences are averaged over the
batch (``reduction="batchmean"``), never over classes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from distillscope.checks import check_range

__all__ = [
    "cross_entropy_to_uniform",
    "indexed_normal",
    "kd_loss",
    "label_smoothing_targets",
    "pseudo_soft_targets",
    "soft_cross_entropy",
    "soft_labels",
]

# Paper 003, appendix C.2: "random Gaussian noise with variance 0.2" added to the one-hot label.
PSEUDO_SOFT_VARIANCE = 0.2
# Paper 003, appendix C.2: "softmax operation with temperature 0.15" turns it into a distribution.
PSEUDO_SOFT_TEMPERATURE = 0.15

_MASK32 = 0xFFFFFFFF
# Multipliers of the "lowbias32" integer finaliser (C. Wellons' hash prospector): two odd
# 32-bit constants found by search to give near-ideal avalanche with a cheap xor-shift-multiply.
_MIX_MUL_1 = 0x7FEB352D
_MIX_MUL_2 = 0x846CA68B


def _check_logits(name: str, logits: Tensor) -> None:
    if logits.dim() != 2:
        raise ValueError(f"{name} must have shape (B, K), got {tuple(logits.shape)}")


def soft_labels(teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Soft labels ``sigma(z_t / T)``: the teacher's class distribution at temperature ``T``.

    Paper 004, section 4.1: soft labels are always made by running the teacher at ``T``,
    whatever temperature the teacher itself was trained at.

    Args:
        teacher_logits: ``(B, K)`` logits.
        temperature: ``T > 0``; larger values give flatter distributions.

    Returns:
        ``(B, K)`` probabilities, rows summing to 1.

    Example:
        >>> soft_labels(torch.tensor([[0.0, 0.0]]), temperature=4.0)
        tensor([[0.5000, 0.5000]])
    """
    check_range("temperature", temperature, 0.0, low_open=True)
    _check_logits("teacher_logits", teacher_logits)
    return F.softmax(teacher_logits / temperature, dim=1)  # (B, K)


def soft_cross_entropy(logits: Tensor, target_probs: Tensor) -> Tensor:
    """Cross-entropy against a distribution: ``mean_b(-sum_k p_bk log sigma(z_b)_k)``.

    Equals the KL divergence ``KL(p || sigma(z))`` plus the entropy of ``p``, which does not
    depend on ``z``; both have the same gradient with respect to the logits.

    Args:
        logits: ``(B, K)`` logits of the model being trained.
        target_probs: ``(B, K)`` target probabilities, rows summing to 1.

    Returns:
        Scalar, averaged over the batch.

    Example:
        >>> z = torch.tensor([[0.0, 0.0]])
        >>> round(soft_cross_entropy(z, torch.tensor([[1.0, 0.0]])).item(), 4)  # log 2
        0.6931
    """
    _check_logits("logits", logits)
    if target_probs.shape != logits.shape:
        raise ValueError(
            f"target_probs shape {tuple(target_probs.shape)} does not match logits "
            f"shape {tuple(logits.shape)}"
        )
    log_probs = F.log_softmax(logits, dim=1)  # (B, K)
    return -(target_probs * log_probs).sum(dim=1).mean()  # ()


def cross_entropy_to_uniform(logits: Tensor) -> Tensor:
    """Cross-entropy against the uniform distribution: ``mean_b(-(1/K) sum_k log sigma(z_b)_k)``.

    This is ``CE(z, u)``, the smoothing part of label smoothing (paper 000, eq. 2).

    Args:
        logits: ``(B, K)`` logits.

    Returns:
        Scalar, averaged over the batch; its minimum ``log K`` is reached by constant logits.

    Example:
        >>> round(cross_entropy_to_uniform(torch.zeros(3, 4)).item(), 4)  # log 4
        1.3863
    """
    _check_logits("logits", logits)
    return -F.log_softmax(logits, dim=1).mean(dim=1).mean()  # ()


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """Hinton's soft-target loss ``T^2 * KL(sigma(z_t / T) || sigma(z_s / T))``.

    Hinton et al. 2015; paper 000, eq. 1 (the ``alpha T^2`` term); paper 003, eq. 1. The
    ``T^2`` factor keeps the gradient magnitude roughly independent of ``T``, since the
    gradients of the softened distributions scale as ``1 / T^2``. Both sides go through
    ``log_softmax`` for numerical stability; the KL is summed over classes and averaged over
    the batch (``batchmean``), which is the true per-sample KL.

    Gradients flow into both arguments; detach the teacher's logits to treat it as fixed.

    Args:
        student_logits: ``(B, K)`` student logits ``z_s``.
        teacher_logits: ``(B, K)`` teacher logits ``z_t``.
        temperature: ``T > 0``.

    Returns:
        Scalar, ``>= 0``; zero exactly when both softened distributions agree.

    Example:
        >>> z = torch.tensor([[1.0, 2.0, 3.0]])
        >>> kd_loss(z, z, temperature=4.0).item()
        0.0
    """
    check_range("temperature", temperature, 0.0, low_open=True)
    _check_logits("student_logits", student_logits)
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            f"teacher logits shape {tuple(teacher_logits.shape)} does not match student "
            f"logits shape {tuple(student_logits.shape)}"
        )
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)  # (B, K)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=1)  # (B, K)
    kl = F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")  # ()
    return temperature**2 * kl


def label_smoothing_targets(targets: Tensor, num_classes: int, alpha: float = 0.1) -> Tensor:
    """Label-smoothed targets ``(1 - alpha) * onehot(y) + alpha / K``.

    Cross-entropy against these targets equals paper 000's label smoothing loss
    ``(1 - alpha) CE(z, y) + alpha CE(z, u)`` with ``u`` the uniform distribution.

    Args:
        targets: ``(B,)`` class indices.
        num_classes: ``K >= 1``.
        alpha: Smoothing mass in ``[0, 1]``; 0 gives the one-hot labels.

    Returns:
        ``(B, K)`` float probabilities, rows summing to 1.

    Example:
        >>> label_smoothing_targets(torch.tensor([1]), num_classes=4, alpha=0.2)
        tensor([[0.0500, 0.8500, 0.0500, 0.0500]])
    """
    check_range("alpha", alpha, 0.0, 1.0)
    check_range("num_classes", num_classes, 1.0)
    onehot = F.one_hot(targets, num_classes).float()  # (B, K)
    return (1.0 - alpha) * onehot + alpha / num_classes  # (B, K)


def _mul32(x: Tensor, constant: int) -> Tensor:
    """``x * constant mod 2^32`` for ``x`` in ``[0, 2^32)`` held in int64, without overflow.

    Splitting ``x`` into 16-bit halves keeps every product below ``2^49``.
    """
    lo = x & 0xFFFF  # (...)
    hi = x >> 16  # (...)
    return (lo * constant + ((hi * (constant & 0xFFFF)) << 16)) & _MASK32


def _mix32(x: Tensor) -> Tensor:
    """Bijective 32-bit avalanche mix (xor-shift-multiply), elementwise on int64 tensors."""
    x = x ^ (x >> 16)
    x = _mul32(x, _MIX_MUL_1)
    x = x ^ (x >> 15)
    x = _mul32(x, _MIX_MUL_2)
    return x ^ (x >> 16)


def indexed_normal(index: Tensor, num_classes: int, seed: int = 0) -> Tensor:
    """Standard normal noise that is a fixed function of ``(seed, index, class)``.

    A counter-based generator: each value hashes its key ``(seed, dataset index, class,
    draw)`` with a 32-bit integer mix into two uniforms, and the Box-Muller transform turns
    them into one ``N(0, 1)`` value. So the noise for a sample depends on its dataset index
    only (not on the batch it lands in, the batch order or the epoch), needs no table, is
    fully vectorised, and hashes identically on every device (integer arithmetic; only the
    final float transform may differ in the last bits).

    Args:
        index: ``(B,)`` integer dataset indices.
        num_classes: ``K >= 1``, number of values per index.
        seed: Any Python int; only its low 32 bits are used.

    Returns:
        ``(B, K)`` float32 samples of ``N(0, 1)`` on ``index.device``.

    Example:
        >>> a = indexed_normal(torch.tensor([3, 7]), num_classes=4, seed=0)
        >>> b = indexed_normal(torch.tensor([7]), num_classes=4, seed=0)
        >>> torch.equal(a[1], b[0])
        True
    """
    check_range("num_classes", num_classes, 1.0)
    if index.dim() != 1 or index.dtype.is_floating_point or index.dtype == torch.bool:
        raise ValueError(
            f"index must be a 1-D integer tensor, got {index.dtype} {tuple(index.shape)}"
        )
    idx = index.to(torch.int64)  # (B,)
    key = _mix32(torch.full_like(idx, seed & _MASK32))  # (B,)
    key = _mix32(key ^ (idx & _MASK32))  # (B,)
    key = _mix32(key ^ ((idx >> 32) & _MASK32))[:, None]  # (B, 1)
    draw = torch.arange(2 * num_classes, device=idx.device, dtype=torch.int64)  # (2K,)
    bits = _mix32(_mix32(key ^ draw[None, :]))  # (B, 2K)
    uniform = (bits.to(torch.float64) + 0.5) / 2.0**32  # (B, 2K), in the open interval (0, 1)
    u1, u2 = uniform[:, 0::2], uniform[:, 1::2]  # (B, K) each
    normal = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)  # (B, K)
    return normal.to(torch.float32)


def pseudo_soft_targets(
    targets: Tensor,
    num_classes: int,
    generator: torch.Generator | None = None,
    variance: float = PSEUDO_SOFT_VARIANCE,
    temperature: float = PSEUDO_SOFT_TEMPERATURE,
    *,
    noise: Tensor | None = None,
) -> Tensor:
    """Pseudo soft labels made from the ground truth alone (paper 003, appendix C.2).

    ``p = sigma((onehot(y) + epsilon) / T)`` with ``epsilon ~ N(0, variance)``, i.e. standard
    deviation ``sqrt(variance)``. The paper's defaults are variance 0.2 and ``T = 0.15``. With
    these, ``argmax p = y`` only with probability
    ``integral phi(a) Phi(a + 1 / sqrt(variance))^(K-1) da`` (about 0.74 for ``K = 10``).

    Args:
        targets: ``(B,)`` class indices.
        num_classes: ``K >= 1``.
        generator: Source of ``epsilon`` when ``noise`` is not given (``None``: torch's global
            generator).
        variance: Variance of the Gaussian noise, ``>= 0``.
        temperature: Softmax temperature ``T > 0``.
        noise: Optional ``(B, K)`` standard normal draws to use instead of the generator, e.g.
            :func:`indexed_normal` for noise fixed per dataset index; scaled by
            ``sqrt(variance)``.

    Returns:
        ``(B, K)`` probabilities, rows summing to 1.

    Example:
        >>> p = pseudo_soft_targets(torch.tensor([2]), 3, variance=0.0)
        >>> p.argmax(dim=1).item(), round(p.sum().item(), 4)
        (2, 1.0)
    """
    check_range("variance", variance, 0.0)
    check_range("temperature", temperature, 0.0, low_open=True)
    check_range("num_classes", num_classes, 1.0)
    shape = (targets.shape[0], num_classes)
    if noise is None:
        noise = torch.randn(shape, generator=generator, device=targets.device)  # (B, K)
    elif generator is not None:
        raise ValueError("pass either generator or noise to pseudo_soft_targets, not both")
    elif tuple(noise.shape) != shape:
        raise ValueError(f"noise must have shape {shape}, got {tuple(noise.shape)}")
    onehot = F.one_hot(targets, num_classes).to(noise.dtype)  # (B, K)
    return F.softmax((onehot + math.sqrt(variance) * noise) / temperature, dim=1)  # (B, K)
