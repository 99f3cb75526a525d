"""An MLflow file store: one MLflow run per run, the config as params, metrics per member and
epoch, the final files as artifacts, the same MLflow run continued on resume."""

from __future__ import annotations

import os
import sys

import pytest

from distillscope.config import load_config_dict
from distillscope.config_tracking import MlflowConfig
from distillscope.errors import ConfigError
from distillscope.tracking.base import RunLabel
from distillscope.tracking.mlflow_store import ALLOW_FILE_STORE, RUN_TAG, check_mlflow
from tests.tracking.readback import assert_same, mlflow_client, mlflow_runs, mlflow_scalars

LINES = [
    {"model": "teacher", "epoch": 1, "lr": 0.1, "loss": 2.0, "ce/ce": 2.0, "val_acc": 0.5},
    {"model": "kd", "stage": "fitnets/hint", "epoch": 1, "loss": 3.5},
    {"model": "kd", "epoch": 1, "lr": 0.1, "loss": 1.25, "kd/soft": 0.1, "val_acc": 0.25},
    {"model": "kd", "epoch": 2, "lr": 0.05, "loss": 0.75, "kd/soft": 0.07, "val_acc": 0.375},
]
CONFIG = {"name": "study", "seed": 0, "train": {"lr": 0.1, "milestones": []},
          "students": {"kd": {"loss": "kd", "temperature": 4.0}}}  # fmt: skip


@pytest.fixture
def store(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="the tracking extra (mlflow-skinny) is not installed")
    monkeypatch.setenv(ALLOW_FILE_STORE, "true")
    return tmp_path / "mlruns"


def tracker(store, run_dir, resume=False, axes=None, config=CONFIG):
    from distillscope.tracking.mlflow_store import MlflowTracker

    label = RunLabel("grid-x/T=4" if axes else run_dir.name, axes or {})
    return MlflowTracker(store, "study", label, run_dir, config, {"distillscope.digest": "ab12"},
                         resume)  # fmt: skip


def test_metrics_params_tags_and_artifacts_read_back(store, tmp_path) -> None:
    run_dir = tmp_path / "study-1"
    run_dir.mkdir()
    (run_dir / "results.json").write_text("{}")
    flow = tracker(store, run_dir)
    flow.log(LINES[:2])
    flow.log(LINES[2:])
    flow.close("FINISHED", [run_dir / "results.json", run_dir / "report.html"])  # no report
    (run,) = mlflow_runs(store, "study")
    assert run.info.run_name == "study-1" and run.info.status == "FINISHED"
    assert run.data.tags[RUN_TAG] == str(run_dir.resolve())
    assert run.data.tags["distillscope.digest"] == "ab12"
    assert run.data.params == {"name": "study", "seed": "0", "train.lr": "0.1",
                               "train.milestones": "[]", "students.kd.loss": "kd",
                               "students.kd.temperature": "4.0"}  # fmt: skip
    want = {
        "teacher": {"lr": {1: 0.1}, "loss": {1: 2.0}, "ce/ce": {1: 2.0}, "val_acc": {1: 0.5}},
        "kd": {"stage/fitnets/hint/loss": {1: 3.5}, "lr": {1: 0.1, 2: 0.05},
               "loss": {1: 1.25, 2: 0.75}, "kd/soft": {1: 0.1, 2: 0.07},
               "val_acc": {1: 0.25, 2: 0.375}},
    }  # fmt: skip
    assert_same(mlflow_scalars(store, run.info.run_id), want)  # float64: exact
    artifacts = mlflow_client(store).list_artifacts(run.info.run_id)
    assert [a.path for a in artifacts] == ["results.json"]


def test_a_grid_cell_is_tagged_with_its_axis_values(store, tmp_path) -> None:
    flow = tracker(store, tmp_path / "cells" / "T=4", axes={"students.kd.temperature": "4"})
    flow.close("FINISHED")
    (run,) = mlflow_runs(store, "study")
    assert run.info.run_name == "grid-x/T=4"
    assert run.data.tags["grid.students.kd.temperature"] == "4"


def test_a_resumed_run_continues_its_mlflow_run(store, tmp_path) -> None:
    run_dir = tmp_path / "study-1"
    first = tracker(store, run_dir)
    first.log(LINES[2:3])
    first.close("KILLED")
    other = tracker(store, tmp_path / "study-2")  # another run in the same store
    other.close("FINISHED")
    again = tracker(store, run_dir, resume=True)
    assert again.run_id == first.run_id
    assert mlflow_client(store).get_run(again.run_id).info.status == "RUNNING"
    again.log(LINES[3:])
    again.close("FINISHED")
    runs = mlflow_runs(store, "study")
    assert len(runs) == 2
    assert mlflow_scalars(store, first.run_id)["kd"]["loss"] == {1: 1.25, 2: 0.75}
    assert mlflow_client(store).get_run(first.run_id).info.status == "FINISHED"


def test_keys_mlflow_refuses_are_cleaned(store, tmp_path) -> None:
    config = {"data": {"params": {"odd|key": 1}}}
    flow = tracker(store, tmp_path / "r", config=config)
    flow.log([{"model": "kd", "epoch": 1, "kd:part": 0.5}])
    flow.close("FINISHED")
    (run,) = mlflow_runs(store, "study")
    assert run.data.params == {"data.params.odd_key": "1"}
    assert run.data.metrics == {"kd/kd_part": 0.5}


def test_the_file_store_switch_is_set_when_unset(store, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(ALLOW_FILE_STORE)
    tracker(store, tmp_path / "r").close("FINISHED")  # MLflow 3 refuses a file store without it
    assert os.environ[ALLOW_FILE_STORE] == "true"


def test_a_file_store_switched_off_is_refused_at_start_up(store, monkeypatch) -> None:
    monkeypatch.setenv(ALLOW_FILE_STORE, "false")
    with pytest.raises(ConfigError, match="MLFLOW_ALLOW_FILE_STORE='false' .* unset it"):
        check_mlflow(MlflowConfig(), "study")


def test_a_missing_package_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    with pytest.raises(ConfigError, match=r"tracking.mlflow needs the mlflow package.*\[track"):
        check_mlflow(MlflowConfig(), "study")


def test_an_unwritable_store_is_refused_and_nothing_made(store, tmp_path) -> None:
    (tmp_path / "file").write_text("")
    uri = (tmp_path / "file" / "mlruns").as_uri()
    with pytest.raises(ConfigError, match="tracking.mlflow.tracking_uri .* is a file"):
        check_mlflow(MlflowConfig(tracking_uri=uri), "study")
    check_mlflow(MlflowConfig(tracking_uri=str(store)), "study")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # checked, not made


def test_a_deleted_experiment_is_refused_at_start_up(store, tmp_path) -> None:
    tracker(store, tmp_path / "r").close("FINISHED")
    client = mlflow_client(store)
    client.delete_experiment(client.get_experiment_by_name("study").experiment_id)
    with pytest.raises(ConfigError, match="experiment 'study' was deleted .* restore it"):
        check_mlflow(MlflowConfig(tracking_uri=store.as_uri()), "study")
    check_mlflow(MlflowConfig(tracking_uri=store.as_uri(), experiment="other"), "study")


@pytest.mark.parametrize("uri", ["http://localhost:5000", "sqlite:///mlflow.db", "databricks"])
def test_a_store_that_is_not_a_file_store_is_refused_by_the_schema(uri) -> None:
    raw = {"tracking": {"mlflow": {"tracking_uri": uri}}}
    if uri == "databricks":  # no scheme: a folder named databricks, a file store
        assert load_config_dict(raw).tracking.mlflow.tracking_uri == uri
        return
    with pytest.raises(ConfigError, match="tracking_uri.*only an MLflow file store"):
        load_config_dict(raw)
