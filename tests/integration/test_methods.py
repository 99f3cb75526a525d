"""Every shipped method config (``configs/methods/*.yaml``) trains a few steps through the CLI.

The data is a tiny stand-in Fashion-MNIST written in the IDX format (random images, labels
``i % 10``), so the test needs no download; every config is shrunk by overrides to one epoch
of a few batches and one probe.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from distillscope.cli import main
from distillscope.data import fashion_mnist as fm
from distillscope.data.idx import write_idx

REPO = Path(__file__).resolve().parents[2]
METHODS = sorted((REPO / "configs" / "methods").glob("*.yaml"))
SHRINK = [
    "train.epochs=1",
    "train.batch_size=8",
    "train.max_batches=2",
    "data.train_fraction=null",
    "data.test_per_class=2",
    "probes={accuracy: {}}",
    "probe_defaults.max_samples=16",
    "progress=false",
]


def fake_fashion_mnist(folder: Path, n_train: int = 60, n_test: int = 30) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test)):
        images, labels = fm.FILES[split]
        write_idx(folder / images, rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8))
        write_idx(folder / labels, (np.arange(n) % 10).astype(np.uint8))
    return folder


@pytest.mark.parametrize("config", METHODS, ids=[p.stem for p in METHODS])
def test_method_config_trains_through_the_cli(config: Path, tmp_path: Path, capsys) -> None:
    data = fake_fashion_mnist(tmp_path / "fm")
    teachers = _teacher_overrides(config)
    args = ["run", str(config), *SHRINK, *teachers]
    code = main([*args, "--data-root", str(data), "--output-dir", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 0, err
    run_dir = Path(out.strip().splitlines()[-1])
    results = json.loads((run_dir / "results.json").read_text())
    directions = results["probes"]["accuracy"]["higher_is_better"]
    assert directions and all(d is True for d in directions.values())  # top-1, top-k: higher
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for name, model in results["models"].items():
        if model["role"] == "teacher":
            continue
        logged = {k for r in rows if r["model"] == name for k in r}
        for term in model["loss"]:  # every term of the student's loss logged its own total
            assert f"{term}/loss" in logged, (name, term, sorted(logged))
        assert 0.0 <= results["probes"]["accuracy"]["values"][f"{name}/top1"] <= 1.0


def _teacher_overrides(config: Path) -> list[str]:
    """One epoch for every teacher, however the config names them."""
    import yaml

    raw = yaml.safe_load(config.read_text())
    if raw.get("teacher"):
        return ["teacher.train.epochs=1"]
    return [f"teachers.{t}.train.epochs=1" for t in raw.get("teachers") or {}]


def test_an_inapplicable_pair_fails_before_any_training(tmp_path: Path, capsys) -> None:
    """resnet8's layer3 (7 x 7) cannot be regressed onto resnet20's layer1 (28 x 28): one line,
    exit 2, before the teacher trains (nothing in the run folder or the teacher store)."""
    data = fake_fashion_mnist(tmp_path / "fm")
    hint = "students.hint.loss={ce: {}, hint: {student_layer: layer3, teacher_layer: layer1}}"
    args = ["run", str(REPO / "configs" / "methods" / "hint.yaml"), *SHRINK, hint,
            f"teacher_store={tmp_path / 'store'}"]  # fmt: skip
    code = main([*args, "--data-root", str(data), "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "'hint'" in lines[0] and "smaller than the teacher" in lines[0]
    assert not (tmp_path / "out").exists() and not (tmp_path / "store").exists()


def test_a_config_that_omits_the_layers_trains_on_the_declared_ones(tmp_path, capsys) -> None:
    """Feature terms without layers read the models' declared ones (resnet20 -> resnet8:
    hint the middle stage, at the three stage maps, crd the pooled feature)."""
    data = fake_fashion_mnist(tmp_path / "fm")
    students = (
        "students={hint: {loss: {ce: {}, hint: {weight: 100}}}, "
        "at: {loss: {ce: {}, at: {weight: 1000}}}, crd: {loss: {crd: {negatives: 8}}}}"
    )
    args = ["run", str(REPO / "configs" / "methods" / "hint.yaml"), *SHRINK, students,
            "teacher.train.epochs=1", f"teacher_store={tmp_path / 'store'}"]  # fmt: skip
    code = main([*args, "--data-root", str(data), "--output-dir", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 0, err
    run_dir = Path(out.strip().splitlines()[-1])
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for term in ("hint", "at", "crd"):
        logged = [r[f"{term}/loss"] for r in rows if r["model"] == term and f"{term}/loss" in r]
        assert logged and all(np.isfinite(logged)), (term, rows)
