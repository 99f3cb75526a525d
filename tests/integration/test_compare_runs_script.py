"""scripts/compare_runs.py: the proof that a refactor changed no number must itself catch one."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from distillscope import run_experiment

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "compare_runs.py"


def script():
    spec = importlib.util.spec_from_file_location("compare_runs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def tiny(tmp_path: Path, out: str) -> Path:
    cfg = {
        "name": "cmp",
        "progress": False,
        "output_dir": str(tmp_path / out),
        "data": {"name": "toy2d-ring"},
        "train": {"epochs": 1, "batch_size": 64, "optimizer": "adam", "lr": 0.01},
        "teacher": {"model": {"name": "mlp_full"}},
        "student": {"name": "mlp_reduced"},
        "students": {"kd": {"loss": "kd"}},
        "probes": {"accuracy": {}},
    }
    return run_experiment(cfg, retrain_teacher=True).path


def test_identical_runs_compare_identical_and_one_changed_weight_is_named(tmp_path, capsys):
    compare = script()
    a, b = tiny(tmp_path, "a"), tiny(tmp_path, "b")
    assert compare.main([str(a), str(b), "--json", str(tmp_path / "c.json")]) == 0
    assert capsys.readouterr().out.strip().endswith("identical")
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["tensors"] > 0 and report["values"] > 0 and report["differences"] == []
    path = b / "models" / "kd.safetensors"
    tensors = load_file(str(path))
    key = sorted(tensors)[0]
    tensors[key] = tensors[key].clone()
    tensors[key].view(-1)[0] += 1e-6  # one number moved
    save_file(tensors, str(path))
    assert compare.main([str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert f"models/kd.safetensors:{key}: values differ" in out and "1 differences" in out
    results = json.loads((b / "results.json").read_text())
    values = results["probes"]["accuracy"]["values"]
    name = sorted(values)[0]
    values[name] += 0.001
    (b / "results.json").write_text(json.dumps(results))
    assert compare.main([str(a), str(b)]) == 1
    assert f"probes.accuracy.values.{name}" in capsys.readouterr().out
