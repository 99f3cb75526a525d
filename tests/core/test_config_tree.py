"""The config-tree helpers shared by the config schema and grid expansion."""

from __future__ import annotations

import pytest

from distillscope.config import DataConfig, ExperimentConfig, ModelSpec, load_config_dict
from distillscope.config_tree import (
    get_at,
    merge_teacher,
    model_in,
    normal_path,
    schema_at,
    set_at,
)
from distillscope.errors import ConfigError
from distillscope.grid import expand_grid

T = {"model": {"name": "mlp"}}


def test_merge_teacher_writes_the_shorthand_first_and_leaves_the_input_alone():
    raw = {"teacher": T, "teachers": {"other": T}, "seed": 1}
    merged = merge_teacher(raw)
    assert list(merged["teachers"]) == ["teacher", "other"] and "teacher" not in merged
    assert raw == {"teacher": T, "teachers": {"other": T}, "seed": 1}
    assert merge_teacher({"seed": 1, "teacher": None}) == {"seed": 1, "teacher": None}
    assert merge_teacher({"teacher": T, "teachers": None})["teachers"] == {"teacher": T}
    odd = {"teacher": T, "teachers": 5}  # not a mapping: left for the schema to name
    assert merge_teacher(odd) is odd
    with pytest.raises(ConfigError, match=r"^give either 'teacher' or 'teachers.teacher', not"):
        merge_teacher({"teacher": T, "teachers": {"teacher": T}})


def test_config_and_grid_read_the_teacher_shorthand_alike():
    both = {"teacher": T, "teachers": {"teacher": T}}
    with pytest.raises(ConfigError, match=r"^give either 'teacher' or 'teachers.teacher'"):
        load_config_dict(both, names=False)
    with pytest.raises(ConfigError, match=r"^give either 'teacher' or 'teachers.teacher'"):
        expand_grid({**both, "grid": {"seed": [0]}})
    with pytest.raises(ConfigError, match=r"^config key 'teachers': .*valid dictionary \(got 5\)"):
        load_config_dict({"teacher": T, "teachers": 5}, names=False)
    # `teachers: null` beside the shorthand is no teacher list: a plain config and a grid agree
    grid = expand_grid({"teacher": T, "teachers": None, "grid": {"teacher.model.name": ["mlp"]}})
    plain = expand_grid({"teacher": T, "grid": {"teacher.model.name": ["mlp"]}})
    assert grid.key == plain.key
    assert grid.cells[0].config.model_dump() == plain.cells[0].config.model_dump()


def test_paths_and_values_in_a_raw_tree():
    assert normal_path("teacher") == "teachers.teacher"
    assert normal_path("teacher.train.lr") == "teachers.teacher.train.lr"
    assert normal_path("teachers.x") == "teachers.x" and normal_path("teacherx") == "teacherx"
    tree: dict = {"a": {"b": 1}}
    assert get_at(tree, ["a", "b"]) == 1 and get_at(tree, ["a", "b", "c"]) is None
    assert get_at(tree, []) is tree and get_at(tree, ["z"]) is None
    value = {"deep": [1]}
    set_at(tree, "a.b.c", value)  # a value on the way becomes a section
    set_at(tree, "x.y", 2)
    assert tree == {"a": {"b": {"c": {"deep": [1]}}}, "x": {"y": 2}}
    value["deep"].append(2)
    assert tree["a"]["b"]["c"] == {"deep": [1]}  # a copy was set


def test_schema_sections_with_and_without_named_keys():
    assert schema_at(ExperimentConfig, []) is ExperimentConfig
    assert schema_at(ExperimentConfig, ["data"]) is DataConfig
    assert schema_at(ExperimentConfig, ["teacher", "model"]) is ModelSpec  # through X | None
    assert schema_at(ExperimentConfig, ["teachers"]) is None  # free keys: no fixed schema
    assert schema_at(ExperimentConfig, ["teachers", "t", "model"]) is None
    assert schema_at(ExperimentConfig, ["teachers", "t", "model"], named=True) is ModelSpec
    assert schema_at(ExperimentConfig, ["students", "s", "data"], named=True).__name__ == (
        "MemberData"
    )
    assert schema_at(ExperimentConfig, ["probes", "p"], named=True) is None
    assert schema_at(ExperimentConfig, ["data", 0]) is None
    assert schema_at(ExperimentConfig, ["nope"], named=True) is None
    fields = ExperimentConfig.model_fields
    assert model_in(fields["teachers"].annotation) is None
    assert model_in(fields["teachers"].annotation, in_mappings=True).__name__ == "TeacherSpec"
    assert model_in(fields["probes"].annotation, in_mappings=True) is None
