"""Pieces of the experiment runner: model building from data, teacher keys, cache modes."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from distillscope.config import ModelSpec, TrainConfig, load_config_dict
from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.identity import digest, runtime
from distillscope.plan import Member, MemberPlan, build_model, resolve_plan, teacher_identity
from distillscope.train.teacher_cache import unaugmented


def images(n: int = 4, transform=None) -> TensorDataset:
    info = DatasetInfo("imgs", 3, (1, 28, 28), ["a", "b", "c"])
    return TensorDataset(torch.zeros(n, 1, 28, 28), torch.arange(n) % 3, info, transform)


def points() -> TensorDataset:
    info = DatasetInfo("pts", 3, (2,), ["a", "b", "c"], pixel_range=None)
    return TensorDataset(torch.zeros(6, 2), torch.arange(6) % 3, info)


def test_build_model_takes_shape_and_classes_from_data():
    cnn = build_model(ModelSpec(name="mnist_cnn"), images())
    assert cnn(torch.zeros(2, 1, 28, 28)).shape == (2, 3)
    mlp = build_model(ModelSpec(name="mlp_full"), points())
    assert mlp(torch.zeros(5, 2)).shape == (5, 3)
    flat = build_model(ModelSpec(name="mlp", params={"hidden": 8}), images())
    assert flat(torch.zeros(1, 1, 28, 28)).shape == (1, 3)  # in_features = 784 from the data


def test_unaugmented_drops_the_random_transform_only():
    noisy = images(transform=lambda x: x + torch.randn_like(x))
    assert noisy.augmented
    plain = unaugmented(noisy)
    assert not plain.augmented
    assert plain.inputs is noisy.inputs and plain.targets is noisy.targets  # same indices
    clean = images()
    assert unaugmented(clean) is clean


class FakeSplits:
    """Splits whose fingerprints are given (the identity reads only those)."""

    def __init__(self, train: str, test: str = "t") -> None:
        self.train_print = train
        self.test = SimpleNamespace(fingerprint=lambda: test)

    def train_of(self, name):
        return SimpleNamespace(fingerprint=lambda: self.train_print)


def key(cfg, prints=("f1", "t"), rt=None) -> str:
    rt = rt or runtime("cpu", 1)
    teacher = resolve_plan(cfg).members["teacher"]
    return digest(teacher_identity(teacher, FakeSplits(*prints), rt), 16)


def test_teacher_key_follows_what_makes_the_weights():
    base = {"teacher": {"model": {"name": "mlp_full"}}, "data": {"name": "toy2d-ring"}}
    cfg = load_config_dict(base)
    first = key(cfg)
    same = load_config_dict(
        {
            **base,
            "students": {"kd": {"temperature": 9}},
            "name": "other",
            "data": {"name": "toy2d-ring", "root": "/moved"},
        }  # fmt: skip
    )
    assert key(same) == first  # students, run name and the data's folder do not matter
    for override in (
        "train.lr=0.2",
        "seed=5",
        "data.train_per_class=10",
        "teacher.train.epochs=9",
        "teacher.loss={label_smoothing: {}}",
        "teacher.model.name=mlp_reduced",
        "teacher.seed=3",
        "teacher.data.train_fraction=0.5",
    ):
        changed = load_config_dict(base, [override])
        assert key(changed) != first, override
    assert key(cfg, ("f2", "t")) != first  # other training data behind the same config
    assert key(cfg, ("f1", "t2")) != first  # other held-out data (its history differs)
    assert key(cfg, rt=runtime("cpu", 2)) != first  # another thread count
    assert key(cfg, rt=runtime("cuda", 1)) != first  # another device type


def test_every_teacher_spec_field_enters_the_teacher_identity():
    from distillscope.config import TeacherSpec

    cfg = load_config_dict({"teacher": {"model": {"name": "mlp_full"}}})
    teacher = resolve_plan(cfg).members["teacher"]
    recipe = teacher_identity(teacher, FakeSplits("f"), runtime("cpu", 1))["teacher"]
    assert set(TeacherSpec.model_fields) <= set(recipe)


def test_cache_mode_accepts_booleans():
    assert load_config_dict({"teacher_cache": True}).teacher_cache == "auto"
    assert load_config_dict({"teacher_cache": False}).teacher_cache == "off"
    assert load_config_dict({"teacher_cache": "frozen"}).teacher_cache == "frozen"


def test_identical_members_finds_a_teacher_that_is_an_independent_student() -> None:
    from torch import nn

    from distillscope.distill import build_loss
    from distillscope.plan import identical_members

    spec = ModelSpec(name="resnet8")

    def make(name, role, loss, teacher=None, seed=0):
        plan = MemberPlan(name=name, role=role, spec=spec, train=TrainConfig(epochs=3),
                          loss=loss, teacher=teacher, seed=seed, init_seed=seed,
                          cache_mode="auto")  # fmt: skip
        bound = build_loss(loss) if role != "teacher" else None
        return Member(plan, nn.Identity(), bound_loss=bound)

    def run(seed):
        teacher = make("teacher", "teacher", {"ce": {}}, seed=0)
        independent = make("independent", "independent", {"ce": {}}, "teacher", seed)
        kd = make("kd", "student", {"kd": {}}, "teacher", seed)
        kd_other = make("kd_other", "student", {"kd": {}}, "other", seed)
        return {m.name: m for m in (teacher, independent, kd, kd_other)}

    # born-again's first config: the teacher is the independent student (its teacher unread);
    # two KD students of different teachers are not the same network
    assert identical_members(run(0)) == [("teacher", "independent", 0)]
    assert identical_members(run(1)) == []  # the run's seed 1: the teacher pins 0


def test_training_units_keep_groups_together_in_config_order() -> None:
    from types import SimpleNamespace

    from distillscope.plan import training_line, training_units, unit_label

    def member(name, role="student", group=None):
        spec = SimpleNamespace(name="resnet8")
        return SimpleNamespace(name=name, role=role, group=group, spec=spec, loss={"kd": {}},
                               train=SimpleNamespace(epochs=3))  # fmt: skip

    members = {m.name: m for m in [member("t", "teacher"), member("a", group="g"), member("kd"),
                                   member("b", group="g")]}  # fmt: skip
    units = training_units(members)
    assert [[m.name for m in u] for u in units] == [["a", "b"], ["kd"]]
    assert unit_label(units[0]) == "group g" and unit_label(units[1]) == "student kd"
    assert training_line(units[0]) == "group g: training a, b together for 3 epochs"
    assert training_line(units[1]) == "student kd: training resnet8 with kd for 3 epochs"
