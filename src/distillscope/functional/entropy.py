"""Entropies of predicted class distributions (class-similarity probe).

Paper 000 (On the Impact of Knowledge Distillation for Model Interpretability), section 4.1,
Table 2 and appendix B.3: a model that holds class-similarity information spreads probability
over the classes *of the true class's category*; it is measured by the entropy of the full
softmax ("entire", per sample, averaged) and by an entropy over the classes of the category
("category"). Two definitions of the latter:

- :func:`pooled_category_entropy` (the probe's default, our reading of the paper): the entropy
  of the model's *mean* output over the samples of a category, restricted to that category's
  classes and normalised; each sample counts its category's value.
- :func:`softmax_entropy` with a mask (ours): per sample, the entropy of the softmax
  renormalised over the category, averaged over samples.

The paper gives no formula. Its Table 2 (ImageNet, ResNet-18 trained from scratch) has entire
0.4851 and category 2.8986; the per-sample definition cannot give that pair. Per sample,
``H(p) = H_b(P(M)) + P(M) H(p|M) + (1 - P(M)) H(p|not M) >= P(M) H(p|M)``, and a correctly
classified sample has ``P(M) >= p_y = max_k p_k >= exp(-H(p))``, so
``H(p|M) <= min(H(p) exp(H(p)), log |M|)``. With ``|M| <= 119`` (the largest category, dogs)
the mean of that bound over (nearly all) samples whose mean ``H(p)`` is 0.4851 is at most
``0.4851 * log(119) / 1.3 = 1.8`` nats (the bound is convex up to 1.3 nats, where ``h exp(h)``
reaches ``log 119``, and flat beyond), far below 2.90. The entropy of the pooled output has no
such bound (confident samples of different classes of one category pool into a spread
distribution); a simulation of the paper's sample gives it 2.7-3.0 nats (docs/probes.md).

All entropies are in nats: ``H(p) = -sum_k p_k log p_k`` with ``0 log 0 = 0``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

__all__ = [
    "category_mask",
    "class_output_sums",
    "entropy",
    "pooled_category_entropy",
    "softmax_entropy",
]


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
    the full softmax restricted to ``M`` and renormalised. Averaged over samples this is *our*
    per-sample "category" entropy (``class_similarity``'s ``category_entropy: per_sample``), not
    paper 000's (:func:`pooled_category_entropy`). Computed from log-probabilities, so saturated
    logits give exact zeros, not NaN.

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
        _check_classes(f"category {name!r}", idx, num_classes)
        members = torch.zeros(num_classes, dtype=torch.bool)  # (K,)
        members[idx] = True
        rows = idx[~assigned[idx]]  # classes seen for the first time
        mask[rows] = members
        assigned[rows] = True
    return mask


def _check_classes(what: str, classes: Tensor, num_classes: int) -> None:
    """Refuse class indices outside ``[0, K)``: a negative one would index from the end."""
    if classes.numel() and (classes.min() < 0 or classes.max() >= num_classes):
        bad = classes[(classes < 0) | (classes >= num_classes)][0].item()
        raise ValueError(
            f"{what} has class {bad} outside [0, {num_classes}); use indices 0 to {num_classes - 1}"
        )


def class_output_sums(probs: Tensor, targets: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Per true class: the sum of the predicted distributions and the number of samples.

    The sufficient statistics of :func:`pooled_category_entropy`; sums of several batches add.

    Args:
        probs: ``(N, K)`` predicted distributions (softmax outputs).
        targets: ``(N,)`` true classes in ``[0, K)``.
        num_classes: K.

    Returns:
        ``(K, K)`` float64 sums (row ``c``: the summed outputs of the samples of class ``c``) and
        ``(K,)`` int64 counts.

    Raises:
        ValueError: A target is outside ``[0, K)`` (a negative one would wrap to the last class).

    Example:
        >>> sums, counts = class_output_sums(torch.tensor([[0.75, 0.25], [0.5, 0.5]]),
        ...                                  torch.tensor([0, 0]), 2)
        >>> sums.tolist(), counts.tolist()
        ([[1.25, 0.75], [0.0, 0.0]], [2, 0])
    """
    _check_classes("targets", targets, num_classes)
    sums = torch.zeros(num_classes, num_classes, dtype=torch.float64, device=probs.device)
    sums.index_add_(0, targets, probs.to(torch.float64))  # (K, K)
    counts = torch.bincount(targets, minlength=num_classes)  # (K,)
    return sums, counts


def pooled_category_entropy(sums: Tensor, counts: Tensor, mask: Tensor) -> Tensor:
    """Per class: the entropy of the model's mean output over its category, in nats.

    Paper 000, section 4.1 / Table 2, as we read it (the paper gives no formula; the module
    docstring shows why its numbers rule out a per-sample mean): for the category ``C`` of the
    true class ``y`` (``mask[y]``) and the samples ``S_C`` whose true class has that category,

        pbar_C = 1/|S_C| sum_{i in S_C} softmax(f(x_i))|_C,   q_C = pbar_C / sum_k pbar_C,k
        category(y) = H(q_C) = -sum_{k in C} q_C,k log q_C,k

    Averaged over the samples (each weighted by its category's sample count), this is the
    "Category" column. A confident model whose samples cover many classes of ``C`` scores near
    ``log |C|``; spreading probability onto classes of ``C`` that no sample has raises it.

    Args:
        sums: ``(K, K)`` summed outputs per true class (:func:`class_output_sums`).
        counts: ``(K,)`` samples per true class.
        mask: ``(K, K)`` bool category mask (:func:`category_mask`).

    Returns:
        ``(K,)`` float64: row ``y`` is ``H(q_C)`` for ``y``'s category, NaN when ``y`` has no
        category or its category has no sample (or the outputs put no mass on it).

    Example:
        >>> mask = category_mask({"pair": [0, 1]}, 3)
        >>> sums, counts = class_output_sums(torch.tensor([[0.9, 0.0, 0.1], [0.0, 0.9, 0.1]]),
        ...                                  torch.tensor([0, 1]), 3)
        >>> pooled_category_entropy(sums, counts, mask)  # pooled (0.45, 0.45) -> log 2
        tensor([0.6931, 0.6931,    nan], dtype=torch.float64)
    """
    members = mask.to(torch.float64)  # (K, K)
    # Classes assigned to the same category as y (rows equal): with overlapping categories a
    # class counts for the first category that lists it, as in category_mask. A class without
    # a category has an empty row of members: no mass, so NaN.
    same = (mask.unsqueeze(1) == mask.unsqueeze(0)).all(-1)  # (K, K)
    pooled = same.to(torch.float64) @ sums.to(torch.float64) * members  # (K, K) summed over S_C
    n = same.to(torch.float64) @ counts.to(torch.float64)  # (K,) |S_C|
    mass = pooled.sum(1, keepdim=True)  # (K, 1)
    h = entropy(pooled / mass.clamp_min(1e-300))  # (K,)
    return torch.where((n > 0) & (mass.squeeze(1) > 0), h, torch.full_like(h, float("nan")))
