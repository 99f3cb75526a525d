"""Explanation probes: how closely a model's attributions follow its teacher's."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from distillscope.checks import check_int
from distillscope.errors import ConfigError
from distillscope.explain.attribution import IG_STEPS, METHODS, attribute
from distillscope.functional.similarity import flat_cosine
from distillscope.probes.base import Probe, ProbeData, ProbeResult, Roles
from distillscope.probes.sampling import evaluating, probe_batches
from distillscope.registry import register_probe

__all__ = ["AdherenceProbe"]


@register_probe("adherence")
class AdherenceProbe(Probe):
    """Attribution adherence: cosine between teacher and model attributions, per method.

    Paper 004 (Trustworthy Distillation?), section 4.2 and 5.2.3: "the normalized Hadamard
    product sum (effectively a kind of cosine-similarity)" between student and teacher
    attributions, averaged over test images:

        adherence(T, S) = 1/N sum_i <E_T(x_i), E_S(x_i)> / (||E_T(x_i)|| ||E_S(x_i)||)

    with ``E`` = absolute saliency, Integrated Gradients (zero baseline in model-input space,
    50 steps) or GradCAM on ``model.cam_layer`` (see :mod:`distillscope.explain`). Saliency and
    GradCAM maps are non-negative, so their adherence lies in ``[0, 1]``; Integrated Gradients are
    signed and their adherence is the plain cosine in ``[-1, 1]`` (not rescaled).

    Both models explain the *ground-truth* class: the same target for teacher and student, so
    the maps answer the same question even where the two disagree (paper 003, 4.1 does the same;
    e2KD trains on the teacher's class instead, which would favour students that agree).

    Args:
        methods: Attribution methods, a subset of ``("saliency", "integrated_gradients",
            "gradcam")``.
        ig_steps: Integrated Gradients path points (SPEC section 2: 50).
        batch_size: See :class:`~distillscope.probes.base.Probe`; also the number of IG path
            points per forward pass.
        max_samples: See :class:`~distillscope.probes.base.Probe`.
        seed: See :class:`~distillscope.probes.base.Probe`.

    Values: ``"<t>-><m>/<method>"`` for every pair of ``roles.pairs()``. GradCAM entries are
    skipped, with the reason in ``params["skipped"]``, when either model has no ``cam_layer`` or
    the inputs are not images.
    """

    name = "adherence"
    higher_is_better = True

    def __init__(
        self,
        methods: Sequence[str] = METHODS,
        ig_steps: int = IG_STEPS,
        batch_size: int = 256,
        max_samples: int = 1000,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, max_samples, seed)
        unknown = [m for m in methods if m not in METHODS]
        if unknown or not methods:
            raise ConfigError(
                f"adherence.methods={list(methods)!r} is invalid; use a non-empty subset of "
                f"{', '.join(METHODS)}"
            )
        self.methods = list(dict.fromkeys(methods))
        self.ig_steps = check_int("adherence.ig_steps", ig_steps)

    def run(self, models: Mapping[str, nn.Module], data: ProbeData, roles: Roles) -> ProbeResult:
        params: dict[str, Any] = {
            **self.base_params(),
            "methods": self.methods,
            "ig_steps": self.ig_steps,
            "ig_baseline": 0.0,
            "target": "ground_truth",
        }
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
        sums = {(t, m, method): 0.0 for method, todo in jobs.items() for t, m in todo}
        n = 0
        with evaluating(models, names, data.device) as active:
            for batch in probe_batches(self, data):
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
                        sums[t, m, method] += float(flat_cosine(maps[t], maps[m]).double().sum())
                n += len(batch)
        values = {f"{t}->{m}/{method}": total / n for (t, m, method), total in sums.items()}
        params["n_samples"] = n
        if skipped:
            params["skipped"] = skipped
        return ProbeResult(self.name, values, params=params)

    @staticmethod
    def _cannot(
        method: str, models: Mapping[str, nn.Module], pair: tuple[str, str], data: ProbeData
    ) -> str | None:
        """Why ``method`` cannot compare the two models of ``pair``, or None when it can."""
        if method != "gradcam":
            return None
        if not data.info.is_image:
            return "GradCAM needs image inputs"
        for name in pair:
            if name in models and getattr(models[name], "cam_layer", None) is None:
                return f"model {name!r} has no cam_layer"
        return None
