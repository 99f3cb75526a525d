"""Pure tensor functions behind the feature-distillation losses (AT, NST, FT, OFD, AB, VID).

Everything here takes tensors and numbers and returns tensors: no modules, no state, no I/O.
The loss terms in :mod:`distillscope.distill` build the owned modules (connectors, regressors,
paraphrasers) and call these functions on their outputs.

Notation: a feature map is ``(B, C, H, W)``, a feature vector ``(B, D)``; ``s`` is the
student's (after its connector, where the method has one), ``t`` the teacher's. Where the
papers leave a reduction or a constant open, the functions follow the reference
implementations (RepDistiller, mdistiller, the authors' code), as each docstring says.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ab_loss",
    "at_loss",
    "attention_map",
    "factor_loss",
    "match_spatial",
    "nst_loss",
    "ofd_loss",
    "ofd_margin",
    "vid_nll",
]

# Heo et al. 2019 (OFD), the authors' code: a channel whose negative half has probability at
# most this under N(mean, std^2) gets the margin -3 std instead of the conditional mean.
OFD_TAIL_PROBABILITY = 0.001


def _check_same_kind(s: Tensor, t: Tensor) -> None:
    if s.dim() != t.dim() or s.dim() not in (2, 4):
        raise ValueError(
            f"features must both be maps (B, C, H, W) or both vectors (B, D), got "
            f"{tuple(s.shape)} and {tuple(t.shape)}"
        )


def match_spatial(s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Average-pool the larger of two maps to the smaller one's size (vectors pass through).

    RepDistiller's rule for AT, NST, FT and VID (``adaptive_avg_pool2d`` of the larger map to
    the smaller), taken per axis so that non-square maps work too.

    Args:
        s: ``(B, C_s, H_s, W_s)`` or ``(B, D_s)``.
        t: ``(B, C_t, H_t, W_t)`` or ``(B, D_t)``.

    Returns:
        ``(s, t)`` with equal ``H`` and ``W`` (``min`` of the two along each axis).

    Example:
        >>> s, t = match_spatial(torch.ones(2, 3, 8, 8), torch.ones(2, 5, 4, 4))
        >>> tuple(s.shape), tuple(t.shape)
        ((2, 3, 4, 4), (2, 5, 4, 4))
    """
    _check_same_kind(s, t)
    if s.dim() == 2 or s.shape[2:] == t.shape[2:]:
        return s, t
    size = (min(s.shape[2], t.shape[2]), min(s.shape[3], t.shape[3]))
    if tuple(s.shape[2:]) != size:
        s = F.adaptive_avg_pool2d(s, size)  # (B, C_s, h, w)
    if tuple(t.shape[2:]) != size:
        t = F.adaptive_avg_pool2d(t, size)  # (B, C_t, h, w)
    return s, t


def attention_map(f: Tensor, p: float = 2.0) -> Tensor:
    """Zagoruyko & Komodakis's spatial attention: ``vec(mean_c |f_c|^p)``, L2-normalised.

    Args:
        f: ``(B, C, H, W)`` activations.
        p: The power; the paper's ``F_sum^p`` with ``p = 2``.

    Returns:
        ``(B, H W)``, each row of unit L2 norm (a zero map stays zero).

    Example:
        >>> attention_map(torch.ones(1, 4, 2, 2))
        tensor([[0.5000, 0.5000, 0.5000, 0.5000]])
    """
    q = f.abs().pow(p).mean(dim=1).flatten(1)  # (B, H W)
    return F.normalize(q, dim=1)  # (B, H W)


def at_loss(s: Tensor, t: Tensor, p: float = 2.0) -> Tensor:
    """Attention transfer for one layer pair: ``mean_{b,j}(Q_s/|Q_s| - Q_t/|Q_t|)^2``.

    Zagoruyko & Komodakis 2017, eq. 2, as their code and RepDistiller compute it: the squared
    difference of the normalised attention vectors averaged over batch and positions (the paper
    writes the unsquared p-norm and ``beta / 2``; the code's ``beta = 1000`` multiplies this).
    The larger map is first pooled to the smaller (:func:`match_spatial`).

    Args:
        s: ``(B, C_s, H_s, W_s)`` student activations.
        t: ``(B, C_t, H_t, W_t)`` teacher activations (channel counts may differ).
        p: Power of the attention map.

    Returns:
        Scalar ``>= 0``.

    Example:
        >>> f = torch.rand(2, 3, 4, 4)
        >>> at_loss(f, 2 * f).item()  # same attention up to scale
        0.0
    """
    s, t = match_spatial(s, t)
    return (attention_map(s, p) - attention_map(t, p)).pow(2).mean()  # ()


def nst_loss(s: Tensor, t: Tensor) -> Tensor:
    """Neuron selectivity transfer: squared MMD with the kernel ``k(x, y) = (x^T y)^2``.

    Huang & Wang 2017, eq. 4 with the polynomial kernel ``(x^T y + c)^d``, ``d = 2``, ``c = 0``:
    each channel's spatial response ``f_c`` is one sample, normalised to unit L2 norm, and

    ``MMD^2 = mean_{i,i'} k(t_i, t_i') + mean_{j,j'} k(s_j, s_j') - 2 mean_{i,j} k(s_j, t_i)``

    per image, averaged over the batch (RepDistiller's reduction). The larger map is first
    pooled to the smaller (:func:`match_spatial`).

    Args:
        s: ``(B, C_s, H_s, W_s)`` student activations.
        t: ``(B, C_t, H_t, W_t)`` teacher activations.

    Returns:
        Scalar ``>= 0``.

    Example:
        >>> f = torch.rand(2, 3, 4, 4)
        >>> round(nst_loss(f, f).item(), 6)
        0.0
    """
    s, t = match_spatial(s, t)
    s = F.normalize(s.flatten(2), dim=2)  # (B, C_s, H W)
    t = F.normalize(t.flatten(2), dim=2)  # (B, C_t, H W)
    k_tt = torch.bmm(t, t.transpose(1, 2)).pow(2).mean()  # ()
    k_ss = torch.bmm(s, s.transpose(1, 2)).pow(2).mean()  # ()
    k_st = torch.bmm(s, t.transpose(1, 2)).pow(2).mean()  # ()
    return k_tt + k_ss - 2.0 * k_st  # ()


def factor_loss(s: Tensor, t: Tensor) -> Tensor:
    """Factor transfer: ``mean |F_s / |F_s|_2 - F_t / |F_t|_2|`` over flattened factors.

    Kim et al. 2018, eq. 3 with ``p = 1``: each image's factor is flattened and L2-normalised,
    and the L1 distance is averaged over the elements (``F.l1_loss``, as torchdistill, the
    KD-Zoo and mmrazor do). The larger map is first pooled to the smaller.

    Args:
        s: ``(B, m, H_s, W_s)`` the translator's output (the student factor).
        t: ``(B, m, H_t, W_t)`` the paraphraser's factor of the teacher feature.

    Returns:
        Scalar ``>= 0``.

    Example:
        >>> f = torch.rand(2, 3, 4, 4)
        >>> factor_loss(f, 3 * f).item() < 1e-7
        True
    """
    s, t = match_spatial(s, t)
    if s.shape != t.shape:
        raise ValueError(f"factors differ in shape: {tuple(s.shape)} and {tuple(t.shape)}")
    return F.l1_loss(F.normalize(s.flatten(1), dim=1), F.normalize(t.flatten(1), dim=1))  # ()


def ofd_margin(std: Tensor, mean: Tensor) -> Tensor:
    """OFD's per-channel margin: ``E[x | x < 0]`` for ``x ~ N(mean, std^2)``.

    Heo et al. 2019 ("A Comprehensive Overhaul of Feature Distillation"), eq. 3: the teacher's
    pre-ReLU response of a channel is taken as Gaussian with the batch norm's affine
    parameters (``std = |gamma|``, ``mean = beta``), and the margin is the expectation of its
    negative part, ``m = mean - std phi(mean/std) / Phi(-mean/std)``. As in the authors' code,
    a channel with ``Phi(-mean/std) <= 0.001`` gets ``-3 std`` instead.

    Args:
        std: ``(C,)`` standard deviations (the sign is ignored).
        mean: ``(C,)`` means.

    Returns:
        ``(C,)`` margins, all ``<= 0``, in ``std``'s dtype.

    Example:
        >>> ofd_margin(torch.tensor([1.0]), torch.tensor([0.0]))  # -sqrt(2 / pi)
        tensor([-0.7979])
    """
    s = std.detach().double().abs().clamp_min(1e-12)  # (C,)
    m = mean.detach().double()  # (C,)
    z = m / s  # (C,)
    tail = 0.5 * torch.erfc(z / math.sqrt(2.0))  # (C,) Phi(-m/s)
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)  # (C,)
    conditional = m - s * pdf / tail.clamp_min(1e-300)  # (C,)
    margin = torch.where(tail > OFD_TAIL_PROBABILITY, conditional, -3.0 * s)  # (C,)
    return margin.to(std.dtype)


def _per_channel(v: Tensor, like: Tensor) -> Tensor:
    return v.view(1, -1, *([1] * (like.dim() - 2))).to(like)  # (1, C, 1, 1) or (1, C)


def ofd_loss(s: Tensor, t: Tensor, margin: Tensor) -> Tensor:
    """OFD's partial L2 between the student and the margin-ReLU'd teacher, per image.

    Heo et al. 2019, eqs. 2 and 4: ``t' = max(t, m)`` (margin ReLU of the teacher's pre-ReLU
    feature), and ``d(s, t') = (s - t')^2`` except where ``s <= t' <= 0`` (the student is
    already below a negative target), where it is 0. Summed over channels and positions and
    averaged over the batch, as the authors' code and mdistiller (their ``/ batch_size``; the
    ``/ 1000`` they apply after it is the term's weight here).

    Args:
        s: ``(B, C, H, W)`` or ``(B, C)`` student feature after its connector.
        t: Teacher pre-ReLU feature of the same shape.
        margin: ``(C,)`` per-channel margins (:func:`ofd_margin`).

    Returns:
        Scalar ``>= 0``.

    Example:
        >>> t = torch.tensor([[-2.0, 1.0]])
        >>> ofd_loss(torch.tensor([[-3.0, 1.0]]), t, torch.tensor([-1.0, -1.0])).item()
        0.0
    """
    if s.shape != t.shape:
        raise ValueError(f"ofd: student {tuple(s.shape)} and teacher {tuple(t.shape)} differ")
    target = torch.maximum(t, _per_channel(margin, t))  # (B, C, ...)
    mask = (s > target) | (target > 0)  # (B, C, ...)
    return ((s - target).pow(2) * mask).sum() / s.shape[0]  # ()


def ab_loss(s: Tensor, t: Tensor, margin: float = 1.0) -> Tensor:
    """Activation-boundary loss (Heo et al. 2019, AAAI, eq. 6), summed per image.

    ``|rho(t) * relu(mu - s)^2 + (1 - rho(t)) * relu(mu + s)^2|_1`` with ``rho(t) = 1[t > 0]``:
    a student response must exceed ``+mu`` where the teacher's neuron is active and stay
    below ``-mu`` where it is not. Summed over channels and positions and averaged over the
    batch (the authors' code and RepDistiller).

    Args:
        s: ``(B, C, H, W)`` or ``(B, C)`` student pre-ReLU feature after its connector.
        t: Teacher pre-ReLU feature of the same shape.
        margin: ``mu > 0``; the paper's 1.

    Returns:
        Scalar ``>= 0``.

    Example:
        >>> ab_loss(torch.tensor([[2.0, -2.0]]), torch.tensor([[1.0, -1.0]])).item()
        0.0
    """
    if s.shape != t.shape:
        raise ValueError(f"ab: student {tuple(s.shape)} and teacher {tuple(t.shape)} differ")
    on = t > 0  # (B, C, ...)
    off_part = (s + margin).pow(2) * ((s > -margin) & ~on)  # (B, C, ...)
    on_part = (s - margin).pow(2) * ((s <= margin) & on)  # (B, C, ...)
    return (off_part + on_part).sum() / s.shape[0]  # ()


def vid_nll(mu: Tensor, t: Tensor, log_scale: Tensor, eps: float = 1e-5) -> Tensor:
    """VID's negative log-likelihood of the teacher feature under ``N(mu(s), sigma^2)``.

    Ahn et al. 2019, eqs. 2 and 4: ``sigma_c^2 = softplus(alpha_c) + eps`` per channel, and
    ``-log q(t | s) = sum_c sum_hw [log sigma_c + (t - mu)^2 / (2 sigma_c^2)] + const``. As
    RepDistiller and mdistiller: ``0.5 ((t - mu)^2 / sigma^2 + log sigma^2)`` averaged over every
    element (batch, channels, positions), without the constant ``0.5 log 2 pi``.

    Args:
        mu: ``(B, C, H, W)`` or ``(B, C)`` the regressor's prediction from the student.
        t: The teacher feature, same shape.
        log_scale: ``(C,)`` the unconstrained ``alpha``.
        eps: Floor of the variance.

    Returns:
        Scalar.

    Example:
        >>> x = torch.zeros(1, 2)
        >>> round(vid_nll(x, x, torch.full((2,), math.log(math.e - 1.0)), eps=0.0).item(), 6)
        0.0
    """
    if mu.shape != t.shape:
        raise ValueError(f"vid: prediction {tuple(mu.shape)} and teacher {tuple(t.shape)} differ")
    var = _per_channel(F.softplus(log_scale) + eps, mu)  # (1, C, 1, 1) or (1, C)
    return (0.5 * ((mu - t).pow(2) / var + var.log())).mean()  # ()
