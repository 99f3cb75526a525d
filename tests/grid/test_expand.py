"""Grid expansion: cartesian product, variables used at many keys, seed axis, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from distillscope.cli import main
from distillscope.errors import ConfigError
from distillscope.grid import expand_grid, load_grid
from distillscope.grid.expand import cell_id_of
from distillscope.grid.runner import schedule
from tests.grid.grid_parts import tiny_grid, write_yaml

REPO = Path(__file__).resolve().parents[2]


def test_cells_are_the_product_in_axis_order(tmp_path):
    grid = expand_grid(tiny_grid(tmp_path, {"T": [1, 4], "seed": [0, 1, 2]}))
    assert [c.id for c in grid.cells] == [
        "T=1,seed=0",
        "T=1,seed=1",
        "T=1,seed=2",
        "T=4,seed=0",
        "T=4,seed=1",
        "T=4,seed=2",
    ]
    assert [c.config.seed for c in grid.cells] == [0, 1, 2, 0, 1, 2]
    assert grid.seed_axis == "seed"
    kd = grid.cells[4].config.students["kd"]
    assert kd.loss_spec() == {"kd": {"temperature": 4}}
    assert kd.train == {"temperature": 4}  # ${T} and $T both give the number, not a string
    assert grid.cells[0].params == {"T": 1, "seed": 0}
    assert grid.cells[0].config.progress is False
    assert len({c.config.name for c in grid.cells}) == 6  # each cell's run is named after it


def test_a_variable_sets_every_key_that_uses_it():
    grid = load_grid(REPO / "configs" / "reproduce" / "toy-temperature-sweep.yaml")
    assert [a.key for a in grid.axes] == ["T", "seed"]
    assert len(grid.cells) == 12
    (axis,) = [a for a in grid.axes if a.key == "T"]
    assert len(axis.used_at) == 2 + 16 + 8  # 2 teachers, 16 soft-label T's, 8 student train T's
    for cell in grid.cells:
        cfg, t = cell.config, cell.params["T"]
        teachers = {n: cfg.train_for(s.train).temperature for n, s in cfg.teachers.items()}
        assert teachers == {"FT_temp1": 1, "RT_temp1": 1, "FT_tempT": t, "RT_tempT": t}
        assert len(cfg.students) == 16
        for name, spec in cfg.students.items():
            assert spec.loss_spec() == {"soft_targets": {"temperature": t}}  # soft labels at T
            assert cfg.train_for(spec.train).temperature == (t if "_tempT_from" in name else 1)
    assert {c.params["T"] for c in grid.cells} == {10, 40, 70, 100}


def test_a_path_axis_replaces_what_the_config_writes_there(tmp_path):
    grid = expand_grid(tiny_grid(tmp_path, {"T": [1, 4], "students.kd.temperature": [8]}))
    kd = [c.config.students["kd"] for c in grid.cells]
    assert [s.loss_spec()["kd"]["temperature"] for s in kd] == [8, 8]  # the axis wins over $T
    assert [s.train["temperature"] for s in kd] == [1, 4]  # ${T} elsewhere still applies


def test_the_teacher_shorthand_can_be_an_axis(tmp_path):
    raw = tiny_grid(tmp_path, {"T": [1], "teacher.model.name": ["mlp_full", "mlp_reduced"]})
    grid = expand_grid(raw)
    assert [c.config.teachers["teacher"].model.name for c in grid.cells] == [
        "mlp_full",
        "mlp_reduced",
    ]
    assert grid.cells[0].id == "T=1,teacher.model.name=mlp_full"


def test_dotted_paths_labels_and_embedded_variables(tmp_path):
    raw = tiny_grid(
        tmp_path,
        {
            "train.epochs": [1, 2],  # not written in the config: a schema default
            "students.kd": {"hot": {"loss": "kd", "temperature": 8}, "ls": {"loss": "ce"}},
            "SIZE": ["full", "reduced"],
        },
        student={"name": "mlp_${SIZE}"},
    )
    grid = expand_grid(raw)
    assert len(grid.cells) == 8 and grid.seed_axis is None
    cell = grid.cells[-1]
    assert cell.id == "train.epochs=2,students.kd=ls,SIZE=reduced"
    assert cell.config.train.epochs == 2
    assert cell.config.students["kd"].loss_spec() == {"ce": {}}
    assert cell.config.student.name == "mlp_reduced"


def test_overrides_apply_to_every_cell_and_can_replace_an_axis(tmp_path):
    grid = expand_grid(tiny_grid(tmp_path), ["train.epochs=3", "grid.seed=[5]"])
    assert [c.id for c in grid.cells] == ["T=1,seed=5", "T=4,seed=5"]
    assert all(c.config.train.epochs == 3 for c in grid.cells)


def test_a_grid_override_with_a_dotted_axis_key_sets_that_axis(tmp_path):
    # everything after `grid.` is one axis key, not a nested section `train: {epochs: ...}`
    grid = expand_grid(tiny_grid(tmp_path, {"T": [1]}), ["grid.train.epochs=[1,2]"])
    assert [c.id for c in grid.cells] == ["T=1,train.epochs=1", "T=1,train.epochs=2"]
    assert [c.config.train.epochs for c in grid.cells] == [1, 2]
    assert [a.key for a in grid.axes] == ["T", "train.epochs"]
    with pytest.raises(ConfigError, match="grid is a value, not a section"):
        expand_grid(tiny_grid(tmp_path), ["grid=3", "grid.seed=[0]"])


def test_the_directory_ignores_axes_and_run_only_keys(tmp_path):
    one = expand_grid(tiny_grid(tmp_path))
    more_seeds = expand_grid(tiny_grid(tmp_path, {"T": [1, 4], "seed": [0, 1, 2]}))
    elsewhere = expand_grid(tiny_grid(tmp_path), ["progress=false", "device=auto", "threads=2"])
    other = expand_grid(tiny_grid(tmp_path), ["train.epochs=2"])
    assert one.key == more_seeds.key == elsewhere.key != other.key
    assert one.directory() == tmp_path / "runs" / f"tiny-grid-{one.key}"


def test_the_seed_axis_can_be_a_variable_and_runs_fastest(tmp_path):
    raw = tiny_grid(tmp_path, {"S": [0, 1], "T": [1, 4]}, seed="$S", data={"name": "toy2d-ring"})
    grid = expand_grid(raw)
    assert grid.seed_axis == "S"
    assert [c.id for c in schedule(grid)] == ["S=0,T=1", "S=1,T=1", "S=0,T=4", "S=1,T=4"]


def test_cell_ids_are_path_safe():
    assert cell_id_of({"data.root": "../x y", "T": "1"}) == "data.root=.._x_y,T=1"
    long = cell_id_of({"k": "v" * 300})
    assert len(long) <= 100 and "/" not in long


BAD_GRIDS = [
    ({"T": [1], "seed": []}, "grid axis 'seed' has no values"),
    ({"T": [1], "seed": 3}, "grid axis 'seed': expected a list of values"),
    ({"T": [1], "seed": [0, 0]}, "grid axis 'seed' lists '0' twice"),
    ({"T": [1], "students.nope.temperature": [1]}, "the config has no key 'nope' under 'students'"),
    ({"T": [1], "train.epoch": [1]}, "did you mean 'epochs'"),
    ({"T": [1], "bogus.x": [1]}, "the config has no key 'bogus'"),
    ({"U": [1]}, "never uses ${U}"),
    ({"students.kd": [{"loss": "ce"}]}, "name such values"),
    (
        {"students.kd": {"a": {"loss": "ce"}}, "students.kd.alpha": [0.5]},
        "both set 'students.kd'",
    ),
    ({"T": [1], "train.epochs": [1, -1]}, "grid cell T=1,train.epochs=-1: config key"),
    # every cell is validated: the schema on each one, the registry checks (parameters of
    # losses and probes) on each one that differs in more than its seed
    ({"T": [1], "seed": [0, 1, "x"]}, "grid cell T=1,seed=x: config key 'seed'"),
    (
        {"T": [1, "hot"], "seed": [0, 1]},
        "grid cell T=hot,seed=0: config key 'students.kd.train.temperature'",
    ),
    ({"T": [1], "data.root": ["a/b", "a_b"]}, "get the same folder"),
    ({"T": [1], "teacher.model": [{"name": "mlp_full"}]}, "name such values"),
]


@pytest.mark.parametrize(("axes", "needle"), BAD_GRIDS)
def test_bad_axes_fail_in_one_line_naming_the_axis(tmp_path, axes, needle):
    with pytest.raises(ConfigError) as err:
        expand_grid(tiny_grid(tmp_path, axes))
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def with_s(tmp_path, axes, **where):
    """The tiny grid plus a variable axis S, written as ``where`` says (path -> text)."""
    raw = tiny_grid(tmp_path, {"T": [1, 4], "S": [0, 1], **axes})
    for path, text in where.items():
        *parents, last = path.split("__")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = text
    return raw


@pytest.mark.parametrize(
    ("axes", "where", "needle"),
    [
        # $S is used, but only under a key that a path axis replaces: not "never uses"
        (
            {"students.kd": {"a": {"loss": "kd"}}},
            {"students__kd__alpha": "$S"},
            "grid axis 'T': the config uses ${T} only where grid axes replace what it writes "
            "('students.kd.temperature', set by the axis 'students.kd')",
        ),
        (
            {"seed": [0]},
            {"seed": "${S}"},
            "grid axis 'S': the config uses ${S} only where grid axes replace what it writes "
            "('seed', set by the axis 'seed')",
        ),
        # $S inside a longer string is not replaced (only ${S} is): say so, wherever it is
        (
            {},
            {"seed": "$S", "data__params__note": "run $S"},
            "config key 'data.params.note' writes $S inside a longer string, where only ${S} is "
            "replaced; write ${S} there",
        ),
        ({}, {"seed": "$S "}, "config key 'seed' writes $S inside a longer string"),
        # a nested mapping under grid: labels values of `train`, it is no axis `train.epochs`
        (
            {"train": {"epochs": [1, 2]}},
            {"seed": "$S"},
            "grid axis 'train': its value 'epochs' is a list, but 'train.epochs' is a config "
            "key; to vary it write the axis with its full path, train.epochs: [1, 2]",
        ),
    ],
)
def test_variable_errors_name_what_is_really_wrong(tmp_path, axes, where, needle):
    with pytest.raises(ConfigError) as err:
        expand_grid(with_s(tmp_path, axes, **where))
    assert needle in str(err.value) and "never uses" not in str(err.value)
    assert "\n" not in str(err.value)


def test_s_as_a_whole_value_in_either_spelling_is_used(tmp_path):
    for text in ("$S", "${S}"):
        grid = expand_grid(with_s(tmp_path, {}, teacher__seed=text))
        assert [c.config.teachers["teacher"].seed for c in grid.cells] == [0, 1, 0, 1]


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"grid": {}}, "config key 'grid': expected a mapping"),
        ({"grid": [1, 2]}, "config key 'grid': expected a mapping"),
        ({"name": "x-${T}"}, "cannot use the grid variable ${T}"),
        (
            {"students": {"kd": {"loss": "kd", "temperature": "$U", "alpha": "$T"}}},
            "uses ${U}, which is no grid variable",
        ),
    ],
)
def test_bad_grid_sections(tmp_path, change, needle):
    raw = tiny_grid(tmp_path)
    raw.update(change)
    with pytest.raises(ConfigError, match=needle.replace("$", r"\$").replace("{", r"\{")):
        expand_grid(raw)


@pytest.mark.parametrize(
    ("axes", "args", "needle"),
    [
        ({"seed": []}, [], "has no values"),
        ({"T": [1], "train.epochs": [1, 0]}, [], "grid cell T=1,train.epochs=0"),
        ({"T": [1, 4]}, ["--jobs", "0"], "--jobs=0 is invalid"),
        ({"T": [1, 4]}, ["--jobs", "two"], "--jobs='two' is invalid"),
        # the data and models of every cell are checked before anything is written
        (
            {"T": [1], "teachers.teacher.checkpoint": [None, "missing.safetensors"]},
            [],
            "grid cell T=1,teachers.teacher.checkpoint=missing.safetensors",
        ),
    ],
)
def test_cli_rejects_bad_grids_with_exit_2_and_writes_nothing(tmp_path, capsys, axes, args, needle):
    path = write_yaml(tmp_path / "grid.yaml", tiny_grid(tmp_path, axes))
    code = main(["run", str(path), *args])
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and out == ""
    assert len(lines) == 1 and lines[0].startswith("distillscope: error: "), err
    assert needle in lines[0]
    assert not (tmp_path / "runs").exists()


def test_jobs_needs_a_grid(tmp_path, capsys):
    raw = tiny_grid(tmp_path)
    del raw["grid"]
    raw["students"]["kd"] = {"loss": "kd"}
    path = write_yaml(tmp_path / "plain.yaml", raw)
    assert main(["run", str(path), "--jobs", "2"]) == 2
    assert "no grid: section" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_grid_override_turns_a_plain_config_into_a_grid(tmp_path):
    from distillscope.grid import is_grid_config

    raw = tiny_grid(tmp_path, {"seed": [0]})
    raw.pop("grid")
    raw["students"]["kd"] = {"loss": "kd", "temperature": 4}
    path = write_yaml(tmp_path / "plain.yaml", raw)
    assert not is_grid_config(path)
    assert is_grid_config(path, ["grid.seed=[0,1,2]"])
    assert not is_grid_config(path, ["train.epochs=1", "name=grid"])
    grid = load_grid(path, ["grid.seed=[0,1,2]"])
    assert [c.config.seed for c in grid.cells] == [0, 1, 2]


@pytest.mark.parametrize(
    "axes, args",
    [
        ({"T": [4]}, ["grid.seed=[1,1.0]"]),
        ({"T": [4, 4.0], "seed": [0]}, []),
        ({"T": [4], "seed": {"first": 0, "second": 0, "third": 0}}, []),
        ({"T": {"four": 4, "also_four": 4.0}}, []),
    ],
)
def test_values_equal_as_values_are_one_cell_not_replicates(tmp_path, capsys, axes, args):
    """Before, these ran as distinct cells (three identical replicates reported as n = 3)."""
    path = write_yaml(tmp_path / "grid.yaml", tiny_grid(tmp_path, axes))
    code = main(["run", str(path), *args])
    _, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "are the same config" in lines[0] and "give each value once" in lines[0]
    assert not (tmp_path / "runs").exists()


def test_yaml_zero_spellings_are_one_value(tmp_path):
    raw = tiny_grid(tmp_path, {"T": [4]})
    raw["grid"]["seed"] = {"a": 0, "b": 1}
    assert len(expand_grid(raw).cells) == 2  # distinct values pass
    with pytest.raises(ConfigError, match="'T=4,seed=a' and 'T=4,seed=b' are the same"):
        expand_grid({**raw, "grid": {"T": [4], "seed": {"a": 0, "b": 0.0}}})
