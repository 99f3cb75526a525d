"""Localisation of explanations against object masks: EPG and IoU per model (paper 001, 4.3)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Unpack

import torch
from torch import Tensor, nn

from distillscope.checks import check_range
from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.errors import ConfigError
from distillscope.explain.maps import check_map_method, explanation_maps
from distillscope.functional.explanation_metrics import (
    IOU_THRESHOLD,
    energy_pointing_game,
    mask_share,
    region_iou,
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

__all__ = ["FOREGROUND_THRESHOLD", "MASK_SOURCES", "LocalisationProbe"]

#: Where the object masks come from: the dataset's own masks, or the bright pixels (ours).
MASK_SOURCES = ("dataset", "foreground")
#: Pixel intensity (in ``[0, 1]``) above which ``mask_source: foreground`` counts a pixel as
#: object: 0.1, above the near-black background of Fashion-MNIST and digits.
FOREGROUND_THRESHOLD = 0.1


@register_probe("localisation")
class LocalisationProbe(Probe):
    """How much of each model's explanation falls on the object: EPG and IoU with its mask.

    Paper 001 (e2KD), 4.3 "Distill on VOC": students of a teacher with focused explanations are
    scored by the energy-based pointing game (EPG; Wang et al. 2020, Score-CAM) and by the IoU
    of the explanation with the object annotation. Per image, with ``E`` the explanation of the
    chosen class and ``M`` the object mask (see
    :mod:`distillscope.functional.explanation_metrics`):

        EPG = sum_{p in M} max(E_p, 0) / sum_p max(E_p, 0)
        IoU = |{p : s(E)_p > threshold} and M| / |{p : s(E)_p > threshold} or M|

    where ``s`` min-max scales ``max(E, 0)`` to ``[0, 1]``; both are averaged over the audited
    images. The threshold (0.5) and the scaling follow the code of Rao et al. 2023, whose
    EPG- and IoU-guided teachers paper 001 distils; like that code, a map without positive
    energy scores 0 (counted in ``params["no_energy"]``). The paper scores bounding boxes of
    VOC; here the masks are the dataset's object masks (``TensorDataset.masks``).
    ``params["mask_share"]`` is the mean share of pixels inside the masks: the EPG a uniform map
    would get (chance level).

    ``mask_source: foreground`` (ours, not the paper's) takes as mask the pixels whose
    un-normalised intensity (mean over channels, scaled to ``[0, 1]`` by the data's pixel range)
    exceeds ``foreground_threshold``: the silhouette of an object on a black background, for
    Fashion-MNIST or digits, which carry no masks.

    Args:
        method: Explanation method, see :func:`~distillscope.explain.maps.explanation_maps`;
            ``auto`` (default) = the model's own ``explain`` (B-cos), else GradCAM.
        target: ``ground_truth`` (default; Rao et al.'s code explains the annotated classes) or
            ``predicted`` (each model's own top-1 class).
        iou_threshold: Threshold on the scaled map, in ``[0, 1)``; default 0.5.
        mask_source: ``dataset`` (default) or ``foreground``, see above.
        foreground_threshold: Intensity threshold of ``mask_source: foreground``, in ``[0, 1)``.
        example_maps: Add the first audited image, its mask and every model's map to
            ``images`` (drawn by the report).
        batch_size: See :class:`~distillscope.probes.base.Probe`.
        max_samples: See :class:`~distillscope.probes.base.Probe`.
        seed: See :class:`~distillscope.probes.base.Probe`.

    Values: ``"<m>/epg"``, ``"<m>/iou"`` for every model. Without image inputs or masks the
    values are empty and ``params["skipped"]`` says why; a model the method cannot explain is
    skipped with its reason.
    """

    description = (
        "How much of each model's explanation of the true class falls on the object (its mask): "
        "EPG = positive attribution energy inside the mask / total positive energy (energy-based "
        "pointing game), and IoU of the region where the min-max scaled map exceeds 0.5 with "
        "the mask; higher = more focused on the object. Parameter mask_share is the EPG of a "
        "uniform map (chance). mask_source: foreground (bright pixels as masks) is this "
        "project's extension."
    )
    paper = "001"

    higher_is_better = True

    def __init__(
        self,
        method: str = "auto",
        target: str = "ground_truth",
        iou_threshold: float = IOU_THRESHOLD,
        mask_source: str = "dataset",
        foreground_threshold: float | None = None,
        example_maps: bool = True,
        **base: Unpack[ProbeParams],
    ) -> None:
        super().__init__(**base)
        self.method = check_map_method("localisation.method", method)
        self.target = check_choice("localisation.target", target, OWN_TARGETS)
        self.iou_threshold = check_range(
            "localisation.iou_threshold", iou_threshold, 0.0, 1.0, high_open=True
        )
        self.mask_source = check_choice("localisation.mask_source", mask_source, MASK_SOURCES)
        if foreground_threshold is not None and self.mask_source != "foreground":
            raise ConfigError(
                f"localisation.foreground_threshold={foreground_threshold!r} needs "
                "localisation.mask_source: foreground; set it or drop foreground_threshold"
            )
        self.foreground_threshold = check_range(
            "localisation.foreground_threshold",
            FOREGROUND_THRESHOLD if foreground_threshold is None else foreground_threshold,
            0.0,
            1.0,
            high_open=True,
        )
        if not isinstance(example_maps, bool):
            raise ConfigError(
                f"localisation.example_maps={example_maps!r} is invalid; use true or false"
            )
        self.example_maps = example_maps

    def run(self, models: Mapping[str, nn.Module], data: ProbeData, roles: Roles) -> ProbeResult:
        params: dict[str, Any] = {
            **self.base_params(),
            "method": self.method,
            "target": self.target,
            "iou_threshold": self.iou_threshold,
            "mask_source": self.mask_source,
        }
        if self.mask_source == "foreground":
            params["foreground_threshold"] = self.foreground_threshold
        reason = self._data_reason(data)
        if reason is not None:
            params["skipped"] = {"localisation": reason}
            return ProbeResult(self.name, {}, params=params)
        skipped = unexplainable(models, models, self.method)
        todo = [m for m in models if m not in skipped]
        masks_all = None
        if self.mask_source == "dataset":
            samples = probe_samples(data, self.max_samples, self.seed)
            masks_all = getattr(samples, "masks", None)  # (N, H, W), present: checked above
        sums = {m: torch.zeros(2, dtype=torch.float64) for m in todo}  # (EPG, IoU) totals
        no_energy = dict.fromkeys(todo, 0)
        share, n = 0.0, 0
        images: dict[str, Any] = {}
        with evaluating(models, todo, data.device) as active:
            for batch in probe_batches(self, data):
                masks = (  # (B, H, W) bool
                    masks_all[batch.index.cpu()].to(batch.inputs.device)
                    if masks_all is not None
                    else _foreground(batch.inputs, data.info, self.foreground_threshold)
                )
                share += float(mask_share(masks).sum())
                if self.example_maps and not images:
                    images = _example(batch.inputs[0], masks[0], data.info)
                for m in todo:
                    y = own_targets(self.target, active[m], batch.inputs, batch.targets)
                    maps = explanation_maps(
                        active[m],
                        batch.inputs,
                        y,
                        self.method,
                        internal_batch_size=self.batch_size,
                    )  # (B, H, W)
                    epg = energy_pointing_game(maps, masks)  # (B,)
                    iou = region_iou(maps, masks, self.iou_threshold)  # (B,)
                    sums[m] += torch.stack([epg.sum(), iou.sum()]).cpu()
                    no_energy[m] += int((maps.clamp(min=0).flatten(1).sum(1) == 0).sum())
                    if self.example_maps and n == 0:
                        images[_panel(m, images)] = maps[0].cpu().tolist()
                n += len(batch)
        values: dict[str, float] = {}
        for m in todo:
            values[f"{m}/epg"] = float(sums[m][0]) / n
            values[f"{m}/iou"] = float(sums[m][1]) / n
        params["n_samples"] = n
        params["mask_share"] = share / n if n else None
        if any(no_energy.values()):
            params["no_energy"] = {m: c for m, c in no_energy.items() if c}
        if skipped:
            params["skipped"] = skipped
        return ProbeResult(self.name, values, params=params, images=images)

    def _data_reason(self, data: ProbeData) -> str | None:
        """Why the probe cannot run on ``data``, or ``None`` when it can."""
        if not data.info.is_image:
            return "explanation maps need image inputs"
        if self.mask_source == "foreground":
            if data.info.pixel_range is None:
                return "mask_source: foreground needs images with a known pixel range"
            return None
        if not isinstance(data.dataset, TensorDataset) or data.dataset.masks is None:
            return (
                f"the dataset {data.info.name!r} has no object masks; use a dataset with masks "
                "or set mask_source: foreground for objects on a black background"
            )
        return None


def _foreground(inputs: Tensor, info: DatasetInfo, threshold: float) -> Tensor:
    """``(B, H, W)`` masks of the pixels brighter than ``threshold`` (intensity in [0, 1])."""
    x = inputs.detach()
    if info.mean is not None and info.std is not None:
        mean = torch.tensor(info.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(info.std, device=x.device).view(1, -1, 1, 1)
        x = x * std + mean  # (B, C, H, W) in pixel space
    low, high = info.pixel_range or (0.0, 1.0)
    intensity = (x.mean(1) - low) / (high - low)  # (B, H, W)
    return intensity > threshold


def _example(x: Tensor, mask: Tensor, info: DatasetInfo) -> dict[str, Any]:
    """The example's input and mask panels (the models' maps are added under their names)."""
    panels: dict[str, Any] = {}
    image = pixel_image(x, info)
    if image is not None:
        panels["input"] = image
    panels["object mask"] = mask.to("cpu", torch.float32).tolist()
    return panels


def _panel(model: str, taken: Mapping[str, Any]) -> str:
    """The panel name of a model's map: its name, unless an input panel already has it."""
    return model if model not in taken else f"{model} (map)"
