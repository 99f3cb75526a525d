"""Task probes: top-k accuracy per model and teacher-student agreement per pair."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Unpack

import torch
from torch import nn

from distillscope.checks import check_int
from distillscope.functional.agreement import kl_divergence, top1_match, topk_correct
from distillscope.probes.base import Probe, ProbeData, ProbeParams, ProbeResult, Roles
from distillscope.probes.sampling import evaluating, probe_logits
from distillscope.registry import register_probe

__all__ = ["AccuracyProbe", "AgreementProbe"]


@register_probe("accuracy")
class AccuracyProbe(Probe):
    """Top-1 and top-k accuracy of every model.

    ``acc@k(f) = 1/N sum_i 1[y_i in topk(f(x_i))]``, the first number every paper reports for
    teacher and students (e.g. paper 001, Tables 1-3: top-1 on ImageNet).

    Args:
        topk: The k of the second accuracy; clipped to the number of classes K.
        batch_size: See :class:`~distillscope.probes.base.Probe`.
        max_samples: See :class:`~distillscope.probes.base.Probe`.
        seed: See :class:`~distillscope.probes.base.Probe`.

    Values: ``"<m>/top1"`` and ``"<m>/top<k>"`` (k after clipping; absent when k = 1).
    """

    text = True

    description = (
        "Top-1 and top-k accuracy on the held-out split: how well each model does the task."
    )
    paper = None

    higher_is_better = True

    def __init__(self, topk: int = 5, **base: Unpack[ProbeParams]) -> None:
        super().__init__(**base)
        self.topk = check_int("accuracy.topk", topk)

    def run(self, models: Mapping[str, nn.Module], data: ProbeData, roles: Roles) -> ProbeResult:
        k = min(self.topk, data.info.num_classes)
        top1 = dict.fromkeys(models, 0)
        topk = dict.fromkeys(models, 0)
        n = 0
        with evaluating(models, models, data.device) as active:
            for batch, logits in probe_logits(self, data, active):
                for m, z in logits.items():
                    top1[m] += int(topk_correct(z, batch.targets, 1).sum())
                    topk[m] += int(topk_correct(z, batch.targets, k).sum())
                n += len(batch)
        values: dict[str, float] = {}
        for m in models:
            values[f"{m}/top1"] = top1[m] / n
            if k > 1:
                values[f"{m}/top{k}"] = topk[m] / n
        params = {**self.base_params(), "topk": k, "n_samples": n}
        return ProbeResult(self.name, values, params=params)


@register_probe("agreement")
class AgreementProbe(Probe):
    """Top-1 agreement and KL divergence between every teacher and the models it taught.

    Paper 001 (e2KD), eq. 4: ``Agreement(T, S) = 1/N sum_i 1[argmax T(x_i) = argmax S(x_i)]``;
    also ``KL(T || S) = 1/N sum_i sum_k p_T,k (log p_T,k - log p_S,k)`` in nats, at temperature 1.

    Args:
        batch_size: See :class:`~distillscope.probes.base.Probe`.
        max_samples: See :class:`~distillscope.probes.base.Probe`.
        seed: See :class:`~distillscope.probes.base.Probe`.

    Values: ``"<t>-><m>"`` (agreement) and ``"<t>-><m>/kl"`` for every pair of
    ``roles.pairs()``. Without pairs the values are empty and ``params["skipped"]`` says why.
    """

    text = True

    description = (
        "Share of held-out images on which the model's top-1 class matches its teacher's "
        "(higher = more faithful), and KL(teacher || model) of their outputs in nats "
        "(lower = closer)."
    )
    paper = "001"

    higher_is_better = True
    metric_directions = {"kl": False}

    def run(self, models: Mapping[str, nn.Module], data: ProbeData, roles: Roles) -> ProbeResult:
        pairs = roles.pairs()
        params: dict[str, Any] = self.base_params()
        if not pairs:
            params["skipped"] = {"agreement": "the roles define no (teacher, model) pair"}
            return ProbeResult(self.name, {}, params=params)
        names = list(dict.fromkeys(name for pair in pairs for name in pair))
        match = dict.fromkeys(pairs, 0)
        kl = dict.fromkeys(pairs, 0.0)
        n = 0
        with evaluating(models, names, data.device) as active:
            for batch, logits in probe_logits(self, data, active):
                for t, m in pairs:
                    match[t, m] += int(top1_match(logits[t], logits[m]).sum())
                    kl[t, m] += float(kl_divergence(logits[t], logits[m]).to(torch.float64).sum())
                n += len(batch)
        values: dict[str, float] = {}
        for t, m in pairs:
            values[f"{t}->{m}"] = match[t, m] / n
            values[f"{t}->{m}/kl"] = kl[t, m] / n
        params["n_samples"] = n
        return ProbeResult(self.name, values, params=params)
