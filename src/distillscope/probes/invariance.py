"""Invariance to colour jitter, random crops and shifts (paper 003, 4.3, C.4 and C.5)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Unpack

import torch
from torch import Tensor, nn

from distillscope.checks import check_int, check_range
from distillscope.data.base import DatasetInfo
from distillscope.errors import ConfigError
from distillscope.functional.views import (
    colour_jitter,
    colourise,
    colourise_params,
    crop_params,
    jitter_params,
    luminance,
    resized_crop,
    shift_images,
    shift_params,
)
from distillscope.probes.base import (
    ModelParam,
    Probe,
    ProbeData,
    ProbeParams,
    ProbeResult,
    Roles,
)
from distillscope.probes.sampling import evaluating, forward_all, probe_batches
from distillscope.registry import register_probe

__all__ = ["COLOUR_STRENGTHS", "CROP_SCALES", "FAMILIES", "MAX_SHIFTS", "InvarianceProbe"]

#: The transform families, in the order of the report's panels.
FAMILIES = ("colour", "crop", "shift")
#: Jitter strengths ``s``: around paper 003's training strength 0.4 (its Fig. 4b sweeps 0.3-0.6).
COLOUR_STRENGTHS = (0.1, 0.2, 0.4, 0.8)
#: Crop scales (share of the area); paper 003's crop-trained teacher saw 8% to 100%.
CROP_SCALES = (0.25, 0.5, 0.75, 0.9)
#: Maximum shifts in pixels, for 28-32 pixel images (paper 003 C.5 shifts 224-pixel crops).
MAX_SHIFTS = (1, 2, 4, 8)
#: x axis of each family's curve.
X_LABELS = {
    "colour": "jitter strength s",
    "crop": "crop scale (share of the area)",
    "shift": "maximum shift (pixels)",
}
#: How grey images are coloured before the jitter (recorded in ``params["colouring"]``).
COLOURING = (
    "grey image g colourised as g * c_fg + (1 - g) * c_bg, c_fg ~ U[0.5, 1]^3, "
    "c_bg ~ U[0, 0.5]^3 per image (ours); one-channel models see the luminance "
    "0.299 R + 0.587 G + 0.114 B of the (jittered) colour image"
)


@register_probe("invariance")
class InvarianceProbe(Probe):
    """Agreement of a model's top-1 class on two views of the same image, per transform.

    Paper 003, 4.3 ("Does invariance to data transformations get distilled?") and appendix
    C.4 (random crops) and C.5 (shifts): a teacher trained with an augmentation is invariant
    to it; a student distilled from it, without the augmentation, inherits part of that
    invariance, while a student of a teacher ``T*`` trained without it does not. For views
    ``v1, v2`` of each audited image ``x_i``:

        inv_f(s) = 1/N sum_i 1[argmax f(v1(x_i)) = argmax f(v2(x_i))]

    * ``colour`` (4.3): ``v1 = x``, ``v2 = jitter_s(x)``, "the agreement scores between X and
      X'": brightness, contrast, saturation factors ``1 +/- u``, ``u ~ U[0, s]``, hue shift
      ``U[-s/2, s/2]`` of the circle (the paper's teacher: ``s = 0.4``, hue 0.2); see
      :mod:`distillscope.functional.views`. The jitter works in pixel space (normalisation
      undone with ``DatasetInfo.mean/std``, intensities scaled from ``pixel_range`` to
      ``[0, 1]``, clamped, normalised again). Grey images are colourised first (ours, a random
      foreground and background colour per image, :data:`COLOURING`) and one-channel models
      see the luminance of the colour image; ``v1`` is then the un-jittered colourised image,
      so ``s = 0`` gives agreement 1. Other channel counts skip this family.
    * ``crop`` (C.4): two random resized crops, each covering the share ``a`` of the area
      (aspect ratio log-uniform in ``[3/4, 4/3]``, so the two may differ), resized back to the
      input size by bilinear sampling.
    * ``shift`` (C.5): two copies shifted by whole pixels, offsets per axis uniform in
      ``{0..m} - floor(m/2)``, so the two views differ by up to ``m`` pixels (the paper's two
      ``224 x 224`` crops of a ``(224 + m)`` centre crop); the uncovered pixels are black (pixel
      value ``pixel_range[0]``), where the paper's crops had image content around them.
      Shifts ``m >= min(H, W)`` are dropped (reason in ``params["skipped"]``).

    Random parameters come from a ``torch.Generator`` seeded with ``seed`` (one per family);
    every model sees the same views, and each image keeps its uniform draws across a sweep
    (common random numbers: a larger strength moves it further the same way).

    Summary values (ours): ``"<m>/<family>"`` = mean of ``inv_m`` over the family's sweep;
    ``"<t>-><m>/<family>_gap"`` = mean over the sweep of ``|inv_m(s) - inv_t(s)|``, how far a
    model's invariance is from its teacher's (lower = closer). A control teacher (paper 003's
    ``T*``, not trained with the augmentation) is one more teacher of the run, with its own
    distilled students; naming it ``control_teacher`` marks it as ``T*`` in the result (and
    the report) and makes sure it is audited even when it has no students.

    Args:
        families: Subset of ``colour``, ``crop``, ``shift`` (default all).
        colour_strengths: Jitter strengths ``s`` in ``[0, 1]`` (``[0, 1]`` keeps the factors
            ``>= 0`` and the hue shift within half the circle).
        crop_scales: Crop areas ``a`` in ``(0, 1]`` (1 = the whole image: agreement 1).
        max_shifts: Maximum shifts ``m >= 0`` in pixels (0 = no shift: agreement 1).
        control_teacher: Name of a model of the run trained without the augmentation (paper
            003's ``T*``), or ``None``.
        batch_size: See :class:`~distillscope.probes.base.Probe`.
        max_samples: See :class:`~distillscope.probes.base.Probe`.
        seed: See :class:`~distillscope.probes.base.Probe`.

    Values: ``"<m>/<family>"`` per model, ``"<t>-><m>/<family>_gap"`` per pair of
    ``roles.pairs()``. Series: ``"x/<family>"`` = the sweep, ``"<m>/<family>"`` = ``inv_m``.
    """

    description = (
        "Share of held-out images on which a model gives the same top-1 class to two views of "
        "the image: colour (the image vs a colour-jittered copy: brightness, contrast, "
        "saturation 1 +/- U[0, s], hue +/- U[0, s/2]; grey images colourised first with random "
        "foreground and background colours, ours), crop (two random crops of a share of the "
        "area, resized back) and shift (two copies shifted by up to m pixels from each other), "
        "each against its strength. Paper 003 finds a student distilled from a teacher trained "
        "with the augmentation more invariant than the independent student, but not one "
        "distilled from a teacher T* trained without it. Our summaries: the mean agreement over "
        "each sweep, and <family>_gap = mean |inv_model(s) - inv_teacher(s)| (lower = closer "
        "to the teacher's invariance)."
    )
    paper = "003"

    higher_is_better = True
    metric_directions = {f"{family}_gap": False for family in FAMILIES}
    model_params = {"control_teacher": ModelParam()}

    def __init__(
        self,
        families: Sequence[str] = FAMILIES,
        colour_strengths: Sequence[float] = COLOUR_STRENGTHS,
        crop_scales: Sequence[float] = CROP_SCALES,
        max_shifts: Sequence[int] = MAX_SHIFTS,
        control_teacher: str | None = None,
        **base: Unpack[ProbeParams],
    ) -> None:
        super().__init__(**base)
        if control_teacher is not None and (
            not isinstance(control_teacher, str) or not control_teacher
        ):
            raise ConfigError(
                f"invariance.control_teacher={control_teacher!r} is invalid; name a teacher of "
                "the run trained without the augmentation"
            )
        self.control_teacher = control_teacher
        self.families = _check_families(families)
        self.colour_strengths = _check_sweep(
            "invariance.colour_strengths", colour_strengths, lambda n, v: check_range(n, v, 0, 1)
        )
        self.crop_scales = _check_sweep(
            "invariance.crop_scales",
            crop_scales,
            lambda n, v: check_range(n, v, 0, 1, low_open=True),
        )
        self.max_shifts = _check_sweep(
            "invariance.max_shifts", max_shifts, lambda n, v: check_int(n, v, minimum=0)
        )

    @property
    def sweeps(self) -> dict[str, list[float]]:
        """The configured sweep of every chosen family."""
        all_sweeps = {
            "colour": self.colour_strengths,
            "crop": self.crop_scales,
            "shift": self.max_shifts,
        }
        return {family: list(all_sweeps[family]) for family in self.families}

    def run(self, models: Mapping[str, nn.Module], data: ProbeData, roles: Roles) -> ProbeResult:
        params: dict[str, Any] = {
            **self.base_params(),
            "families": list(self.families),
            "colour_strengths": list(self.colour_strengths),
            "crop_scales": list(self.crop_scales),
            "max_shifts": list(self.max_shifts),
        }
        if not data.info.is_image:
            params["skipped"] = {"invariance": "colour, crop and shift views need image inputs"}
            return ProbeResult(self.name, {}, params=params)
        sweeps, skipped = _applicable(self.sweeps, data.info)
        names = list(models)
        control = self.control_teacher
        if control is not None:
            params["control_teacher"] = control
            if control not in models:
                names.append(control)  # evaluating() raises, naming it
        hits = {
            (f, m): torch.zeros(len(sweep), dtype=torch.float64)
            for f, sweep in sweeps.items()
            for m in names
        }
        generators = {f: torch.Generator().manual_seed(self.seed) for f in sweeps}
        n = 0
        with evaluating(models, names, data.device) as active:
            for batch in probe_batches(self, data):
                for f, sweep in sweeps.items():
                    views = _views(f, sweep, batch.inputs, generators[f], data.info)
                    for k, agree in enumerate(_agreements(active, views)):
                        for m in names:
                            hits[f, m][k] += float(agree[m].sum())
                n += len(batch)
        curves = {key: (total / max(n, 1)).tolist() for key, total in hits.items()}
        values: dict[str, float] = {}
        series: dict[str, list[float]] = {}
        for f, sweep in sweeps.items():
            series[f"x/{f}"] = [float(s) for s in sweep]
            for m in names:
                series[f"{m}/{f}"] = curves[f, m]
                values[f"{m}/{f}"] = sum(curves[f, m]) / len(sweep)
            for t, m in roles.pairs():
                if (f, t) in curves and (f, m) in curves:
                    gaps = [abs(a - b) for a, b in zip(curves[f, m], curves[f, t])]
                    values[f"{t}->{m}/{f}_gap"] = sum(gaps) / len(gaps)
        params["x_label"] = {f: X_LABELS[f] for f in sweeps}  # one per report panel
        if "colour" in sweeps and data.info.input_shape[0] == 1:
            params["colouring"] = COLOURING
        params["n_samples"] = n
        if skipped:
            params["skipped"] = skipped
        return ProbeResult(self.name, values, series=series, params=params)


def _check_families(families: object) -> tuple[str, ...]:
    """The chosen families, in :data:`FAMILIES` order, or :class:`ConfigError`."""
    valid = ", ".join(FAMILIES)
    if isinstance(families, str) or not isinstance(families, (list, tuple)) or not families:
        raise ConfigError(
            f"invariance.families={families!r} is invalid; use a non-empty list of {valid}"
        )
    for family in families:
        if family not in FAMILIES:
            raise ConfigError(f"invariance.families has {family!r}; use a list of {valid}")
    return tuple(f for f in FAMILIES if f in families)


def _check_sweep(
    name: str, sweep: object, check: Callable[[str, Any], float | int]
) -> tuple[float | int, ...]:
    """A non-empty sweep, each value checked by ``check``, sorted without repeats."""
    if isinstance(sweep, str) or not isinstance(sweep, (list, tuple)) or not sweep:
        raise ConfigError(f"{name}={sweep!r} is invalid; use a non-empty list, e.g. [0.1, 0.4]")
    return tuple(sorted({check(name, value) for value in sweep}))


def _applicable(
    sweeps: dict[str, list[float]], info: DatasetInfo
) -> tuple[dict[str, list[float]], dict[str, str]]:
    """The sweeps that apply to ``info``'s images, and why the others do not."""
    kept: dict[str, list[float]] = {}
    skipped: dict[str, str] = {}
    channels = info.input_shape[0]
    size = min(info.input_shape[-2:])
    for family, sweep in sweeps.items():
        if family == "colour" and info.pixel_range is None:
            skipped["colour"] = "colour jitter needs a known pixel range (DatasetInfo.pixel_range)"
        elif family == "colour" and channels not in (1, 3):
            skipped["colour"] = f"colour jitter needs 1 (grey) or 3 (RGB) channels, not {channels}"
        elif family == "shift" and max(sweep) >= size:
            fits = [m for m in sweep if m < size]
            skipped[f"shift {', '.join(str(m) for m in sweep if m >= size)}"] = (
                f"the images' shorter side is {size} pixels; use max_shifts below it"
            )
            if fits:
                kept[family] = fits
        else:
            kept[family] = sweep
    return kept, skipped


def _agreements(
    models: Mapping[str, nn.Module], views: Iterator[tuple[Tensor, Tensor]]
) -> Iterator[dict[str, Tensor]]:
    """Per pair of views, ``(B,)`` whether each model's top-1 class is the same on both.

    A first view that is the same tensor as the previous pair's (the colour family's
    un-jittered image) is not run again.
    """
    last: Tensor | None = None
    first_top1: dict[str, Tensor] = {}
    for first, second in views:
        if first is not last:
            first_top1 = {m: z.argmax(1) for m, z in forward_all(models, first).items()}
            last = first
        second_top1 = {m: z.argmax(1) for m, z in forward_all(models, second).items()}
        yield {m: first_top1[m] == second_top1[m] for m in models}


def _views(
    family: str, sweep: list[float], inputs: Tensor, generator: torch.Generator, info: DatasetInfo
) -> Iterator[tuple[Tensor, Tensor]]:
    """The two views of every image at each strength of ``sweep``, one strength at a time."""
    b = len(inputs)
    if family == "colour":
        draws = torch.rand(b, 10, generator=generator).to(inputs.device)  # (B, 10)
        unit = _to_unit(inputs, info)  # (B, C, H, W) in [0, 1]
        grey = unit.shape[1] == 1
        rgb = colourise(unit, *colourise_params(draws[:, :6])) if grey else unit  # (B, 3, H, W)
        base = _from_unit(luminance(rgb) if grey else rgb, info)
        for s in sweep:
            jittered = colour_jitter(rgb, jitter_params(s, draws[:, 6:]))  # (B, 3, H, W)
            yield base, _from_unit(luminance(jittered) if grey else jittered, info)
    elif family == "crop":
        draws = torch.rand(b, 6, generator=generator).to(inputs.device)  # (B, 6)
        for a in sweep:
            yield (
                resized_crop(inputs, crop_params(a, draws[:, :3])),
                resized_crop(inputs, crop_params(a, draws[:, 3:])),
            )
    else:
        draws = torch.rand(b, 4, generator=generator).to(inputs.device)  # (B, 4)
        fill = _from_unit(torch.zeros(1, inputs.shape[1], 1, 1, device=inputs.device), info)
        fill = fill.flatten()  # (C,) the model-input value of a black pixel
        for m in sweep:
            yield (
                shift_images(inputs, shift_params(int(m), draws[:, :2]), fill),
                shift_images(inputs, shift_params(int(m), draws[:, 2:]), fill),
            )


def _stats(info: DatasetInfo, like: Tensor) -> tuple[Tensor, Tensor, float, float]:
    """``(1, C, 1, 1)`` mean and std, and the pixel range's low end and width."""
    channels = like.shape[1]
    mean = torch.tensor(info.mean if info.mean is not None else (0.0,) * channels)
    std = torch.tensor(info.std if info.std is not None else (1.0,) * channels)
    low, high = info.pixel_range if info.pixel_range is not None else (0.0, 1.0)
    view = (1, -1, 1, 1)
    return (
        mean.to(like.device, like.dtype).view(view),
        std.to(like.device, like.dtype).view(view),
        float(low),
        float(high - low),
    )


def _to_unit(inputs: Tensor, info: DatasetInfo) -> Tensor:
    """Normalised model inputs -> intensities in ``[0, 1]`` (pixel range mapped, clamped)."""
    mean, std, low, width = _stats(info, inputs)
    return ((inputs * std + mean - low) / width).clamp(0, 1)  # (B, C, H, W)


def _from_unit(unit: Tensor, info: DatasetInfo) -> Tensor:
    """Inverse of :func:`_to_unit`: intensities in ``[0, 1]`` -> normalised model inputs."""
    mean, std, low, width = _stats(info, unit)
    return (low + unit * width - mean) / std  # (B, C, H, W)
