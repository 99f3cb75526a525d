"""A grid cell is validated and planned once; the cell runs the plan it was handed."""

from __future__ import annotations

import dataclasses
import json
import pickle
import sys

import pytest

from distillscope.config import load_config_dict
from distillscope.experiment import run_experiment
from distillscope.grid import expand_grid, run_grid
from distillscope.grid.runner import _task, plan_cells
from distillscope.plan import resolve_plan
from tests.grid.grid_parts import tiny_grid


def spy(monkeypatch, function) -> list:
    """The first argument of every call of ``function``, wherever the package imported it."""
    calls: list = []

    def recorded(*args, **kwargs):
        calls.append(args[0])
        return function(*args, **kwargs)

    import distillscope.grid.runner  # noqa: F401  (loaded, so a name it imports is replaced)

    for name, module in list(sys.modules.items()):
        if name.startswith("distillscope") and getattr(module, function.__name__, None) is function:
            monkeypatch.setattr(module, function.__name__, recorded)
    return calls


def test_a_cell_is_validated_and_planned_once(tmp_path, monkeypatch):
    validated = spy(monkeypatch, load_config_dict)
    planned = spy(monkeypatch, resolve_plan)
    grid = expand_grid(tiny_grid(tmp_path, {"T": [1], "seed": [0, 1]}))
    assert [raw["name"] for raw in validated[-2:]] == [c.config.name for c in grid.cells]
    expanded = len(validated)

    root = run_grid(grid, jobs=1)

    done = {p.parent.name for p in root.glob("cells/*/results.json")}
    assert done == {"T=1,seed=0", "T=1,seed=1"}
    assert len(validated) == expanded  # the cells ran their configs without validating again
    assert planned == [c.config for c in grid.cells]  # one plan per cell, made by the grid


def test_a_cell_task_carries_its_plan_to_a_worker_process(tmp_path):
    grid = expand_grid(tiny_grid(tmp_path, {"T": [1], "seed": [0, 1]}))
    plans = plan_cells(grid)
    task = _task(tmp_path, grid.cells[1], plans[grid.cells[1].id], None, False, 3)
    again = pickle.loads(pickle.dumps(task))  # what a spawned worker receives
    assert again == task
    assert again.plan.seed == 1 and again.plan.members["kd"].loss == {"kd": {"temperature": 1}}
    assert again.plan.threads == again.plan.record["threads"] == 3


def test_a_run_given_its_plan_runs_that_plan(tmp_path):
    cfg = expand_grid(tiny_grid(tmp_path, {"T": [1], "seed": [0]})).cells[0].config
    plan = resolve_plan(cfg)
    kd = dataclasses.replace(plan.members["kd"], seed=5, init_seed=5)
    run = run_experiment(plan=dataclasses.replace(plan, members={**plan.members, "kd": kd}))
    models = json.loads((run.path / "results.json").read_text())["models"]
    assert models["kd"]["seed"] == 5  # the plan's seed, not the config's (0): not re-resolved
    assert "seed" not in models["independent"]
    with pytest.raises(TypeError, match="not both"):
        run_experiment(cfg, plan=plan)
