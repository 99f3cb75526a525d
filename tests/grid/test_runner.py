"""Running a grid: cells as normal runs, never recomputed, resumed after a kill, in parallel."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from distillscope.cli import main
from distillscope.errors import ConfigError, TrainingError, UserError
from distillscope.grid import GridCellError, run_grid
from distillscope.grid.summary import mean_std
from distillscope.train.trainer import Trainer
from tests.grid.grid_parts import tiny_grid, write_yaml

pytestmark = pytest.mark.integration

CELLS = ["T=1,seed=0", "T=1,seed=1", "T=4,seed=0", "T=4,seed=1"]


@pytest.fixture(autouse=True)
def _no_plots(monkeypatch):
    """Cells render their reports without matplotlib figures here (tests/report covers them)."""
    from distillscope.report import sections

    for chart in ("bar_chart", "series_chart", "training_chart"):
        monkeypatch.setattr(sections, chart, lambda *args, **kwargs: None)


def results_of(root: Path, cell: str) -> dict:
    return json.loads((root / "cells" / cell / "results.json").read_text())


def mtimes(root: Path) -> dict[str, int]:
    return {c: (root / "cells" / c / "results.json").stat().st_mtime_ns for c in CELLS}


def test_a_grid_runs_every_cell_as_a_run_and_summarises_over_seeds(tmp_path, capsys):
    path = write_yaml(tmp_path / "grid.yaml", tiny_grid(tmp_path))
    assert main(["run", str(path)]) == 0
    out, err = capsys.readouterr()
    root = Path(out.strip().splitlines()[-1])  # the last stdout line is the grid directory
    assert root.parent == tmp_path / "runs" and root.name.startswith("tiny-grid-")
    for cell in CELLS:
        for name in ("config.yaml", "results.json", "report.html", "run.log"):
            assert (root / "cells" / cell / name).is_file(), (cell, name)
    saved = yaml.safe_load((root / "cells" / "T=4,seed=1" / "config.yaml").read_text())
    assert saved["seed"] == 1 and saved["students"]["kd"]["temperature"] == 4

    # the T=1 teacher does not depend on T: the T=4 cell of the same seed reuses it
    assert results_of(root, "T=4,seed=0")["models"]["teacher"]["reused"] is True
    assert results_of(root, "T=1,seed=0")["models"]["teacher"]["reused"] is False

    summary = json.loads((root / "grid.json").read_text())
    assert [c["id"] for c in summary["cells"]] == CELLS
    assert {c["status"] for c in summary["cells"]} == {"done"}
    assert [g["id"] for g in summary["groups"]] == ["T=1", "T=4"]
    group = summary["groups"][1]
    key = "teacher->kd/kl"
    expected = mean_std(
        results_of(root, c)["probes"]["agreement"]["values"][key] for c in CELLS[2:]
    )
    assert group["values"]["agreement"][key] == expected and expected["n"] == 2
    assert (root / "summary.csv").read_text().startswith("T,probe,key,mean,std,n\n")

    html = (root / "report.html").read_text()
    assert 'href="cells/T=4,seed=1/report.html"' in html
    assert "agreement: kl" in html and "T=4" in html
    assert "4 finished" not in err and "0 finished, 4 to run" in err

    # the same command again: nothing is recomputed
    before = mtimes(root)
    assert main(["run", str(path)]) == 0
    out, err = capsys.readouterr()
    assert Path(out.strip().splitlines()[-1]) == root
    assert "4 finished, 0 to run" in err
    assert mtimes(root) == before


def test_a_grid_extended_with_more_seeds_runs_only_the_new_cells(tmp_path):
    raw = tiny_grid(tmp_path, {"T": [1], "seed": [0, 1]})
    root = run_grid(raw, ["grid.seed=[0]"])
    first = (root / "cells" / "T=1,seed=0" / "results.json").stat().st_mtime_ns
    assert not (root / "cells" / "T=1,seed=1").exists()
    assert run_grid(raw) == root
    assert (root / "cells" / "T=1,seed=0" / "results.json").stat().st_mtime_ns == first
    assert (root / "cells" / "T=1,seed=1" / "results.json").is_file()


def test_a_killed_grid_resumes_where_it_stopped(tmp_path, monkeypatch):
    train = {**tiny_grid(tmp_path)["train"], "epochs": 2}
    raw = tiny_grid(tmp_path, {"T": [4], "seed": [0, 1, 2]}, train=train)
    cells = ["T=4,seed=0", "T=4,seed=1", "T=4,seed=2"]
    fit = Trainer.fit

    def killed_in_kd(self, *args, **kwargs):
        if "T=4,seed=1" in str(self.checkpoint_dir) and self.name == "kd":
            raise KeyboardInterrupt  # what Ctrl-C (or a kill) does mid-training
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", killed_in_kd)
    with pytest.raises(KeyboardInterrupt):
        run_grid(raw)
    root = next((tmp_path / "runs").iterdir())
    killed = root / "cells" / "T=4,seed=1"
    assert (killed / "config.yaml").is_file() and not (killed / "results.json").exists()
    teacher_file = killed / "models" / "teacher.safetensors"
    teacher_time = teacher_file.stat().st_mtime_ns
    summary = json.loads((root / "grid.json").read_text())
    status = {c["id"]: c["status"] for c in summary["cells"]}
    assert status == dict(zip(cells, ["done", "partial", "pending"]))
    done = (root / "cells" / cells[0] / "results.json").stat().st_mtime_ns

    monkeypatch.setattr(Trainer, "fit", fit)
    assert run_grid(raw) == root
    assert (root / "cells" / cells[0] / "results.json").stat().st_mtime_ns == done
    assert all((root / "cells" / c / "results.json").is_file() for c in cells)
    assert teacher_file.stat().st_mtime_ns == teacher_time  # resumed, not started over
    assert "already trained" in (killed / "run.log").read_text()


def test_a_failing_cell_stops_the_grid_with_one_line_and_keeps_the_others(
    tmp_path, capsys, monkeypatch
):
    fit = Trainer.fit

    def diverges(self, *args, **kwargs):
        if "T=1,seed=1" in str(self.checkpoint_dir):
            raise TrainingError("loss is nan at step 1; lower train.lr")
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", diverges)
    path = write_yaml(tmp_path / "grid.yaml", tiny_grid(tmp_path, {"T": [1], "seed": [0, 1]}))
    assert main(["run", str(path)]) == 2
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("distillscope: error")]
    assert len(lines) == 1 and "grid cell T=1,seed=1 failed: loss is nan" in lines[0]
    assert "run.log" in lines[0] and "finished cells are kept" in lines[0] and out == ""
    root = next((tmp_path / "runs").iterdir())
    summary = json.loads((root / "grid.json").read_text())
    assert [c["status"] for c in summary["cells"]] == ["done", "failed"]
    assert "loss is nan" in summary["cells"][1]["error"]


def test_a_crashing_cell_exits_1_and_keeps_its_traceback(tmp_path, capsys, monkeypatch):
    def crashes(self, *args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(Trainer, "fit", crashes)
    raw = tiny_grid(tmp_path, {"T": [1], "seed": [0]})
    with pytest.raises(GridCellError, match="grid cell T=1,seed=0 failed: RuntimeError: boom"):
        run_grid(raw)
    log = next((tmp_path / "runs").iterdir()) / "cells" / "T=1,seed=0" / "run.log"
    assert "Traceback" in log.read_text()
    assert main(["run", str(write_yaml(tmp_path / "grid.yaml", raw))]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(err) == 1 and "RuntimeError: boom" in err[0] and "Traceback" not in err[0]


def test_a_cell_folder_of_another_config_is_refused_before_anything_runs(tmp_path):
    raw = tiny_grid(tmp_path, {"T": [1], "students.independent": {"x": {"loss": "ce"}}})
    root = run_grid(raw)
    other = {"x": {"loss": "label_smoothing"}}  # same label, another value
    changed = tiny_grid(tmp_path, {"T": [1], "students.independent": other})
    with pytest.raises(ConfigError, match="holds a run of another config"):
        run_grid(changed)
    assert len(list((root / "cells").iterdir())) == 1


def test_a_grid_being_run_elsewhere_is_refused(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    raw = tiny_grid(tmp_path, {"T": [1], "seed": [0]})
    root = run_grid(raw)
    with open(root / ".grid.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        with pytest.raises(UserError, match="being run by another process"):
            run_grid(raw)


def test_resume_a_grid_directory_and_rerender_its_report(tmp_path, capsys):
    root = run_grid(tiny_grid(tmp_path, {"T": [1], "seed": [0]}))
    (root / "report.html").unlink()
    assert main(["report", str(root)]) == 0
    assert (root / "report.html").is_file()
    assert main(["run", "--resume", str(root)]) == 0
    out, err = capsys.readouterr()
    assert out.strip().splitlines()[-1] == str(root) and "1 finished, 0 to run" in err


def test_jobs_2_runs_cells_in_parallel_processes(tmp_path, capsys):
    path = write_yaml(tmp_path / "grid.yaml", tiny_grid(tmp_path, {"T": [1, 4]}))
    assert main(["run", str(path), "--jobs", "2"]) == 0  # cells run in spawned processes
    out, err = capsys.readouterr()
    root = Path(out.strip().splitlines()[-1])
    summary = json.loads((root / "grid.json").read_text())
    assert [c["status"] for c in summary["cells"]] == ["done", "done"]
    assert summary["grid"]["jobs"] == 2 and "with 2 jobs" in err
    for cell in ("T=1", "T=4"):
        assert (root / "cells" / cell / "report.html").is_file()
        assert "[distillscope] run directory" in (root / "cells" / cell / "run.log").read_text()


def test_a_big_grid_is_refused_at_once_unless_confirmed(tmp_path, capsys):
    from distillscope.grid.expand import DEFAULT_MAX_CELLS

    seeds = list(range(DEFAULT_MAX_CELLS + 1))
    path = write_yaml(tmp_path / "grid.yaml", tiny_grid(tmp_path, {"T": [1], "seed": seeds}))
    assert main(["run", str(path), "--jobs", "2"]) == 2
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and out == "", err
    assert lines[0] == (
        f"distillscope: error: grid tiny: {len(seeds)} cells to run ({3 * len(seeds)} network "
        f"trainings) is more than {DEFAULT_MAX_CELLS} without confirmation; run it with --yes, "
        f"or write grid_max_cells: {len(seeds)} in the config"
    )
    assert not (tmp_path / "runs").exists()


def test_grid_max_cells_and_yes_confirm_and_the_cost_is_printed(tmp_path, capsys):
    raw = tiny_grid(tmp_path, {"T": [1], "seed": [0, 1]}, grid_max_cells=1)
    path = write_yaml(tmp_path / "grid.yaml", raw)
    assert main(["run", str(path)]) == 2
    assert "2 cells to run (6 network trainings) is more than 1" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()

    assert main(["run", str(path), "--yes"]) == 0
    out, err = capsys.readouterr()
    root = Path(out.strip().splitlines()[-1])
    # 3 networks a cell, 1 epoch each, 2 batches of 64 images an epoch
    assert "estimated cost: 6 network trainings in 2 cells, 6 epochs, 768 training images" in err
    assert "mean of" not in err  # no finished cell to time yet

    # one more seed: 1 cell to run (within the limit), timed by the 2 finished ones
    more = {**raw, "grid": {"T": [1], "seed": [0, 1, 2]}, "grid_max_cells": 1}
    assert main(["run", str(write_yaml(path, more))]) == 0
    out, err = capsys.readouterr()
    assert Path(out.strip().splitlines()[-1]) == root  # grid_max_cells is no part of the key
    assert "estimated cost: 3 network trainings in 1 cells, 3 epochs, 384 training" in err
    assert re.search(r"; about \d+ s at the [0-9.]+ s mean of 2 finished cells\n", err), err
    assert yaml.safe_load((root / "grid.yaml").read_text())["grid_max_cells"] == 1


def test_the_time_estimate_is_a_range_when_finished_cells_trained_their_teachers(tmp_path, capsys):
    """Cells that trained a teacher the next cells may find stored: the estimate runs from
    their pace without the teacher's epochs to their whole pace; reused teachers: one time."""
    raw = tiny_grid(tmp_path, {"T": [1], "seed": [0, 1]})
    path = write_yaml(tmp_path / "grid.yaml", raw)
    assert main(["run", str(path)]) == 0
    root = Path(capsys.readouterr()[0].strip().splitlines()[-1])

    def pace(trained: bool) -> None:  # every finished cell: 600 s, 200 s of it the teacher's
        for results in (root / "cells").glob("*/results.json"):
            data = json.loads(results.read_text())
            data["run"]["duration_s"] = 600.0
            data["models"]["teacher"]["reused"] = not trained
            data["training"]["teacher"] = [{"epoch": 1, "time": 150.0}, {"epoch": 2, "time": 50.0}]
            results.write_text(json.dumps(data))

    pace(trained=True)
    assert main(["run", str(write_yaml(path, {**raw, "grid": {"T": [1], "seed": [0, 1, 2]}}))]) == 0
    err = capsys.readouterr().err
    assert (
        "; about 6 min 40 s to 10 min 00 s at the 600.0 s mean of 2 finished cells, 200.0 s of "
        "it training teachers (the low end: the cells to run find them stored)\n"
    ) in err
    pace(trained=False)  # seed 2's results count too: 3 cells of 600 s, no teacher trained
    grid = {"T": [1], "seed": [0, 1, 2, 3]}
    assert main(["run", str(write_yaml(path, {**raw, "grid": grid}))]) == 0
    assert (
        "; about 10 min 00 s at the 600.0 s mean of 3 finished cells\n" in capsys.readouterr().err
    )


@pytest.mark.parametrize("value", [0, "many", True, 2.5])
def test_grid_max_cells_must_be_a_count(tmp_path, value):
    with pytest.raises(ConfigError, match="config key 'grid_max_cells': expected a whole number"):
        run_grid(tiny_grid(tmp_path, {"T": [1]}, grid_max_cells=value))
    assert not (tmp_path / "runs").exists()


def test_yes_needs_a_grid(tmp_path, capsys):
    raw = tiny_grid(tmp_path)
    del raw["grid"]
    raw["students"]["kd"] = {"loss": "kd"}
    assert main(["run", str(write_yaml(tmp_path / "plain.yaml", raw)), "--yes"]) == 2
    assert "--yes confirms a big grid; this config has no grid: section" in capsys.readouterr().err
