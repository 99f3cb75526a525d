"""Grad-CAM similarity % (paper 003, 4.1): a copy of the teacher wins, equal rivals split 50/50."""

from __future__ import annotations

import copy

import pytest
import torch

from distillscope.errors import ConfigError
from distillscope.probes import create_probe
from distillscope.probes.base import Roles
from tests.probes.map_models import MapModel, mask_data
from tests.probes.tiny_probe_models import TinyCNN, seeded

ROLES = Roles(
    teachers=["t"],
    independent=["a", "b"],
    students=["kd"],
    teacher_of={"a": "t", "b": "t", "kd": "t"},
)


def test_a_student_that_is_its_teacher_is_always_closer(image_data) -> None:
    teacher = seeded(TinyCNN, 0, width=6)
    models = {"t": teacher, "a": seeded(TinyCNN, 1), "kd": copy.deepcopy(teacher)}
    roles = Roles(["t"], ["a"], ["kd"], {"a": "t", "kd": "t"})
    r = create_probe("cam_similarity", batch_size=7).run(models, image_data, roles)
    assert r.values == {"t->kd/vs_a": 1.0, "t->kd": 1.0}  # one independent model: no sanity
    assert r.params["n_samples"] == 24 and "ties" not in r.params


def half_and_half(flag_first: bool):
    """The teacher's map (the input) on images whose top-left pixel is bright (or on the
    others, with ``flag_first=False``), its mirror image elsewhere."""

    def explain(x, target):
        flag = (x[:, 0, 0, 0] > 0.5) == flag_first  # (B,)
        return torch.where(flag[:, None, None], x[:, 0], x[:, 0].flip(-1))

    return explain


def test_two_equally_distant_independent_models_split_fifty_fifty() -> None:
    data = mask_data(n=16)
    data.dataset.inputs[:, 0, 0, 0] = (torch.arange(16) % 2).float()  # half bright at (0, 0)
    models = {
        "t": MapModel(lambda x, y: x[:, 0]),
        "a": MapModel(half_and_half(True)),
        "b": MapModel(half_and_half(False)),
        "kd": MapModel(lambda x, y: x[:, 0]),
    }
    r = create_probe("cam_similarity", method="auto").run(models, data, ROLES)
    assert r.values["t->a/vs_b"] == 0.5  # the sanity pair: chance level
    # kd equals the teacher: it ties with a where a equals the teacher too (counts 1/2).
    assert r.values["t->kd/vs_a"] == 0.75
    assert r.values["t->kd/vs_b"] == 0.75
    assert r.params["sanity_pairs"] == ["t->a/vs_b"]
    assert r.params["ties"] == {"t->kd/vs_a": 8, "t->kd/vs_b": 8}


def test_teacher_target_makes_every_model_explain_the_teachers_class() -> None:
    # Maps are one-hot at the column of the explained class. The teacher always predicts
    # class 0; the independent model always explains class 1; labels are i % 4.
    def column(x, target):
        out = torch.zeros_like(x[:, 0])
        out[torch.arange(len(x)), 0, target] = 1.0
        return out

    def always_class_zero(x):
        return torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(len(x), 4)

    models = {
        "t": MapModel(column, logits=always_class_zero),
        "a": MapModel(lambda x, y: column(x, torch.ones_like(y))),
        "kd": MapModel(column),
    }
    roles = Roles(["t"], ["a"], ["kd"], {"a": "t", "kd": "t"})
    data = mask_data(n=16)
    truth = create_probe("cam_similarity", method="explain").run(models, data, roles)
    teacher = create_probe("cam_similarity", method="explain", target="teacher").run(
        models, data, roles
    )
    # Labels: kd equals the teacher everywhere; a does too when the label is 1 (a tie).
    assert truth.values["t->kd/vs_a"] == pytest.approx((12 + 0.5 * 4) / 16)
    assert teacher.values["t->kd/vs_a"] == 1.0  # all explain class 0; a's column 1 is off


def test_without_an_independent_model_it_is_skipped(image_models, image_data) -> None:
    roles = Roles(["teacher"], [], ["student"], {"student": "teacher"})
    r = create_probe("cam_similarity").run(image_models, image_data, roles)
    assert r.values == {}
    assert "independent model" in r.params["skipped"]["cam_similarity"]


def test_models_without_cam_layer_skip_their_comparisons(image_data) -> None:
    plain = seeded(TinyCNN, 2)
    plain.cam_layer = None
    models = {"t": seeded(TinyCNN, 0), "a": seeded(TinyCNN, 1), "b": seeded(TinyCNN, 3)}
    models["kd"] = plain
    r = create_probe("cam_similarity").run(models, image_data, ROLES)
    assert set(r.values) == {"t->a/vs_b", "t/sanity_deviation"}
    assert r.values["t/sanity_deviation"] == pytest.approx(abs(r.values["t->a/vs_b"] - 0.5))
    assert "no cam_layer" in r.params["skipped"]["t->kd/vs_a"]


def test_sanity_pairs_become_a_distribution_with_three_independent_models(image_data) -> None:
    models = {n: seeded(TinyCNN, i) for i, n in enumerate(["t", "a", "b", "c", "kd"])}
    roles = Roles(["t"], ["a", "b", "c"], ["kd"], {m: "t" for m in "abc"} | {"kd": "t"})
    r = create_probe("cam_similarity", batch_size=8).run(models, image_data, roles)
    pairs = ["t->a/vs_b", "t->a/vs_c", "t->b/vs_c"]
    assert r.params["sanity_pairs"] == pairs
    deviation = sum(abs(r.values[p] - 0.5) for p in pairs) / 3
    assert r.values["t/sanity_deviation"] == pytest.approx(deviation)
    mean = sum(r.values[f"t->kd/vs_{i}"] for i in "abc") / 3
    assert r.values["t->kd"] == pytest.approx(mean)


def test_non_image_data_is_skipped(point_models, point_data, roles) -> None:
    r = create_probe("cam_similarity").run(point_models, point_data, roles)
    assert "image inputs" in r.params["skipped"]["cam_similarity"]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"method": "lime"}, "cam_similarity.method='lime'"),
        ({"target": "predicted"}, "cam_similarity.target='predicted'"),
    ],
)
def test_bad_parameters_raise_one_line_config_errors(params, fragment) -> None:
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")) as err:
        create_probe("cam_similarity", **params)
    assert "\n" not in str(err.value)
