"""Reading back what the trackers wrote, and what metrics.jsonl says they should hold.

The expected scalars are taken from ``metrics.jsonl`` here, line by line, without the package's
own :func:`~distillscope.tracking.base.scalars`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

#: member -> scalar name -> step -> value
Scalars = dict[str, dict[str, dict[int, float]]]


def expected_scalars(metrics: Path) -> Scalars:
    """Every number of every epoch line of ``metrics.jsonl`` (stage lines under
    ``stage/<stage>/``), by member, name and epoch."""
    out: Scalars = {}
    for text in metrics.read_text().splitlines():
        line = json.loads(text)
        member, epoch = line["model"], line["epoch"]
        prefix = f"stage/{line['stage']}/" if "stage" in line else ""
        for key, value in line.items():
            if key in ("model", "epoch", "stage") or isinstance(value, (bool, str)):
                continue
            out.setdefault(member, {}).setdefault(prefix + key, {})[epoch] = float(value)
    return out


def tensorboard_scalars(folder: Path) -> Scalars:
    """The scalars of every member subfolder of ``folder``, read with TensorBoard's reader."""
    pytest.importorskip("tensorboard", reason="the tracking extra (tensorboard) is not installed")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: Scalars = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        events = EventAccumulator(str(sub), size_guidance={"scalars": 0})
        events.Reload()
        out[sub.name] = {tag: _once(events.Scalars(tag), sub.name, tag)
                         for tag in events.Tags()["scalars"]}  # fmt: skip
    return out


def _once(points: list[Any], member: str, name: str) -> dict[int, float]:
    """step -> value of a scalar's points; each step written once (no epoch logged twice)."""
    steps = [p.step for p in points]
    assert len(steps) == len(set(steps)), (member, name, steps)
    return {p.step: p.value for p in points}


def mlflow_client(store: Path) -> Any:
    """An MlflowClient on the file store in ``store``."""
    pytest.importorskip("mlflow", reason="the tracking extra (mlflow-skinny) is not installed")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=store.resolve().as_uri())


def mlflow_runs(store: Path, experiment: str) -> list[Any]:
    """Every MLflow run of ``experiment`` in the store, oldest first."""
    client = mlflow_client(store)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r} in {store}"
    return sorted(client.search_runs([found.experiment_id]), key=lambda r: r.info.start_time)


def mlflow_scalars(store: Path, run_id: str) -> Scalars:
    """The metrics of MLflow run ``run_id`` as member -> name -> step -> value (keys
    ``<member>/<name>``)."""
    client = mlflow_client(store)
    out: Scalars = {}
    for key in client.get_run(run_id).data.metrics:
        member, _, name = key.partition("/")
        out.setdefault(member, {})[name] = _once(client.get_metric_history(run_id, key), member,
                                                 name)  # fmt: skip
    return out


def assert_same(got: Scalars, want: Scalars, rel: float = 0.0) -> None:
    """The same members, names and steps, values equal (within ``rel``: float32 event files)."""
    assert sorted(got) == sorted(want)
    for member, names in want.items():
        assert sorted(got[member]) == sorted(names), member
        for name, steps in names.items():
            assert got[member][name] == pytest.approx(steps, rel=rel, nan_ok=True), (member, name)
