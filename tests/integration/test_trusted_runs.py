"""Results that must never be silently wrong: stored teachers, model files, resume.

A stored teacher is reused only for the same data (by content, not by name) and only when its
file is intact; identical runs write identical bytes; a run killed mid-write resumes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from distillscope import run_experiment
from distillscope.cli import main
from distillscope.experiment import resume_experiment
from distillscope.results import load_results

pytestmark = pytest.mark.integration

CLASSES = ("ant", "bee", "cat")


def write_tree(root: Path, classes: tuple[str, ...] = CLASSES, n: int = 8) -> Path:
    """An ImageFolder tree of tiny 8x8 images; class c is bright in its own third."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c, name in enumerate(CLASSES):
            folder = root / split / classes[c]
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 60, size=(8, 8, 3), dtype=np.uint8)
                img[:, c * 2 : c * 2 + 3] += 180
                Image.fromarray(img).save(folder / f"{name}_{i}.png")
    return root


def config(tmp_path: Path, root: Path, **extra: object) -> dict:
    return {
        "name": "trust",
        "seed": 1,
        "output_dir": str(tmp_path / "runs"),
        "progress": False,
        "data": {"name": "imagefolder", "root": str(root), "params": {"image_size": 8}},
        "train": {"epochs": 2, "batch_size": 8, "optimizer": "adam", "lr": 0.01},
        "teacher": {"model": {"name": "mlp"}},
        "student": {"name": "mlp"},
        "students": {"independent": {"loss": "ce"}, "kd": {"loss": "kd"}},
        "probes": {"accuracy": {}, "agreement": {}},
        **extra,
    }


def store_entry(models: Path) -> Path:
    teachers = Path(os.environ["DISTILLSCOPE_CACHE"]) / "teachers"
    (entry,) = list(teachers.iterdir())
    return entry


def test_same_config_on_other_labels_does_not_reuse_the_teacher(tmp_path, capfd) -> None:
    first = write_tree(tmp_path / "a")
    swapped = write_tree(tmp_path / "b", classes=("bee", "cat", "ant"))  # same images, new labels
    r1 = load_results(run_experiment(config(tmp_path, first)).path)
    assert r1["models"]["teacher"]["reused"] is False
    r2 = load_results(run_experiment(config(tmp_path, swapped)).path)
    err = capfd.readouterr().err
    assert r2["models"]["teacher"]["reused"] is False  # other data: trained again
    assert "reusing stored teacher" not in err
    assert len(list((Path(os.environ["DISTILLSCOPE_CACHE"]) / "teachers").iterdir())) == 2
    r3 = load_results(run_experiment(config(tmp_path, first)).path)
    assert r3["models"]["teacher"]["reused"] is True  # the first data again: reused
    err = capfd.readouterr().err
    assert "reusing stored teacher" in err and "training data fingerprint" in err
    assert "checksum verified" in err


def test_corrupted_store_weights_are_detected_and_retrained(tmp_path, capfd) -> None:
    root = write_tree(tmp_path / "a")
    r1 = load_results(run_experiment(config(tmp_path, root)).path)
    weights = store_entry(tmp_path) / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-16:] = bytes(b ^ 0xFF for b in blob[-16:])  # flip bytes in the tensor data
    weights.write_bytes(bytes(blob))
    capfd.readouterr()
    r2 = load_results(run_experiment(config(tmp_path, root)).path)
    err = capfd.readouterr().err
    assert r2["models"]["teacher"]["reused"] is False
    assert "checksum mismatch" in err and "retraining" in err
    line = next(x for x in err.splitlines() if "checksum mismatch" in x)
    assert line.count("\n") == 0 and str(weights.parent) in line
    # retrained from the same seed: the teacher is the one the first run trained
    assert r2["probes"]["accuracy"]["values"] == r1["probes"]["accuracy"]["values"]


@pytest.mark.parametrize(
    "meta", ["[]", '{"key": 5}', '{"key": "k", "sha256": "zz", "history": []}', "{"]
)
def test_store_meta_of_the_wrong_shape_is_retrained(tmp_path, capfd, meta) -> None:
    root = write_tree(tmp_path / "a")
    run_experiment(config(tmp_path, root))
    (store_entry(tmp_path) / "meta.json").write_text(meta)
    capfd.readouterr()
    r2 = load_results(run_experiment(config(tmp_path, root)).path)
    assert r2["models"]["teacher"]["reused"] is False
    assert "meta.json unusable" in capfd.readouterr().err


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_identical_runs_write_byte_identical_model_files(tmp_path, monkeypatch) -> None:
    root = write_tree(tmp_path / "a")
    dirs = []
    for store in ("s1", "s2"):  # two fresh stores: both runs train their teacher
        monkeypatch.setenv("DISTILLSCOPE_CACHE", str(tmp_path / store))
        dirs.append(run_experiment(config(tmp_path, root)).path)
    names = sorted(p.name for p in (dirs[0] / "models").iterdir())
    assert names == ["independent.safetensors", "kd.safetensors", "teacher.safetensors"]
    for name in names:
        assert digest(dirs[0] / "models" / name) == digest(dirs[1] / "models" / name), name
    # the trainers' checkpoints too: wall times sit beside them in last.volatile.json (issue 24)
    checkpoints = sorted(p.relative_to(dirs[0]) for p in dirs[0].rglob("checkpoints/*/*"))
    assert checkpoints == sorted(p.relative_to(dirs[1]) for p in dirs[1].rglob("checkpoints/*/*"))
    tensors = [p for p in checkpoints if p.suffix == ".safetensors"]
    assert {p.name for p in tensors} == {"final.safetensors", "last.safetensors"}
    assert len(tensors) == 2 * len(names)
    for path in tensors:
        assert digest(dirs[0] / path) == digest(dirs[1] / path), path
    stores = [tmp_path / s / "teachers" for s in ("s1", "s2")]
    (e1,), (e2,) = (list(s.iterdir()) for s in stores)
    assert digest(e1 / "model.safetensors") == digest(e2 / "model.safetensors")


def test_files_share_one_mode(tmp_path) -> None:
    root = write_tree(tmp_path / "a")
    rd = run_experiment(config(tmp_path, root)).path
    modes = {stat.S_IMODE(p.stat().st_mode) for p in rd.rglob("*") if p.is_file()}
    umask = os.umask(0)
    os.umask(umask)
    assert modes == {0o666 & ~umask}


def test_resume_reads_a_cut_metrics_line_and_cleans_stale_temporaries(tmp_path) -> None:
    root = write_tree(tmp_path / "a")
    whole = run_experiment(config(tmp_path, root)).path
    killed = tmp_path / "killed"
    shutil.copytree(whole, killed)
    (killed / "results.json").unlink()
    (killed / "report.html").unlink()
    (killed / "models" / "kd.safetensors").unlink()  # kd was training when the kill came
    with open(killed / "metrics.jsonl", "a") as fh:
        fh.write('{"model": "kd", "epoch": 1, "lo')  # a line cut short by the kill
    stale = [killed / "models" / ".kd.safetensors.abc.tmp", killed / ".results.json.x.tmp"]
    for path in stale:
        path.write_bytes(b"")
    rd = resume_experiment(killed).path
    assert not any(p.exists() for p in stale)
    ra, rb = load_results(whole), load_results(rd)
    assert ra["probes"]["accuracy"]["values"] == rb["probes"]["accuracy"]["values"]
    assert [r["epoch"] for r in rb["training"]["independent"]] == [1, 2]


def test_unreadable_image_mid_run_is_one_line_with_the_resume_command(tmp_path, capsys) -> None:
    root = write_tree(tmp_path / "a")
    bad = root / "train" / "bee" / "bee_3.png"
    bad.write_bytes(b"not a png at all")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config(tmp_path, root)))
    code = main(["run", str(cfg)])
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("distillscope: error")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert str(bad) in lines[0] and "--resume" in lines[0]
    (run_dir,) = list((tmp_path / "runs").iterdir())
    assert str(run_dir) in lines[0]
