"""Acceptance (issue 24): the project built as a wheel and installed into a fresh venv runs the
packaged quickstart from a directory outside the repository, and lists the packaged configs.

No network: the wheel is built with the current venv's setuptools (``--no-build-isolation``)
and installed ``--no-deps`` into a venv that sees the current venv's packages through a
``.pth`` line (torch and the rest); PYTHONPATH is dropped, so ``distillscope`` is the wheel's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.integration.test_methods import fake_fashion_mnist

REPO = Path(__file__).resolve().parents[2]
SHRINK = [
    "data.train_fraction=null",
    "data.test_per_class=2",
    "train.epochs=1",
    "teacher.train.epochs=1",
    "train.batch_size=8",
    "train.max_batches=1",
    "probes={accuracy: {}}",
    "probe_defaults.max_samples=16",
]


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.integration
def test_a_wheel_installed_elsewhere_runs_the_packaged_quickstart(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy: building leaves build/ and egg-info behind
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
          str(source)], tmp_path, env)  # fmt: skip
    (wheel,) = dist.glob("distillscope-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, env)
    python = venv / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(_run([str(python), "-c", purelib], tmp_path, env).stdout.strip())
    (site / "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch & co.
    _run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
         tmp_path, env)  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env["DISTILLSCOPE_CACHE"] = str(tmp_path / "cache")
    where = _run([str(python), "-c", "import distillscope; print(distillscope.__file__)"],
                 elsewhere, env).stdout  # fmt: skip
    assert Path(where.strip()).is_relative_to(site)  # the wheel's copy, not the repository's
    listed = _run([str(venv / "bin" / "distillscope"), "run", "--list-configs"], elsewhere, env)
    assert any(line.split()[0] == "quickstart" for line in listed.stdout.splitlines())
    assert "reproduce/what-transfers/domains" in listed.stdout
    data = fake_fashion_mnist(tmp_path / "fm")
    run = _run([str(venv / "bin" / "distillscope"), "run", *SHRINK, "--data-root", str(data),
                "--no-progress"], elsewhere, env)  # fmt: skip
    run_dir = elsewhere / run.stdout.strip().splitlines()[-1]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["config"]["name"] == "quickstart"
    assert Path(results["run"]["config_file"]).is_relative_to(site / "distillscope" / "configs")
    shutil.rmtree(venv)
