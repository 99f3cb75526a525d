"""Shift behaviour of explanations: cosine of shifted-image explanations (paper 001, Fig. 5)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Unpack

import torch
from torch import Tensor, nn

from distillscope.checks import check_int
from distillscope.data.base import DatasetInfo
from distillscope.explain.maps import check_map_method, explanation_maps
from distillscope.functional.explanation_metrics import shift_cosine, shift_diagonal
from distillscope.probes.base import Probe, ProbeData, ProbeParams, ProbeResult, Roles
from distillscope.probes.explained import OWN_TARGETS, check_choice, own_targets, unexplainable
from distillscope.probes.sampling import evaluating, probe_batches
from distillscope.registry import register_probe

__all__ = ["FILLS", "MAX_SHIFT", "ExplanationShiftProbe"]

#: Largest diagonal shift: 16 pixels, paper 001's Fig. 5 (``T in [0, 16]``).
MAX_SHIFT = 16
#: What fills the pixels a shift uncovers: copies of the edge, or black.
FILLS = ("edge", "black")


@register_probe("explanation_shift")
class ExplanationShiftProbe(Probe):
    """How an explanation changes when its image is shifted diagonally by ``s`` pixels.

    Paper 001 (e2KD), 4.3 "Distill to ViT" and Fig. 5 (bottom left): the cosine similarity of
    the explanation of a diagonally shifted image with the explanation of the unshifted one,
    "of the intersecting area of the explanations" (footnote 2), for ``s = 0..16``. A
    shift-equivariant explainer scores 1 at every shift; a ViT with 16-pixel patches swings with
    period 16, the CNN teacher with period 4. Per image ``x`` and shift ``s``
    (:mod:`distillscope.functional.explanation_metrics`):

        x_s = x moved s pixels down and right (same size; the last s rows and columns drop out)
        c(s) = cos(E(x)[:H-s, :W-s], E(x_s)[s:, s:])

    i.e. the explanation of the shifted image, shifted back, against the original's, over the
    shared ``(H-s) x (W-s)`` area; ``c(s)`` is averaged over the audited images. Both maps
    explain the same class: the label, or the model's top-1 class on the *unshifted* image.
    The uncovered first ``s`` rows and columns of ``x_s`` are filled by ``fill``: ``edge``
    (default) repeats the image's first row and column, adding no new edge the explainer could
    light up; ``black`` fills pixel value 0 (the background of Fashion-MNIST, where it equals
    cutting the shifted view out of a larger black canvas). The paper does not say which it
    used (its ImageNet images have real content around the crop).

    Summary values (ours): ``"<m>"`` = mean of ``c(s)`` over the shifts ``s > 0`` (1 = fully
    equivariant explanations); ``"<t>-><m>/curve_gap"`` = mean over the same shifts of
    ``|c_m(s) - c_t(s)|``, how far a model's curve is from its teacher's (the paper's reading of
    Fig. 5: the e2KD student "learns to mimic the shift periodicity of the teacher").

    Args:
        max_shift: Largest shift ``s`` (default 16); shifts that do not fit the images
            (``s >= min(H, W)``) are dropped, the reason in ``params["skipped"]``.
        shift_step: Step between shifts (default 1): ``s = 0, step, 2 step, ... <= max_shift``.
        method: Explanation method, see :func:`~distillscope.explain.maps.explanation_maps`;
            ``auto`` (default) = the model's own ``explain`` (B-cos), else GradCAM.
        target: ``ground_truth`` (default) or ``predicted`` (top-1 on the unshifted image).
        fill: ``edge`` (default) or ``black``, see above.
        batch_size: See :class:`~distillscope.probes.base.Probe`.
        max_samples: See :class:`~distillscope.probes.base.Probe`.
        seed: See :class:`~distillscope.probes.base.Probe`.

    Values: ``"<m>"`` per model, ``"<t>-><m>/curve_gap"`` per pair of ``roles.pairs()``.
    Series: ``"x"`` = the shifts, ``"<m>"`` = ``c(s)`` (the report draws the curves).
    """

    description = (
        "Cosine similarity between the explanation of an image and that of the image shifted "
        "diagonally by s pixels (shifted back, over the shared area), against s: 1 = the "
        "explanation moves with the image; periodic dips reveal the patch or stride grid "
        "(paper 001 Fig. 5). Our summaries: the model's mean cosine over s > 0, and "
        "curve_gap = mean |c_model(s) - c_teacher(s)| (lower = the teacher's shift behaviour "
        "was distilled)."
    )
    paper = "001"

    higher_is_better = True
    metric_directions = {"curve_gap": False}

    def __init__(
        self,
        max_shift: int = MAX_SHIFT,
        shift_step: int = 1,
        method: str = "auto",
        target: str = "ground_truth",
        fill: str = "edge",
        **base: Unpack[ProbeParams],
    ) -> None:
        super().__init__(**base)
        self.max_shift = check_int("explanation_shift.max_shift", max_shift, minimum=1)
        self.shift_step = check_int("explanation_shift.shift_step", shift_step)
        self.method = check_map_method("explanation_shift.method", method)
        self.target = check_choice("explanation_shift.target", target, OWN_TARGETS)
        self.fill = check_choice("explanation_shift.fill", fill, FILLS)

    @property
    def shifts(self) -> list[int]:
        """The configured shifts ``0, step, ... <= max_shift``."""
        return list(range(0, self.max_shift + 1, self.shift_step))

    def run(self, models: Mapping[str, nn.Module], data: ProbeData, roles: Roles) -> ProbeResult:
        params: dict[str, Any] = {
            **self.base_params(),
            "max_shift": self.max_shift,
            "shift_step": self.shift_step,
            "method": self.method,
            "target": self.target,
            "fill": self.fill,
        }
        if not data.info.is_image:
            params["skipped"] = {"explanation_shift": "explanation maps need image inputs"}
            return ProbeResult(self.name, {}, params=params)
        skipped: dict[str, str] = {}
        size = min(data.info.input_shape[-2:])
        shifts = [s for s in self.shifts if s < size]
        if len(shifts) < len(self.shifts):
            skipped[f"shifts {size}..{self.max_shift}"] = (
                f"the images' shorter side is {size} pixels; larger shifts leave no shared area"
            )
        skipped.update(unexplainable(models, models, self.method))
        todo = [m for m in models if m not in skipped]
        fill = _fill(data.info) if self.fill == "black" else None
        sums = {m: torch.zeros(len(shifts), dtype=torch.float64) for m in todo}
        n = 0
        with evaluating(models, todo, data.device) as active:
            for batch in probe_batches(self, data):
                for m in todo:
                    sums[m] += self._curve(active[m], batch.inputs, batch.targets, shifts, fill)
                n += len(batch)
        curves = {m: (sums[m] / max(n, 1)).tolist() for m in todo}
        moved = [i for i, s in enumerate(shifts) if s > 0] or list(range(len(shifts)))
        values: dict[str, float] = {}
        for m, curve in curves.items():
            values[m] = sum(curve[i] for i in moved) / len(moved)
        for t, m in roles.pairs():
            if t in curves and m in curves:
                gaps = [abs(curves[m][i] - curves[t][i]) for i in moved]
                values[f"{t}->{m}/curve_gap"] = sum(gaps) / len(gaps)
        series: dict[str, list[float]] = {"x": [float(s) for s in shifts]} if curves else {}
        series.update(curves)
        params["shifts"] = shifts
        params["x_label"] = "diagonal shift s (pixels)"
        params["n_samples"] = n
        if skipped:
            params["skipped"] = skipped
        return ProbeResult(self.name, values, series=series, params=params)

    def _curve(
        self,
        model: nn.Module,
        inputs: Tensor,
        labels: Tensor,
        shifts: list[int],
        fill: Tensor | None,
    ) -> Tensor:
        """``(S,)`` sums over the batch of ``c(s)``, one per shift."""
        target = own_targets(self.target, model, inputs, labels)  # (B,)
        explain = {"method": self.method, "internal_batch_size": self.batch_size}
        original = explanation_maps(model, inputs, target, **explain)  # (B, H, W)
        sums = torch.zeros(len(shifts), dtype=torch.float64)
        for k, s in enumerate(shifts):
            shifted = (
                original
                if s == 0
                else explanation_maps(model, shift_diagonal(inputs, s, fill), target, **explain)
            )  # (B, H, W)
            sums[k] = float(shift_cosine(original, shifted, s).double().sum())
        return sums


def _fill(info: DatasetInfo) -> Tensor:
    """``(C,)`` model-input values of a black pixel: ``(low - mean) / std``."""
    channels = info.input_shape[0]
    low = info.pixel_range[0] if info.pixel_range is not None else 0.0
    mean = torch.tensor(info.mean if info.mean is not None else (0.0,) * channels)
    std = torch.tensor(info.std if info.std is not None else (1.0,) * channels)
    return ((low - mean) / std).expand(channels).clone()  # (C,)
