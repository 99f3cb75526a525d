"""A network's own training data (``teachers.X.data`` / ``students.X.data``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from distillscope.cli import main
from distillscope.config import DataConfig, MemberData, load_config_dict
from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.errors import ConfigError
from distillscope.identity import digest, runtime
from distillscope.plan import resolve_plan, teacher_identity
from distillscope.splits import load_splits, match_normalisation

BASE = {
    "name": "own-data",
    "data": {"name": "toy2d-ring", "params": {"n_per_blob": 60, "ring_points": 120}},
    "train": {"epochs": 1, "batch_size": 32},
    "teacher": {"model": {"name": "mlp_full"}},
    "student": {"name": "mlp_reduced"},
    "students": {"independent": {"loss": "ce"}, "kd": {"loss": "kd"}},
    "probes": {"accuracy": {}},
    "progress": False,
}


def _run(tmp_path: Path, capsys, cfg: dict) -> tuple[int, str, str]:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**cfg, "teacher_store": str(tmp_path / "store")}))
    code = main(["run", str(path), "--output-dir", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    return code, out, err


def test_override_keeps_the_top_level_for_the_same_dataset_and_drops_it_for_another():
    base = DataConfig(name="fashion-mnist", params={"augment": True}, train_fraction=0.5, seed=3)
    same = MemberData(train_per_class=5).over(base)
    assert (same.name, same.params, same.train_per_class, same.train_fraction, same.seed) == (
        "fashion-mnist",
        {"augment": True},
        5,
        None,  # the member's subset rule replaces the top level's
        3,
    )
    assert MemberData(seed=4).over(base).train_fraction == 0.5
    other = MemberData(name="digits", params={"size": 28}).over(base)
    assert (other.name, other.params, other.train_fraction, other.seed) == (
        "digits",
        {"size": 28},
        None,
        3,
    )


def test_test_split_keys_are_not_member_keys():
    with pytest.raises(ConfigError, match="test_per_class"):
        load_config_dict({"students": {"kd": {"data": {"test_per_class": 3}}}})


def test_few_shot_student_trains_on_its_own_subset(tmp_path, capsys):
    cfg = {
        **BASE,
        "students": {**BASE["students"], "kd": {"loss": "kd", "data": {"train_per_class": 5}}},
    }
    code, out, err = _run(tmp_path, capsys, cfg)
    assert code == 0, err
    results = json.loads((Path(out.strip().splitlines()[-1]) / "results.json").read_text())
    models = results["models"]
    assert models["kd"]["data"] == {"name": "toy2d-ring", "n_train": 15}  # 3 classes x 5
    assert "data" not in models["independent"] and "data" not in models["teacher"]
    assert results["dataset"]["n_train"] == 240
    assert "kd: trains on its own data, toy2d-ring: 15 images" in err


def teacher_key(cfg) -> str:
    rt = runtime("cpu", 1)
    teacher = resolve_plan(cfg).members["teacher"]
    return digest(teacher_identity(teacher, load_splits(cfg), rt), 16)


def test_teacher_own_data_changes_its_key():
    cfg = load_config_dict(BASE)
    own = load_config_dict(BASE, ["teacher.data.train_fraction=0.5"])
    assert teacher_key(cfg) != teacher_key(own)
    fingerprints = load_splits(own).fingerprints()
    assert fingerprints["teacher.train"] != fingerprints["train"]


@pytest.mark.parametrize(
    ("data", "needles"),
    [
        ({"name": "digits"}, ["students.kd.data", "digits has 10 classes", "same classes"]),
        ({"train_per_class": 0}, ["train_per_class"]),
        (
            {"train_per_class": 100000},
            ["students.kd.data.train_per_class=100000", "lower students.kd.data.train_per_class"],
        ),
        ({"name": "nope"}, ["nope"]),
    ],
)
def test_member_data_that_cannot_fit_fails_before_writing(tmp_path, capsys, data, needles):
    cfg = {**BASE, "students": {**BASE["students"], "kd": {"loss": "kd", "data": data}}}
    code, _, err = _run(tmp_path, capsys, cfg)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not (tmp_path / "out").exists()


def test_group_members_must_share_their_data(tmp_path, capsys):
    students = {
        "a": {"loss": "dml", "group": "g", "data": {"train_per_class": 5}},
        "b": {"loss": "dml", "group": "g"},
    }
    code, _, err = _run(tmp_path, capsys, {**BASE, "students": students})
    assert code == 2 and "have different data" in err


def test_other_normalisation_is_mapped_to_the_held_out_one():
    pixels = torch.rand(6, 1, 3, 3)
    own = DatasetInfo("own", 2, (1, 3, 3), ["a", "b"], mean=(0.2,), std=(0.5,))
    held = DatasetInfo("held", 2, (1, 3, 3), ["a", "b"], mean=(0.4,), std=(0.25,))
    heat = torch.randint(0, 3, (6, 3, 3), dtype=torch.uint8)
    data = TensorDataset(
        (pixels - 0.2) / 0.5, torch.zeros(6), own, masks=torch.ones(6, 3, 3), heatmaps=heat
    )
    mapped = match_normalisation(data, held, "students.kd.data")
    assert torch.allclose(mapped.inputs, (pixels - 0.4) / 0.25, atol=1e-6)
    assert mapped.info.mean == (0.4,) and mapped.info.name == "own"
    assert mapped.masks is not None and mapped.masks.all()
    assert mapped.heatmaps is heat
    assert match_normalisation(data, own, "x") is data  # same constants: untouched


def test_a_student_s_own_seed_gives_other_weights_and_is_recorded(tmp_path, capsys):
    students = {"independent": {"loss": "ce"}, "independent_b": {"loss": "ce", "seed": 7}}
    code, out, err = _run(tmp_path, capsys, {**BASE, "students": students})
    assert code == 0, err
    run = Path(out.strip().splitlines()[-1])
    results = json.loads((run / "results.json").read_text())
    assert results["models"]["independent_b"]["seed"] == 7
    assert "seed" not in results["models"]["independent"]
    from safetensors.torch import load_file

    a = load_file(run / "models" / "independent.safetensors")
    b = load_file(run / "models" / "independent_b.safetensors")
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_a_teacher_s_own_seed_changes_its_key():
    cfg = load_config_dict(BASE)
    assert teacher_key(cfg) != teacher_key(load_config_dict(BASE, ["teacher.seed=3"]))


def test_group_members_cannot_take_a_seed(tmp_path, capsys):
    students = {"a": {"loss": "dml", "group": "g", "seed": 3}, "b": {"loss": "dml", "group": "g"}}
    code, _, err = _run(tmp_path, capsys, {**BASE, "students": students})
    assert code == 2 and "get seeds of their own" in err


def test_a_student_s_own_teacher_cache_mode(tmp_path, capsys):
    students = {"kd": {"loss": "kd"}, "kd_live": {"loss": "kd", "teacher_cache": "off"}}
    code, out, err = _run(tmp_path, capsys, {**BASE, "students": students})
    assert code == 0, err
    assert err.count("caching teacher teacher outputs") == 1  # kd caches, kd_live runs live
    with pytest.raises(ConfigError, match="teacher_cache"):
        load_config_dict(BASE, ["students.kd.teacher_cache=sometimes"])


def test_a_group_composition_on_data_without_groups_fails_before_writing(tmp_path, capsys):
    cfg = {**BASE, "students": {"kd": {"loss": "kd", "data": {"train_groups": {0: 0.5}}}}}
    code, _, err = _run(tmp_path, capsys, cfg)
    assert code == 2 and "students.kd.data.train_groups" in err and "has no groups" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
