"""Per-sample correctness, teacher-student agreement and divergence (task probes).

The functions return one number per sample so that probes can stream them into fixed-size sums;
the dataset-level score is the mean of those numbers.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["kl_divergence", "top1_match", "topk_correct"]


def topk_correct(logits: Tensor, targets: Tensor, k: int = 1) -> Tensor:
    """Whether the target is among the ``k`` highest logits: ``1[y in topk(z)]``.

    Top-k accuracy is the mean of this over samples. Ties are broken by ``torch.topk``.

    Args:
        logits: ``(B, K)`` logits (or ``(..., K)``: the last dimension holds the classes).
        targets: ``(B,)`` class indices (or ``(...)``).
        k: How many top classes count; clipped to ``K``.

    Returns:
        ``(B,)`` bool (or ``(...)``).

    Example:
        >>> z = torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
        >>> topk_correct(z, torch.tensor([1, 2]), k=1).tolist()
        [False, True]
        >>> topk_correct(z, torch.tensor([1, 0]), k=2).tolist()
        [True, False]
    """
    k = min(k, logits.shape[-1])
    top = logits.topk(k, dim=-1).indices  # (B, k)
    return (top == targets[..., None]).any(-1)  # (B,)


def top1_match(logits_a: Tensor, logits_b: Tensor) -> Tensor:
    """Whether two models predict the same class: ``1[argmax z_a = argmax z_b]``.

    Paper 001 (e2KD), eq. 4: ``Agreement(T, S) = 1/N sum_i 1[y_hat_{i,T} = y_hat_{i,S}]`` is the
    mean of this over samples.

    Args:
        logits_a: ``(B, K)`` logits of the first model (the teacher).
        logits_b: ``(B, K)`` logits of the second model.

    Returns:
        ``(B,)`` bool.

    Example:
        >>> top1_match(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[2.0, 0.0]] * 2))
        tensor([ True, False])
    """
    return logits_a.argmax(-1) == logits_b.argmax(-1)  # (B,)


def kl_divergence(logits_p: Tensor, logits_q: Tensor) -> Tensor:
    """``KL(softmax(z_p) || softmax(z_q)) = sum_k p_k (log p_k - log q_k)`` per sample, in nats.

    With the teacher as ``p`` this is the divergence logit distillation minimises (Hinton et al.
    2015, at temperature 1). Computed from log-probabilities; ``0 log 0 = 0``.

    Args:
        logits_p: ``(B, K)`` logits of the reference distribution (the teacher).
        logits_q: ``(B, K)`` logits of the approximating distribution (the student).

    Returns:
        ``(B,)`` non-negative divergences.

    Example:
        >>> p = torch.log(torch.tensor([[0.5, 0.5]]))
        >>> q = torch.log(torch.tensor([[0.25, 0.75]]))
        >>> round(kl_divergence(p, q).item(), 4)  # 0.5 ln 2 + 0.5 ln(2/3)
        0.1438
    """
    logp = torch.log_softmax(logits_p, dim=-1)  # (B, K)
    logq = torch.log_softmax(logits_q, dim=-1)  # (B, K)
    p = logp.exp()  # (B, K)
    terms = torch.where(p > 0, p * (logp - logq), torch.zeros_like(p))  # (B, K)
    return terms.sum(-1).clamp_min(0.0)  # (B,)
