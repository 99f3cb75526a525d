"""Class-similarity probe: how much probability a model spreads over related classes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from distillscope.functional.entropy import category_mask, softmax_entropy
from distillscope.probes.base import Probe, ProbeData, ProbeResult, Roles
from distillscope.probes.sampling import evaluating, forward_all, probe_batches
from distillscope.registry import register_probe

__all__ = ["ClassSimilarityProbe"]


@register_probe("class_similarity")
class ClassSimilarityProbe(Probe):
    """Mean softmax entropy over all classes and within the true class's category.

    Paper 000 (On the Impact of KD for Model Interpretability), section 4.1 and appendix B.3: on
    the samples that *every* probed model classifies correctly,

        entire(f)   = mean_i H(softmax(f(x_i)))
        category(f) = mean_i H(softmax(f(x_i))|_{C(y_i)} renormalised)

    where ``C(y)`` is the set of classes in the category of the true class ``y``
    (``DatasetInfo.categories``) and ``H`` the entropy in nats. A higher category entropy means
    more class-similarity information (the paper finds KD > scratch > label smoothing). Samples
    whose class is in no category, or in a single-class category, count for "entire" only.
    Neither direction is better, hence ``higher_is_better = None``.

    Args:
        batch_size: See :class:`~distillscope.probes.base.Probe`.
        max_samples: See :class:`~distillscope.probes.base.Probe`.
        seed: See :class:`~distillscope.probes.base.Probe`.

    Values: ``"<m>/entire"`` and ``"<m>/category"``. Params: ``n_samples`` (all-correct samples
    used for "entire"), ``n_category_samples`` (those used for "category"); ``skipped`` says why a
    value is missing (no all-correct sample, no category with two classes).
    """

    name = "class_similarity"
    higher_is_better = None

    def run(self, models: Mapping[str, nn.Module], data: ProbeData, roles: Roles) -> ProbeResult:
        names = list(models)
        mask = category_mask(data.info.categories, data.info.num_classes).to(data.device)
        in_category = mask.sum(1) >= 2  # (K,) class has at least one category sibling
        entire = dict.fromkeys(names, 0.0)
        category = dict.fromkeys(names, 0.0)
        n_all = n_cat = n_seen = 0
        with evaluating(models, names, data.device) as active:
            for batch in probe_batches(self, data):
                logits = forward_all(active, batch.inputs)
                y = batch.targets  # (B,)
                correct = torch.stack([z.argmax(1) == y for z in logits.values()]).all(0)  # (B,)
                use_cat = correct & in_category[y]  # (B,)
                for m, z in logits.items():
                    entire[m] += float(softmax_entropy(z[correct]).double().sum())
                    h_cat = softmax_entropy(z[use_cat], mask[y[use_cat]])  # (B_cat,)
                    category[m] += float(h_cat.double().sum())
                n_all += int(correct.sum())
                n_cat += int(use_cat.sum())
                n_seen += len(batch)
        params: dict[str, Any] = {
            **self.base_params(),
            "n_samples": n_all,
            "n_category_samples": n_cat,
            "n_audited": n_seen,
        }
        skipped: dict[str, str] = {}
        values: dict[str, float] = {}
        for m in names:
            if n_all:
                values[f"{m}/entire"] = entire[m] / n_all
            else:
                skipped[f"{m}/entire"] = "no sample is classified correctly by every model"
            if n_cat:
                values[f"{m}/category"] = category[m] / n_cat
            elif not in_category.any():
                skipped[f"{m}/category"] = "the dataset has no category with two or more classes"
            else:
                skipped[f"{m}/category"] = (
                    "no all-correct sample belongs to a category with two or more classes"
                )
        if skipped:
            params["skipped"] = skipped
        return ProbeResult(self.name, values, params=params)
