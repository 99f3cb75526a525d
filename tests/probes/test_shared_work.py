"""The audit's repeated work is done once and no value moves (issue 22, item 6).

The adversarial probe runs all budgets of its sweep in one pass over the batches (the clean
pass and FGSM's gradient once per batch), and the probes that start from clean logits read them
from the run's :class:`~distillscope.probes.logits.LogitCache`. The golden numbers below were
computed once by the code before that change (commit 48dded9), on the models and data built
here; accuracies are stored as counts of correct samples out of 30. On top of them, the
same-machine comparisons pin bit-identity: the sweep against a per-budget reference written
here (the old loop: every budget on its own, a fresh generator per budget), and each probe with
a cache warmed by the others against the same probe on a cold one.
"""

from __future__ import annotations

import pytest
import torch

from distillscope.attacks import PixelSpaceModel, TemperatureScaled, fgsm, pgd, to_pixels
from distillscope.probes import create_probe
from distillscope.probes.base import ProbeData, Roles
from distillscope.probes.run import run_probes
from distillscope.probes.sampling import probe_batches
from tests.probes.tiny_probe_models import quadrant_cnn, quadrant_data

N = 30  # samples of quadrant_data() and of conftest's point_data


def quadrant_models() -> dict[str, torch.nn.Module]:
    return {
        "teacher": quadrant_cnn(20.0, 0),
        "independent": quadrant_cnn(8.0, 1),
        "student": quadrant_cnn(40.0, 2),
    }


ROLES = Roles(
    teachers=["teacher"],
    independent=["independent"],
    students=["student"],
    teacher_of={"independent": "teacher", "student": "teacher"},
    temperature={"teacher": 4.0, "student": 4.0},
)
MODELS = ("teacher", "independent", "student")


def counts(values: dict[str, float]) -> dict[str, int]:
    """Accuracies back to counts out of ``N``; each must be exactly ``count / N``."""
    out = {k: round(v * N) for k, v in values.items()}
    assert all(out[k] / N == v for k, v in values.items())
    return out


def series_counts(series: dict[str, list[float]]) -> dict[str, list[int]]:
    """Each accuracy curve back to counts out of ``N`` (the ``"x"`` axis left out)."""
    return {k: list(counts(dict(enumerate(s))).values()) for k, s in series.items() if k != "x"}


def per_model(**by_key: tuple[int, int, int]) -> dict[str, int]:
    """``clean=(30, 29, 30)`` -> ``{"teacher/clean": 30, "independent/clean": 29, ...}``."""
    return {f"{m}/{k}": c[i] for k, c in by_key.items() for i, m in enumerate(MODELS)}


# fmt: off
SWEEP_VALUES = per_model(
    clean=(30, 29, 30), fgsm=(20, 21, 24), fgsm_strong=(20, 21, 24), pgd=(26, 29, 28),
    pgd_strong=(26, 29, 28),
)
SWEEP_SERIES = {  # at eps 0.01, 8/255, 0.06
    "teacher/fgsm": [29, 20, 6], "teacher/fgsm_strong": [29, 20, 6],
    "teacher/pgd": [29, 26, 19], "teacher/pgd_strong": [29, 26, 19],
    "independent/fgsm": [29, 21, 5], "independent/fgsm_strong": [29, 21, 5],
    "independent/pgd": [29, 29, 17], "independent/pgd_strong": [29, 29, 17],
    "student/fgsm": [30, 24, 12], "student/fgsm_strong": [30, 24, 10],
    "student/pgd": [30, 28, 20], "student/pgd_strong": [30, 28, 21],
}
ALL_VALUES = per_model(
    clean=(30, 29, 30), fgsm=(20, 21, 24), fgsm_strong=(20, 21, 24), pgd_l2=(6, 6, 12),
    pgd_l2_strong=(8, 6, 11), pgd=(25, 27, 27), pgd_strong=(25, 27, 28), ifgsm=(20, 21, 24),
    ifgsm_strong=(20, 21, 24), deepfool=(0, 0, 0), deepfool_strong=(0, 0, 0),
    cw_l2=(29, 29, 30), cw_l2_strong=(29, 29, 30),
)
ALL_NORMS = {  # mean L2 of the successful minimal perturbations (CW fooled only the teacher)
    "teacher/deepfool_l2": 0.24596003888485332, "teacher/deepfool_strong_l2": 0.24597143856808543,
    "teacher/cw_l2_l2": 0.01814321242272854, "teacher/cw_l2_strong_l2": 0.011251240968704224,
    "independent/deepfool_l2": 0.25237320723204776,
    "independent/deepfool_strong_l2": 0.25237320723204776,
    "student/deepfool_l2": 0.2738514925042788, "student/deepfool_strong_l2": 0.2738565584023794,
}
ALL_SERIES = {  # at eps 0.02, 8/255
    "teacher/pgd_l2": [17, 6], "teacher/pgd_l2_strong": [18, 8],
    "teacher/pgd": [28, 25], "teacher/pgd_strong": [28, 25],
    "independent/pgd_l2": [20, 6], "independent/pgd_l2_strong": [20, 6],
    "independent/pgd": [29, 27], "independent/pgd_strong": [29, 27],
    "student/pgd_l2": [21, 12], "student/pgd_l2_strong": [23, 11],
    "student/pgd": [30, 27], "student/pgd_strong": [30, 28],
    **{f"{m}/{a}{v}": s for m, s in (("teacher", [25, 20]), ("independent", [28, 21]),
                                      ("student", [28, 24]))
       for a in ("fgsm", "ifgsm") for v in ("", "_strong")},
}
POINT_VALUES = per_model(
    clean=(15, 12, 10), pgd=(12, 7, 10), pgd_strong=(12, 7, 10), fgsm=(11, 6, 10),
    fgsm_strong=(11, 6, 10), pgd_l2=(13, 7, 10), pgd_l2_strong=(13, 7, 10),
)
POINT_SERIES = {  # at eps 0.1, 0.3, 0.5
    **{f"teacher/{k}": s for k, s in (("pgd", [14, 12, 10]), ("fgsm", [14, 11, 10]),
                                      ("pgd_l2", [14, 13, 12]))},
    **{f"independent/{k}": s for k, s in (("pgd", [9, 7, 5]), ("fgsm", [9, 6, 5]),
                                          ("pgd_l2", [10, 7, 6]))},
    **{f"student/{k}": [10, 10, 10] for k in ("pgd", "fgsm", "pgd_l2")},
}
POINT_SERIES.update({f"{k}_strong": s for k, s in POINT_SERIES.items()})
TASK_GOLDEN = {
    "accuracy": {"teacher/top1": 1.0, "teacher/top4": 1.0, "independent/top1": 29 / 30,
                 "independent/top4": 1.0, "student/top1": 1.0, "student/top4": 1.0},
    "agreement": {"teacher->independent": 29 / 30, "teacher->independent/kl": 0.1767814510812362,
                  "teacher->student": 1.0, "teacher->student/kl": 0.1662436310395909},
    "class_similarity": {
        "teacher/entire": 0.07924628181554626, "teacher/category": 0.6924127534789417,
        "independent/entire": 0.638470591656093, "independent/category": 0.685678046027977,
        "student/entire": 0.0013684066266154585, "student/category": 0.6920089414646301,
    },
    "calibration": {
        "teacher/ece": 0.03489692033235501, "teacher/ece_mass": 0.034896920332355086,
        "teacher/nll": 0.041488376480037455, "teacher/brier": 0.017957944505023794,
        "teacher/accuracy": 1.0, "teacher/confidence": 0.9651030796676449,
        "independent/ece": 0.20450758375193995, "independent/ece_mass": 0.1775947499054693,
        "independent/nll": 0.2481390853708843, "independent/brier": 0.08828044945966268,
        "independent/accuracy": 29 / 30, "independent/confidence": 0.7929947126307558,
        "student/ece": 0.0004022996048237415, "student/ece_mass": 0.0004022996048238451,
        "student/nll": 0.00040332066809655094, "student/brier": 4.058046611502467e-06,
        "student/accuracy": 1.0, "student/confidence": 0.9995977003951761,
    },
}
# fmt: on


def test_the_sweep_gives_the_numbers_of_the_code_before() -> None:
    probe = create_probe("adversarial", sweep=[0.01, 0.06], batch_size=15, pgd_steps=3)
    result = probe.run(quadrant_models(), quadrant_data(), ROLES)
    assert counts(result.values) == SWEEP_VALUES
    assert result.series["x"] == [0.01, 8 / 255, 0.06]
    assert series_counts(result.series) == SWEEP_SERIES


def test_every_attack_gives_the_numbers_of_the_code_before() -> None:
    # PGD and PGD-L2 share each (model, variant)'s generator within a budget: their draws must
    # interleave as before; DeepFool and CW run at the main budget only.
    probe = create_probe(
        "adversarial",
        attacks=["fgsm", "pgd_l2", "pgd", "ifgsm", "deepfool", "cw_l2"],
        sweep=[0.02],
        batch_size=15,
        pgd_steps=3,
        ifgsm_steps=2,
        cw_steps=3,
        cw_search_steps=1,
        deepfool_steps=3,
    )
    result = probe.run(quadrant_models(), quadrant_data(), ROLES)
    norms = {k: v for k, v in result.values.items() if k not in ALL_VALUES}
    assert counts({k: v for k, v in result.values.items() if k in ALL_VALUES}) == ALL_VALUES
    assert norms == pytest.approx(ALL_NORMS, rel=1e-6)  # float sums: rounding may vary by CPU
    unfooled = "cw_l2 fooled no correctly classified sample"
    assert result.params["skipped"] == {
        f"{m}/cw_l2{v}_l2": unfooled for m in ("independent", "student") for v in ("", "_strong")
    }
    assert series_counts(result.series) == ALL_SERIES


def test_points_give_the_numbers_of_the_code_before(point_models, point_data) -> None:
    probe = create_probe("adversarial", attacks=["pgd", "fgsm", "pgd_l2"], sweep=[0.1, 0.5],
                         batch_size=8, pgd_steps=5)  # fmt: skip
    result = probe.run(point_models, point_data, ROLES)
    assert counts(result.values) == POINT_VALUES
    assert result.series["x"] == [0.1, 0.3, 0.5]
    assert series_counts(result.series) == POINT_SERIES


def per_budget_reference(
    models: dict[str, torch.nn.Module], data: ProbeData, budgets: list[float], seed: int = 0
) -> dict[str, list[float]]:
    """The sweep as the code before computed it: every budget on its own pass over the
    batches, FGSM's gradient at each, a fresh generator per (budget, model, variant)."""
    probe = create_probe("adversarial", batch_size=15, seed=seed)  # for its batches only
    info, eps = data.info, 8 / 255
    out: dict[str, list[float]] = {}
    for m, model in models.items():
        net = PixelSpaceModel(model, info.mean, info.std).eval()
        temperature = ROLES.temperature.get(m, 1.0)
        for variant, attacked in (("", net), ("_strong", TemperatureScaled(net, temperature))):
            for e in budgets:
                gen = torch.Generator().manual_seed(seed)
                right = {"fgsm": 0, "pgd": 0}
                for batch in probe_batches(probe, data):
                    x, y = to_pixels(batch.inputs, info.mean, info.std), batch.targets
                    x_fgsm = fgsm(attacked, x, y, e, (0.0, 1.0))
                    x_pgd = pgd(attacked, x, y, e, eps * 0.25 * e / eps, steps=3,
                                bounds=(0.0, 1.0), generator=gen)  # fmt: skip
                    with torch.no_grad():
                        right["fgsm"] += int((net(x_fgsm).argmax(1) == y).sum())
                        right["pgd"] += int((net(x_pgd).argmax(1) == y).sum())
                for a, count in right.items():
                    out.setdefault(f"{m}/{a}{variant}", []).append(count / N)
    return out


def test_the_one_pass_sweep_equals_each_budget_on_its_own() -> None:
    models, data = quadrant_models(), quadrant_data()
    probe = create_probe("adversarial", sweep=[0.01, 0.06], batch_size=15, pgd_steps=3)
    result = probe.run(models, data, ROLES)
    reference = per_budget_reference(models, data, [0.01, 8 / 255, 0.06])
    assert {k: s for k, s in result.series.items() if k != "x"} == reference


def test_probes_reading_shared_logits_give_the_numbers_of_the_code_before() -> None:
    models, data = quadrant_models(), quadrant_data()
    out = run_probes({name: None for name in TASK_GOLDEN}, {"batch_size": 12}, models, data,
                     ROLES, seed=0, progress=False)  # fmt: skip
    assert data.logits.hits == 3 * 3 * 3  # 3 later probes x 3 models x 3 batches read back
    for name, golden in TASK_GOLDEN.items():
        values = out[name]["values"]
        assert values.keys() == golden.keys()
        assert values == pytest.approx(golden, rel=1e-6), name  # rounding may vary by CPU


@pytest.mark.parametrize("name", list(TASK_GOLDEN))
def test_a_probe_on_shared_logits_equals_it_on_its_own(name: str) -> None:
    models, shared = quadrant_models(), quadrant_data()
    for other in TASK_GOLDEN:  # warm the cache with every probe, this one included
        create_probe(other, batch_size=12).run(models, shared, ROLES)
    warm = create_probe(name, batch_size=12).run(models, shared, ROLES)
    cold = create_probe(name, batch_size=12).run(models, quadrant_data(), ROLES)
    assert shared.logits.hits >= 3 * 3 * 3  # every later probe read every batch back
    assert warm.values == cold.values and warm.series == cold.series
