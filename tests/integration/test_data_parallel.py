"""``torchrun --nproc-per-node 2 -m distillscope run``: one run directory, the same weights
as one process, and a run killed in one rank resumes to the same files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from distillscope import experiment, run_experiment
from distillscope.cli import main
from distillscope.errors import ConfigError
from distillscope.train.distributed import World

pytestmark = pytest.mark.integration

MODELS = ("teacher", "kd", "independent")


def tiny_config(out: Path) -> dict:
    """200 toy points; a teacher, a KD student from its cache and an independent student
    (MLPs without batch norm), batches of 8 (25 steps an epoch)."""
    return {
        "name": "ddp",
        "seed": 3,
        "threads": 1,
        "device": "cpu",
        "output_dir": str(out),
        "progress": False,
        "data": {"name": "toy2d-ring", "params": {"n_per_blob": 50, "ring_points": 100}},
        "train": {"epochs": 12, "batch_size": 8, "optimizer": "adam", "lr": 0.01},
        "teacher": {"model": {"name": "mlp_full"}, "train": {"epochs": 2, "batch_size": 64}},
        "student": {"name": "mlp_reduced"},
        "students": {
            "kd": {"loss": "kd", "temperature": 4.0, "alpha": 0.9},
            "independent": {"loss": "ce"},
        },
        "probes": {"accuracy": {}},
    }


def torchrun(args: list[str], cache: Path) -> subprocess.Popen:
    """``python -m torch.distributed.run --nproc-per-node 2 -m distillscope run ARGS``."""
    env = {**os.environ, "DISTILLSCOPE_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
               "2", "-m", "distillscope", "run", *args]  # fmt: skip
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)  # fmt: skip


def finished(proc: subprocess.Popen, timeout: float = 240) -> str:
    """The stdout of a launch that exits with 0 (stopped, with its workers, after ``timeout``)."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()  # torchrun's agent stops its workers on SIGTERM
        proc.communicate(timeout=60)
        raise
    assert proc.returncode == 0, err[-3000:]
    return out


def weights(run: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(run / "models" / f"{name}.safetensors"))


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A 2-rank run: (config file, cache folder, stdout)."""
    root = tmp_path_factory.mktemp("ddp")
    cfg = root / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(root / "runs"), sort_keys=False))
    return cfg, root / "cache", finished(torchrun([str(cfg)], root / "cache"))


def test_two_ranks_write_one_run_directory(two_ranks) -> None:
    cfg, _, out = two_ranks
    runs = list((cfg.parent / "runs").iterdir())
    assert len(runs) == 1
    run = runs[0]
    assert out.splitlines() == [str(run)]  # rank 0 alone prints the run directory
    for name in ("results.json", "report.html", "identity.json", "config.yaml"):
        assert (run / name).is_file(), name
    results = json.loads((run / "results.json").read_text())
    assert list(results["models"]) == ["teacher", "kd", "independent"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [(r["model"], r["epoch"]) for r in rows]
    assert len(epochs) == len(set(epochs)) == 2 + 12 + 12  # each epoch logged once
    identity = json.loads((run / "identity.json").read_text())["identity"]
    assert identity["runtime"]["ranks"] == 2


def test_two_ranks_equal_one_process_with_the_same_global_batch(two_ranks, tmp_path) -> None:
    """The equivalence test (docs/scale.md): the ranks' shares of each global batch of 8 and
    their averaged gradients give the weights one process gets from batches of 8."""
    cfg, _, _ = two_ranks
    (run,) = (cfg.parent / "runs").iterdir()
    alone = run_experiment(tiny_config(tmp_path)).path
    for name in MODELS:
        a, b = weights(run, name), weights(alone, name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.allclose(a[key], b[key], atol=1e-5), (name, key)
    ranks = json.loads((run / "results.json").read_text())["training"]
    one = json.loads((alone / "results.json").read_text())["training"]
    for name in MODELS:
        for two_rows, one_rows in zip(ranks[name], one[name]):
            assert two_rows["train_acc"] == one_rows["train_acc"]
            assert two_rows["loss"] == pytest.approx(one_rows["loss"], abs=1e-5)


def worker_pids(agent: int) -> list[int]:
    """The worker processes torchrun's agent started (its children)."""
    text = Path(f"/proc/{agent}/task/{agent}/children").read_text()
    return [int(pid) for pid in text.split()]


def test_a_run_killed_in_one_rank_resumes_to_the_same_weights(two_ranks, tmp_path) -> None:
    cfg, cache, _ = two_ranks
    config = tiny_config(tmp_path / "runs")
    killed_cfg = tmp_path / "tiny.yaml"
    killed_cfg.write_text(yaml.safe_dump(config, sort_keys=False))
    proc = torchrun([str(killed_cfg)], cache)  # reuses the stored teacher
    metrics = None
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        found = list((tmp_path / "runs").glob("*/metrics.jsonl"))
        if found and sum('"kd"' in line for line in found[0].read_text().splitlines()) >= 2:
            metrics = found[0]
            break
        time.sleep(0.05)
    if metrics is None:
        proc.terminate()
    else:
        os.kill(worker_pids(proc.pid)[0], signal.SIGKILL)  # one rank dies mid-training
    proc.communicate(timeout=120)
    assert metrics is not None, "the run ended before its kd student logged two epochs"
    assert proc.returncode != 0
    run = metrics.parent
    assert not (run / "results.json").exists() and not (run / "models" / "kd.safetensors").exists()

    out = finished(torchrun(["--resume", str(run)], cache))
    assert out.splitlines() == [str(run)]
    (whole,) = (cfg.parent / "runs").iterdir()
    for name in MODELS:
        a, b = weights(whole, name), weights(run, name)
        assert all(torch.equal(a[k], b[k]) for k in a), name  # bit for bit


def test_grids_and_reproduce_refuse_launched_ranks(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    cfg = tiny_config(tmp_path / "runs")
    cfg["grid"] = {"seed": [0, 1]}
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path)]) == 2
    assert main(["reproduce", "003"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("cannot be data-parallel across 2" in line for line in err)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("change", "phrase"),
    [
        ({"students": {"sp": {"loss": "sp"}}}, "'sp' cannot train data-parallel .loss term 'sp'"),
        ({"train": {"batch_size": 9}}, "batch_size 9 is the global batch .* divisible by 2"),
    ],
)
def test_what_cannot_train_data_parallel_is_refused_before_anything_is_written(
    change, phrase, monkeypatch, tmp_path
) -> None:
    """As rank 0 of two (the group itself stubbed: the refusal comes before any collective)."""
    monkeypatch.setattr(experiment, "world_from_env", lambda: World(0, 2))
    monkeypatch.setattr(experiment, "process_group", lambda world, device: nullcontext(world))
    cfg = tiny_config(tmp_path / "runs")
    for key, value in change.items():
        cfg[key] = {**cfg[key], **value}
    with pytest.raises(ConfigError, match=phrase) as info:
        run_experiment(cfg)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "runs").exists()
