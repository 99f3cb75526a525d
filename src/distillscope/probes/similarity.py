"""Class-similarity probe: how much probability a model spreads over related classes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Unpack

import torch
from torch import nn

from distillscope.errors import ConfigError
from distillscope.functional.entropy import category_mask, softmax_entropy
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

__all__ = ["MASK_MODEL_SETS", "ClassSimilarityProbe"]

#: Named model sets for ``mask_models``; the first is the default (paper 000's).
MASK_MODEL_SETS = ("students", "all")


@register_probe("class_similarity")
class ClassSimilarityProbe(Probe):
    """Mean softmax entropy over all classes and within the true class's category.

    Paper 000 (On the Impact of KD for Model Interpretability), section 4.1 and appendix B.3: on
    the samples that *every compared model* classifies correctly,

        entire(f)   = mean_i H(softmax(f(x_i)))
        category(f) = mean_i H(softmax(f(x_i))|_{C(y_i)} renormalised)

    where ``C(y)`` is the set of classes in the category of the true class ``y``
    (``DatasetInfo.categories``) and ``H`` the entropy in nats. A higher category entropy means
    more class-similarity information (the paper finds KD > scratch > label smoothing). Samples
    whose class is in no category, or in a single-class category, count for "entire" only.
    Neither direction is better, hence ``higher_is_better = None``.

    The all-correct mask: paper 000's Table 2 averages "only ... for samples for which all
    models were correct", its models being the three compared students (scratch, KD, LS); the
    teacher is not among them. ``mask_models`` chooses the set: ``"students"`` (default, the
    paper's) = the independent and distilled students of ``roles``; ``"all"`` = every probed
    model, teachers included; or a list of model names. The entropies are reported for every
    probed model (teachers too), on the same masked samples.

    Args:
        mask_models: ``"students"``, ``"all"`` or a non-empty list of model names.
        batch_size: See :class:`~distillscope.probes.base.Probe`.
        max_samples: See :class:`~distillscope.probes.base.Probe`.
        seed: See :class:`~distillscope.probes.base.Probe`.

    Values: ``"<m>/entire"`` and ``"<m>/category"``. Params: ``mask_models`` (as given),
    ``mask_names`` (the models whose correctness the mask used), ``n_samples`` (all-correct
    samples used for "entire"), ``n_category_samples`` (those used for "category"); ``skipped``
    says why a value is missing (no model in the mask set, no all-correct sample, no category
    with two classes).

    Raises:
        ConfigError: ``mask_models`` is neither a known set nor a list of names (at
            construction), or names a model that is not probed (in :meth:`run`).
    """

    description = (
        "Mean softmax entropy over all classes (entire) and within the true class's category "
        "(category), on the samples that every model of the mask classifies correctly (by "
        "default the compared students, as in the paper, not the teacher; see params "
        "mask_names): a higher category entropy means more class-similarity information."
    )
    paper = "000"

    higher_is_better = None
    model_params = {"mask_models": ModelParam()}
    model_sets = MASK_MODEL_SETS

    def __init__(
        self,
        mask_models: str | Sequence[str] = "students",
        **base: Unpack[ProbeParams],
    ) -> None:
        super().__init__(**base)
        self.mask_models = _check_mask_models(mask_models)

    def base_params(self) -> dict[str, Any]:
        return {**super().base_params(), "mask_models": self.mask_models}

    def mask_names(self, names: Sequence[str], roles: Roles) -> list[str]:
        """The probed models whose correctness defines the mask, in ``names`` order.

        Raises:
            ConfigError: A listed name is not among ``names``.
        """
        if self.mask_models == "all":
            return list(names)
        if self.mask_models == "students":
            compared = {*roles.independent, *roles.students}
            return [m for m in names if m in compared]
        unknown = [m for m in self.mask_models if m not in names]
        if unknown:
            raise ConfigError(
                f"class_similarity.mask_models names {unknown} but the probed models are "
                f"{list(names)}; list some of those, or use 'students' or 'all'"
            )
        return [m for m in names if m in self.mask_models]

    def run(self, models: Mapping[str, nn.Module], data: ProbeData, roles: Roles) -> ProbeResult:
        names = list(models)
        judges = self.mask_names(names, roles)
        if not judges:
            reason = (
                "mask_models 'students' names no model: the run has no independent or distilled "
                "student; use mask_models: all (every model, teachers included)"
            )
            skipped = {f"{m}/{part}": reason for m in names for part in ("entire", "category")}
            params = {**self.base_params(), "mask_names": [], "skipped": skipped}
            return ProbeResult(self.name, {}, params=params)
        mask = category_mask(data.info.categories, data.info.num_classes).to(data.device)
        in_category = mask.sum(1) >= 2  # (K,) class has at least one category sibling
        entire = dict.fromkeys(names, 0.0)
        category = dict.fromkeys(names, 0.0)
        n_all = n_cat = n_seen = 0
        with evaluating(models, names, data.device) as active:
            for batch in probe_batches(self, data):
                logits = forward_all(active, batch.inputs)
                y = batch.targets  # (B,)
                correct = torch.stack([logits[m].argmax(1) == y for m in judges]).all(0)  # (B,)
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
            "mask_names": judges,
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
                skipped[f"{m}/entire"] = "no sample is classified correctly by every mask model"
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


def _check_mask_models(value: object) -> str | list[str]:
    """``value`` if it is a known model set or a non-empty list of names, else ConfigError."""
    if isinstance(value, str):
        if value in MASK_MODEL_SETS:
            return value
    elif isinstance(value, Sequence) and value and all(isinstance(v, str) and v for v in value):
        return list(dict.fromkeys(value))
    raise ConfigError(
        f"class_similarity.mask_models={value!r} is invalid; use one of "
        f"{', '.join(MASK_MODEL_SETS)} or a non-empty list of model names"
    )
