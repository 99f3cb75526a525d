"""Pure tensor functions behind the logit variants: BCE, decoupled KD, teacher-free KD and DML.

Hinton's ``kd_loss`` and the soft-label helpers live in :mod:`distillscope.functional.soft_targets`;
this file holds the variants whose reductions differ from it (each docstring says where and
why they cannot call ``kd_loss``). Logits are ``(B, K)``, targets ``(B,)`` class indices; no
modules, no state, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DKD_MASK",
    "bce_loss",
    "binary_kl",
    "dkd_parts",
    "mutual_learning_kl",
    "virtual_teacher_kl",
]

#: mdistiller's DKD: subtracting 1000 from the target class's logit takes it out of the softmax.
DKD_MASK = 1000.0


def bce_loss(logits: Tensor, targets: Tensor, smoothing: float = 0.0) -> Tensor:
    """Binary cross-entropy on (smoothed) one-hot labels, B-cos v2's training objective.

    Böhle et al. 2024 (B-cos v2; paper 001 trains its B-cos models so):
    ``L = -1/(B K) sum_{b,k} [t_bk log s(z_bk) + (1 - t_bk) log(1 - s(z_bk))]`` with ``s`` the
    sigmoid and ``t = (1 - alpha) onehot(y) + alpha / K``.

    Args:
        logits: ``(B, K)`` logits ``z``.
        targets: ``(B,)`` class indices ``y``.
        smoothing: ``alpha`` in ``[0, 1)``; 0 keeps the one-hot targets.

    Returns:
        Scalar, averaged over every element.

    Example:
        >>> round(bce_loss(torch.zeros(2, 4), torch.tensor([0, 1])).item(), 4)  # log 2
        0.6931
    """
    k = logits.shape[1]
    target = F.one_hot(targets, k).to(logits.dtype)  # (B, K)
    if smoothing:
        target = target * (1.0 - smoothing) + smoothing / k  # (B, K)
    return F.binary_cross_entropy_with_logits(logits, target)  # ()


def binary_kl(z_s: Tensor, z_t: Tensor, gt: Tensor) -> Tensor:
    """``mean_b KL([p_t, 1 - p_t] || [p_s, 1 - p_s])`` of the target-class probability.

    DKD's binary distributions ``b = [p_gt, 1 - p_gt]`` (Zhao et al. 2022, eq. 2), from
    already-softened logits; summed over the two entries and averaged over the batch.

    Args:
        z_s: ``(B, K)`` student logits (divided by ``T`` by the caller).
        z_t: ``(B, K)`` teacher logits (likewise).
        gt: ``(B, K)`` bool mask of the target class.

    Returns:
        Scalar ``>= 0``.

    Example:
        >>> z = torch.tensor([[1.0, 2.0, 0.5]])
        >>> abs(binary_kl(z, z, torch.tensor([[True, False, False]])).item()) < 1e-7
        True
    """
    p_s = F.softmax(z_s, dim=1)  # (B, K)
    p_t = F.softmax(z_t, dim=1)  # (B, K)
    b_s = torch.stack([(p_s * gt).sum(1), (p_s * ~gt).sum(1)], dim=1)  # (B, 2)
    b_t = torch.stack([(p_t * gt).sum(1), (p_t * ~gt).sum(1)], dim=1)  # (B, 2)
    return F.kl_div(torch.log(b_s), b_t, reduction="sum") / z_s.shape[0]


def dkd_parts(
    student_logits: Tensor, teacher_logits: Tensor, targets: Tensor, temperature: float
) -> tuple[Tensor, Tensor]:
    """Decoupled KD's two parts, ``(TCKD, NCKD)`` (Zhao, Cui, Song, Qiu & Liang 2022, eq. 7).

    ``TCKD = T^2 KL(b_t || b_s)`` over the binary target / non-target distributions
    (:func:`binary_kl`), ``NCKD = T^2 KL(p_hat_t || p_hat_s)`` over the non-target classes
    alone. As mdistiller: KL summed over classes and averaged over the batch, ``p_hat`` from the
    logits with :data:`DKD_MASK` subtracted at the target class. Not ``kd_loss``: the NCKD
    target is a probability (``log_target=False``), reduced by ``sum / B``, scaled by ``T * T``
    after the division (``kd_loss``: ``T^2 *`` a ``batchmean`` of log-targets), which rounds
    differently.

    Args:
        student_logits: ``(B, K)`` logits ``z_s``.
        teacher_logits: ``(B, K)`` logits ``z_t`` (the caller detaches them).
        targets: ``(B,)`` class indices.
        temperature: ``T > 0``.

    Returns:
        ``(TCKD, NCKD)``, scalars ``>= 0``.

    Example:
        >>> z = torch.tensor([[1.0, 2.0, 0.5]])
        >>> [round(p.item(), 6) for p in dkd_parts(z, z, torch.tensor([1]), 4.0)]
        [0.0, 0.0]
    """
    z_s, z_t, t = student_logits, teacher_logits, temperature
    gt = F.one_hot(targets, z_s.shape[1]).to(torch.bool)  # (B, K)
    tckd = binary_kl(z_s / t, z_t / t, gt) * t * t  # ()
    masked = gt.to(z_s.dtype) * DKD_MASK  # (B, K): the target class out of the softmax
    log_hat_s = F.log_softmax(z_s / t - masked, dim=1)  # (B, K)
    hat_t = F.softmax(z_t / t - masked, dim=1)  # (B, K)
    nckd = F.kl_div(log_hat_s, hat_t, reduction="sum") / z_s.shape[0] * t * t  # ()
    return tckd, nckd


def virtual_teacher_kl(
    logits: Tensor,
    targets: Tensor,
    temperature: float,
    correct_prob: float,
    multiplier: float,
) -> Tensor:
    """Tf-KD_reg's virtual-teacher term ``m * KL(softmax(p_d / T) || softmax(z))``.

    Yuan, Tay, Li, Wang & Feng 2020 (teacher-free KD): ``p_d`` puts ``a`` on the true class and
    ``(1 - a) / (K - 1)`` on each other one. As the authors' loss function: the softmax is
    applied to ``p_d / T`` (to probabilities, not logits), the student side is at temperature
    1, and the KL is averaged over every element (``sum / (B K)``, PyTorch's ``KLDivLoss()``
    default). Not ``kd_loss``, which averages over the batch only and softens both sides.

    Args:
        logits: ``(B, K)`` student logits ``z``.
        targets: ``(B,)`` class indices.
        temperature: ``T > 0``.
        correct_prob: ``a`` in ``(0, 1)``.
        multiplier: ``m >= 0``.

    Returns:
        Scalar ``>= 0``.

    Example:
        >>> z = torch.zeros(1, 3)  # uniform student; a very high T makes the target uniform too
        >>> virtual_teacher_kl(z, torch.tensor([0]), 1e6, 0.9, 1000.0).item() < 1e-4
        True
    """
    z, y = logits, targets
    k = z.shape[1]
    p_d = torch.full_like(z, (1.0 - correct_prob) / (k - 1))  # (B, K)
    p_d.scatter_(1, y.unsqueeze(1), correct_prob)
    target = F.softmax(p_d / temperature, dim=1)  # (B, K)
    kl = F.kl_div(F.log_softmax(z, dim=1), target, reduction="sum") / z.numel()  # ()
    return kl * multiplier


def mutual_learning_kl(
    student_logits: Tensor, peer_logits: Sequence[Tensor], temperature: float
) -> Tensor:
    """DML's mimicry term ``1 / (K - 1) * sum_{l != k} T^2 KL(p_l || p_k)``, ``p = softmax(z/T)``.

    Zhang, Xiang, Hospedales & Lu 2018 (Deep Mutual Learning), eq. 10. Each KL is summed over
    classes and averaged over the batch; they are averaged over the peers and then scaled by
    ``T * T``.

    Not a loop over ``kd_loss``, which is not bit-identical to this for two or more peers:
    ``kd_loss`` scales each KL by ``T^2`` before the average (``mean(T^2 KL_l)`` rounds
    differently from ``mean(KL_l) T^2``), and it recomputes the student's ``log_softmax`` per
    peer, so the student's gradient would be the sum of one ``log_softmax`` backward per peer
    instead of one backward of the summed gradient.

    Args:
        student_logits: ``(B, K)`` logits of the network being trained.
        peer_logits: The other peers' ``(B, K)`` logits (the caller detaches them).
        temperature: ``T > 0``.

    Returns:
        Scalar ``>= 0``.

    Example:
        >>> z = torch.tensor([[1.0, 2.0, 3.0]])
        >>> mutual_learning_kl(z, [z, z], temperature=1.0).item()
        0.0
    """
    t = temperature
    log_p = F.log_softmax(student_logits / t, dim=1)  # (B, K)
    kls = [
        F.kl_div(log_p, F.log_softmax(p / t, dim=1), reduction="batchmean", log_target=True)
        for p in peer_logits
    ]  # each ()
    return torch.stack(kls).mean() * (t * t)  # ()
