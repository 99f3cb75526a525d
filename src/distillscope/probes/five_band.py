"""Saliency maps against ground-truth heat maps: the five-band scores per model (paper 000 5.1)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Unpack

import torch
from torch import Tensor, nn

from distillscope.checks import check_int, check_range
from distillscope.data.base import TensorDataset
from distillscope.errors import ConfigError
from distillscope.explain.maps import check_map_method, explanation_maps
from distillscope.functional.five_band import (
    BINARY_METRICS,
    FIVE_BAND_METRICS,
    FIVE_BAND_THRESHOLDS,
    REDUCTIONS,
    SOFT_DELTA,
    SOFT_STEPS,
    binary_scores,
    five_band_scores,
    five_bands,
    soft_thresholds,
)
from distillscope.probes.base import Probe, ProbeData, ProbeParams, ProbeResult, Roles
from distillscope.probes.explained import (
    OWN_TARGETS,
    check_choice,
    own_targets,
    pixel_image,
    unexplainable,
)
from distillscope.probes.sampling import evaluating, probe_batches, probe_samples
from distillscope.registry import register_probe

__all__ = ["FiveBandProbe"]


@register_probe("five_band")
class FiveBandProbe(Probe):
    """How well each model's saliency map matches the ground-truth heat map, in five bands.

    Paper 000, 5.1 (Table 3, Fig. 6): on the synthetic dataset of Tjoa & Guan (2020), whose
    pixels are 0 (background), 1 (the object) or 2 (the distinguishing feature), a model's
    saliency map is normalised by its largest absolute value, cut into five bands at
    ``(-0.7, -0.3, 0.3, 0.7)`` and compared with the truth pixel by pixel: pixel accuracy,
    recall, precision and FPR, averaged over ``soft_steps`` threshold sets (module docstring of
    :mod:`distillscope.functional.five_band`, which holds the maths and what is ours). Then the
    two binary reductions of the truth, ``object`` (0 vs 1, 2) and ``feature`` (0, 1 vs 2):
    AUROC, AUPRC, precision, recall and F1 (scikit-learn), from which images without an object
    (the no-object class) are excluded, as in paper 000 (``params["binary_excluded"]`` counts
    the images each task leaves out: those without a positive or without a negative pixel).
    Every score is per image, then averaged over the audited images.

    Args:
        method: Explanation method (:func:`~distillscope.explain.maps.explanation_maps`);
            default ``saliency`` (paper 000 appendix B.6 uses Captum's ``Saliency``).
        target: ``predicted`` (default; each model explains its own top-1 class, as Tjoa &
            Guan's evaluation does) or ``ground_truth``.
        soft_steps: Threshold sets of the soft score (default 56, the authors' evaluation; 1 =
            the plain five-band score).
        soft_delta: Their spacing (default 0.005).
        example_maps: Add the first audited image, its truth and every model's bands to
            ``images`` (drawn by the report).
        batch_size: See :class:`~distillscope.probes.base.Probe`.
        max_samples: See :class:`~distillscope.probes.base.Probe`.
        seed: See :class:`~distillscope.probes.base.Probe`.

    Values, for every model ``m``: ``"<m>/pixel_accuracy"``, ``"<m>/recall"``,
    ``"<m>/precision"``, ``"<m>/fpr"`` (lower is better) and ``"<m>/<r>_<s>"`` for ``r`` in
    ``object``, ``feature`` and ``s`` in ``auroc``, ``auprc``, ``precision``, ``recall``,
    ``f1``. Without image inputs or heat maps the values are empty and ``params["skipped"]``
    says why; a model the method cannot explain is skipped with its reason.
    """

    description = (
        "Saliency maps against the ground-truth heat maps of heatmap-shapes (0 background, "
        "1 object, 2 distinguishing feature), Tjoa & Guan's five-band scores: each map is "
        "normalised by its largest absolute value, cut into five bands at -0.7, -0.3, 0.3, 0.7 "
        "and compared pixel by pixel with the truth (pixel accuracy, recall, precision, FPR; "
        "lower FPR is better), averaged over 56 threshold sets moved towards 0 by 0.005. Then "
        "two binary tasks on images with an object: object (0 vs 1, 2) and feature (0, 1 vs "
        "2), AUROC, AUPRC, precision, recall and F1; predicting a pixel positive when its band "
        "reaches the task's level is this project's choice."
    )
    paper = "000"

    higher_is_better = True
    metric_directions = {"fpr": False}

    def __init__(
        self,
        method: str = "saliency",
        target: str = "predicted",
        soft_steps: int = SOFT_STEPS,
        soft_delta: float = SOFT_DELTA,
        example_maps: bool = True,
        **base: Unpack[ProbeParams],
    ) -> None:
        super().__init__(**base)
        self.method = check_map_method("five_band.method", method)
        self.target = check_choice("five_band.target", target, OWN_TARGETS)
        self.soft_steps = check_int("five_band.soft_steps", soft_steps)
        self.soft_delta = check_range("five_band.soft_delta", soft_delta, 0.0)
        try:
            soft_thresholds(self.soft_steps, self.soft_delta)
        except ValueError:
            most = FIVE_BAND_THRESHOLDS[2] / max(self.soft_steps - 1, 1)
            raise ConfigError(
                f"five_band.soft_steps={soft_steps} x soft_delta={soft_delta} moves the 0.3 "
                f"threshold to 0 or below; use soft_delta < {most:.4g} or fewer soft_steps"
            ) from None
        if not isinstance(example_maps, bool):
            raise ConfigError(
                f"five_band.example_maps={example_maps!r} is invalid; use true or false"
            )
        self.example_maps = example_maps

    def run(self, models: Mapping[str, nn.Module], data: ProbeData, roles: Roles) -> ProbeResult:
        params: dict[str, Any] = {
            **self.base_params(),
            "method": self.method,
            "target": self.target,
            "soft_steps": self.soft_steps,
            "soft_delta": self.soft_delta,
        }
        reason = _data_reason(data)
        if reason is not None:
            params["skipped"] = {"five_band": reason}
            return ProbeResult(self.name, {}, params=params)
        skipped = unexplainable(models, models, self.method)
        todo = [m for m in models if m not in skipped]
        truth_all = probe_samples(data, self.max_samples, self.seed).heatmaps  # (N, H, W)
        sums = {m: torch.zeros(len(FIVE_BAND_METRICS), dtype=torch.float64) for m in todo}
        binary = {  # per model and task: sums of the per-image scores
            (m, r): torch.zeros(len(BINARY_METRICS), dtype=torch.float64)
            for m in todo
            for r in REDUCTIONS
        }
        scored = dict.fromkeys(binary, 0)  # images with both classes of the task
        images: dict[str, Any] = {}
        n = 0
        with evaluating(models, todo, data.device) as active:
            for batch in probe_batches(self, data):
                truth = truth_all[batch.index.cpu()]  # (B, H, W)
                if self.example_maps and not images:
                    images = _example(batch.inputs[0], truth[0], data)
                for m in todo:
                    y = own_targets(self.target, active[m], batch.inputs, batch.targets)
                    maps = explanation_maps(
                        active[m], batch.inputs, y, self.method, internal_batch_size=self.batch_size
                    ).cpu()  # (B, H, W)
                    scores = five_band_scores(maps, truth, self.soft_steps, self.soft_delta)
                    sums[m] += torch.stack([scores[k].sum() for k in FIVE_BAND_METRICS])
                    for r, level in REDUCTIONS.items():
                        two = binary_scores(maps, truth, level)
                        per_image = torch.stack([two[k] for k in BINARY_METRICS])  # (5, B)
                        keep = ~per_image.isnan().any(0)  # (B,) NaN: one class only
                        binary[m, r] += per_image[:, keep].sum(1)
                        scored[m, r] += int(keep.sum())
                    if self.example_maps and n == 0:
                        images[_panel(m, images)] = five_bands(maps[:1])[0].tolist()
                n += len(batch)
        values: dict[str, float] = {}
        for m in todo:
            values.update({f"{m}/{k}": float(v) / n for k, v in zip(FIVE_BAND_METRICS, sums[m])})
            for r in REDUCTIONS:
                if scored[m, r]:
                    means = binary[m, r] / scored[m, r]  # (5,)
                    values.update({f"{m}/{r}_{k}": float(v) for k, v in zip(BINARY_METRICS, means)})
        params["n_samples"] = n
        params["binary_excluded"] = _excluded(truth_all)
        if skipped:
            params["skipped"] = skipped
        return ProbeResult(self.name, values, params=params, images=images)


def _data_reason(data: ProbeData) -> str | None:
    """Why the probe cannot run on ``data``, or ``None`` when it can."""
    if not data.info.is_image:
        return "explanation maps need image inputs"
    if not isinstance(data.dataset, TensorDataset) or data.dataset.heatmaps is None:
        return (
            f"the dataset {data.info.name!r} has no ground-truth heat maps; use heatmap-shapes "
            "(or an in-memory dataset with heatmaps)"
        )
    return None


def _excluded(truth: Tensor) -> dict[str, int]:
    """Binary task -> how many images it leaves out: those without a positive or without a
    negative pixel (for ``object``: the images without an object)."""
    out = {}
    for r, level in REDUCTIONS.items():
        positive = (truth.flatten(1) >= level).long().sum(1)  # (N,)
        out[r] = int(((positive == 0) | (positive == truth[0].numel())).sum())
    return out


def _example(x: Tensor, truth: Tensor, data: ProbeData) -> dict[str, Any]:
    """The example's input and ground-truth panels (the models' bands are added by name)."""
    panels: dict[str, Any] = {}
    image = pixel_image(x, data.info)
    if image is not None:
        panels["input"] = image
    panels["ground truth"] = truth.to(torch.float32).tolist()
    return panels


def _panel(model: str, taken: Mapping[str, Any]) -> str:
    """The panel name of a model's bands: its name, unless an input panel already has it."""
    return model if model not in taken else f"{model} (bands)"
