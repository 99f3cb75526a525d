"""Metrics lines as scalars, the flattened config, and a failing tracker that a run outlives."""

from __future__ import annotations

import math

import pytest

from distillscope.config_tracking import TrackingConfig
from distillscope.tracking import RunLabel, Tracker, Trackers, open_trackers
from distillscope.tracking.base import flat_params, scalars


class Recorder(Tracker):
    """Keeps what it is given; fails on the ``fail_at``-th call of log (0: never)."""

    name = "recorder"

    def __init__(self, fail_at: int = 0) -> None:
        self.lines: list[dict] = []
        self.closed: list[str] = []
        self.calls = 0
        self.fail_at = fail_at

    def log(self, lines):
        self.calls += 1
        if self.calls == self.fail_at:
            raise OSError(28, "No space left on device")
        self.lines.extend(lines)

    def close(self, status, artifacts=()):
        self.closed.append(status)


def test_scalars_are_every_number_of_a_line_but_its_keys() -> None:
    line = {"model": "kd", "epoch": 3, "lr": 0.1, "loss": 1.5, "kd/soft": 0.5, "val_acc": 0.75,
            "flag": True, "note": "text"}  # fmt: skip
    assert scalars(line) == ("kd", 3, {"lr": 0.1, "loss": 1.5, "kd/soft": 0.5, "val_acc": 0.75})
    member, step, values = scalars({"model": "s", "epoch": 1, "loss": math.nan})
    assert (member, step) == ("s", 1) and math.isnan(values["loss"])  # a diverged epoch shows


def test_stage_lines_are_prefixed_with_their_stage() -> None:
    line = {"model": "fitnet", "stage": "fitnets/hint", "epoch": 2, "loss": 0.25}
    assert scalars(line) == ("fitnet", 2, {"stage/fitnets/hint/loss": 0.25})


def test_flat_params_are_dotted_keys_of_text() -> None:
    config = {
        "name": "run",
        "train": {"lr": 0.05, "milestones": [], "precision": "fp32"},
        "teachers": {"t": {"model": {"name": "mlp", "params": {}}}},
        "root": None,
    }
    assert flat_params(config) == {
        "name": "run",
        "train.lr": "0.05",
        "train.milestones": "[]",
        "train.precision": "fp32",
        "teachers.t.model.name": "mlp",
        "teachers.t.model.params": "{}",  # an empty mapping is a value, not nothing
        "root": "null",
    }


def test_a_tracker_that_fails_is_reported_once_and_the_others_go_on() -> None:
    said: list[str] = []
    broken, healthy = Recorder(fail_at=2), Recorder()
    trackers = Trackers([broken, healthy], warn=said.append)
    epochs = [[{"model": "kd", "epoch": e, "loss": 1.0 / e}] for e in (1, 2, 3)]
    for lines in epochs:
        trackers.log(lines)
    assert [line["epoch"] for line in broken.lines] == [1]  # nothing after its failure
    assert [line["epoch"] for line in healthy.lines] == [1, 2, 3]
    assert len(said) == 1
    assert "recorder failed (OSError: [Errno 28] No space left on device)" in said[0]
    assert "metrics.jsonl holds every line" in said[0]
    trackers.close("FINISHED")
    assert broken.closed == [] and healthy.closed == ["FINISHED"]
    trackers.close("FAILED")  # closing again is a no-op (the experiment's finally does it)
    assert healthy.closed == ["FINISHED"]


def test_a_tracker_that_fails_to_close_is_reported() -> None:
    class Stuck(Recorder):
        def close(self, status, artifacts=()):
            raise ConnectionError("server down")

    said: list[str] = []
    Trackers([Stuck()], warn=said.append).close("FINISHED")
    assert len(said) == 1 and "ConnectionError: server down" in said[0]


def test_no_tracking_opens_nothing(tmp_path) -> None:
    trackers = open_trackers(TrackingConfig(), tmp_path / "run", RunLabel("run"), {}, "run")
    assert not trackers and trackers.live == []
    trackers.log([{"model": "kd", "epoch": 1, "loss": 1.0}])  # fed all the same: a no-op
    assert list(tmp_path.iterdir()) == []


def test_a_tracker_that_cannot_open_is_reported_and_left_out(tmp_path, monkeypatch) -> None:
    import distillscope.tracking as tracking

    def fail(*args, **kwargs):
        raise PermissionError("store is read-only")

    monkeypatch.setattr(tracking, "_open", fail)
    said: list[str] = []
    cfg = TrackingConfig(tensorboard={})
    trackers = open_trackers(cfg, tmp_path, RunLabel("x"), {}, "run", warn=said.append)
    assert not trackers
    assert said and said[0].startswith("warning: tracking: tensorboard failed (PermissionError")


@pytest.mark.parametrize("value", [True, {}])
def test_true_and_an_empty_mapping_turn_a_back_end_on(value) -> None:
    assert TrackingConfig(tensorboard=value, mlflow=value).chosen == ["tensorboard", "mlflow"]
    assert TrackingConfig(tensorboard=False).chosen == []
