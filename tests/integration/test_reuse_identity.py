"""Reuse keyed by everything that makes a result (issue: six silent wrong answers, exit 0).

Grid cells, resumed runs, stored teachers and model files are reused only when their identity
(the whole config, every byte of the data, the runtime) equals the one recorded when they were
made; otherwise one line names the field that differs. Each test below failed on the code
before identities: it printed the old answer and exited 0.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from distillscope import run_experiment
from distillscope.cli import main
from distillscope.data import fashion_mnist as fm
from distillscope.data.idx import write_idx
from distillscope.errors import CheckpointError, ConfigError
from distillscope.experiment import resume_experiment
from distillscope.grid import run_grid
from distillscope.train import trainer as trainer_module

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _no_installed_data(monkeypatch, tmp_path):
    """Only the test's own Fashion-MNIST copies are found."""
    monkeypatch.delenv("DISTILLSCOPE_DATA", raising=False)
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "system")
    monkeypatch.setattr(fm, "CACHE_DIR", tmp_path / "none")


def fake_fashion(folder: Path, *, invert: bool = False, shift: int = 0, edit: int | None = None):
    """A tiny Fashion-MNIST copy (600 train, 60 test): the same images and labels for the same
    arguments; ``invert`` inverts every image, ``shift`` moves every label, ``edit`` inverts
    only training image number ``edit``."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 600), ("test", 60)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 40, size=(n, 28, 28), dtype=np.uint8)
        for i, c in enumerate(labels):  # class c: a bright band at rows 2c..2c+3
            images[i, 2 * c : 2 * c + 4] += 200
        if invert:
            images = 255 - images
        if edit is not None and split == "train":
            images[edit] = 255 - images[edit]
        img_name, lbl_name = fm.FILES[split]
        folder.mkdir(parents=True, exist_ok=True)
        write_idx(folder / img_name, images)
        write_idx(folder / lbl_name, ((labels.astype(int) + shift) % 10).astype(np.uint8))
    return folder


def config(tmp_path: Path, root: Path | None = None, **extra: object) -> dict:
    cfg = {
        "name": "reuse",
        "seed": 2,
        "output_dir": str(tmp_path / "runs"),
        "progress": False,
        "data": {"name": "fashion-mnist", **({"root": str(root)} if root else {})},
        "train": {"epochs": 3, "batch_size": 32, "optimizer": "adam", "lr": 0.01},
        "teacher": {"model": {"name": "mlp"}, "train": {"epochs": 2}},
        "student": {"name": "mlp"},
        "students": {"independent": {"loss": "ce"}, "kd": {"loss": "kd", "temperature": 4}},
        "probes": {"accuracy": {}},
    }
    cfg.update(extra)
    return cfg


def results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


class Killed(Exception):
    pass


def kill_kd_in_epoch(monkeypatch, epoch: int) -> None:
    """Make the next run die in the kd student's ``epoch`` (earlier epochs checkpointed)."""
    original = trainer_module.Trainer._train_epoch
    calls = {"n": 0}

    def dying(self, *args, **kwargs):
        if self.name == "kd":
            calls["n"] += 1
            if calls["n"] == epoch:
                monkeypatch.setattr(trainer_module.Trainer, "_train_epoch", original)
                raise Killed
        return original(self, *args, **kwargs)

    monkeypatch.setattr(trainer_module.Trainer, "_train_epoch", dying)


def killed_run(tmp_path: Path, monkeypatch, **kwargs) -> Path:
    kill_kd_in_epoch(monkeypatch, 3)
    with pytest.raises(Killed):
        run_experiment(**kwargs)
    (run,) = [p for p in (tmp_path / "runs").iterdir() if not (p / "results.json").exists()]
    return run


# ----------------------------------------------------------------------- 1. grid cells


def grid_config(tmp_path: Path, root: Path | None = None) -> dict:
    cfg = config(tmp_path, root, probes={"accuracy": {}})
    cfg["train"]["epochs"] = 1
    cfg["students"] = {"independent": {"loss": "ce"}}
    cfg["grid"] = {"seed": [0, 1]}
    return cfg


def test_a_finished_grid_on_other_data_is_refused_not_reported(tmp_path, capsys) -> None:
    a = fake_fashion(tmp_path / "a")
    b = fake_fashion(tmp_path / "b", invert=True, shift=1)
    root = run_grid(grid_config(tmp_path), data_root=str(a))
    before = {p: p.stat().st_mtime_ns for p in root.glob("cells/*/results.json")}
    assert len(before) == 2
    with pytest.raises(ConfigError) as err:
        run_grid(grid_config(tmp_path), data_root=str(b))
    assert "another data" in str(err.value) and "data.test" in str(err.value)
    assert "move that folder away" in str(err.value)
    # nothing recomputed, nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in root.glob("cells/*/results.json")} == before
    # the CLI: exit 2, one line
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid_config(tmp_path)))
    capsys.readouterr()
    assert main(["run", str(path), "--data-root", str(b)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "another data" in lines[0]
    # the same data in another folder is the same data: every cell is finished
    moved = fake_fashion(tmp_path / "moved")
    assert run_grid(grid_config(tmp_path), data_root=str(moved)) == root
    assert {p: p.stat().st_mtime_ns for p in root.glob("cells/*/results.json")} == before


def test_a_grid_found_through_the_data_variable_is_checked_too(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DISTILLSCOPE_DATA", str(fake_fashion(tmp_path / "a")))
    run_grid(grid_config(tmp_path))
    monkeypatch.setenv("DISTILLSCOPE_DATA", str(fake_fashion(tmp_path / "b", shift=1)))
    with pytest.raises(ConfigError, match="another data"):
        run_grid(grid_config(tmp_path))


def test_a_run_records_where_its_data_was_and_what_it_was(tmp_path) -> None:
    a = fake_fashion(tmp_path / "a")
    run = run_experiment(config(tmp_path), data_root=str(a)).path
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["root"] == str(a)  # was null
    assert saved["threads"] == torch.get_num_threads()  # was null
    r = results(run)
    assert r["dataset"]["source"] == str(a)
    prints = r["dataset"]["fingerprints"]
    assert set(prints) == {"train", "test"} and all(len(v) == 32 for v in prints.values())
    assert r["identity"]["data"] == prints and len(r["identity"]["digest"]) == 32
    assert json.loads((run / "identity.json").read_text())["digest"] == r["identity"]["digest"]
    # re-running the saved config.yaml reads the same data (it names the folder)
    again = run_experiment(run / "config.yaml").path
    assert results(again)["identity"]["digest"] == r["identity"]["digest"]


# ----------------------------------------------------------------------- 2. resume on other data


def test_resume_on_other_data_is_refused_and_without_the_flag_continues_on_the_same(
    tmp_path, monkeypatch
) -> None:
    a = fake_fashion(tmp_path / "a")
    b = fake_fashion(tmp_path / "b", invert=True, shift=1)
    whole = run_experiment(config(tmp_path / "whole"), data_root=str(a)).path
    run = killed_run(tmp_path, monkeypatch, config=config(tmp_path), data_root=str(a))
    with pytest.raises(ConfigError) as err:
        resume_experiment(run, data_root=str(b))
    msg = str(err.value)
    assert "cannot resume" in msg and "data." in msg and "--data-root" in msg
    assert not (run / "results.json").exists()
    # without --data-root the saved config names the data it started on: identical result
    resumed = resume_experiment(run).path
    for name in ("teacher", "independent", "kd"):
        x = load_file(str(whole / "models" / f"{name}.safetensors"))
        y = load_file(str(resumed / "models" / f"{name}.safetensors"))
        assert all(torch.equal(x[k], y[k]) for k in x), name
    assert results(resumed)["probes"] == results(whole)["probes"]


def test_the_trainer_refuses_a_checkpoint_of_other_data(tmp_path) -> None:
    from distillscope.config_train import TrainConfig
    from distillscope.data import load_dataset
    from distillscope.distill import build_loss
    from distillscope.models import create_model
    from distillscope.train.trainer import Trainer

    a = load_dataset("toy2d-ring", "train", n_per_blob=20, ring_points=40, data_seed=0)
    b = load_dataset("toy2d-ring", "train", n_per_blob=20, ring_points=40, data_seed=1)
    assert len(a) == len(b)  # the same size, other points: the old check passed it

    def trainer(epochs: int) -> Trainer:
        torch.manual_seed(0)
        model = create_model("mlp", in_features=2, num_classes=a.info.num_classes)
        cfg = TrainConfig(epochs=epochs, batch_size=16, optimizer="adam", lr=0.01)
        return Trainer(model, build_loss({"ce": {}}), cfg, checkpoint_dir=tmp_path, progress=False)

    trainer(1).fit(a)
    with pytest.raises(ConfigError, match="was trained on other data"):
        trainer(1).fit(b, resume=True)
    assert len(trainer(1).fit(a, resume=True)) == 1  # the same data resumes


# ----------------------------------------------------------------------- 3. edited config


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda c: c["students"]["kd"].update(temperature=8), "config.students.kd.temperature"),
        (
            lambda c: c["students"]["independent"].update(loss="label_smoothing"),
            "config.students.independent.loss",
        ),  # fmt: skip
        (lambda c: c["probes"].update(agreement={}), "config.probes.agreement"),
        (lambda c: c.update(threads=c["threads"] + 1), "runtime.threads"),
    ],
)
def test_resume_after_editing_config_yaml_is_refused(tmp_path, monkeypatch, edit, field) -> None:
    a = fake_fashion(tmp_path / "a")
    run = killed_run(tmp_path, monkeypatch, config=config(tmp_path, a))
    saved = yaml.safe_load((run / "config.yaml").read_text())
    edit(saved)
    (run / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    before = sorted(p.name for p in run.rglob("*"))
    with pytest.raises(ConfigError) as err:
        resume_experiment(run)
    msg = str(err.value)
    assert f"{field} was" in msg
    assert ("config.yaml was edited" in msg) == field.startswith("config.")
    assert sorted(p.name for p in run.rglob("*")) == before  # nothing written


def test_a_model_file_of_another_run_is_not_loaded_as_this_runs(tmp_path, monkeypatch) -> None:
    a = fake_fashion(tmp_path / "a")
    other = run_experiment(config(tmp_path / "other", a, seed=5)).path
    run = killed_run(tmp_path, monkeypatch, config=config(tmp_path, a))
    (run / "models" / "independent.safetensors").write_bytes(
        (other / "models" / "independent.safetensors").read_bytes()
    )
    with pytest.raises(CheckpointError, match="not written by this run"):
        resume_experiment(run)


def test_a_run_without_an_identity_record_is_not_resumed_blindly(tmp_path, monkeypatch) -> None:
    a = fake_fashion(tmp_path / "a")
    run = killed_run(tmp_path, monkeypatch, config=config(tmp_path, a))
    (run / "identity.json").unlink()
    with pytest.raises(ConfigError, match="no readable identity.json"):
        resume_experiment(run)


# ----------------------------------------------------------------------- 6. every byte


def test_a_teacher_is_not_reused_when_one_image_changed(tmp_path, capfd) -> None:
    a = fake_fashion(tmp_path / "a")
    first = results(run_experiment(config(tmp_path, a)).path)
    assert first["models"]["teacher"]["reused"] is False
    # image 1 was not among the 256 evenly spaced images hashed before; every image is now hashed
    for edit in (1, 599):
        b = fake_fashion(tmp_path / f"b{edit}", edit=edit)
        r = results(run_experiment(config(tmp_path, b)).path)
        assert r["models"]["teacher"]["reused"] is False, edit
        assert r["dataset"]["fingerprints"]["train"] != first["dataset"]["fingerprints"]["train"]
    # the same bytes in another folder are the same data: reused
    c = fake_fashion(tmp_path / "c")
    assert results(run_experiment(config(tmp_path, c)).path)["models"]["teacher"]["reused"]
    teachers = Path(os.environ["DISTILLSCOPE_CACHE"]) / "teachers"
    assert len(list(teachers.iterdir())) == 3


# ----------------------------------------------------------------------- threads


def test_a_cell_records_its_thread_count_and_keeps_it_under_another_jobs(tmp_path) -> None:
    a = fake_fashion(tmp_path / "a")
    raw = grid_config(tmp_path, a)
    root = run_grid(raw)
    cells = sorted(root.glob("cells/*/config.yaml"))
    assert [yaml.safe_load(p.read_text())["threads"] for p in cells] == [
        torch.get_num_threads()
    ] * 2
    before = {p: p.stat().st_mtime_ns for p in root.glob("cells/*/results.json")}
    assert run_grid(raw, jobs=2) == root  # --jobs 2 would give new cells 1 thread: kept
    assert {p: p.stat().st_mtime_ns for p in root.glob("cells/*/results.json")} == before
    # a cell re-run from its saved config.yaml reproduces it
    again = run_experiment(cells[0]).path
    assert results(again)["probes"] == results(cells[0].parent)["probes"]
    # asking for another thread count is another runtime: refused, not reported
    with pytest.raises(ConfigError, match="another runtime.*runtime.threads"):
        run_grid({**raw, "threads": torch.get_num_threads() + 1})


def test_parallel_cells_get_their_thread_count_written_into_their_config(tmp_path) -> None:
    from distillscope.grid.expand import expand_grid
    from distillscope.grid.runner import _task, plan_cells

    def task(grid):
        cell = grid.cells[0]
        return _task(tmp_path, cell, plan_cells(grid)[cell.id], None, False, 3)

    parallel = task(expand_grid(grid_config(tmp_path)))
    assert parallel.plan.record["threads"] == parallel.plan.threads == parallel.threads == 3
    fixed = task(expand_grid({**grid_config(tmp_path), "threads": 2}))
    assert fixed.plan.record["threads"] == fixed.plan.threads == 2 and fixed.threads is None


def test_a_relative_data_root_is_recorded_as_the_folder_it_named(tmp_path, monkeypatch) -> None:
    fake_fashion(tmp_path / "a")
    monkeypatch.chdir(tmp_path)
    run = run_experiment(config(tmp_path), data_root="a").path
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["root"] == str(tmp_path / "a")
