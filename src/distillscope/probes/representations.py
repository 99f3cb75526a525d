"""Representation-similarity probe: CKA between a teacher's layers and each student's."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from typing import Any, Unpack

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillscope.checks import check_int, check_positive
from distillscope.errors import ConfigError
from distillscope.functional.cka import (
    MIN_UNBIASED_SAMPLES,
    MinibatchCKA,
    center_gram,
    gram_cka,
    gram_linear,
    gram_rbf,
)
from distillscope.models.taps import FeatureTap, check_module_paths
from distillscope.probes.base import Probe, ProbeData, ProbeParams, ProbeResult, Roles
from distillscope.probes.sampling import evaluating, forward_all, probe_batches
from distillscope.registry import register_probe

__all__ = ["CKA_ESTIMATORS", "MAX_FULL_SAMPLES", "CKAProbe", "pooled_features"]

#: CKA estimators; the first is the default.
CKA_ESTIMATORS = ("linear", "rbf", "debiased", "minibatch")
#: Most samples the full-sample estimators hold (their ``n x n`` Gram matrices, in float64).
MAX_FULL_SAMPLES = 4096

Taps = Mapping[str, FeatureTap]
Pairs = list[tuple[str, str]]
#: ``(teacher, model)`` -> CKA of teacher layer i (row) and model layer j (column).
Matrices = dict[tuple[str, str], list[list[float]]]


def pooled_features(feature: Tensor, max_features: int) -> Tensor:
    """``(B, ...)`` activations as ``(B, D)`` rows, average-pooled when they are large.

    A sample with at most ``max_features`` numbers is flattened as is. A larger ``(B, C, H, W)``
    map is average-pooled to the largest square grid ``s x s`` (at most ``H x W``) with
    ``C s^2 <= max_features`` (``1 x 1`` when ``C`` alone exceeds it); a ``(B, T, D)`` token
    sequence is average-pooled over tokens to ``max(1, max_features // D)`` groups; anything
    else is flattened.

    Example:
        >>> pooled_features(torch.ones(2, 16, 32, 32), 4096).shape  # pooled to 16 x 16
        torch.Size([2, 4096])
        >>> pooled_features(torch.ones(2, 5, 3), 4096).shape
        torch.Size([2, 15])
    """
    if feature[0].numel() <= max_features or feature.ndim not in (3, 4):
        return feature.flatten(1)
    if feature.ndim == 4:
        c, h, w = feature.shape[1:]
        side = max(1, math.isqrt(max(1, max_features // c)))
        return F.adaptive_avg_pool2d(feature, (min(h, side), min(w, side))).flatten(1)
    tokens = max(1, max_features // feature.shape[2])
    return F.adaptive_avg_pool1d(feature.transpose(1, 2), tokens).flatten(1)


@register_probe("cka")
class CKAProbe(Probe):
    """Centred kernel alignment between every teacher layer and every layer of its students.

    Paper 003 (What Knowledge Gets Distilled?), section 4.4 and Fig. 8: a matrix of
    ``CKA(teacher layer i, model layer j)`` over held-out images shows whether a distilled
    student's intermediate representations resemble the teacher's more than an independent
    student's do. CKA (Kornblith et al. 2019, see :mod:`distillscope.functional.cka`):

        CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)),

    with ``K``, ``L`` the Gram matrices of the two layers' activations (one flattened row per
    image), in ``[0, 1]`` (1: the same representation up to rotation and scale).

    Estimators (``estimator``): ``"linear"`` (default, linear kernel, biased HSIC, as paper
    003), ``"rbf"`` (RBF kernel with ``sigma = sigma_fraction`` x the median distance),
    ``"debiased"`` (linear kernel, unbiased HSIC of Song et al. 2012) and ``"minibatch"``
    (Nguyen, Raghu & Kornblith 2021: unbiased linear HSIC averaged over the probe's batches of
    ``batch_size`` images).

    Memory: the three full-sample estimators keep every audited image's activations (on CPU,
    float32) and build ``n x n`` Gram matrices, so ``max_samples`` may not exceed
    :data:`MAX_FULL_SAMPLES`, and activations with more than ``max_features`` numbers per image
    are average-pooled first (:func:`pooled_features`; ours, recorded in
    ``params["feature_dims"]``). The minibatch estimator keeps only ``batch_size x batch_size``
    Gram matrices and never pools, so it suits large maps and many samples.

    The summary value (ours): layers are aligned from the deepest (teacher's last with model's
    last, and so on, ``min(L_t, L_m)`` pairs), and ``"<t>-><m>"`` is the mean CKA over those
    aligned pairs (the ones with a defined value), the diagonal of the matrix when both lists
    have the same length.

    Args:
        layers: Module paths compared on the models (students and independent ones), and on
            the teachers too unless ``teacher_layers`` is given. Default: each model's declared
            ``feature_layers``.
        teacher_layers: Module paths on the teachers; default: ``layers`` if given, else each
            teacher's ``feature_layers``.
        estimator: One of :data:`CKA_ESTIMATORS`.
        sigma_fraction: RBF bandwidth as a fraction of the median distance (``rbf`` only).
        max_features: Numbers per image above which the full-sample estimators pool.
        batch_size: See :class:`~distillscope.probes.base.Probe`; the minibatch size of the
            ``minibatch`` estimator (at least 4; a last batch of fewer than 4 images is left
            out and counted in ``params["n_dropped"]``).
        max_samples: See :class:`~distillscope.probes.base.Probe`.
        seed: See :class:`~distillscope.probes.base.Probe`.

    Values: ``"<t>-><m>/<t_layer>:<m_layer>"`` for every layer pair, and ``"<t>-><m>"`` (the
    aligned mean) for every pair of ``roles.pairs()``. Images: ``"<t>-><m>"`` -> a heat map
    (``{"heatmap": rows x columns, "rows": teacher layers, "columns": model layers, ...}``).
    A value that is undefined (a layer with no variance over the images) is left out and named
    in ``params["skipped"]``.

    Raises:
        ConfigError: An unknown estimator, or a bad number (at construction); a model with
            neither ``layers`` nor declared ``feature_layers`` (in :meth:`run`).
        ModelError: A layer path names no module of a model (in :meth:`run`).
    """

    text = True

    description = (
        "Centred kernel alignment (CKA, Kornblith et al. 2019) between each teacher layer and "
        "each layer of the models it taught, over the held-out images: 1 = the same "
        "representation up to rotation and scale, 0 = unrelated. The heat maps show the whole "
        "teacher-by-model matrix (rows: teacher layers); the main value (ours) is the mean CKA "
        "of the layers aligned from the deepest, the diagonal when both have as many layers. "
        "Estimator per params estimator: linear (default), rbf, debiased (unbiased HSIC) or "
        "minibatch (Nguyen et al. 2021). Full-sample estimators average-pool large maps (ours; "
        "params feature_dims). Higher is not better by itself: it says how much of the "
        "teacher's representation a model shares."
    )
    paper = "003"

    higher_is_better = None

    def __init__(
        self,
        layers: Sequence[str] | None = None,
        teacher_layers: Sequence[str] | None = None,
        estimator: str = "linear",
        sigma_fraction: float = 0.5,
        max_features: int = 4096,
        **base: Unpack[ProbeParams],
    ) -> None:
        super().__init__(**base)
        self.layers = _check_layers("cka.layers", layers)
        self.teacher_layers = _check_layers("cka.teacher_layers", teacher_layers)
        if not isinstance(estimator, str) or estimator not in CKA_ESTIMATORS:
            raise ConfigError(
                f"cka.estimator={estimator!r} is unknown; use one of {', '.join(CKA_ESTIMATORS)}"
            )
        self.estimator = estimator
        self.sigma_fraction = check_positive("cka.sigma_fraction", sigma_fraction)
        self.max_features = check_int("cka.max_features", max_features)
        if estimator == "minibatch":
            check_int("cka.batch_size", self.batch_size, minimum=MIN_UNBIASED_SAMPLES)
        elif self.max_samples > MAX_FULL_SAMPLES:
            raise ConfigError(
                f"cka.max_samples={self.max_samples} is too many for the {estimator} estimator "
                f"(n x n Gram matrices, at most {MAX_FULL_SAMPLES}); lower it or use "
                "estimator: minibatch"
            )

    def base_params(self) -> dict[str, Any]:
        return {
            **super().base_params(),
            "layers": self.layers,
            "teacher_layers": self.teacher_layers,
            "estimator": self.estimator,
            "sigma_fraction": self.sigma_fraction,
            "max_features": self.max_features,
        }

    def layers_of(self, name: str, model: nn.Module, teacher: bool) -> list[str]:
        """The module paths compared on ``model``.

        Raises:
            ConfigError: No paths are given and the model declares no ``feature_layers``.
        """
        given = (self.teacher_layers or self.layers) if teacher else self.layers
        paths = given or list(getattr(model, "feature_layers", None) or [])
        if not paths:
            which = "cka.teacher_layers or cka.layers" if teacher else "cka.layers"
            raise ConfigError(
                f"cka: model {name!r} ({type(model).__name__}) declares no feature_layers; "
                f"give {which} (module paths)"
            )
        return paths

    def check_models(self, models: Mapping[str, nn.Module], roles: Roles) -> None:
        """Every layer path compared must name a module of its model."""
        teachers = {t for t, _ in roles.pairs()}
        for name in dict.fromkeys(n for pair in roles.pairs() for n in pair):
            if name in models:
                model = models[name]
                check_module_paths(model, self.layers_of(name, model, name in teachers))

    def run(self, models: Mapping[str, nn.Module], data: ProbeData, roles: Roles) -> ProbeResult:
        pairs = roles.pairs()
        params: dict[str, Any] = self.base_params()
        if not pairs:
            params["skipped"] = {"cka": "the roles define no (teacher, model) pair"}
            return ProbeResult(self.name, {}, params=params)
        teachers = {t for t, _ in pairs}
        names = list(dict.fromkeys(name for pair in pairs for name in pair))
        with evaluating(models, names, data.device) as active, ExitStack() as stack:
            paths = {m: self.layers_of(m, active[m], m in teachers) for m in names}
            taps = {
                m: stack.enter_context(FeatureTap(active[m], paths[m], detach=True)) for m in names
            }
            compute = self._minibatch if self.estimator == "minibatch" else self._full
            matrices, counts = compute(taps, pairs, data)
        params["feature_dims"] = counts.pop("dims")
        params.update(counts)
        values: dict[str, float] = {}
        images: dict[str, Any] = {}
        skipped: dict[str, str] = {}
        for t, m in pairs:
            matrix = matrices[t, m]  # (L_t, L_m)
            rows, cols = paths[t], paths[m]
            for i, tl in enumerate(rows):
                for j, ml in enumerate(cols):
                    key = f"{t}->{m}/{tl}:{ml}"
                    if math.isfinite(matrix[i][j]):
                        values[key] = matrix[i][j]
                    else:
                        skipped[key] = "a layer has no variance over the audited images"
            k = min(len(rows), len(cols))
            aligned = [matrix[len(rows) - k + a][len(cols) - k + a] for a in range(k)]
            finite = [v for v in aligned if math.isfinite(v)]
            if finite:
                values[f"{t}->{m}"] = sum(finite) / len(finite)
            else:
                skipped[f"{t}->{m}"] = "no aligned layer pair has a defined CKA"
            images[f"{t}->{m}"] = {
                "heatmap": [[v if math.isfinite(v) else None for v in row] for row in matrix],
                "rows": list(rows),
                "columns": list(cols),
                "row_label": t,
                "column_label": m,
                "aligned": [[len(rows) - k + a, len(cols) - k + a] for a in range(k)],
            }
        if skipped:
            params["skipped"] = skipped
        return ProbeResult(self.name, values, params=params, images=images)

    def _full(self, taps: Taps, pairs: Pairs, data: ProbeData) -> tuple[Matrices, dict]:
        """CKA matrices from every audited image's (pooled) activations at once."""
        models = {m: tap.model for m, tap in taps.items()}
        paths = {m: list(tap.paths) for m, tap in taps.items()}
        stored: dict[str, dict[str, list[Tensor]]] = {m: {p: [] for p in paths[m]} for m in taps}
        n = 0
        for batch in probe_batches(self, data):
            forward_all(models, batch.inputs)  # the taps record the features
            for m, tap in taps.items():
                for p, f in tap.features.items():
                    stored[m][p].append(pooled_features(f, self.max_features).float().cpu())
            n += len(batch)
        minimum = MIN_UNBIASED_SAMPLES if self.estimator == "debiased" else 2
        if n < minimum:
            raise ConfigError(
                f"cka: {n} audited image(s), the {self.estimator} estimator needs {minimum}; "
                "raise cka.max_samples or use a larger held-out split"
            )
        dims: dict[str, dict[str, int]] = {}
        grams: dict[tuple[str, str], Tensor] = {}
        for m, layers in stored.items():
            dims[m] = {}
            for p, chunks in layers.items():
                x = torch.cat(chunks)  # (n, D)
                dims[m][p] = x.shape[1]
                gram = (
                    gram_rbf(x, self.sigma_fraction) if self.estimator == "rbf" else gram_linear(x)
                )
                grams[m, p] = center_gram(gram, unbiased=self.estimator == "debiased")
                layers[p] = []  # free the features
        matrices = {
            (t, m): [[gram_cka(grams[t, tl], grams[m, ml]) for ml in paths[m]] for tl in paths[t]]
            for t, m in pairs
        }
        return matrices, {"n_samples": n, "dims": dims}

    def _minibatch(self, taps: Taps, pairs: Pairs, data: ProbeData) -> tuple[Matrices, dict]:
        """CKA matrices accumulated batch by batch (Nguyen et al. 2021)."""
        models = {m: tap.model for m, tap in taps.items()}
        paths = {m: list(tap.paths) for m, tap in taps.items()}
        accs = {(t, m): [[MinibatchCKA() for _ in paths[m]] for _ in paths[t]] for t, m in pairs}
        dims: dict[str, dict[str, int]] = {}
        n = dropped = 0
        for batch in probe_batches(self, data):
            forward_all(models, batch.inputs)
            if len(batch) < MIN_UNBIASED_SAMPLES:
                dropped += len(batch)
                continue
            grams: dict[tuple[str, str], Tensor] = {}
            for m, tap in taps.items():
                for p, f in tap.features.items():
                    flat = f.flatten(1)  # (B, D)
                    dims.setdefault(m, {})[p] = flat.shape[1]
                    grams[m, p] = gram_linear(flat)  # (B, B) float64
            for t, m in pairs:
                for i, tl in enumerate(paths[t]):
                    for j, ml in enumerate(paths[m]):
                        accs[t, m][i][j].update_grams(grams[t, tl], grams[m, ml])
            n += len(batch)
        if n == 0:
            raise ConfigError(
                f"cka: no batch of at least {MIN_UNBIASED_SAMPLES} images for the minibatch "
                "estimator; raise cka.max_samples or cka.batch_size"
            )
        matrices = {
            pair: [[acc.compute() for acc in row] for row in grid] for pair, grid in accs.items()
        }
        return matrices, {"n_samples": n, "n_dropped": dropped, "dims": dims}


def _check_layers(name: str, value: object) -> list[str] | None:
    """``value`` as a list of module paths, ``None`` if not given; ConfigError otherwise."""
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise ConfigError(f"{name}={value!r} is invalid; use a non-empty list of module paths")
    if not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{name}={value!r} is invalid; every entry must be a module path")
    return list(dict.fromkeys(value))
