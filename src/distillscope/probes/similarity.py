"""Class-similarity probe: how much probability a model spreads over related classes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Unpack

import torch
from torch import nn

from distillscope.errors import ConfigError
from distillscope.functional.entropy import (
    category_mask,
    class_output_sums,
    pooled_category_entropy,
    softmax_entropy,
)
from distillscope.probes.base import (
    ModelParam,
    Probe,
    ProbeData,
    ProbeParams,
    ProbeResult,
    Roles,
)
from distillscope.probes.sampling import evaluating, probe_logits
from distillscope.registry import register_probe

__all__ = ["CATEGORY_ENTROPIES", "MASK_MODEL_SETS", "ClassSimilarityProbe"]

#: Named model sets for ``mask_models``; the first is the default (paper 000's).
MASK_MODEL_SETS = ("students", "all")
#: Definitions of the category entropy; the first is the default (our reading of paper 000).
CATEGORY_ENTROPIES = ("pooled", "per_sample")


@register_probe("class_similarity")
class ClassSimilarityProbe(Probe):
    """Softmax entropy over all classes, and entropy within the true class's category.

    Paper 000 (On the Impact of KD for Model Interpretability), section 4.1, Table 2 and
    appendix B.3: on the samples that *every compared model* classifies correctly,

        entire(f) = mean_i H(softmax(f(x_i)))

    and, by ``category_entropy``, with ``C(y)`` the classes in the category of the true class
    ``y`` (``DatasetInfo.categories``), ``S_C`` the samples whose true class has category ``C``
    and ``H`` the entropy in nats:

    - ``"pooled"`` (default; our reading of the paper, which gives no formula):
      ``category(f) = mean_i H(q_{C(y_i)})`` with ``q_C`` the mean of ``softmax(f(x_j))|_C``
      over ``j in S_C``, normalised (:func:`~distillscope.functional.pooled_category_entropy`).
      Each sample counts its category's value, so categories weigh by their sample counts.
      Table 2's numbers (entire 0.49, category 2.90) rule out any per-sample mean.
    - ``"per_sample"`` (ours): ``category(f) = mean_i H(softmax(f(x_i))|_{C(y_i)} renormalised)``.

    A higher category entropy means more class-similarity information (the paper finds KD >
    scratch > label smoothing). The pooled value depends on which classes the samples cover: on a
    held-out set with every class of a category equally present, a confident correct model
    scores ``log |C|``, the maximum. Samples whose class is in no category, or in a single-class
    category, count for "entire" only. Neither direction is better, hence
    ``higher_is_better = None``.

    The all-correct mask: paper 000's Table 2 averages "only ... for samples for which all
    models were correct", its models being the three compared students (scratch, KD, LS); the
    teacher is not among them. ``mask_models`` chooses the set: ``"students"`` (default, the
    paper's) = the independent and distilled students of ``roles``; ``"all"`` = every probed
    model, teachers included; or a list of model names. The entropies are reported for every
    probed model (teachers too), on the same masked samples.

    Args:
        category_entropy: ``"pooled"`` (default, the paper's as we read it) or ``"per_sample"``
            (ours).
        mask_models: ``"students"``, ``"all"`` or a non-empty list of model names.
        batch_size: See :class:`~distillscope.probes.base.Probe`.
        max_samples: See :class:`~distillscope.probes.base.Probe`.
        seed: See :class:`~distillscope.probes.base.Probe`.

    Values: ``"<m>/entire"`` and ``"<m>/category"``. Params: ``category_entropy``,
    ``mask_models`` (as given),
    ``mask_names`` (the models whose correctness the mask used), ``n_samples`` (all-correct
    samples used for "entire"), ``n_category_samples`` (those used for "category"); ``skipped``
    says why a value is missing (no model in the mask set, no all-correct sample, no category
    with two classes).

    Raises:
        ConfigError: ``category_entropy`` is not a known definition, or ``mask_models`` is
            neither a known set nor a list of names (at construction), or names a model that is
            not probed (in :meth:`run`).
    """

    text = True

    description = (
        "Softmax entropy over all classes (entire, mean over samples) and within the true "
        "class's category (category), on the samples that every model of the mask classifies "
        "correctly (by default the compared students, as in the paper, not the teacher; see "
        "params mask_names). Category entropy per params category_entropy: 'pooled' (default, "
        "our reading of the paper, whose Table 2 rules out a per-sample mean) is the entropy of "
        "the model's mean output over each category's samples, restricted to the category; "
        "'per_sample' (ours) is the mean of per-sample entropies of the softmax renormalised "
        "over the category. A higher category entropy means more class-similarity information; "
        "the pooled value also depends on which classes of a category the samples cover."
    )
    paper = "000"

    higher_is_better = None
    model_params = {"mask_models": ModelParam()}
    model_sets = MASK_MODEL_SETS

    def __init__(
        self,
        mask_models: str | Sequence[str] = "students",
        category_entropy: str = "pooled",
        **base: Unpack[ProbeParams],
    ) -> None:
        super().__init__(**base)
        self.mask_models = _check_mask_models(mask_models)
        if not isinstance(category_entropy, str) or category_entropy not in CATEGORY_ENTROPIES:
            raise ConfigError(
                f"class_similarity.category_entropy={category_entropy!r} is unknown; use one of "
                f"{', '.join(CATEGORY_ENTROPIES)}"
            )
        self.category_entropy = category_entropy

    def base_params(self) -> dict[str, Any]:
        return {
            **super().base_params(),
            "mask_models": self.mask_models,
            "category_entropy": self.category_entropy,
        }

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
        num_classes = data.info.num_classes
        entire = dict.fromkeys(names, 0.0)
        category = dict.fromkeys(names, 0.0)  # per_sample: summed entropies
        pooled = self.category_entropy == "pooled"
        shape = (num_classes, num_classes) if pooled else (0, 0)  # pooled: summed outputs
        sums = {m: torch.zeros(shape, dtype=torch.float64) for m in names}
        counts = torch.zeros(num_classes, dtype=torch.long)  # (K,) category samples per class
        n_all = n_cat = n_seen = 0
        with evaluating(models, names, data.device) as active:
            for batch, logits in probe_logits(self, data, active):
                y = batch.targets  # (B,)
                correct = torch.stack([logits[m].argmax(1) == y for m in judges]).all(0)  # (B,)
                use_cat = correct & in_category[y]  # (B,)
                y_cat = y[use_cat]  # (B_cat,)
                for m, z in logits.items():
                    entire[m] += float(softmax_entropy(z[correct]).double().sum())
                    if not pooled:
                        h_cat = softmax_entropy(z[use_cat], mask[y_cat])  # (B_cat,)
                        category[m] += float(h_cat.double().sum())
                    else:
                        p_cat = torch.softmax(z[use_cat].double(), dim=-1)  # (B_cat, K)
                        s, _ = class_output_sums(p_cat, y_cat, num_classes)
                        sums[m] += s.cpu()
                counts += torch.bincount(y_cat, minlength=num_classes).cpu()
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
        if pooled and n_cat:
            cat_mask = mask.cpu()
            for m in names:
                h = pooled_category_entropy(sums[m], counts, cat_mask)  # (K,), NaN: unused
                used = counts > 0
                category[m] = float((h[used] * counts[used]).sum())  # mean_i below
            params["n_categories"] = int(torch.unique(cat_mask[counts > 0], dim=0).shape[0])
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
