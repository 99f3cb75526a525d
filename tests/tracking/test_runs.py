"""Whole runs with trackers: every epoch of every member read back equal to metrics.jsonl, the
identity untouched, bad settings refused before anything is written, a tracker failing in the
middle of a run reported once, a resumed run continued, grid cells apart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from distillscope import run_experiment
from distillscope.cli import main
from distillscope.config import dump_config, load_config_dict
from distillscope.errors import RunInterrupted, TrainingError
from distillscope.experiment import resume_experiment
from distillscope.grid.expand import load_grid
from distillscope.grid.runner import run_grid
from distillscope.identity import without_locations
from distillscope.train import trainer as trainer_module
from tests.grid.grid_parts import tiny_grid
from tests.tracking.readback import (
    assert_same,
    expected_scalars,
    mlflow_client,
    mlflow_runs,
    mlflow_scalars,
    tensorboard_scalars,
)

#: back-end -> (the module it imports, the package that installs it)
BACKENDS = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow-skinny")}
#: TensorBoard keeps scalars in float32, MLflow in float64.
TOLERANCE = {"tensorboard": 1e-6, "mlflow": 0.0}


def tiny(tmp_path: Path, tracking: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """Two epochs of a teacher, a KD student and a FitNets student with its hint stage."""
    cfg: dict[str, Any] = {
        "name": "tiny",
        "output_dir": str(tmp_path / "runs"),
        "progress": False,
        "device": "cpu",
        "data": {"name": "toy2d-ring"},
        "train": {"epochs": 2, "batch_size": 64, "optimizer": "adam", "lr": 0.01,
                  "max_batches": 3},
        "teacher": {"model": {"name": "mlp_full"}},
        "student": {"name": "mlp_reduced"},
        "students": {
            "kd": {"loss": "kd", "temperature": 4.0},
            "fitnet": {"loss": {"ce": {}, "hint": {"student_layer": "body.act1",
                                                   "teacher_layer": "body.act1",
                                                   "stage1_epochs": 1}}},
        },
        "probe_defaults": {"max_samples": 32, "batch_size": 32},
        "probes": {"accuracy": {}},
    }  # fmt: skip
    if tracking is not None:
        cfg["tracking"] = tracking
    cfg.update(extra)
    return cfg


def read_back(backend: str, run: Path, store: Path | None = None) -> dict:
    if backend == "tensorboard":
        return tensorboard_scalars(run / "tensorboard")
    (found,) = mlflow_runs(store or run / "mlruns", "tiny")
    return mlflow_scalars(store or run / "mlruns", found.info.run_id)


@pytest.fixture(params=sorted(BACKENDS))
def backend(request, monkeypatch) -> str:
    module, package = BACKENDS[request.param]
    pytest.importorskip(module, reason=f"the tracking extra ({package}) is not installed")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # restored after the test
    return request.param


def test_every_epoch_of_every_member_reads_back_as_in_metrics_jsonl(tmp_path, backend, capsys):
    run = run_experiment(tiny(tmp_path, {backend: {}})).path
    want = expected_scalars(run / "metrics.jsonl")
    assert sorted(want) == ["fitnet", "kd", "teacher"]
    assert want["fitnet"]["stage/hint/stage1/loss"].keys() == {1}  # the stage line is there
    assert want["kd"]["val_acc"].keys() == {1, 2}
    assert_same(read_back(backend, run), want, rel=TOLERANCE[backend])
    assert f"tracking: {backend} writes to {run}" in capsys.readouterr().err
    if backend == "mlflow":
        (found,) = mlflow_runs(run / "mlruns", "tiny")
        assert found.info.status == "FINISHED" and found.info.run_name == run.name
        assert found.data.params["students.kd.temperature"] == "4.0"
        assert found.data.tags["distillscope.digest"] == json.loads(
            (run / "identity.json").read_text())["digest"]  # fmt: skip
        files = [a.path for a in mlflow_client(run / "mlruns").list_artifacts(found.info.run_id)]
        assert files == ["metrics.jsonl", "report.html", "results.json"]


def test_tracking_settings_are_not_part_of_the_identity(tmp_path) -> None:
    plain = load_config_dict(tiny(tmp_path))
    tracked = load_config_dict(tiny(tmp_path, {"tensorboard": {"log_dir": "tb"}, "mlflow": {}}))
    assert tracked.tracking.chosen == ["tensorboard", "mlflow"]
    assert without_locations(dump_config(plain)) == without_locations(dump_config(tracked))
    grid = {"grid": {"T": [1, 4]}}
    assert load_grid(tiny_grid(tmp_path, **grid)).key == load_grid(
        tiny_grid(tmp_path, tracking={"tensorboard": {}}, **grid)).key  # fmt: skip


def test_a_tracked_run_has_the_identity_and_numbers_of_an_untracked_one(tmp_path, backend):
    plain = run_experiment(tiny(tmp_path)).path
    tracked = run_experiment(tiny(tmp_path, {backend: {}})).path
    digests = [json.loads((r / "identity.json").read_text())["digest"] for r in (plain, tracked)]
    assert digests[0] == digests[1]

    def numbers(run: Path) -> list[dict]:  # the students' (the second run reuses the teacher)
        lines = [json.loads(t) for t in (run / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in line.items() if k != "time"} for line in lines
                if line["model"] != "teacher"]  # fmt: skip

    assert numbers(plain) == numbers(tracked)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("tracking.mlflow.tracking_uri=http://localhost:5000", "only an MLflow file store"),
        ("tracking.tensorboard.log_dir=FILE/tb", "tracking.tensorboard"),
        ("tracking.mlflow.tracking_uri=FILE/mlruns", "tracking.mlflow"),
        ("tracking.tensorboard.bogus=1", "unknown config key 'tracking.tensorboard.bogus'"),
    ],
)
def test_bad_tracking_settings_exit_2_and_write_nothing(tmp_path, capsys, override, needle):
    blocker = tmp_path / "file"
    blocker.write_text("")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny(tmp_path)))
    code = main(["run", str(config), override.replace("FILE", str(blocker))])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("distillscope: error: ") and needle in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "tiny.yaml"]  # no runs/


def test_a_tracker_failing_mid_run_warns_once_and_the_run_goes_on(tmp_path, backend, capsys,
                                                                   monkeypatch):  # fmt: skip
    from distillscope.tracking import Trackers

    calls = {"n": 0}
    original = Trackers.log

    def full_disk_after_two(self, lines):
        calls["n"] += 1
        if calls["n"] > 2:
            for tracker in self.live:  # the back-end itself fails, inside the guard
                monkeypatch.setattr(tracker, "log", _raise_disk_full)
        original(self, lines)

    monkeypatch.setattr(Trackers, "log", full_disk_after_two)
    run = run_experiment(tiny(tmp_path, {backend: {}})).path
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "tracking:" in line and "failed" in line]
    assert len(warnings) == 1, err
    assert f"{backend} failed (OSError: [Errno 28] No space left on device)" in warnings[0]
    assert (run / "results.json").is_file()
    want = expected_scalars(run / "metrics.jsonl")
    assert want["kd"]["loss"].keys() == {1, 2}  # metrics.jsonl has every epoch
    got = read_back(backend, run)
    assert "kd" not in got and "teacher" in got  # the tracker stopped at its failure


def _raise_disk_full(lines: Any) -> None:
    raise OSError(28, "No space left on device")


def test_a_killed_run_resumes_into_the_same_tracking(tmp_path, backend, monkeypatch):
    original = trainer_module.Trainer._train_epoch
    calls = {"n": 0}

    def dying(self, *args, **kwargs):
        if self.name == "kd":
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt  # Ctrl-C in kd's second epoch
        return original(self, *args, **kwargs)

    monkeypatch.setattr(trainer_module.Trainer, "_train_epoch", dying)
    with pytest.raises(RunInterrupted):
        run_experiment(tiny(tmp_path, {backend: {}}))
    monkeypatch.setattr(trainer_module.Trainer, "_train_epoch", original)
    (killed,) = (tmp_path / "runs").iterdir()
    if backend == "mlflow":
        (found,) = mlflow_runs(killed / "mlruns", "tiny")
        assert found.info.status == "KILLED"
    resumed = resume_experiment(killed).path
    want = expected_scalars(resumed / "metrics.jsonl")
    assert want["kd"]["loss"].keys() == {1, 2}
    assert_same(read_back(backend, resumed), want, rel=TOLERANCE[backend])  # one run, no gaps
    if backend == "mlflow":
        (found,) = mlflow_runs(killed / "mlruns", "tiny")
        assert found.info.status == "FINISHED"


def test_a_run_that_stops_on_an_error_marks_its_mlflow_run_failed(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="the tracking extra (mlflow-skinny) is not installed")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    original = trainer_module.Trainer._train_epoch

    def diverging(self, *args, **kwargs):
        if self.name == "kd":
            raise TrainingError("non-finite loss in 'kd'")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(trainer_module.Trainer, "_train_epoch", diverging)
    with pytest.raises(TrainingError):
        run_experiment(tiny(tmp_path, {"mlflow": {}}))
    (run,) = (tmp_path / "runs").iterdir()
    (found,) = mlflow_runs(run / "mlruns", "tiny")
    assert found.info.status == "FAILED"
    assert_same(mlflow_scalars(run / "mlruns", found.info.run_id),
                expected_scalars(run / "metrics.jsonl"))  # fmt: skip


def test_grid_cells_get_their_own_folder_and_mlflow_run_with_their_axes(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard", reason="the tracking extra (tensorboard) is not installed")
    pytest.importorskip("mlflow", reason="the tracking extra (mlflow-skinny) is not installed")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    board, store = tmp_path / "tb", tmp_path / "mlruns"
    tracking = {"tensorboard": {"log_dir": str(board)},
                "mlflow": {"tracking_uri": store.as_uri(), "experiment": "study"}}  # fmt: skip
    root = run_grid(tiny_grid(tmp_path, grid={"T": [1, 4]}, progress=False, tracking=tracking))
    cells = {"T=1": "1", "T=4": "4"}
    assert sorted(p.name for p in (board / root.name).iterdir()) == sorted(cells)
    runs = {r.info.run_name: r for r in mlflow_runs(store, "study")}
    assert sorted(runs) == [f"{root.name}/{cell}" for cell in sorted(cells)]
    for cell, value in cells.items():
        want = expected_scalars(root / "cells" / cell / "metrics.jsonl")
        assert_same(tensorboard_scalars(board / root.name / cell), want, rel=1e-6)
        found = runs[f"{root.name}/{cell}"]
        assert found.data.tags["grid.T"] == value
        assert found.data.params["students.kd.temperature"] == value
        assert_same(mlflow_scalars(store, found.info.run_id), want)
