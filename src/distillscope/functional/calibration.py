"""Calibration of a classifier's probabilities: expected calibration error (ECE), reliability
diagrams, negative log-likelihood (NLL) and the Brier score.

Guo et al. 2017 ("On calibration of modern neural networks", section 2): a model is calibrated
when its top-1 confidence ``p_i = max_k softmax(z_i)_k`` matches its accuracy. The ``N`` samples
are grouped into ``M`` bins ``B_m`` by confidence, and

    acc(B_m)  = 1/|B_m| sum_{i in B_m} 1[argmax z_i = y_i],
    conf(B_m) = 1/|B_m| sum_{i in B_m} p_i,
    ECE       = sum_m |B_m| / N * |acc(B_m) - conf(B_m)|      (an empty bin adds 0),

with ``M = 15`` as in Guo et al. A reliability diagram plots ``acc(B_m)`` against the bins. Paper
000 builds on Muller et al. 2019 ("When does label smoothing help?"), who show with these tools
that label smoothing changes calibration while it erases class-similarity information.

Two binnings (``binning``):

- ``"width"`` (Guo et al.): ``M`` equal-width intervals ``I_m = ((m - 1)/M, m/M]``, closed on the
  right as in Guo et al.: a confidence exactly on an edge ``m/M`` falls in the bin it closes (the
  lower one), and 0 falls in the first bin. The edges are ``torch.linspace(0, 1, M + 1)`` in
  float64 and confidences are compared with them in float64. (torchmetrics'
  ``MulticlassCalibrationError`` uses left-closed ``[lo, hi)`` bins and gives a confidence of
  exactly 1 a bin of its own; both agree when no confidence lies on an edge.)
- ``"mass"`` (equal-mass or adaptive bins, Nixon et al. 2019, "Measuring calibration in deep
  learning"; ``ECE_EM`` in Roelofs et al. 2022): the samples sorted by confidence (a stable sort:
  ties keep their input order) are cut into ``M`` runs of consecutive positions, sorted position
  ``j`` (0-based) going to bin ``floor(j M / N)``. Counts differ by at most one, and are equal
  when ``M`` divides ``N``; equal confidences may be split between two neighbouring bins; with
  ``N < M`` some bins are empty. A bin's range is its smallest and largest confidence.

Sums are taken in float64. Every function returns per-sample or per-bin numbers so a probe can
concatenate batches; the dataset-level NLL and Brier score are the means over samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "BINNINGS",
    "N_BINS",
    "ReliabilityBins",
    "brier_score",
    "expected_calibration_error",
    "negative_log_likelihood",
    "nll_logit_gradient",
    "reliability_bins",
    "top1_confidence",
]

#: Number of bins: 15, Guo et al. 2017 (section 2 and their reliability diagrams).
N_BINS = 15
#: How samples are binned by confidence; the first is the default (Guo et al.'s).
BINNINGS = ("width", "mass")


@dataclass(frozen=True)
class ReliabilityBins:
    """The data of a reliability diagram: one entry per bin, float64 (``count`` int64).

    Attributes:
        lower: ``(M,)`` lower end of each bin (equal-mass: its smallest confidence; NaN if empty).
        upper: ``(M,)`` upper end of each bin (equal-mass: its largest confidence; NaN if empty).
        confidence: ``(M,)`` mean top-1 confidence of the bin's samples, NaN if empty.
        accuracy: ``(M,)`` share of the bin's samples classified correctly, NaN if empty.
        count: ``(M,)`` number of samples in the bin.
    """

    lower: Tensor
    upper: Tensor
    confidence: Tensor
    accuracy: Tensor
    count: Tensor

    def ece(self) -> Tensor:
        """``sum_m |B_m| / N * |acc(B_m) - conf(B_m)|`` over the non-empty bins (0-dim)."""
        used = self.count > 0  # (M,)
        weight = self.count[used].to(torch.float64) / self.count.sum()  # (M_used,)
        return (weight * (self.accuracy[used] - self.confidence[used]).abs()).sum()


def top1_confidence(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """Top-1 confidence ``max_k softmax(z)_k`` (float64) and whether the top-1 class is right.

    Args:
        logits: ``(B, K)`` logits, at temperature 1.
        targets: ``(B,)`` class indices.

    Returns:
        ``(B,)`` float64 confidences in ``(0, 1]`` and ``(B,)`` bool correctness (the top-1
        class is ``argmax``, ties to the first class).

    Example:
        >>> z = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1]]))
        >>> conf, correct = top1_confidence(z, torch.tensor([0, 0]))
        >>> conf.round(decimals=6).tolist(), correct.tolist()
        ([0.7, 0.6], [True, False])
    """
    p = torch.softmax(logits.to(torch.float64), dim=-1)  # (B, K)
    conf = p.amax(-1)  # (B,)
    return conf, p.argmax(-1) == targets  # (B,), (B,)


def reliability_bins(
    confidence: Tensor, correct: Tensor, n_bins: int = N_BINS, binning: str = "width"
) -> ReliabilityBins:
    """Bin samples by confidence (see the module docstring for both binnings' conventions).

    Args:
        confidence: ``(N,)`` top-1 confidences in ``[0, 1]``.
        correct: ``(N,)`` whether each top-1 prediction is right (bool or 0/1).
        n_bins: Number of bins ``M`` (15, Guo et al.).
        binning: ``"width"`` (equal-width, right-closed) or ``"mass"`` (equal counts).

    Returns:
        The per-bin ranges, mean confidences, accuracies and counts.

    Raises:
        ValueError: Shapes differ, ``N = 0``, a confidence is outside ``[0, 1]``, ``n_bins < 1``
            or ``binning`` is unknown.

    Example:
        >>> conf = torch.tensor([0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
        >>> bins = reliability_bins(conf, torch.tensor([0, 1, 1, 1]), n_bins=2)  # 0.5 in bin 0
        >>> bins.count.tolist(), bins.accuracy.tolist(), bins.confidence.tolist()
        ([2, 2], [0.5, 1.0], [0.375, 0.875])
        >>> reliability_bins(conf, torch.tensor([0, 1, 1, 1]), 2, "mass").upper.tolist()
        [0.5, 1.0]
    """
    conf = confidence.detach().to(torch.float64).flatten()  # (N,)
    hit = correct.detach().to(torch.float64).flatten()  # (N,)
    _check_inputs(conf, hit, n_bins, binning)
    n = conf.numel()
    if binning == "width":
        edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64, device=conf.device)
        # right=False: edges[j - 1] < c <= edges[j] gives j, i.e. bin j - 1; c = 0 gives 0
        index = (torch.bucketize(conf, edges, right=False) - 1).clamp(0, n_bins - 1)  # (N,)
    else:
        order = torch.sort(conf, stable=True).indices  # (N,)
        index = torch.empty(n, dtype=torch.long, device=conf.device)
        index[order] = torch.arange(n, device=conf.device) * n_bins // n  # (N,)
    count = torch.bincount(index, minlength=n_bins)  # (M,)
    zeros = torch.zeros(n_bins, dtype=torch.float64, device=conf.device)
    sizes = count.to(torch.float64).masked_fill(count == 0, float("nan"))  # (M,)
    mean_conf = zeros.index_add(0, index, conf) / sizes  # (M,) NaN where empty
    accuracy = zeros.index_add(0, index, hit) / sizes  # (M,)
    if binning == "width":
        lower, upper = edges[:-1], edges[1:]  # (M,), (M,)
    else:
        nan = torch.full((n_bins,), float("nan"), dtype=torch.float64, device=conf.device)
        lower = nan.scatter_reduce(0, index, conf, "amin", include_self=False)  # (M,)
        upper = nan.scatter_reduce(0, index, conf, "amax", include_self=False)  # (M,)
    return ReliabilityBins(lower, upper, mean_conf, accuracy, count)


def expected_calibration_error(
    confidence: Tensor, correct: Tensor, n_bins: int = N_BINS, binning: str = "width"
) -> Tensor:
    """``ECE = sum_m |B_m| / N * |acc(B_m) - conf(B_m)|`` (Guo et al. 2017, eq. 3).

    Args:
        confidence: ``(N,)`` top-1 confidences in ``[0, 1]``.
        correct: ``(N,)`` whether each top-1 prediction is right.
        n_bins: Number of bins (15, Guo et al.).
        binning: ``"width"`` or ``"mass"`` (see :func:`reliability_bins`).

    Returns:
        0-dim float64 ECE in ``[0, 1]``.

    Raises:
        ValueError: As :func:`reliability_bins`.

    Example:
        >>> conf = torch.tensor([0.9, 0.9, 0.6, 0.6], dtype=torch.float64)
        >>> float(expected_calibration_error(conf, torch.tensor([1, 0, 1, 0]), n_bins=10))
        0.25
    """
    return reliability_bins(confidence, correct, n_bins, binning).ece()


def negative_log_likelihood(logits: Tensor, targets: Tensor) -> Tensor:
    """``NLL = -log softmax(z)_y`` per sample, in nats, from float64 log-probabilities.

    Its mean over samples is the cross-entropy loss (Guo et al. 2017, section 2).

    Args:
        logits: ``(..., K)`` logits, at temperature 1 (``(B, K)``: one row per sample).
        targets: ``(...)`` class indices.

    Returns:
        ``(...)`` float64, non-negative.

    Example:
        >>> z = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
        >>> round(negative_log_likelihood(z, torch.tensor([1])).item(), 6)  # ln 4
        1.386294
    """
    logp = torch.log_softmax(logits.to(torch.float64), dim=-1)  # (..., K)
    return -logp.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)  # (...)


def brier_score(logits: Tensor, targets: Tensor) -> Tensor:
    """Multiclass Brier score ``sum_k (p_k - 1[k = y])^2`` per sample (Brier 1950), float64.

    The original multi-class form: summed (not averaged) over the ``K`` classes, so each sample
    scores in ``[0, 2]``; the dataset score is the mean over samples. (Some libraries divide by
    ``K``, or score only the top-1 probability; this is neither.)

    Args:
        logits: ``(B, K)`` logits, at temperature 1.
        targets: ``(B,)`` class indices.

    Returns:
        ``(B,)`` float64 in ``[0, 2]``.

    Example:
        >>> z = torch.log(torch.tensor([[0.5, 0.25, 0.25]], dtype=torch.float64))
        >>> round(brier_score(z, torch.tensor([0])).item(), 12)  # 0.5^2 + 0.25^2 + 0.25^2
        0.375
    """
    p = torch.softmax(logits.to(torch.float64), dim=-1)  # (B, K)
    onehot = torch.nn.functional.one_hot(targets.long(), p.shape[-1]).to(p)  # (B, K)
    return ((p - onehot) ** 2).sum(-1)  # (B,)


def nll_logit_gradient(logits: Tensor, targets: Tensor) -> Tensor:
    """Gradient of the NLL (cross-entropy) w.r.t. the logits, ``softmax(z) - onehot(y)``.

    The true class's entry is written ``-sum_{k != y} p_k`` rather than ``p_y - 1``: the two are
    equal, but ``p_y`` rounds to 1 for a confident model (a logit margin above ~17 in float32,
    ~37 in float64) and ``p_y - 1`` then loses the whole term, which would turn the gradient's
    direction. Computed in float64.

    Args:
        logits: ``(..., K)`` logits, at temperature 1 (``(B, K)``: one row per sample).
        targets: ``(...)`` class indices.

    Returns:
        ``(..., K)`` float64; each row sums to 0.

    Example:
        >>> z = torch.tensor([[50.0, 0.0]])
        >>> g = nll_logit_gradient(z, torch.tensor([0]))
        >>> bool(g[0, 0] < 0), bool(g[0, 0] == -g[0, 1])
        (True, True)
    """
    p = torch.softmax(logits.to(torch.float64), dim=-1)  # (B, K)
    true = torch.nn.functional.one_hot(targets.long(), p.shape[-1]).bool()  # (B, K)
    others = p.masked_fill(true, 0.0)  # (B, K)
    return others - true * others.sum(-1, keepdim=True)  # (B, K)


def _check_inputs(conf: Tensor, hit: Tensor, n_bins: int, binning: str) -> None:
    """ValueError naming what is wrong with the inputs of :func:`reliability_bins`."""
    if conf.shape != hit.shape:
        raise ValueError(
            f"confidence and correct differ in size: {conf.numel()} vs {hit.numel()}; pass one "
            "of each per sample"
        )
    if conf.numel() == 0:
        raise ValueError("no sample to bin; pass at least one confidence")
    if bool(((conf < 0) | (conf > 1) | conf.isnan()).any()):
        raise ValueError("confidences must lie in [0, 1]; pass probabilities, not logits")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins={n_bins!r} is invalid; use an integer >= 1")
    if binning not in BINNINGS:
        raise ValueError(f"binning={binning!r} is unknown; use one of {', '.join(BINNINGS)}")
