"""benchmarks/gpu_check.sh: without CUDA one line and exit 0 after checking its arguments; its
measurements (step times, the determinism comparison, the summary) run on the CPU here."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

pytestmark = pytest.mark.integration

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPT = BENCHMARKS / "gpu_check.sh"


def helper():
    spec = importlib.util.spec_from_file_location("gpu_check", BENCHMARKS / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable,
           "PYTHONPATH": str(src)}  # fmt: skip
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip


def test_without_cuda_it_says_so_in_one_line_and_exits_0(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    done = run_script("--out", str(out), "--device", "cuda:1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu_check: no CUDA device visible")
    assert "CUDA_VISIBLE_DEVICES=''" in lines[0] and not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--device", "cpu"], "--device 'cpu': give cuda or cuda:N"),
     (["--cpu-batches", "0"], "--cpu-batches >= 1"),
     (["--bogus"], "unrecognized arguments: --bogus")],
)  # fmt: skip
def test_bad_arguments_are_refused_before_the_cuda_check(
    tmp_path: Path, args: list[str], message: str
) -> None:
    done = run_script("--out", str(tmp_path / "gpu.json"), *args)
    assert done.returncode == 2 and message in done.stderr
    assert done.stdout == "" and not (tmp_path / "gpu.json").exists()


def test_step_times_on_the_cpu_and_speedups() -> None:
    check = helper()
    steps = check.step_times({"cpu": "cpu"}, 128, 1, model="resnet8")
    assert list(steps) == ["cpu_fp32", "cpu_bf16"]
    assert all(row["steps"] == 1 and row["step_ms"] > 0 for row in steps.values())
    assert all(row["channels_last"] for row in steps.values())  # a conv net on the CPU: auto
    ms = {"cuda_fp32": 4.0, "cuda_bf16": 2.0, "cpu_fp32": 100.0, "cpu_bf16": 80.0}
    rows = {k: {"step_ms": v} for k, v in ms.items()}
    assert check.speedups(rows) == {
        "cuda_vs_cpu_fp32": 25.0, "cuda_vs_cpu_bf16": 40.0, "cuda_bf16_vs_fp32": 2.0,
    }  # fmt: skip
    assert check.speedups({"cpu_fp32": rows["cpu_fp32"]}) == {}


TOY = {
    "name": "gpu-check-toy",
    "data": {"name": "toy2d-ring"},
    "train": {"epochs": 1, "batch_size": 64},
    "teacher": {"model": {"name": "mlp_full"}, "train": {"epochs": 1}},
    "student": {"name": "mlp_reduced"},
    "students": {"kd": {"loss": "kd"}},
    "probes": {"accuracy": {}, "agreement": {}},
}


def test_determinism_names_what_differs_and_the_summary_shows_it(tmp_path: Path) -> None:
    check = helper()
    shrink = ("progress=false",)
    same = check.determinism(tmp_path / "same", "cpu", None, ("train.deterministic=true",),
                             config=TOY, shrink=shrink)  # fmt: skip
    assert same["identical"] and same["tensors"] > 0 and same["values"] > 0
    a, b = (tmp_path / "same" / name / "run" for name in ("a", "b"))
    model = b / "models" / "kd.safetensors"
    tensors = load_file(str(model))
    key = sorted(tensors)[0]
    tensors[key] = tensors[key] + 1.0
    save_file(tensors, str(model))
    diffs = check.compare_runs(a, b)["differences"]
    assert diffs == [f"models/kd.safetensors:{key}: values differ (max |a-b| 1)"]
    result = {
        "gpu": "a GPU", "torch": torch.__version__, "cuda": "12.8", "device": "cuda",
        "quickstart": {"wall_s": 12.34},
        "step_time": {"cuda_fp32": {"step_ms": 5.0, "channels_last": False}},
        "speedup": {"cuda_vs_cpu_fp32": 40.0},
        "determinism": {**same, "identical": False, "differences": diffs},
    }  # fmt: skip
    text = check.table(result)
    assert "quickstart (shrunk) on cuda: 12.3 s" in text
    assert "cuda_vs_cpu_fp32: 40.00x" in text
    assert "1 differences" in text and f"kd.safetensors:{key}" in text
