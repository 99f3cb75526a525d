"""Errors a newcomer meets (issue 24): each is one line naming the key or folder and the fix,
exit code 2, and nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from distillscope.cli import main
from distillscope.config import apply_overrides, load_config_dict

TINY = {
    "name": "tiny",
    "data": {"name": "toy2d-ring"},
    "train": {"epochs": 1, "batch_size": 64},
    "teacher": {"model": {"name": "mlp_full"}},
    "student": {"name": "mlp_reduced"},
    "students": {"independent": {"loss": "ce"}, "kd": {"loss": "kd"}},
    "probes": {"accuracy": {}},
    "progress": False,
}


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    """A folder for the config and the teacher store, and the (not yet existing) output."""
    return tmp_path, tmp_path / "runs"


def write(folder: Path, config: dict) -> Path:
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump({**config, "teacher_store": str(folder / "store")}))
    return path


def error_of(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one error line of a CLI call that must fail with exit code 2 (progress lines of a
    run that started are left aside)."""
    code = main(args)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip() and line[0] != "["]
    assert code == 2 and out == "", err
    assert len(lines) == 1 and lines[0].startswith("distillscope: error: "), err
    return lines[0].removeprefix("distillscope: error: ")


def test_per_class_on_a_fraction_config_names_both_keys_and_the_fix(setup, capsys):
    folder, out = setup
    config = write(folder, {**TINY, "data": {"name": "digits", "train_fraction": 0.5}})
    line = error_of(["run", str(config), "data.train_per_class=30", "--output-dir", str(out)],
                    capsys)  # fmt: skip
    assert line == (
        "give data.train_per_class (30) or data.train_fraction (0.5), not both; to keep "
        "data.train_per_class, add the override data.train_fraction=null (or drop one from the "
        "config)"
    )
    assert not out.exists()
    # the fix the line names is a valid override: 30 per class of digits' 10 classes
    fixed = load_config_dict(
        {**TINY, "data": {"name": "digits", "train_fraction": 0.5}},
        ["data.train_per_class=30", "data.train_fraction=null"],
    )
    assert (fixed.data.train_per_class, fixed.data.train_fraction) == (30, None)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "teacher.model.params.depth=7",
            "config key 'teachers.teacher.model.params.depth': resnet_cifar depth must be 6n+2 "
            "with n >= 1, got 7; valid depths: 8, 14, 20, 32, 44, 56, 110, ... (any 6n+2)",
        ),
        (
            "teacher.model.params.depth=deep",
            "config key 'teachers.teacher.model.params.depth': 'deep' is invalid for "
            "resnet_cifar: input should be a valid integer (expected int)",
        ),
        (
            "teacher.model.params.dept=8",
            "unknown config key 'teachers.teacher.model.params.dept' (not a parameter of model "
            "'resnet_cifar'); valid parameters: depth, in_channels, num_classes, width",
        ),
        (
            "student.params.width=-4",
            "config key 'student.params.width': resnet_cifar width must be >= 1, got -4",
        ),
    ],
)
def test_a_bad_model_parameter_names_its_key_path(setup, capsys, override, expected):
    folder, out = setup
    resnet = {"name": "resnet_cifar", "params": {"depth": 8}}
    config = write(folder, {**TINY, "data": {"name": "digits"}, "teacher": {"model": resnet},
                            "student": resnet})  # fmt: skip
    line = error_of(["run", str(config), override, "--output-dir", str(out)], capsys)
    assert line.startswith(expected), line
    assert not out.exists()


def test_teacher_override_on_a_config_of_named_teachers_names_the_keys_to_use(setup, capsys):
    folder, out = setup
    named = {k: v for k, v in TINY.items() if k != "teacher"}
    named["teachers"] = {
        "big": {"model": {"name": "mlp_full"}},
        "small": {"model": {"name": "mlp"}},
    }
    config = write(folder, named)
    line = error_of(["run", str(config), "teacher.train.epochs=1", "--output-dir", str(out)],
                    capsys)  # fmt: skip
    assert line == (
        "config key 'teacher.train.epochs': this config names its teachers under 'teachers:' "
        "(big, small); set teachers.<name>.train.epochs instead, one override per teacher, "
        "e.g. teachers.big.train.epochs=1"
    )
    assert not out.exists()
    assert load_config_dict(named, ["teachers.big.train.epochs=1"]).teachers["big"].train == {
        "epochs": 1
    }


def test_the_teacher_is_addressed_either_way_in_an_override():
    # errors name teachers.teacher.<key>; typed back on a `teacher:` config it sets that teacher
    assert apply_overrides(TINY, ["teachers.teacher.train.lr=0.1"])["teacher"]["train"] == {
        "lr": 0.1
    }
    named = {"teachers": {"teacher": {"model": {"name": "mlp"}}}}
    assert apply_overrides(named, ["teacher.seed=3"])["teachers"]["teacher"]["seed"] == 3
    cfg = load_config_dict(TINY, ["teachers.teacher.model.name=mlp"], names=False)
    assert cfg.teachers["teacher"].model.name == "mlp"


def test_a_nan_stop_names_the_run_directory_and_the_lower_lr_to_run_with(setup, capsys):
    folder, out = setup
    config = write(folder, {**TINY, "students": {"kd": {"loss": "kd", "train": {"lr": 1e30}}}})
    line = error_of(["run", str(config), "--output-dir", str(out)], capsys)
    (run_dir,) = out.iterdir()
    assert line.startswith("non-finite loss in 'kd' at epoch 1, step ")
    assert line.endswith(
        f"; the run so far is in {run_dir}; --resume would stop at the same step (it continues "
        f"with the saved settings): run `distillscope run {run_dir / 'config.yaml'} "
        "students.kd.train.lr=5e+29`, a new run (teachers already trained are reused from the "
        "store)"
    )
    # --resume with a changed setting is refused, naming the way that works
    line = error_of(["run", "--resume", str(run_dir), "students.kd.train.lr=0.05"], capsys)
    assert f"`distillscope run {run_dir / 'config.yaml'} key.path=value`" in line
    # the way named: the saved config with a lower lr, a new run that reuses the stored teacher
    code = main(["run", str(run_dir / "config.yaml"), "students.kd.train.lr=0.05"])
    done, err = capsys.readouterr()
    assert code == 0 and "reusing stored teacher" in err
    assert Path(done.strip()) != run_dir and (Path(done.strip()) / "report.html").is_file()


def test_report_takes_a_results_file_and_names_a_missing_folder(setup, capsys):
    folder, _ = setup
    missing = folder / "nowhere"
    line = error_of(["report", str(missing / "results.json")], capsys)
    assert line == (
        f"{str(missing)!r} does not exist; pass a run directory (the last line `distillscope "
        "run` printed), a grid directory or a reproduce folder"
    )
    assert error_of(["report", str(missing)], capsys) == line
    assert not missing.exists()
    other = folder / "notes.txt"
    other.write_text("x")
    assert "is a file, not a folder" in error_of(["report", str(other)], capsys)
    # a results.json path stands for its folder: the error names the file once
    line = error_of(["report", str(folder / "results.json")], capsys)
    assert line.startswith(f"{folder / 'results.json'}: file not found")
