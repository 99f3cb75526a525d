"""Explanation probes: how closely a model's attributions follow its teacher's."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Unpack

import torch
from torch import Tensor, nn

from distillscope.checks import check_int
from distillscope.errors import ConfigError
from distillscope.explain.attribution import (
    IG_STEPS,
    METHODS,
    attribute,
)
from distillscope.functional.similarity import cosine_parts, flat_cosine, pooled_cosine
from distillscope.probes.base import Probe, ProbeData, ProbeParams, ProbeResult, Roles
from distillscope.probes.sampling import evaluating, probe_batches
from distillscope.registry import EXPLAINERS, register_probe

__all__ = ["AGGREGATES", "DEFAULT_METHODS", "PRESETS", "AdherenceProbe"]

#: Methods compared unless the config names others.
DEFAULT_METHODS = ("saliency", "integrated_gradients", "gradcam")
#: How the per-sample maps are turned into one number per pair.
AGGREGATES = ("image", "batch")
#: Images per flattened group with ``aggregate: batch``: 100, the authors' batch size.
AGGREGATE_BATCH = 100
#: Settings that reproduce a paper's definition exactly (checked against the authors' code).
PRESETS: dict[str, dict[str, Any]] = {
    "paper004": {
        "methods": ["saliency", "integrated_gradients", "guided_gradcam"],
        "ig_steps": 50,
        "aggregate": "batch",
        "aggregate_batch": 100,
    },
}
_DEFAULTS: dict[str, Any] = {
    "methods": list(DEFAULT_METHODS),
    "ig_steps": IG_STEPS,
    "aggregate": "image",
    "aggregate_batch": AGGREGATE_BATCH,
}

Pair = tuple[str, str, str]  # (teacher, model, method)


@register_probe("adherence")
class AdherenceProbe(Probe):
    """Attribution adherence: cosine between teacher and model attributions, per method.

    Paper 004 (Trustworthy Distillation?), sections 4.2 and 5.2.3: "the normalized Hadamard
    product sum (effectively a kind of cosine-similarity)" between student and teacher
    attributions ``E``, with two ways to aggregate over the ``N`` audited images:

    * ``aggregate: image`` (default): the mean of per-image cosines,

          adherence(T, S) = 1/N sum_i <E_T(x_i), E_S(x_i)> / (||E_T(x_i)|| ||E_S(x_i)||),

      each image weighing the same (each map is rescaled by its largest value first, so the
      tiny gradients of saturated models do not underflow).
    * ``aggregate: batch``: what the authors' published code computes. The images are taken in
      consecutive groups ``G`` of ``aggregate_batch`` (100, their batch size); each group's maps
      are flattened into one vector, and the cosines are averaged over groups (a shorter last
      group counts as one group):

          adherence(T, S) = 1/|groups| sum_G <E_T(x_G), E_S(x_G)> / (||E_T(x_G)|| ||E_S(x_G)||).

      Images with larger attributions weigh more. Sums are kept in float64.

    Methods (:mod:`distillscope.explain`): ``saliency`` = ``|d z_y / d x|``;
    ``integrated_gradients`` (zero baseline in model-input space, ``ig_steps`` = 50
    Gauss-Legendre points); ``gradcam`` = in-house GradCAM on ``model.cam_layer`` (ReLU-ed,
    bilinear, one channel, in ``[0, 1]``);
    ``guided_gradcam`` = guided backprop times the nearest-upsampled ReLU GradCAM of
    ``model.cam_layer`` (captum's ``GuidedGradCam``; signed, shaped like the input); ``bcos`` =
    a B-cos model's dynamic weights ``W(x)`` (paper 001's B-cos explanation, signed). Cosines of
    non-negative maps lie in ``[0, 1]``; of signed ones (IG, Guided Grad-CAM) in ``[-1, 1]``,
    not rescaled.

    ``preset: paper004`` reproduces the paper's definition: its "GradCAM" column is captum's
    Guided Grad-CAM on the last conv block, and its code (Explainability notebooks) uses captum's
    defaults: ``Saliency`` with ``abs=True``, ``IntegratedGradients`` with a zero baseline on the
    normalised input and 50 steps, attributions of the *ground-truth* label, cosine over
    flattened batches of 100. So the preset sets ``methods = [saliency, integrated_gradients,
    guided_gradcam]``, ``aggregate = batch``, ``aggregate_batch = 100``, ``ig_steps = 50``; a
    conflicting explicit value is an error. The paper audits 1,000 CIFAR-10 test images (10
    batches) and 100 TSRD ones: set ``max_samples`` accordingly.

    Both models always explain the *ground-truth* class: the same target for teacher and
    student, so the maps answer the same question even where the two disagree (paper 003, 4.1
    does the same; e2KD trains on the teacher's class instead, which would favour students that
    agree).

    Args:
        methods: Attribution methods, a subset of :data:`~distillscope.explain.METHODS`;
            default :data:`DEFAULT_METHODS`.
        ig_steps: Integrated Gradients path points (default 50, captum's default).
        aggregate: ``"image"`` (default) or ``"batch"``, see above.
        aggregate_batch: Images per group with ``aggregate: batch`` (default 100).
        preset: None or a key of :data:`PRESETS` (``"paper004"``).
        batch_size: See :class:`~distillscope.probes.base.Probe`; also the number of IG path
            points per forward pass. Independent of ``aggregate_batch``.
        max_samples: See :class:`~distillscope.probes.base.Probe`.
        seed: See :class:`~distillscope.probes.base.Probe`.

    Values: ``"<t>-><m>/<method>"`` for every pair of ``roles.pairs()``. GradCAM and Guided
    Grad-CAM entries are skipped, with the reason in ``params["skipped"]``, when either model
    has no ``cam_layer`` or the inputs are not images; ``bcos`` entries when either model is
    not a B-cos network.
    """

    description = (
        "Cosine similarity between the teacher's and the model's attributions of the true "
        "class: saliency (absolute input gradient), Integrated Gradients (zero baseline; signed, "
        "so in [-1, 1]), GradCAM (per image) and guided_gradcam (captum-style Guided Grad-CAM: "
        "guided backpropagation times a nearest-upsampled ReLU GradCAM of the last conv block, "
        "paper 004's GradCAM column) and bcos (a B-cos model's dynamic weights W(x), signed: the "
        "explanation e2KD distils between B-cos models, paper 001)."
    )
    paper = "004"

    higher_is_better = True

    def __init__(
        self,
        methods: Sequence[str] | None = None,
        ig_steps: int | None = None,
        aggregate: str | None = None,
        aggregate_batch: int | None = None,
        preset: str | None = None,
        **base: Unpack[ProbeParams],
    ) -> None:
        super().__init__(**base)
        given = {
            "methods": None if methods is None else _method_list(methods),
            "ig_steps": ig_steps,
            "aggregate": aggregate,
            "aggregate_batch": aggregate_batch,
        }
        if preset is not None and (not isinstance(preset, str) or preset not in PRESETS):
            raise ConfigError(
                f"adherence.preset={preset!r} is unknown; use one of {', '.join(PRESETS)} or none"
            )
        base = _DEFAULTS if preset is None else PRESETS[preset]
        for key, value in given.items():
            if preset is not None and value is not None and value != base[key]:
                raise ConfigError(
                    f"adherence.{key}={value!r} conflicts with adherence.preset={preset!r}, which "
                    f"sets {key}={base[key]!r}; drop one of them"
                )
        chosen = {key: base[key] if value is None else value for key, value in given.items()}
        self.preset = preset
        self.methods: list[str] = list(chosen["methods"])
        self.ig_steps = check_int("adherence.ig_steps", chosen["ig_steps"])
        if chosen["aggregate"] not in AGGREGATES:
            raise ConfigError(
                f"adherence.aggregate={chosen['aggregate']!r} is invalid; use "
                f"{' or '.join(AGGREGATES)}"
            )
        self.aggregate: str = chosen["aggregate"]
        if aggregate_batch is not None and self.aggregate != "batch":
            raise ConfigError(
                f"adherence.aggregate_batch={aggregate_batch!r} needs adherence.aggregate: batch; "
                "set it or drop aggregate_batch"
            )
        self.aggregate_batch = check_int("adherence.aggregate_batch", chosen["aggregate_batch"])

    def run(self, models: Mapping[str, nn.Module], data: ProbeData, roles: Roles) -> ProbeResult:
        params: dict[str, Any] = {
            **self.base_params(),
            "methods": self.methods,
            "ig_steps": self.ig_steps,
            "ig_baseline": 0.0,
            "target": "ground_truth",
            "aggregate": self.aggregate,
        }
        if self.aggregate == "batch":
            params["aggregate_batch"] = self.aggregate_batch
        if self.preset is not None:
            params["preset"] = self.preset
        pairs = roles.pairs()
        if not pairs:
            params["skipped"] = {"adherence": "the roles define no (teacher, model) pair"}
            return ProbeResult(self.name, {}, params=params)
        names = list(dict.fromkeys(name for pair in pairs for name in pair))
        skipped: dict[str, str] = {}
        jobs: dict[str, list[tuple[str, str]]] = {}  # method -> pairs it is computed for
        for method in self.methods:
            jobs[method] = []
            for t, m in pairs:
                reason = self._cannot(method, models, (t, m), data)
                if reason:
                    skipped[f"{t}->{m}/{method}"] = reason
                else:
                    jobs[method].append((t, m))
        keys = [(t, m, method) for method, todo in jobs.items() for t, m in todo]
        acc = (
            _ImageMean(keys)
            if self.aggregate == "image"
            else _GroupMean(keys, self.aggregate_batch)
        )
        with evaluating(models, names, data.device) as active:
            for batch in probe_batches(self, data):
                parts: dict[Pair, Tensor] = {}
                for method, todo in jobs.items():
                    needed = dict.fromkeys(name for pair in todo for name in pair)
                    maps = {  # each model explained once per batch, shared across its pairs
                        name: attribute(
                            active[name],
                            batch.inputs,
                            batch.targets,
                            method,
                            n_steps=self.ig_steps,
                            internal_batch_size=self.batch_size,
                        )
                        for name in needed
                    }
                    for t, m in todo:
                        parts[t, m, method] = acc.parts(maps[t], maps[m])
                acc.add(parts, len(batch))
        values = {f"{t}->{m}/{method}": value for (t, m, method), value in acc.result().items()}
        params["n_samples"] = acc.n
        if self.aggregate == "batch":
            params["n_groups"] = acc.n_groups
        if skipped:
            params["skipped"] = skipped
        return ProbeResult(self.name, values, params=params)

    @staticmethod
    def _cannot(
        method: str, models: Mapping[str, nn.Module], pair: tuple[str, str], data: ProbeData
    ) -> str | None:
        """Why ``method`` cannot compare the two models of ``pair``, or None when it can
        (what the method needs is declared by its explainer)."""
        explainer = EXPLAINERS.get(method)
        if explainer.needs_images and not data.info.is_image:
            return f"{explainer.label} needs image inputs"
        for name in pair:
            missing = explainer.lacks(models[name]) if name in models else None
            if missing is not None:
                return f"model {name!r} {missing}"
        return None


def _method_list(methods: Sequence[str]) -> list[str]:
    """``methods`` without duplicates, or :class:`ConfigError` when it is not a valid subset."""
    if (
        not isinstance(methods, (list, tuple))
        or not methods
        or any(m not in METHODS for m in methods)
    ):
        raise ConfigError(
            f"adherence.methods={methods!r} is invalid; use a non-empty list, a subset of "
            f"{', '.join(METHODS)}"
        )
    return list(dict.fromkeys(methods))


class _ImageMean:
    """Mean over images of the per-image cosine; one running sum per key."""

    def __init__(self, keys: Sequence[Pair]) -> None:
        self.sums = dict.fromkeys(keys, 0.0)
        self.n = 0

    @staticmethod
    def parts(a: Tensor, b: Tensor) -> Tensor:
        return flat_cosine(a, b).double()  # (B,)

    def add(self, parts: Mapping[Pair, Tensor], n: int) -> None:
        for key, cos in parts.items():
            self.sums[key] += float(cos.sum())
        self.n += n

    def result(self) -> dict[Pair, float]:
        return {key: total / self.n for key, total in self.sums.items()}


class _GroupMean:
    """Mean over groups of ``size`` consecutive images of their pooled (flattened) cosine.

    Fixed-size state: per key, the three running sums of the open group and the sum of the
    closed groups' cosines.
    """

    def __init__(self, keys: Sequence[Pair], size: int) -> None:
        self.size = size
        self.open = {key: torch.zeros(3, dtype=torch.float64) for key in keys}
        self.sums = dict.fromkeys(keys, 0.0)
        self.filled = 0  # images in the open group
        self.n = 0
        self.n_groups = 0

    @staticmethod
    def parts(a: Tensor, b: Tensor) -> Tensor:
        return cosine_parts(a, b).cpu()  # (B, 3)

    def add(self, parts: Mapping[Pair, Tensor], n: int) -> None:
        start = 0
        while start < n:
            stop = min(n, start + self.size - self.filled)
            for key, p in parts.items():
                self.open[key] += p[start:stop].sum(0)
            self.filled += stop - start
            start = stop
            if self.filled == self.size:
                self._close()
        self.n += n

    def _close(self) -> None:
        for key, sums in self.open.items():
            self.sums[key] += float(pooled_cosine(sums[None]))
            sums.zero_()
        self.filled = 0
        self.n_groups += 1

    def result(self) -> dict[Pair, float]:
        if self.filled:
            self._close()  # the shorter last group
        return {key: total / self.n_groups for key, total in self.sums.items()}
