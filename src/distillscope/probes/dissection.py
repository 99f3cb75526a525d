"""Network dissection: how many units of a layer detect a human-labelled concept (paper 000)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Unpack

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from distillscope.checks import check_choice, check_int, check_range
from distillscope.data.base import DatasetInfo, iter_batches
from distillscope.errors import ConfigError, UserError
from distillscope.files import cache_root
from distillscope.functional.dissection import (
    IMAGE_RULES,
    Tally,
    TopQuantiles,
    best_concepts,
    count_detectors,
    tally_batch,
    unit_iou,
)
from distillscope.messages import say
from distillscope.models.taps import FeatureTap, check_module_paths
from distillscope.probes.base import Probe, ProbeData, ProbeParams, ProbeResult, Roles
from distillscope.probes.sampling import evaluating, probe_samples
from distillscope.registry import register_probe

__all__ = ["IOU_SWEEP", "QUANTILE_SWEEP", "DissectionProbe", "model_inputs"]

#: The quantiles and IoU thresholds paper 000 sweeps (appendix A.1, Figs. 9-10).
QUANTILE_SWEEP = tuple(round(0.001 * i, 3) for i in range(1, 11))
IOU_SWEEP = (0.01, 0.02, 0.03, 0.04, 0.05)
#: Version of the generated concept data's recipe (part of its cache key).
CONCEPTS_VERSION = 1
#: Objects of the generated concept set: drawn shapes, or also items of the run's held-out
#: Fashion-MNIST images (``auto``: items when the data is Fashion-MNIST).
OBJECTS = ("auto", "shapes", "items")
#: Held-out items the generated set draws its item objects from.
ITEMS = 500
#: Activations kept from the threshold pass for the tally pass, at most (bytes); beyond it the
#: models run twice.
KEEP_BYTES = 512 * 2**20


def model_inputs(images: Tensor, info: DatasetInfo) -> Tensor:
    """Concept images ``(B, 3, H, W)`` in ``[0, 1]`` as a model trained on ``info``'s data sees
    images: its channel count (ITU-R BT.601 luma for one channel), its size (bilinear) and its
    normalisation (``info.mean`` / ``info.std``).

    Example:
        >>> info = DatasetInfo("x", 2, (1, 4, 4), ["a", "b"], mean=(0.5,), std=(0.5,))
        >>> model_inputs(torch.ones(2, 3, 8, 8), info).shape
        torch.Size([2, 1, 4, 4])
    """
    channels, size = info.input_shape[0], tuple(info.input_shape[1:])
    x = images
    if channels == 1:
        luma = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)
        x = (x * luma).sum(1, keepdim=True)  # (B, 1, H, W)
    elif channels != 3:
        raise ConfigError(
            f"dissection feeds colour images; the models take {channels}-channel inputs"
        )
    if tuple(x.shape[-2:]) != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    if info.mean is not None and info.std is not None:
        mean = torch.tensor(info.mean, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(info.std, dtype=x.dtype).view(1, -1, 1, 1)
        x = (x - mean) / std
    return x


@register_probe("dissection")
class DissectionProbe(Probe):
    """Concept detectors of each model's layer, by network dissection (Bau et al. 2017).

    Paper 000 (section 3.1, Table 1, Algorithm 1) measures interpretability as the number of
    *concept detectors* in a layer: units whose top-``quantile`` activation region, upsampled to
    the annotation's resolution, overlaps a concept's annotation with IoU ``>= iou_threshold``
    over a densely labelled probe set (Broden). The maths, and where it follows the reference
    NetDissect-Lite, is in :mod:`distillscope.functional.dissection`.

    Concept data (``concepts``): a directory in Broden's format (a real Broden download, or any
    data written in it), read by :class:`~distillscope.data.broden.BrodenData`; by default our
    generated concept set (:func:`~distillscope.data.concepts.generate_concepts`: drawn objects,
    parts, colours, textures and scenes with exact masks — ours, not Broden), generated once into
    the cache folder and reused. Images are fed as each model's training data is
    (:func:`model_inputs`).

    Args:
        concepts: A Broden-format directory, or ``None`` for our generated concept set.
        categories: Categories to dissect on (default: every category of the data).
        layer: The layer dissected on every model (default: each model's ``cam_layer``, its
            last feature map; paper 000: ResNet-18's ``layer4``).
        quantile: ``q`` of the units' thresholds (0.005, the reference's and the paper's).
        iou_threshold: IoU from which a unit is a detector (0.04, the reference's default;
            paper 000 uses 0.05).
        sweep: Also count detectors over :data:`QUANTILE_SWEEP` (a tally per quantile) and
            :data:`IOU_SWEEP` (free), as paper 000's Figs. 9-10.
        images: Which images add a unit's pixels to a category's IoU denominator: ``touched``
            (NetDissect-Lite) or ``annotated`` (ours).
        concept_images: Images of the generated set (``concepts: null`` only).
        concept_size: Side of the generated images and masks.
        batch_size, max_samples, seed: See :class:`~distillscope.probes.base.Probe`;
            ``max_samples`` caps the concept images used (the first ones).

    Values: ``"<m>"`` detectors (the main value), ``"<m>/unique"`` distinct concepts among
    them, ``"<m>/<category>"`` detectors by category. Series (with ``sweep``):
    ``"x/quantile"`` and ``"<m>/by_quantile"``, ``"x/iou"`` and ``"<m>/by_iou"``. Params:
    ``detectors`` (per model: unit, label, category, IoU of each detector), the layer and units
    per model, the data's source and size.
    """

    description = (
        "Network dissection (Bau et al. 2017): a unit of the layer is a concept detector when its "
        "top-0.5% activation region, upsampled to the annotation, overlaps a labelled concept "
        "with IoU at least the threshold over the concept images. The value counts detectors "
        "(paper 000's measure of interpretability); unique = distinct concepts. Maths as the "
        "reference NetDissect-Lite (exact quantiles where it uses a sketch). The default concept "
        "images are our generated set (drawn objects, parts, colours, textures, scenes), not "
        "Broden: counts are comparable between models of a run, not with published numbers."
    )
    paper = "000"
    higher_is_better = True

    def __init__(
        self,
        concepts: str | None = None,
        categories: Sequence[str] | None = None,
        layer: str | None = None,
        quantile: float = 0.005,
        iou_threshold: float = 0.04,
        sweep: bool = False,
        images: str = "touched",
        concept_images: int = 300,
        concept_size: int = 64,
        objects: str = "auto",
        **base: Unpack[ProbeParams],
    ) -> None:
        super().__init__(**base)
        if concepts is not None and (not isinstance(concepts, str) or not concepts.strip()):
            raise ConfigError(
                f"dissection.concepts={concepts!r} is not a folder; give a Broden-format "
                "directory or leave it out for the generated concept set"
            )
        self.concepts = concepts
        self.categories = None if categories is None else [str(c) for c in categories]
        if layer is not None and (not isinstance(layer, str) or not layer):
            raise ConfigError(f"dissection.layer={layer!r} is not a module path, e.g. 'layer3'")
        self.layer = layer
        self.quantile = check_range("dissection.quantile", quantile, 0.0, 0.5, low_open=True)
        self.iou_threshold = check_range("dissection.iou_threshold", iou_threshold, 0.0, 1.0)
        self.sweep = bool(sweep)
        self.images = check_choice("dissection.images", images, IMAGE_RULES)
        self.concept_images = check_int("dissection.concept_images", concept_images, minimum=2)
        self.concept_size = check_int("dissection.concept_size", concept_size, minimum=16)
        self.objects = check_choice("dissection.objects", objects, OBJECTS)

    def base_params(self) -> dict[str, Any]:
        return {
            **super().base_params(),
            "concepts": self.concepts,
            "categories": self.categories,
            "layer": self.layer,
            "quantile": self.quantile,
            "iou_threshold": self.iou_threshold,
            "sweep": self.sweep,
            "images": self.images,
            "concept_images": self.concept_images,
            "concept_size": self.concept_size,
            "objects": self.objects,
        }

    # ------------------------------------------------------------------ start-up
    def layer_of(self, model: nn.Module) -> str:
        layer = self.layer or getattr(model, "cam_layer", None)
        if not layer:
            raise ConfigError(
                f"dissection.layer defaults to the model's cam_layer, but {type(model).__name__} "
                "declares none; give dissection.layer"
            )
        return layer

    def check_models(self, models: Mapping[str, nn.Module], roles: Roles) -> None:
        """The dissected layer must name a module of every model; a given concept folder must
        exist."""
        for model in models.values():
            check_module_paths(model, [self.layer_of(model)])
        if self.concepts is not None and not Path(self.concepts).expanduser().is_dir():
            raise ConfigError(
                f"dissection.concepts={self.concepts!r} is not a folder; give a Broden-format "
                "directory or leave it out for the generated concept set"
            )
        if self.categories is not None:
            from distillscope.data.broden import category_names
            from distillscope.data.concepts import CATEGORIES

            valid = list(CATEGORIES) if self.concepts is None else category_names(self.concepts)
            unknown = [c for c in self.categories if c not in valid]
            if unknown or not self.categories:
                raise ConfigError(
                    f"dissection.categories names {unknown[0] if unknown else 'nothing'!r}; "
                    f"use some of {', '.join(valid)}"
                )

    def items(self, data: ProbeData | None) -> tuple[Tensor, Tensor] | None:
        """``(N, 28, 28)`` held-out Fashion-MNIST items in ``[0, 1]`` and their classes for the
        generated set's objects, or ``None`` for drawn shapes only."""
        from distillscope.data.fashion_mnist import CLASS_NAMES

        if self.objects == "shapes" or self.concepts is not None:
            return None
        info = None if data is None else data.info
        fits = info is not None and tuple(info.input_shape) == (1, 28, 28)
        fits = fits and info is not None and list(info.class_names) == list(CLASS_NAMES)
        if not fits:
            if self.objects == "items":
                raise ConfigError(
                    "dissection.objects=items pastes held-out Fashion-MNIST items; this data is "
                    "not Fashion-MNIST; use objects: shapes"
                )
            return None
        assert data is not None and info is not None
        batches = list(iter_batches(probe_samples(data, ITEMS, self.seed), ITEMS))
        x = torch.cat([b.inputs for b in batches])[:, 0].float().cpu()  # (N, 28, 28) normalised
        ys = torch.cat([b.targets for b in batches]).cpu()
        if info.mean is not None and info.std is not None:
            x = x * info.std[0] + info.mean[0]
        return x.clamp(0.0, 1.0), torch.as_tensor(ys).long()

    def concept_data(self, data: ProbeData | None = None) -> Any:
        """The concept data: the given Broden-format folder, or our generated set (cached, its
        objects drawn shapes and, for Fashion-MNIST runs, held-out items: :meth:`items`)."""
        from distillscope.data.broden import BrodenData
        from distillscope.data.concepts import generate_concepts, verify_concepts

        if self.concepts is not None:
            root = Path(self.concepts).expanduser()
        else:
            items = self.items(data)
            items_digest = None
            if items is not None:
                raw = items[0].numpy().tobytes() + items[1].numpy().tobytes()
                items_digest = hashlib.sha256(raw).hexdigest()
            key = {"v": CONCEPTS_VERSION, "n": self.concept_images, "size": self.concept_size,
                   "items": items_digest}  # fmt: skip
            digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
            root = cache_root() / "concepts" / digest
            damage = verify_concepts(root) if root.is_dir() else None
            if damage is not None:
                say(f"dissection: the generated concept set in {root} is damaged ({damage}); "
                    "generating it again")  # fmt: skip
                _discard(root)
            if not root.is_dir():
                say(f"dissection: generating {self.concept_images} concept images in {root}")
                root.parent.mkdir(parents=True, exist_ok=True)
                try:
                    generate_concepts(root, n_images=self.concept_images,
                                      image_size=self.concept_size, seed=0,
                                      fashion_items=items)  # fmt: skip
                except (UserError, OSError):
                    if not (root / "index.csv").is_file():
                        raise  # not another process's finished set: a real failure
        return BrodenData(root, categories=self.categories, max_images=self.max_samples)

    # ------------------------------------------------------------------ run
    def run(self, models: Mapping[str, nn.Module], data: ProbeData, roles: Roles) -> ProbeResult:
        if data.info.pixel_range is None or len(data.info.input_shape) != 3:
            params = {
                **self.base_params(),
                "skipped": {
                    "dissection": "it reads feature maps of image models; this data is not images"
                },
            }
            return ProbeResult(self.name, {}, params=params)
        concepts = self.concept_data(data)
        names = list(models)
        quantiles = list(QUANTILE_SWEEP) if self.sweep else [self.quantile]
        if self.quantile not in quantiles:
            quantiles.append(self.quantile)
        n = len(concepts)
        say(
            f"dissection: {len(names)} models x {n} concept images x {len(quantiles)} "
            f"quantile(s), {len(concepts.labels) - 1} labels in {len(concepts.categories)} "
            "categories"
        )
        params = self.base_params()
        params.update({"n_images": n, "source": str(concepts.root),
                       "concept_categories": list(concepts.categories),
                       "layers": {}, "units": {}, "detectors": {}})  # fmt: skip
        values: dict[str, float] = {}
        series: dict[str, list[float]] = {}
        main = quantiles.index(self.quantile)
        n_cat = len(concepts.categories)
        with evaluating(models, names, data.device) as active:
            for name in names:
                layer = self.layer_of(active[name])
                score, label, category = self._dissect(active[name], layer, concepts, data,
                                                       quantiles, name)  # fmt: skip
                params["layers"][name] = layer
                params["units"][name] = int(score.shape[1])
                counts = count_detectors(score, label, category, self.iou_threshold, n_cat)
                values[name] = float(counts["total"][main])
                values[f"{name}/unique"] = float(counts["unique"][main])
                for c, cat in enumerate(concepts.categories):
                    values[f"{name}/{cat}"] = float(counts["per_category"][main, c])
                is_det = score[main] >= self.iou_threshold
                params["detectors"][name] = [
                    [u, concepts.labels[int(label[main, u])],
                     concepts.categories[int(category[main, u])], round(float(score[main, u]), 4)]
                    for u in torch.nonzero(is_det).flatten().tolist()
                ]  # fmt: skip
                if self.sweep:
                    series["x/quantile"] = quantiles
                    series[f"{name}/by_quantile"] = [float(v) for v in counts["total"]]
                    series["x/iou"] = list(IOU_SWEEP)
                    series[f"{name}/by_iou"] = [
                        float(count_detectors(score, label, category, t, n_cat)["total"][main])
                        for t in IOU_SWEEP
                    ]
        return ProbeResult(self.name, values, series=series, params=params)

    def _dissect(
        self,
        model: nn.Module,
        layer: str,
        concepts: Any,
        data: ProbeData,
        quantiles: list[float],
        name: str,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(score, label, category)``, each ``(Q, U)``: two passes over the concept images
        (thresholds, then tallies); the first pass's activations are kept for the second when
        they fit in :data:`KEEP_BYTES`."""
        kept: list[Tensor] | None = []
        tq: TopQuantiles | None = None
        for acts, _ in self._activations(model, layer, concepts, data, f"{name} thresholds"):
            if tq is None:
                positions = len(concepts) * acts.shape[2] * acts.shape[3]
                tq = TopQuantiles(acts.shape[1], positions, quantiles)
                per_image = acts[0].numel() * 4
                if per_image * len(concepts) > KEEP_BYTES:
                    kept = None
            tq.update(acts)
            if kept is not None:
                kept.append(acts.float().cpu())
        assert tq is not None
        thresholds = tq.thresholds()  # (Q, U)
        tally = Tally.zeros(len(quantiles), tq.units, len(concepts.labels),
                            len(concepts.categories))  # fmt: skip
        label_category = concepts.label_category
        if kept is not None:
            stream: Iterator[tuple[Tensor, Any]] = zip(kept, concepts.batches(self.batch_size))
        else:
            stream = self._activations(model, layer, concepts, data, f"{name} tallies")
        for acts, batch in stream:
            tally_batch(tally, acts, thresholds, batch.pixels, batch.scalars, label_category,
                        self.images, batch.annotated)  # fmt: skip
        return best_concepts(unit_iou(tally, label_category), label_category)

    def _activations(
        self, model: nn.Module, layer: str, concepts: Any, data: ProbeData, what: str
    ) -> Iterator[tuple[Tensor, Any]]:
        """``(activations (B, U, h, w), concept batch)`` over the concept images."""
        batches = concepts.batches(self.batch_size)
        total = -(-len(concepts) // self.batch_size)
        with FeatureTap(model, [layer], detach=True) as tap, torch.no_grad(), tqdm(
            total=total, desc=f"dissection {what}", file=sys.stderr,
            disable=not self.progress, leave=False,
        ) as bar:  # fmt: skip
            for batch in batches:
                model(model_inputs(batch.images, data.info).to(data.device))
                acts = tap.features[layer]
                if acts.dim() != 4:
                    raise ConfigError(
                        f"dissection.layer {layer!r} gives {tuple(acts.shape[1:])}, not a "
                        "feature map (C, H, W); pick a convolutional layer"
                    )
                yield acts.detach().float().cpu(), batch
                bar.update()


def _discard(root: Path) -> None:
    """Remove a damaged generated set: renamed aside first, so no reader sees it half deleted
    (another process that already moved it leaves nothing to do)."""
    aside = root.with_name(f".{root.name}.{os.getpid()}.damaged")
    try:
        os.replace(root, aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)
