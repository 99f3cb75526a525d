"""Five-band scores of saliency maps against ternary ground truths (paper 000 5.1).

Tjoa & Guan (2020, "Quantifying explainability of saliency methods in deep neural networks",
arXiv 2009.02899) score a heat map against a ground truth whose pixels are 0 (background),
1 (localisation: the object) or 2 (the distinguishing feature); paper 000 (5.1, Table 3 and
Fig. 6) uses their scores to compare scratch and KD students. The steps below follow the
authors' published code (``ericotjo001/explainable_ai``, ``xai_basic/src/xai_eval.py``:
``FiveBandXAIMetric``; read, not copied); what is ours is marked **ours**.

1. **Normalise** each ``(H, W)`` map by its largest absolute value, ``h / max |h|``, to
   ``[-1, 1]`` (a map of zeros stays zeros). The authors first sum an input-shaped attribution
   over its channels; here maps arrive with one channel already (the probe's explanation
   method reduces them: **ours** for ``saliency``, the maximum of ``|grad|`` over channels).
2. **Band** each value with the thresholds ``(-0.7, -0.3, 0.3, 0.7)``: ``x <= -0.7`` is band
   -2, ``(-0.7, -0.3]`` -1, ``(-0.3, 0.3]`` 0, ``(0.3, 0.7]`` 1, ``> 0.7`` 2. The ground
   truth's 0, 1, 2 are its bands (the authors write it as 0, 0.4, 0.9 and band it the same
   way, which gives 0, 1, 2).
3. **Count**, with ``b`` the map's band and ``g`` the truth's at each pixel:
   ``TP = [b != 0 and g != 0 and b = g]``, ``FP = [b != 0 and (g = 0 or b != g)]`` (a
   non-zero band of the wrong level is a false positive too), ``TN = [b = 0 and g = 0]``,
   ``FN = [b = 0 and g != 0]``; then ``pixel accuracy = mean [b = g]``,
   ``recall = TP / (TP + FN)``, ``precision = TP / (TP + FP)``, ``FPR = FP / (FP + TN)``.
   A zero denominator gives 0 (the authors add 1e-6 to every denominator, which gives 0 there
   and moves the other values by about 1e-6; **ours**: the exact ratio).
4. **Soften**: the scores are taken at ``steps`` threshold sets, step ``i`` moving every
   threshold ``i * delta`` towards 0 (``t - sign(t) * i * delta``), and averaged over the steps
   (the authors' per-image mean scores; their evaluation runs 56 steps of 0.005, from
   ``(.., 0.3, 0.7)`` to ``(.., 0.025, 0.425)``; ``steps = 1`` is the plain five-band score).
   The authors also report each image's best step; that is not computed here.

Scores are per image; a probe averages them over images (the authors average per-image
scores over samples). Images with nothing but background count as they are (their recall is 0).

**Binary reductions** (paper 000 Fig. 6: "class 0 vs. classes 1, 2" and "classes 0, 1 vs.
class 2"): with ``positive`` 1 or 2, a pixel is positive when its truth is ``>= positive``;
the normalised map is the score for AUROC and AUPRC (average precision, scikit-learn's
step-wise estimate of the area under the precision-recall curve), and **ours** for precision,
recall and F1: a pixel is predicted positive when its band is ``>= positive`` (normalised value
above 0.3 for the object, above 0.7 for the feature: the five-band thresholds). All five come
from :mod:`sklearn.metrics`, per image. An image without a positive or without a negative
pixel has no binary score (NaN): paper 000 excludes the class without objects from them.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "BINARY_METRICS",
    "FIVE_BAND_METRICS",
    "FIVE_BAND_THRESHOLDS",
    "REDUCTIONS",
    "SOFT_DELTA",
    "SOFT_STEPS",
    "binary_scores",
    "five_band_scores",
    "five_bands",
    "normalise_maps",
    "soft_thresholds",
]

#: Band edges on the normalised map (Tjoa & Guan's code).
FIVE_BAND_THRESHOLDS = (-0.7, -0.3, 0.3, 0.7)
#: Threshold sets of the soft score and their spacing (Tjoa & Guan's evaluation settings).
SOFT_STEPS = 56
SOFT_DELTA = 0.005
#: The five-band scores, in the order of paper 000 Table 3.
FIVE_BAND_METRICS = ("pixel_accuracy", "recall", "precision", "fpr")
#: The binary reductions (paper 000 Fig. 6): name -> the lowest positive truth level.
REDUCTIONS = {"object": 1, "feature": 2}
#: The scores of each binary reduction.
BINARY_METRICS = ("auroc", "auprc", "precision", "recall", "f1")


def _check_pair(maps: Tensor, heatmaps: Tensor) -> None:
    if maps.dim() != 3 or tuple(maps.shape) != tuple(heatmaps.shape):
        raise ValueError(
            f"maps and heatmaps must both be (B, H, W), got {tuple(maps.shape)} and "
            f"{tuple(heatmaps.shape)}"
        )
    if heatmaps.dtype.is_floating_point or bool(((heatmaps < 0) | (heatmaps > 2)).any()):
        raise ValueError("heatmaps must hold the integers 0, 1 and 2 only")


def normalise_maps(maps: Tensor) -> Tensor:
    """Each map divided by its largest absolute value, in ``[-1, 1]``; zero maps stay zero.

    Args:
        maps: ``(B, H, W)`` saliency maps.

    Returns:
        ``(B, H, W)`` float64.

    Example:
        >>> normalise_maps(torch.tensor([[[2.0, -4.0]], [[0.0, 0.0]]])).tolist()
        [[[0.5, -1.0]], [[0.0, 0.0]]]
    """
    h = maps.detach().double()
    top = h.abs().amax(dim=(1, 2), keepdim=True)  # (B, 1, 1)
    return h / top.masked_fill(top == 0, 1.0)


def soft_thresholds(
    steps: int = SOFT_STEPS,
    delta: float = SOFT_DELTA,
    thresholds: tuple[float, ...] = FIVE_BAND_THRESHOLDS,
) -> Tensor:
    """``(steps, 4)`` threshold sets: set ``i`` is ``t - sign(t) * i * delta``.

    Raises:
        ValueError: ``steps < 1``, ``delta < 0``, or a threshold that would reach 0 or cross
            another.

    Example:
        >>> soft_thresholds(3, 0.1).tolist()
        [[-0.7, -0.3, 0.3, 0.7], [-0.6, -0.2, 0.2, 0.6], [-0.5, -0.1, 0.1, 0.5]]
    """
    if steps < 1 or delta < 0:
        raise ValueError(f"steps must be >= 1 and delta >= 0, got {steps} and {delta}")
    t = torch.tensor(thresholds, dtype=torch.float64)  # (4,)
    i = torch.arange(steps, dtype=torch.float64)[:, None]  # (S, 1)
    out = t - torch.sign(t) * i * delta  # (S, 4)
    if bool((torch.sign(out) != torch.sign(t)).any()) or bool((out.diff(dim=1) <= 0).any()):
        raise ValueError(
            f"{steps} steps of {delta} move a threshold of {thresholds} to 0 or past another"
        )
    return out.round(decimals=12)


def five_bands(
    maps: Tensor, thresholds: tuple[float, ...] | Tensor = FIVE_BAND_THRESHOLDS
) -> Tensor:
    """The band in ``-2..2`` of every pixel of the normalised maps (module docstring, step 2).

    Args:
        maps: ``(B, H, W)`` saliency maps (normalised here).
        thresholds: Four increasing band edges.

    Returns:
        ``(B, H, W)`` int64.

    Example:
        >>> x = torch.tensor([[[-1.0, -0.5, 0.3, 0.31, 0.7, 1.0]]], dtype=torch.float64)
        >>> five_bands(x).tolist()  # an edge belongs to the band below it
        [[[-2, -1, 0, 1, 1, 2]]]
    """
    edges = torch.as_tensor(thresholds, dtype=torch.float64)  # (4,)
    return torch.bucketize(normalise_maps(maps), edges, right=False) - 2  # (B, H, W)


def five_band_scores(
    maps: Tensor, heatmaps: Tensor, steps: int = SOFT_STEPS, delta: float = SOFT_DELTA
) -> dict[str, Tensor]:
    """Pixel accuracy, recall, precision and FPR of each map against its ternary truth,
    averaged over the soft threshold sets (module docstring, steps 1 to 4).

    Args:
        maps: ``(B, H, W)`` saliency maps.
        heatmaps: ``(B, H, W)`` integer ground truths in ``{0, 1, 2}``.
        steps: Threshold sets (1: the plain five-band score).
        delta: Spacing of the threshold sets.

    Returns:
        :data:`FIVE_BAND_METRICS` -> ``(B,)`` float64.

    Example:
        >>> truth = torch.tensor([[[0, 1, 2, 2]]])
        >>> s = five_band_scores(torch.tensor([[[0.0, 0.5, 1.0, 0.2]]]), truth, steps=1)
        >>> {k: round(float(v), 3) for k, v in s.items()}
        {'pixel_accuracy': 0.75, 'recall': 0.667, 'precision': 1.0, 'fpr': 0.0}
    """
    _check_pair(maps, heatmaps)
    x = normalise_maps(maps).flatten(1)  # (B, HW)
    g = heatmaps.flatten(1).long().to(x.device)  # (B, HW)
    totals = torch.zeros(len(FIVE_BAND_METRICS), x.shape[0], dtype=torch.float64)
    for edges in soft_thresholds(steps, delta).to(x.device):
        b = torch.bucketize(x, edges, right=False) - 2  # (B, HW) bands
        hit = b == g  # (B, HW)
        tp = ((b != 0) & (g != 0) & hit).sum(1)  # (B,)
        fp = ((b != 0) & ~((g != 0) & hit)).sum(1)  # wrong level or on the background
        tn = ((b == 0) & (g == 0)).sum(1)
        fn = ((b == 0) & (g != 0)).sum(1)
        totals += torch.stack(
            [hit.double().mean(1), _ratio(tp, tp + fn), _ratio(tp, tp + fp), _ratio(fp, fp + tn)]
        ).cpu()
    return dict(zip(FIVE_BAND_METRICS, totals / steps))


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` in float64, 0 where ``den`` is 0."""
    return torch.where(den > 0, num.double() / den.clamp(min=1), 0.0)


def binary_scores(maps: Tensor, heatmaps: Tensor, positive: int) -> dict[str, Tensor]:
    """AUROC, AUPRC, precision, recall and F1 of each map for one binary reduction of its truth
    (module docstring), with :mod:`sklearn.metrics`, per image.

    Args:
        maps: ``(B, H, W)`` saliency maps.
        heatmaps: ``(B, H, W)`` integer ground truths in ``{0, 1, 2}``.
        positive: 1 (object: 0 vs 1, 2) or 2 (feature: 0, 1 vs 2).

    Returns:
        :data:`BINARY_METRICS` -> ``(B,)`` float64, NaN for an image without a positive or
        without a negative pixel.

    Example:
        >>> truth = torch.tensor([[[0, 1, 2, 2]], [[0, 0, 0, 0]]])
        >>> s = binary_scores(torch.tensor([[[0.0, 0.5, 1.0, 0.2]], [[1.0, 0, 0, 0]]]), truth, 2)
        >>> [round(float(s[k][0]), 3) for k in ("auroc", "precision", "recall")], s["f1"][1]
        ([0.75, 1.0, 0.5], tensor(nan, dtype=torch.float64))
    """
    _check_pair(maps, heatmaps)
    if positive not in REDUCTIONS.values():
        raise ValueError(f"positive must be 1 (object) or 2 (feature), got {positive!r}")
    score = normalise_maps(maps).flatten(1).cpu().numpy()  # (B, HW)
    truth = (heatmaps.flatten(1) >= positive).cpu().numpy()  # (B, HW)
    scored = truth.any(1) & ~truth.all(1)  # (B,) images with both classes
    out = np.full((len(BINARY_METRICS), score.shape[0]), math.nan)
    if scored.any():
        predicted = score > FIVE_BAND_THRESHOLDS[1 + positive]  # band >= positive
        out[:, scored] = _sklearn_scores(truth[scored], score[scored], predicted[scored])
    return {name: torch.from_numpy(row) for name, row in zip(BINARY_METRICS, out)}


def _sklearn_scores(truth: np.ndarray, score: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """``(5, n)`` :data:`BINARY_METRICS` of ``n`` images (rows of ``(n, P)`` arrays; each with a
    positive and a negative pixel). Two or more images go to scikit-learn at once, one
    multilabel column per image (``average=None``: the same per-image scores, validated once)."""
    from sklearn.metrics import (  # here: sklearn.metrics takes a second to import
        average_precision_score,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    if len(truth) == 1:
        y, s, hat = truth[0], score[0], predicted[0]
        p, r, f, _ = precision_recall_fscore_support(y, hat, average="binary", zero_division=0)
        return np.array([[roc_auc_score(y, s)], [average_precision_score(y, s)], [p], [r], [f]])
    # (P, n): one label column per image, C-ordered (scikit-learn takes columns 3x faster)
    y, s, hat = (np.ascontiguousarray(a.T) for a in (truth, score, predicted))
    p, r, f, _ = precision_recall_fscore_support(y, hat, average=None, zero_division=0)
    auroc = roc_auc_score(y, s, average=None)
    auprc = average_precision_score(y, s, average=None)
    return np.stack([auroc, auprc, p, r, f])
