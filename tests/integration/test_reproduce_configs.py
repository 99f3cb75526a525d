"""The issue-7, issue-8 and paper-000 reproduce configs run from the CLI, shrunk to a few
steps on a tiny stand-in Fashion-MNIST (as ``test_methods.py`` does for the method configs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from distillscope.cli import main
from tests.integration.test_methods import SHRINK, fake_fashion_mnist

REPO = Path(__file__).resolve().parents[2]
CONFIGS = [
    *sorted((REPO / "configs" / "reproduce" / "e2kd").glob("*.yaml")),
    *sorted((REPO / "configs" / "reproduce" / "what-transfers").glob("*.yaml")),
    *sorted((REPO / "configs" / "reproduce" / "ie-kd").glob("*.yaml")),
    *sorted((REPO / "configs" / "reproduce" / "interpretability").glob("*.yaml")),
    *sorted((REPO / "configs" / "reproduce" / "text").glob("*.yaml")),
    REPO / "configs" / "reproduce" / "ls-teacher-temperature.yaml",
]


def _shrink(config: Path) -> list[str]:
    """One teacher epoch; students' own subsets cut to what the stand-in data holds."""
    raw = yaml.safe_load(config.read_text())
    extra = ["teacher.train.epochs=1"] if raw.get("teacher") else []
    extra += [f"teachers.{name}.train.epochs=1" for name in raw.get("teachers") or {}]
    for name, spec in (raw.get("students") or {}).items():
        if isinstance(spec, dict) and (spec.get("data") or {}).get("train_per_class"):
            extra.append(f"students.{name}.data.train_per_class=2")
        if isinstance(spec, dict) and spec.get("train"):
            extra += [f"students.{name}.train.epochs=1", f"students.{name}.train.batch_size=8"]
    return extra


@pytest.mark.parametrize("config", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_reproduce_config_runs_through_the_cli(config: Path, tmp_path: Path, capsys) -> None:
    data = fake_fashion_mnist(tmp_path / "fm")
    args = ["run", str(config), *SHRINK, *_shrink(config), "--data-root", str(data),
            "--output-dir", str(tmp_path / "out")]  # fmt: skip
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 0, err
    last = Path(out.strip().splitlines()[-1])
    results = [last / "results.json"] if (last / "results.json").is_file() else []
    results += sorted(last.rglob("cells/*/results.json"))  # a grid's cells
    assert results, out
    for path in results:
        probes = json.loads(path.read_text())["probes"]
        assert "accuracy" in probes
