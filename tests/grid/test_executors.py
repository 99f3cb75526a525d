"""Grid cells on other engines: submitit's local executor runs a 4-cell grid with the same
summary as local processes, finished cells are never resubmitted, a failing cell is reported
with its log, and bad choices or missing extras fail in one line before anything runs."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import pytest

from distillscope.cli import main
from distillscope.errors import ConfigError
from distillscope.grid import run_grid
from distillscope.grid.executors import check_executor, run_remote
from distillscope.grid.summary import CellOutcome
from tests.grid.grid_parts import tiny_grid, write_yaml

HAS_SUBMITIT = importlib.util.find_spec("submitit") is not None
HAS_RAY = importlib.util.find_spec("ray") is not None
LOCAL_SUBMITIT = {"cluster": "local", "cpus": 1}


def summary(root: Path) -> str:
    return (root / "summary.csv").read_text()


@pytest.mark.skipif(not HAS_SUBMITIT, reason="the cluster extra (submitit) is not installed")
def test_submitit_runs_a_grid_with_the_local_summary(tmp_path: Path) -> None:
    local = run_grid(tiny_grid(tmp_path / "a"), jobs=2)
    remote = run_grid(tiny_grid(tmp_path / "b"), jobs=2, executor="slurm",
                      executor_options=LOCAL_SUBMITIT)  # fmt: skip
    assert len(list((remote / "cells").iterdir())) == 4
    assert summary(remote) == summary(local)
    assert any((remote / "submitit").iterdir())  # submitit's own job logs
    jobs_before = len(list((remote / "submitit").glob("*_submitted.pkl")))
    again = run_grid(tiny_grid(tmp_path / "b"), jobs=2, executor="slurm",
                     executor_options=LOCAL_SUBMITIT)  # fmt: skip
    assert again == remote and summary(again) == summary(local)
    assert len(list((remote / "submitit").glob("*_submitted.pkl"))) == jobs_before  # none new


@dataclass(frozen=True)
class FakeTask:
    id: str


def dying_cell(task: FakeTask) -> CellOutcome:
    """A job whose process dies (run on the engine, so defined at module level)."""
    if task.id == "dies":
        raise RuntimeError("out of memory on the node")
    return CellOutcome(task.id, "failed" if task.id == "fails" else "done", 1.0,
                       "loss is nan" if task.id == "fails" else None)  # fmt: skip


@pytest.mark.skipif(not HAS_SUBMITIT, reason="the cluster extra (submitit) is not installed")
def test_jobs_that_fail_or_die_are_reported_and_stop_new_cells(tmp_path: Path) -> None:
    outcomes: list[CellOutcome] = []
    started: list[str] = []
    tasks = [FakeTask("ok"), FakeTask("dies"), FakeTask("fails"), FakeTask("never")]
    run_remote(check_executor("slurm", LOCAL_SUBMITIT), tasks, 2, started.append,
               outcomes.append, lambda: any(o.status == "failed" for o in outcomes), tmp_path,
               dying_cell, lambda cid, error: CellOutcome(cid, "failed", 0.0, error))  # fmt: skip
    by_id = {o.id: o for o in outcomes}
    assert by_id["ok"].status == "done"
    assert by_id["dies"].status == "failed"
    assert by_id["dies"].error.startswith("slurm job died: ")
    assert "out of memory on the node" in by_id["dies"].error
    assert "never" not in started  # no new cell after a failure


@pytest.mark.skipif(not HAS_RAY, reason="the ray extra is not installed")
def test_ray_runs_a_grid_with_the_local_summary(tmp_path: Path) -> None:
    local = run_grid(tiny_grid(tmp_path / "a"), jobs=2)
    remote = run_grid(tiny_grid(tmp_path / "b"), jobs=2, executor="ray",
                      executor_options={"cpus": 1})  # fmt: skip
    assert summary(remote) == summary(local)


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("kubernetes", {}, r"^--executor 'kubernetes' is unknown; use one of local, slurm, ray$"),
        ("local", {"partition": "x"}, r"^executor local takes no option 'partition'"),
        ("slurm", {"cpus": 0}, r"^executor slurm: cpus=0 is invalid"),
        ("slurm", {"cpus": "two"}, r"^executor slurm: cpus='two' is invalid"),
        ("slurm", {"cluster": "lsf"}, r"^executor slurm: cluster='lsf' is invalid"),
    ],
)
def test_bad_executor_choices_fail_in_one_line(name: str, options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        check_executor(name, options)
    assert "\n" not in str(info.value)


def test_a_missing_extra_is_named_and_nothing_is_written(tmp_path: Path, monkeypatch, capsys):
    import builtins

    real = builtins.__import__

    def no_engines(name, *args, **kwargs):
        if name in ("submitit", "ray"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_engines)
    path = write_yaml(tmp_path / "g.yaml", tiny_grid(tmp_path))
    code = main(["run", str(path), "--executor", "slurm", "--slurm-partition", "gpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert (
        "needs the submitit package; install it with pip install 'distillscope[cluster]'" in err[0]
    )
    assert not (tmp_path / "runs").exists()


def test_executor_flags_need_a_grid(tmp_path: Path, capsys) -> None:
    cfg = tiny_grid(tmp_path)
    del cfg["grid"]
    code = main(["run", str(write_yaml(tmp_path / "one.yaml", cfg)), "--executor", "ray"])
    assert code == 2 and "this config has no grid: section" in capsys.readouterr().err
