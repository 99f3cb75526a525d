"""Grad-CAM similarity %: is the teacher's CAM closer to the distilled student's? (paper 003 4.1)"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import combinations
from typing import Any, Unpack

import torch
from torch import nn

from distillscope.explain.maps import check_map_method, explanation_maps
from distillscope.functional.explanation_metrics import closer_votes
from distillscope.probes.base import Probe, ProbeData, ProbeParams, ProbeResult, Roles
from distillscope.probes.explained import check_choice, unexplainable
from distillscope.probes.sampling import evaluating, probe_batches
from distillscope.registry import register_probe

__all__ = ["SHARED_TARGETS", "CamSimilarityProbe"]

#: The class every model explains: the label (paper 003), or the teacher's top-1 (e2KD's y_T).
SHARED_TARGETS = ("ground_truth", "teacher")

Triple = tuple[str, str, str]  # (teacher, candidate, baseline)


@register_probe("cam_similarity")
class CamSimilarityProbe(Probe):
    """Share of images where the teacher's Grad-CAM is closer to the distilled student's CAM
    than to the independent student's.

    Paper 003 (What Knowledge Gets Distilled?), 4.1: for each image, the CAMs of the
    ground-truth class of the teacher ``T``, the distilled student ``D`` and the independent
    student ``I`` (Grad-CAM, Selvaraju et al.); the score is "how often (in terms of % of test
    images) the teacher's CAM is more similar (using cosine similarity) to the distilled
    student's CAM than to the independent student's":

        score(T; D, I) = 1/N sum_i 1[cos(C_T(x_i), C_D(x_i)) > cos(C_T(x_i), C_I(x_i))],

    cosine over the flattened maps (see
    :func:`~distillscope.functional.similarity.flat_cosine`). 0.5 is chance; above it, the
    distilled student looks where its teacher looks more often than a student trained alone.
    An exact tie counts 1/2 (ours; the paper does not say). The sanity check of the paper: two
    independent students ``A`` and ``B`` (e.g. two seeds) are equally distant from the teacher,
    so ``score(T; A, B)`` must come out near 0.5. This is a share of images, not the mean
    cosine of the ``adherence`` probe.

    Args:
        method: Explanation method, see :func:`~distillscope.explain.maps.explanation_maps`;
            default ``gradcam`` (the paper's). ``auto`` explains B-cos models with their own
            maps.
        target: ``ground_truth`` (default, the paper's) or ``teacher`` (the teacher's top-1
            class, e2KD's training target); every model of a triple explains the same class.
        batch_size: See :class:`~distillscope.probes.base.Probe`.
        max_samples: See :class:`~distillscope.probes.base.Probe` (the paper: 5,000 images).
        seed: See :class:`~distillscope.probes.base.Probe`.

    Several independent models make the sanity check a distribution (ours): with ``k``
    independent models there are ``k (k - 1) / 2`` sanity pairs, and
    ``"<t>/sanity_deviation"`` = mean over them of ``|score(T; A, B) - 0.5|``, how far two
    students trained alone typically sit from 50%. A distilled student's margin over chance,
    ``"<t>-><s>"`` - 0.5 (``"<t>-><s>"``: its score averaged over the teacher's independent
    models, ours), is then judged against that deviation rather than against 0.5 alone.

    Values: ``"<t>-><s>/vs_<i>"`` for every distilled student ``s`` and independent model
    ``i`` of teacher ``t``; and the sanity pairs ``"<t>-><a>/vs_<b>"`` for every two independent
    models ``a`` before ``b`` of ``t``; the summaries ``"<t>-><s>"`` and
    ``"<t>/sanity_deviation"`` above. Without a comparison (no independent model) the values
    are empty and ``params["skipped"]`` says why.
    """

    description = (
        "Grad-CAM similarity %: share of images on which the teacher's Grad-CAM (true class) is "
        "closer, by cosine, to the row model's than to the column's independent model "
        "(vs_<model>); 0.5 = chance, above = the distilled student looks where its teacher "
        "looks. Rows between two independent models are the sanity check and should be near "
        "0.5. Exact ties count 1/2 (ours). Summaries (ours): a distilled student's score "
        "averaged over the independent models, and the sanity deviation, the mean distance "
        "of the sanity pairs from 0.5, against which a student's margin is judged."
    )
    paper = "003"

    higher_is_better = True

    def __init__(
        self,
        method: str = "gradcam",
        target: str = "ground_truth",
        **base: Unpack[ProbeParams],
    ) -> None:
        super().__init__(**base)
        self.method = check_map_method("cam_similarity.method", method)
        self.target = check_choice("cam_similarity.target", target, SHARED_TARGETS)

    def run(self, models: Mapping[str, nn.Module], data: ProbeData, roles: Roles) -> ProbeResult:
        params: dict[str, Any] = {
            **self.base_params(),
            "method": self.method,
            "target": self.target,
        }
        if not data.info.is_image:
            params["skipped"] = {"cam_similarity": "explanation maps need image inputs"}
            return ProbeResult(self.name, {}, params=params)
        triples = comparisons(roles)
        if not triples:
            params["skipped"] = {
                "cam_similarity": "needs a teacher with an independent model and a distilled "
                "student (or two independent models) among the roles"
            }
            return ProbeResult(self.name, {}, params=params)
        names = list(dict.fromkeys(name for triple in triples for name in triple))
        cannot = unexplainable(models, names, self.method)
        skipped = {
            _key(triple): "; ".join(cannot[n] for n in dict.fromkeys(triple) if n in cannot)
            for triple in triples
            if any(n in cannot for n in triple)
        }
        triples = [triple for triple in triples if _key(triple) not in skipped]
        names = list(dict.fromkeys(name for triple in triples for name in triple))
        votes = dict.fromkeys(triples, 0.0)
        ties = dict.fromkeys(triples, 0)
        n = 0
        with evaluating(models, names, data.device) as active:
            for batch in probe_batches(self, data):
                maps = {}
                teachers = dict.fromkeys(t for t, _, _ in triples)
                for t in teachers:
                    if self.target == "teacher":
                        with torch.no_grad():
                            target = active[t](batch.inputs).argmax(1)  # (B,)
                    else:
                        target = batch.targets
                    needed = dict.fromkeys(m for tr in triples if tr[0] == t for m in tr)
                    for m in needed:  # each model explained once per (teacher, batch)
                        maps[t, m] = explanation_maps(
                            active[m],
                            batch.inputs,
                            target,
                            self.method,
                            internal_batch_size=self.batch_size,
                        )  # (B, H, W)
                for t, a, b in triples:
                    v = closer_votes(maps[t, t], maps[t, a], maps[t, b])  # (B,)
                    votes[t, a, b] += float(v.sum())
                    ties[t, a, b] += int((v == 0.5).sum())
                n += len(batch)
        values = {_key(triple): votes[triple] / n for triple in triples}
        values.update(summaries(values, triples, roles))
        params["n_samples"] = n
        params["sanity_pairs"] = [_key(tr) for tr in triples if tr[1] in roles.independent]
        if any(ties.values()):
            params["ties"] = {_key(tr): c for tr, c in ties.items() if c}
        if skipped:
            params["skipped"] = skipped
        return ProbeResult(self.name, values, params=params)


def comparisons(roles: Roles) -> list[Triple]:
    """``(teacher, candidate, baseline)`` triples: every distilled student against every
    independent model of its teacher, then every two independent models (the sanity pairs).

    Example:
        >>> r = Roles(["t"], ["i1", "i2"], ["kd"], {"i1": "t", "i2": "t", "kd": "t"})
        >>> comparisons(r)
        [('t', 'kd', 'i1'), ('t', 'kd', 'i2'), ('t', 'i1', 'i2')]
    """
    triples: list[Triple] = []
    for t in roles.teachers:
        independent = [i for i in roles.independent if roles.teacher_of.get(i) == t]
        students = [s for s in roles.students if roles.teacher_of.get(s) == t]
        triples += [(t, s, i) for s in students for i in independent]
        triples += [(t, a, b) for a, b in combinations(independent, 2)]
    return triples


def summaries(scores: Mapping[str, float], triples: list[Triple], roles: Roles) -> dict[str, float]:
    """Per distilled student its mean score over the independent models (``"<t>-><s>"``), and
    per teacher the mean distance of its sanity pairs from 0.5 (``"<t>/sanity_deviation"``).

    Example:
        >>> r = Roles(["t"], ["i1", "i2"], ["kd"], {"i1": "t", "i2": "t", "kd": "t"})
        >>> scores = {"t->kd/vs_i1": 0.7, "t->kd/vs_i2": 0.8, "t->i1/vs_i2": 0.25}
        >>> summaries(scores, comparisons(r), r)
        {'t->kd': 0.75, 't/sanity_deviation': 0.25}
    """
    by_student: dict[str, list[float]] = {}
    deviations: dict[str, list[float]] = {}
    for triple in triples:
        t, a, _ = triple
        score = scores[_key(triple)]
        if a in roles.independent:
            deviations.setdefault(t, []).append(abs(score - 0.5))
        else:
            by_student.setdefault(f"{t}->{a}", []).append(score)
    out = {key: sum(xs) / len(xs) for key, xs in by_student.items()}
    out.update({f"{t}/sanity_deviation": sum(xs) / len(xs) for t, xs in deviations.items()})
    return out


def _key(triple: Triple) -> str:
    t, a, b = triple
    return f"{t}->{a}/vs_{b}"
