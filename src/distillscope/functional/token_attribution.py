"""Per-token attributions against word polarity labels: sign agreement, AUROC, AUPRC
(paper 000, 5.4 and appendix E.3, Tables 5 and 13).

Paper 000 scores a sentiment classifier's Integrated Gradients attributions (one number per
token) against the Stanford Sentiment Treebank's word labels, on the samples the model
classifies correctly: "for samples labeled as 'very positive/positive' ... whether the words
labeled as 'positive' have positive attribution scores and the words labeled as 'negative'
have negative attribution scores", and the reverse for 'very negative/negative' samples. Its
Tables 5 and 13 report three numbers, Accuracy, AUROC and AUPRC, without their formulas. With
``a_it`` the attribution of token ``t`` of sentence ``i``, ``l_it`` its word label
(:data:`~distillscope.contracts.POSITIVE` 1, :data:`~distillscope.contracts.NEGATIVE` -1, 0 for
neutral words, padding and unknown words) and ``p_i`` the sentence's polarity (+1 for the
positive classes, -1 for the negative ones, :func:`sentence_polarity`):

* **support** ``s_it = l_it * p_i``: +1 when the word's polarity is the sentence's (it should
  push towards the true class: a positive attribution), -1 when it is the opposite (a negative
  attribution), 0 when the word is not labelled. Only labelled words (``l_it != 0``) are scored.
* **sign agreement** (our reading of the tables' "Accuracy", which is not the models' class
  accuracy: the paper lists those as 0.484 and 0.516, its Table 5 "Accuracy" as 0.677 and
  0.722): the share of labelled words whose attribution has the expected sign, pooled over
  every labelled word of the given samples,

      agreement = sum_{it: l != 0} [a_it * s_it > 0] / |{it: l_it != 0}|.

  A zero attribution has no sign and counts as a disagreement (**ours**); pooling over words
  rather than averaging per sentence is **ours** (the paper does not say).
* **AUROC and AUPRC**: the attribution as a score for the binary truth "this word supports the
  sentence's class" (``s_it > 0``), over the pooled labelled words: scikit-learn's
  ``roc_auc_score`` and ``average_precision_score`` (AUPRC as average precision, the step-wise
  area under the precision-recall curve; the supporting words are the positive class). With
  ``normalise`` (default), each sentence's attributions are first divided by their L2 norm
  over its tokens, ``a_it / ||a_i||_2`` (a zero row stays zero), so that sentences with large
  attributions do not dominate the pooled ranking: **ours**, after the ``summarize_attributions``
  step of captum's BERT tutorial for ``LayerIntegratedGradients``, the tool the paper names;
  the paper does not say. Normalising changes neither the signs nor the agreement.

Every function takes ``(N, L)`` attributions and labels and ``(N,)`` polarities of the samples
to score (the caller keeps only the correctly classified ones, as the paper does).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "TOKEN_METRICS",
    "attribution_auc",
    "sentence_polarity",
    "sign_agreement",
    "support",
    "token_attribution_scores",
]

#: The scores of :func:`token_attribution_scores`, in the order of paper 000's Table 5.
TOKEN_METRICS = ("agreement", "auroc", "auprc")


def sentence_polarity(targets: Tensor, num_classes: int = 4) -> Tensor:
    """``(N,)`` int64 polarity of each sentence class: -1 for the lower half of the classes,
    +1 for the upper half.

    Paper 000's SST mapping has four classes, 0 very negative, 1 negative, 2 positive, 3 very
    positive: classes 0-1 give -1, classes 2-3 give +1. For another even number of ordered
    classes the same halves are used (two classes: 0 negative, 1 positive; **ours**).

    Raises:
        ValueError: ``num_classes`` is odd (a middle class has no polarity) or below 2, or a
            target lies outside ``0 .. num_classes - 1``.

    Example:
        >>> sentence_polarity(torch.tensor([0, 1, 2, 3])).tolist()
        [-1, -1, 1, 1]
    """
    if num_classes < 2 or num_classes % 2:
        raise ValueError(
            f"sentence polarity needs an even number of ordered classes, got {num_classes}"
        )
    y = targets.long()
    if bool(((y < 0) | (y >= num_classes)).any()):
        raise ValueError(f"targets must lie in 0..{num_classes - 1}")
    return torch.where(y >= num_classes // 2, 1, -1).long()  # (N,)


def _check(attributions: Tensor, labels: Tensor, polarity: Tensor) -> None:
    if attributions.dim() != 2 or tuple(labels.shape) != tuple(attributions.shape):
        raise ValueError(
            f"attributions and labels must both be (N, L), got {tuple(attributions.shape)} and "
            f"{tuple(labels.shape)}"
        )
    if tuple(polarity.shape) != (attributions.shape[0],):
        raise ValueError(
            f"polarity must be (N,) = ({attributions.shape[0]},), got {tuple(polarity.shape)}"
        )
    if labels.dtype.is_floating_point or bool(((labels < -1) | (labels > 1)).any()):
        raise ValueError("labels must hold the integers -1, 0 and 1 only")
    if bool(((polarity != 1) & (polarity != -1)).any()):
        raise ValueError("polarity must hold -1 and 1 only")


def support(labels: Tensor, polarity: Tensor) -> Tensor:
    """``(N, L)`` int64 ``s = l * p``: +1 where a word supports its sentence's class, -1 where
    it opposes it, 0 where it is not labelled.

    Example:
        >>> support(torch.tensor([[1, -1, 0], [1, -1, 0]]), torch.tensor([1, -1])).tolist()
        [[1, -1, 0], [-1, 1, 0]]
    """
    return labels.long() * polarity.long()[:, None]  # (N, L)


def sign_agreement(attributions: Tensor, labels: Tensor, polarity: Tensor) -> float:
    """Share of labelled words whose attribution has the sign their label and the sentence's
    polarity call for, pooled over words (module docstring); NaN without labelled words.

    Args:
        attributions: ``(N, L)`` attribution of each token to the sentence's true class.
        labels: ``(N, L)`` word labels in ``{-1, 0, 1}``.
        polarity: ``(N,)`` sentence polarity in ``{-1, 1}``.

    Example:
        >>> a = torch.tensor([[0.5, -0.2, 0.9], [0.1, -0.3, 0.0]])
        >>> l = torch.tensor([[1, -1, 0], [1, -1, 0]])
        >>> sign_agreement(a, l, torch.tensor([1, -1]))  # 0.5, -0.2 agree; 0.1, -0.3 do not
        0.5
    """
    _check(attributions, labels, polarity)
    s = support(labels, polarity)  # (N, L)
    scored = s != 0
    n = int(scored.sum())
    if n == 0:
        return math.nan
    agree = (attributions.double() * s.double() > 0) & scored  # (N, L)
    return int(agree.sum()) / n


def _normalised(attributions: Tensor) -> Tensor:
    """Each row divided by its L2 norm; zero rows stay zero."""
    a = attributions.detach().double()  # (N, L)
    norm = a.norm(dim=1, keepdim=True)  # (N, 1)
    return a / norm.masked_fill(norm == 0, 1.0)


def attribution_auc(
    attributions: Tensor, labels: Tensor, polarity: Tensor, normalise: bool = True
) -> dict[str, float]:
    """AUROC and AUPRC of the attribution as a score for "the word supports the sentence's
    class", over the pooled labelled words (module docstring); NaN when the labelled words are
    all of one kind (or there are none).

    Args:
        attributions: ``(N, L)`` attribution of each token to the sentence's true class.
        labels: ``(N, L)`` word labels in ``{-1, 0, 1}``.
        polarity: ``(N,)`` sentence polarity in ``{-1, 1}``.
        normalise: Divide each sentence's attributions by their L2 norm first.

    Returns:
        ``{"auroc": ..., "auprc": ...}``.

    Example:
        >>> a = torch.tensor([[0.5, -0.2, 0.9], [0.1, -0.3, 0.0]])
        >>> l = torch.tensor([[1, -1, 0], [1, -1, 0]])  # supporting: 0.5, -0.3; opposing: -0.2, 0.1
        >>> attribution_auc(a, l, torch.tensor([1, -1]), normalise=False)
        {'auroc': 0.5, 'auprc': 0.75}
    """
    _check(attributions, labels, polarity)
    s = support(labels, polarity)  # (N, L)
    scored = s != 0
    score = (_normalised(attributions) if normalise else attributions.detach().double())[scored]
    truth = (s[scored] > 0).cpu().numpy()  # (W,)
    if truth.size == 0 or truth.all() or not truth.any():
        return {"auroc": math.nan, "auprc": math.nan}
    from sklearn.metrics import (  # here: sklearn.metrics takes a second to import
        average_precision_score,
        roc_auc_score,
    )

    values = score.cpu().numpy().astype(np.float64)  # (W,)
    return {
        "auroc": float(roc_auc_score(truth, values)),
        "auprc": float(average_precision_score(truth, values)),
    }


def token_attribution_scores(
    attributions: Tensor, labels: Tensor, polarity: Tensor, normalise: bool = True
) -> dict[str, float]:
    """:data:`TOKEN_METRICS` (sign agreement, AUROC, AUPRC) and the counts behind them.

    Args:
        attributions: ``(N, L)`` attribution of each token to the sentence's true class.
        labels: ``(N, L)`` word labels in ``{-1, 0, 1}``.
        polarity: ``(N,)`` sentence polarity in ``{-1, 1}``.
        normalise: See :func:`attribution_auc`.

    Returns:
        ``agreement``, ``auroc``, ``auprc`` (NaN where undefined), ``n_words`` (labelled words
        scored) and ``n_supporting`` (those with ``s > 0``).

    Example:
        >>> a = torch.tensor([[0.5, -0.2, 0.9]])
        >>> out = token_attribution_scores(a, torch.tensor([[1, -1, 0]]), torch.tensor([1]))
        >>> out["agreement"], out["auroc"], out["n_words"], out["n_supporting"]
        (1.0, 1.0, 2, 1)
    """
    s = support(labels, polarity)
    return {
        "agreement": sign_agreement(attributions, labels, polarity),
        **attribution_auc(attributions, labels, polarity, normalise),
        "n_words": int((s != 0).sum()),
        "n_supporting": int((s > 0).sum()),
    }
