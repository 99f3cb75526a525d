"""Calibration probe: how well each model's confidence matches its accuracy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Unpack

import torch
from torch import Tensor, nn

from distillscope.checks import check_int
from distillscope.functional.calibration import (
    N_BINS,
    brier_score,
    negative_log_likelihood,
    reliability_bins,
    top1_confidence,
)
from distillscope.probes.base import Probe, ProbeData, ProbeParams, ProbeResult, Roles
from distillscope.probes.sampling import evaluating, probe_logits
from distillscope.registry import register_probe

__all__ = ["CalibrationProbe"]


@register_probe("calibration")
class CalibrationProbe(Probe):
    """Expected calibration error (two binnings), NLL, Brier score and reliability diagrams.

    Guo et al. 2017 ("On calibration of modern neural networks"), on the softmax at temperature 1
    (as the model is used; no temperature scaling), with ``p_i`` the top-1 confidence:

        ece       = sum_m |B_m| / N |acc(B_m) - conf(B_m)|, M equal-width bins ((m-1)/M, m/M]
        ece_mass  = the same over M equal-mass bins (Nixon et al. 2019)
        nll       = 1/N sum_i -log p_{i, y_i}                  (nats)
        brier     = 1/N sum_i sum_k (p_ik - 1[k = y_i])^2      (multiclass form, in [0, 2])
        accuracy  = 1/N sum_i 1[argmax_k p_ik = y_i],  confidence = 1/N sum_i p_i

    Bin conventions in :mod:`distillscope.functional.calibration`. Paper 000 builds on Muller et
    al. 2019 ("When does label smoothing help?"): label smoothing erases class-similarity
    information and changes calibration; this probe measures the second for every model of the
    run. Paper 000 itself reports no calibration number, so the whole probe is ours.

    Args:
        n_bins: Number of bins ``M`` of both binnings (15, Guo et al.).
        batch_size: See :class:`~distillscope.probes.base.Probe`.
        max_samples: See :class:`~distillscope.probes.base.Probe`.
        seed: See :class:`~distillscope.probes.base.Probe`.

    Values: ``"<m>/ece"``, ``"<m>/ece_mass"``, ``"<m>/nll"``, ``"<m>/brier"``,
    ``"<m>/accuracy"``, ``"<m>/confidence"``. Series (the equal-width reliability diagram):
    ``"x"`` = the bin centres, ``"<m>/bin_accuracy"``, ``"<m>/bin_confidence"`` (``None`` for an
    empty bin) and ``"<m>/bin_count"``. Params: ``n_bins``, ``bin_edges`` (the ``M + 1``
    equal-width edges), ``n_samples``.

    The state kept is each model's ``N`` confidences and correctness flags (equal-mass bins need
    them all), bounded by ``max_samples``.
    """

    text = True

    description = (
        "Calibration of each model's softmax (temperature 1): expected calibration error over "
        "15 equal-width bins (ece, Guo et al. 2017) and over 15 equal-mass bins (ece_mass), "
        "negative log-likelihood (nll, nats), multiclass Brier score (sum over classes, in "
        "[0, 2]), accuracy and mean top-1 confidence; one reliability diagram per model "
        "(accuracy per equal-width confidence bin against the diagonal). Paper 000 builds on "
        "Muller et al. 2019, for whom label smoothing erases class-similarity information and "
        "changes calibration; the paper reports no calibration number, so the measure is ours."
    )
    paper = "000"

    higher_is_better = False
    metric_directions = {"accuracy": True, "confidence": None}

    def __init__(self, n_bins: int = N_BINS, **base: Unpack[ProbeParams]) -> None:
        super().__init__(**base)
        self.n_bins = check_int("calibration.n_bins", n_bins)

    def run(self, models: Mapping[str, nn.Module], data: ProbeData, roles: Roles) -> ProbeResult:
        names = list(models)
        confidence: dict[str, list[Tensor]] = {m: [] for m in names}
        correct: dict[str, list[Tensor]] = {m: [] for m in names}
        nll = dict.fromkeys(names, 0.0)
        brier = dict.fromkeys(names, 0.0)
        n = 0
        with evaluating(models, names, data.device) as active:
            for batch, logits in probe_logits(self, data, active):
                for m, z in logits.items():
                    conf, hit = top1_confidence(z, batch.targets)  # (B,), (B,)
                    confidence[m].append(conf.cpu())
                    correct[m].append(hit.cpu())
                    nll[m] += float(negative_log_likelihood(z, batch.targets).sum())
                    brier[m] += float(brier_score(z, batch.targets).sum())
                n += len(batch)
        values: dict[str, float] = {}
        series: dict[str, list[float | None]] = {}
        edges: list[float] = []
        for m in names:
            conf, hit = torch.cat(confidence[m]), torch.cat(correct[m])  # (N,), (N,)
            width = reliability_bins(conf, hit, self.n_bins, "width")
            mass = reliability_bins(conf, hit, self.n_bins, "mass")
            values[f"{m}/ece"] = float(width.ece())
            values[f"{m}/ece_mass"] = float(mass.ece())
            values[f"{m}/nll"] = nll[m] / n
            values[f"{m}/brier"] = brier[m] / n
            values[f"{m}/accuracy"] = float(hit.double().mean())
            values[f"{m}/confidence"] = float(conf.mean())
            series[f"{m}/bin_accuracy"] = _numbers(width.accuracy)
            series[f"{m}/bin_confidence"] = _numbers(width.confidence)
            series[f"{m}/bin_count"] = [float(c) for c in width.count.tolist()]
            edges = [*width.lower.tolist(), float(width.upper[-1])]
        series = {"x": [(lo + hi) / 2 for lo, hi in zip(edges, edges[1:])], **series}
        params: dict[str, Any] = {
            **self.base_params(),
            "n_bins": self.n_bins,
            "bin_edges": edges,
            "n_samples": n,
        }
        return ProbeResult(self.name, values, series=series, params=params)


def _numbers(t: Tensor) -> list[float | None]:
    """A float tensor as a list, NaN as ``None`` (JSON has no NaN)."""
    return [None if v != v else float(v) for v in t.tolist()]
