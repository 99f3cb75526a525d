from __future__ import annotations

from pathlib import Path

import pytest

from distillscope.config import (
    apply_overrides,
    config_hash,
    dump_config,
    load_config,
    load_config_dict,
)
from distillscope.errors import ConfigError
from distillscope.grid import is_grid_config, load_grid

REPO = Path(__file__).resolve().parents[2]


def test_defaults_have_teacher_and_roles():
    cfg = load_config_dict({})
    assert list(cfg.teachers) == ["teacher"]
    assert cfg.students["independent"].role == "independent"
    assert cfg.students["kd"].role == "student"
    assert cfg.students["kd"].teacher == "teacher"


def test_dotted_overrides_reach_loss_params_and_train():
    cfg = load_config(
        REPO / "configs" / "quickstart.yaml", ["students.kd.temperature=8", "train.epochs=2"]
    )
    assert cfg.train.epochs == 2
    assert cfg.students["kd"].loss_spec() == {"kd": {"temperature": 8, "alpha": 0.5}}


def test_override_values_are_yaml_typed():
    raw = apply_overrides({}, ["a.b=3", "a.c=true", "a.d=[1, 2]", "e=text"])
    assert raw == {"a": {"b": 3, "c": True, "d": [1, 2]}, "e": "text"}


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        (
            ["train.epoch=2"],
            r"unknown config key 'train.epoch' \(did you mean 'epochs'\?\); valid keys:",
        ),
        (["bogus=1"], r"unknown config key 'bogus'; valid keys: .*students"),
        (["train.epochs=many"], r"config key 'train.epochs': .*integer.*'many'"),
        (["train.epochs=0"], r"config key 'train.epochs': .*greater than or equal to 1"),
        (["train.optimizer=lbfgs"], r"config key 'train.optimizer'.*'sgd', 'adam' or 'adamw'"),
        (["data.name=mnist-ish"], r"unknown dataset 'mnist-ish'; valid choices: .*fashion-mnist"),
        (
            ["student.name=nonet"],
            r"config key 'student': unknown model 'nonet'; valid choices: .*mnist_cnn",
        ),
        (["students.kd.loss=kdd"], r"unknown loss 'kdd'; valid choices: .*label_smoothing"),
        (["students.kd.temprature=3"], r"unknown parameter 'temprature' for loss 'kd'"),
        (["probes.nope={}"], r"unknown probe 'nope'; valid choices: .*agreement"),
        (["probes.accuracy.topk=x", "probes.accuracy.bad=1"], r"unknown parameter 'bad'"),
        (["students.kd.teacher=other"], r"'other' is not a teacher; valid choices: teacher"),
        (["students.kd.train.lr=-1"], r"config key 'students.kd.train.lr'"),
        (["train.agc_clip=0"], r"config key 'train.agc_clip'.*greater than 0"),
        (["students.kd.train.lrr=1"], r"unknown config key 'students.kd.train.lrr'"),
        (["device=tpu"], r"config key 'device'.*valid choices: auto, cpu"),
        (
            ["train.compile=fast"],
            r"config key 'train.compile': valid choices: false, true, default, reduce-overhead",
        ),
        (["train.epochs"], r"not of the form key.path=value"),
    ],
)
def test_bad_input_is_one_line_naming_the_key(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern) as err:
        load_config(REPO / "configs" / "quickstart.yaml", overrides)
    assert "\n" not in str(err.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)


def test_dump_roundtrip_is_stable():
    cfg = load_config(REPO / "configs" / "quickstart.yaml", ["students.kd.temperature=8"])
    data = dump_config(cfg)
    assert data["students"]["kd"]["temperature"] == 8
    again = load_config_dict(data)
    assert dump_config(again) == data
    assert config_hash(data) == config_hash(dump_config(again))


def test_loss_mapping_combines_terms():
    cfg = load_config_dict(
        {"students": {"mix": {"loss": {"kd": {"temperature": 2}, "ce": {"weight": 0.5}}}}}
    )
    assert cfg.students["mix"].loss_spec() == {"kd": {"temperature": 2}, "ce": {"weight": 0.5}}


def test_every_shipped_config_validates():
    claims = REPO / "configs" / "reproduce" / "claims"  # claim declarations, not run configs
    paths = sorted(p for p in (REPO / "configs").glob("**/*.yaml") if claims not in p.parents)
    assert {p.name for p in paths} >= {"quickstart.yaml", "toy2d-temperature.yaml"}
    for path in paths:
        if is_grid_config(path):  # a study grid: every cell is a plain config
            cells = [cell.config for cell in load_grid(path).cells]
        else:
            cells = [load_config(path)]
        for cfg in cells:
            assert cfg.students and cfg.probes, path


def test_toy_study_has_paper_004s_twenty_flavours():
    cfg = load_config(REPO / "configs" / "toy2d-temperature.yaml")
    assert len(cfg.teachers) == 4 and len(cfg.students) == 16
    hot = {n for n, t in cfg.teachers.items() if cfg.train_for(t.train).temperature == 100}
    assert hot == {"FT_tempT", "RT_tempT"}
    for name, spec in cfg.students.items():
        assert spec.loss_spec() == {"soft_targets": {"temperature": 100}}  # soft labels at T
        assert name.endswith(f"_from_{spec.teacher}")
        assert cfg.train_for(spec.train).temperature == (100 if "_tempT_from" in name else 1)
