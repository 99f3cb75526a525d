"""Entropies of predicted class distributions (class-similarity probe).

Paper 000 (On the Impact of Knowledge Distillation for Model Interpretability), section 4.1 and
appendix B.3: a model that holds class-similarity information spreads probability over the
classes *of the true class's category*; it is measured by the entropy of the full softmax
("entire") and of the softmax renormalised over the classes of the category ("category").

All entropies are in nats: ``H(p) = -sum_k p_k log p_k`` with ``0 log 0 = 0``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

__all__ = ["category_mask", "entropy", "softmax_entropy"]


def entropy(probs: Tensor, dim: int = -1) -> Tensor:
    """Shannon entropy ``H(p) = -sum_k p_k log p_k`` in nats, with ``0 log 0 = 0``.

    Args:
        probs: Probabilities summing to 1 along ``dim``.
        dim: The class dimension.

    Returns:
        ``probs`` with ``dim`` reduced away.

    Example:
        >>> entropy(torch.tensor([[0.5, 0.5], [1.0, 0.0]]))
        tensor([0.6931, 0.0000])
    """
    terms = torch.where(probs > 0, -probs * probs.clamp_min(1e-45).log(), torch.zeros_like(probs))
    return terms.sum(dim)


def softmax_entropy(logits: Tensor, mask: Tensor | None = None) -> Tensor:
    """Entropy of ``softmax(z)``, optionally renormalised over the classes where ``mask`` holds.

    With a mask, ``p_k = exp(z_k) / sum_{j in M} exp(z_j)`` for ``k in M`` (0 elsewhere), which is
    the full softmax restricted to ``M`` and renormalised: the "category" entropy of paper 000,
    section 4.1. Computed from log-probabilities, so saturated logits give exact zeros, not NaN.

    Args:
        logits: ``(B, K)`` logits.
        mask: Optional ``(B, K)`` or ``(K,)`` bool; every row needs at least one ``True``.

    Returns:
        ``(B,)`` entropies in nats.

    Example:
        >>> softmax_entropy(torch.zeros(1, 4))  # uniform over 4 classes: log 4
        tensor([1.3863])
        >>> softmax_entropy(torch.zeros(1, 4), torch.tensor([True, True, False, False]))
        tensor([0.6931])
    """
    if mask is not None:
        logits = logits.masked_fill(~mask.expand_as(logits), float("-inf"))  # (B, K)
    logp = torch.log_softmax(logits, dim=-1)  # (B, K), -inf outside the mask
    p = logp.exp()  # (B, K)
    terms = torch.where(p > 0, -p * logp, torch.zeros_like(p))  # (B, K), 0 log 0 = 0
    return terms.sum(-1)  # (B,)


def category_mask(categories: Mapping[str, Sequence[int]], num_classes: int) -> Tensor:
    """Row ``c``: which classes share class ``c``'s category.

    A class listed in several categories takes the first one (in mapping order); a class in no
    category gets an all-``False`` row.

    Args:
        categories: Category name -> class indices (``DatasetInfo.categories``).
        num_classes: K.

    Returns:
        ``(K, K)`` bool matrix.

    Raises:
        ValueError: A class index is outside ``[0, K)``.

    Example:
        >>> category_mask({"shoes": [0, 2], "tops": [1]}, 3).int()
        tensor([[1, 0, 1],
                [0, 1, 0],
                [1, 0, 1]], dtype=torch.int32)
    """
    mask = torch.zeros(num_classes, num_classes, dtype=torch.bool)  # (K, K)
    assigned = torch.zeros(num_classes, dtype=torch.bool)  # (K,)
    for name, classes in categories.items():
        idx = torch.as_tensor(list(classes), dtype=torch.long)  # (C,)
        if idx.numel() and (idx.min() < 0 or idx.max() >= num_classes):
            raise ValueError(f"category {name!r} has a class outside [0, {num_classes})")
        members = torch.zeros(num_classes, dtype=torch.bool)  # (K,)
        members[idx] = True
        rows = idx[~assigned[idx]]  # classes seen for the first time
        mask[rows] = members
        assigned[rows] = True
    return mask
