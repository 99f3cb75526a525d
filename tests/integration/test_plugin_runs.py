"""Acceptance (issue 24): a plugin's loss and probe used by CLI runs; its code, not its name,
decides what is reused (stored teachers, grid cells), also in cells run in their own processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from distillscope.cli import main
from tests.core.plugin_parts import CONFIG, PLUGIN, isolated_registries, write_plugin

__all__ = ["isolated_registries"]  # the fixture, used by name
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("isolated_registries")]


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> Path:
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 0, err
    return Path(out.strip().splitlines()[-1])


def test_a_plugin_loss_and_probe_reach_results_json(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    write_plugin(tmp_path)
    Path("plug.yaml").write_text(yaml.safe_dump(CONFIG))
    rd = run(["run", "plug.yaml", "--plugin", "t_plugin.py"], capsys)
    results = json.loads((rd / "results.json").read_text())
    assert results["models"]["mine"]["loss"] == {"t_margin": {"beta": 0.3}}
    assert set(results["probes"]["t_confidence"]["values"]) == {
        "teacher/mean", "independent/mean", "mine/mean"}  # fmt: skip
    logged = {k for line in (rd / "metrics.jsonl").read_text().splitlines()
              for k in json.loads(line)}  # fmt: skip
    assert {"t_margin/gap", "t_margin/ce"} <= logged  # the loss's parts are logged
    assert yaml.safe_load((rd / "config.yaml").read_text())["plugins"] == ["t_plugin.py"]


def test_an_edited_plugin_never_reuses_the_stored_teacher(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    path = write_plugin(tmp_path)
    Path("plug.yaml").write_text(yaml.safe_dump({**CONFIG, "plugins": ["t_plugin.py"]}))

    def teacher_reused() -> bool:
        rd = run(["run", "plug.yaml"], capsys)
        return json.loads((rd / "results.json").read_text())["models"]["teacher"]["reused"]

    assert teacher_reused() is False
    assert teacher_reused() is True  # the same code: stored teacher reused
    # same names, other content (the data it makes is byte for byte the same)
    path.write_text(PLUGIN.replace("self.beta * gap", "self.beta * gap * 2"))
    assert teacher_reused() is False


def test_grid_cells_in_their_own_processes_import_the_plugin(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_plugin(tmp_path)
    grid = {**CONFIG, "plugins": ["t_plugin.py"], "grid": {"seed": [0, 1]}}
    Path("grid.yaml").write_text(yaml.safe_dump(grid))
    root = run(["run", "grid.yaml", "--jobs", "2"], capsys)
    for cell in ("seed=0", "seed=1"):
        results = json.loads((root / "cells" / cell / "results.json").read_text())
        assert "mine/mean" in results["probes"]["t_confidence"]["values"]
    assert run(["run", "grid.yaml"], capsys) == root  # finished cells: the same grid
    path.write_text(PLUGIN.replace("OFFSET = 0.0", "OFFSET = 0.25"))
    edited = run(["run", "grid.yaml"], capsys)
    assert edited != root and (edited / "cells" / "seed=1" / "results.json").is_file()
