"""Decision maps of 2-D classifiers and the hardness of their decision boundaries."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Unpack

import torch
from torch import Tensor, nn

from distillscope.checks import check_int
from distillscope.errors import ConfigError
from distillscope.functional.boundary import (
    TWILIGHT_CONFIDENCE,
    boundary_hardness,
    twilight_fraction,
)
from distillscope.probes.base import Probe, ProbeData, ProbeParams, ProbeResult, Roles
from distillscope.probes.sampling import evaluating, probe_batches
from distillscope.registry import register_probe

__all__ = ["DecisionMapProbe"]

#: Decimals kept in the stored probability images: 3 is finer than any colour map shows.
IMAGE_DECIMALS = 3
#: Key of the data points in ``ProbeResult.images`` (next to one key per model).
POINTS_KEY = "points"


@register_probe("decision_map")
class DecisionMapProbe(Probe):
    """Class-probability map over a grid around 2-D data, with boundary hardness.

    Paper 004 (Trustworthy Distillation?), section 5.1.1 (Figure 2): models trained at
    temperature 1 pass from class to class through a blurry "twilight zone"; models trained at a
    high temperature have step-like boundaries. The maps are the paper's decision heatmaps; the
    two numbers are **ours** (the paper describes the twilight zone only in words). On a
    ``resolution x resolution`` grid spanning the samples' bounding box widened by ``margin`` on
    every side, with ``p_g = softmax(f(g))``:

        twilight(f) = share of grid points with max_k p_gk < 0.9
        hardness(f) = mean over grid points touching the boundary of p_g,(1) - p_g,(2)

    (definitions and reasons in :mod:`distillscope.functional.boundary`). The grid and the stored
    points are in model-input space (the dataset's normalised coordinates). Neither direction is
    better in itself, hence ``higher_is_better = None``.

    Args:
        resolution: Grid points per axis.
        margin: Widening of the bounding box, in input units.
        batch_size: See :class:`~distillscope.probes.base.Probe`; grid points per forward pass.
        max_samples: See :class:`~distillscope.probes.base.Probe`; the points drawn and the
            bounding box come from these samples.
        seed: See :class:`~distillscope.probes.base.Probe`.

    Values: ``"<m>/twilight"`` and ``"<m>/hardness"``. Images: ``images["<m>"] = {"extent":
    [xmin, xmax, ymin, ymax], "probs": (H, W, K) nested lists}`` with row ``i`` at the ``i``-th
    smallest y (plot with ``origin="lower"``), and ``images["points"] = {"x", "y", "label"}``.
    Inputs that are not 2-D vectors give empty values and ``params["skipped"]``.
    """

    description = (
        "Predicted class probabilities over a 2-D input grid, as in paper 004's decision "
        "heatmaps. The two numbers are this project's measures, not the paper's (it describes "
        "the blurry 'twilight zone' only in words): hardness = mean of p(1) - p(2), the top-2 "
        "probability margin, over grid points that have a 4-neighbour with another predicted "
        "class (near 1 = step-like boundary, near 0 = sigmoid-like); twilight = share of grid "
        "points whose top probability max_k p_k is below 0.9."
    )
    paper = "004"

    higher_is_better = None

    def __init__(
        self,
        resolution: int = 100,
        margin: float = 0.5,
        **base: Unpack[ProbeParams],
    ) -> None:
        super().__init__(**base)
        self.resolution = check_int("decision_map.resolution", resolution, minimum=2)
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not margin >= 0:
            raise ConfigError(f"decision_map.margin={margin!r} is invalid; use a number >= 0")
        self.margin = float(margin)

    def run(self, models: Mapping[str, nn.Module], data: ProbeData, roles: Roles) -> ProbeResult:
        params: dict[str, Any] = {
            **self.base_params(),
            "resolution": self.resolution,
            "margin": self.margin,
            "twilight_confidence": TWILIGHT_CONFIDENCE,
        }
        if tuple(data.info.input_shape) != (2,):
            params["skipped"] = {
                "decision_map": f"inputs of shape {tuple(data.info.input_shape)} are not 2-D points"
            }
            return ProbeResult(self.name, {}, params=params)
        if POINTS_KEY in models:
            raise ConfigError(f"a model named {POINTS_KEY!r} clashes with the decision_map points")
        batches = list(probe_batches(self, data))
        xy = torch.cat([b.inputs for b in batches])  # (N, 2)
        labels = torch.cat([b.targets for b in batches])  # (N,)
        low = xy.amin(0) - self.margin  # (2,)
        high = xy.amax(0) + self.margin  # (2,)
        r = self.resolution
        gx = torch.linspace(float(low[0]), float(high[0]), r, dtype=xy.dtype, device=xy.device)
        gy = torch.linspace(float(low[1]), float(high[1]), r, dtype=xy.dtype, device=xy.device)
        yy, xx = torch.meshgrid(gy, gx, indexing="ij")  # (H, W) each, from gy (H,) and gx (W,)
        grid = torch.stack([xx, yy], dim=-1)  # (H, W, 2)
        flat = grid.reshape(-1, 2)  # (H*W, 2)
        extent = [float(low[0]), float(high[0]), float(low[1]), float(high[1])]
        values: dict[str, float] = {}
        images: dict[str, Any] = {}
        skipped: dict[str, str] = {}
        with evaluating(models, models, data.device) as active:
            for m, model in active.items():
                probs = _softmax_on(model, flat, self.batch_size).reshape(r, r, -1)  # (H, W, K)
                values[f"{m}/twilight"] = float(twilight_fraction(probs))
                hardness = float(boundary_hardness(probs))
                if math.isnan(hardness):
                    skipped[f"{m}/hardness"] = "the model predicts one class over the whole grid"
                else:
                    values[f"{m}/hardness"] = hardness
                images[m] = {
                    "extent": extent,
                    "probs": probs.double().round(decimals=IMAGE_DECIMALS).tolist(),
                }
        images[POINTS_KEY] = {
            "x": xy[:, 0].cpu().tolist(),
            "y": xy[:, 1].cpu().tolist(),
            "label": labels.cpu().tolist(),
        }
        params["n_samples"] = int(labels.numel())
        if skipped:
            params["skipped"] = skipped
        return ProbeResult(self.name, values, params=params, images=images)


@torch.no_grad()
def _softmax_on(model: nn.Module, points: Tensor, batch_size: int) -> Tensor:
    """``(N, K)`` class probabilities of ``model`` on ``(N, 2)`` points, on the CPU."""
    return torch.cat([model(chunk).softmax(-1).cpu() for chunk in points.split(batch_size)])
