"""Pure tensor functions behind feature-distillation losses (OFD's margin and partial L2, FT).

Everything here takes tensors and numbers and returns tensors: no modules, no state, no I/O.
The loss terms in :mod:`distillscope.distill` build the owned modules (connectors) and call
these functions on their outputs.

Notation: a feature map is ``(B, C, H, W)``, a feature vector ``(B, D)``; ``s`` is the
student's (after its connector), ``t`` the teacher's. Where the paper leaves a reduction or a
constant open, the functions follow the reference implementations (the authors' code,
mdistiller), as each docstring says.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["factor", "factor_transfer_loss", "match_spatial", "ofd_loss", "ofd_margin"]

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

    RepDistiller's rule for its feature-map losses (``adaptive_avg_pool2d`` of the larger map to
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


def factor(x: Tensor) -> Tensor:
    """A factor of factor transfer: the flattened code, L2-normalised per sample.

    Kim, Park & Kwak 2018 ("Paraphrasing Complex Network"), eq. 3: ``F / ||F||_2``.

    Args:
        x: ``(B, ...)`` a paraphraser's or translator's output.

    Returns:
        ``(B, D)`` unit-norm rows.

    Example:
        >>> factor(torch.tensor([[[3.0]], [[4.0]]]).view(1, 2, 1, 1))
        tensor([[0.6000, 0.8000]])
    """
    return F.normalize(x.reshape(x.shape[0], -1), dim=1)


def factor_transfer_loss(student_code: Tensor, teacher_code: Tensor) -> Tensor:
    """Factor transfer (Kim et al. 2018, eq. 3): ``mean |F_t / ||F_t|| - F_s / ||F_s|| |``.

    The L1 (``p = 1``) distance between the two :func:`factor` s, averaged over every element,
    as the FT authors' code (``nn.L1Loss()`` of ``F.normalize(x.view(B, -1))``) and
    torchdistill's ``FTLoss``; RepDistiller's ``FactorTransfer`` takes the channel mean of the
    squared code as the factor instead.

    Args:
        student_code: ``(B, ...)`` the translator's output on the student's map.
        teacher_code: ``(B, ...)`` the paraphraser's code of the teacher's map (no graph).

    Returns:
        Scalar ``>= 0``.

    Example:
        >>> c = torch.rand(2, 3, 4, 4)
        >>> factor_transfer_loss(c, 2 * c).item()  # factors are normalised
        0.0
    """
    f_t = factor(teacher_code)  # (B, D)
    f_s = factor(student_code)  # (B, D)
    return (f_s - f_t).abs().mean()  # ()
