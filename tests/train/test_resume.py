"""Checkpoint every epoch and resume a killed run to the bit-identical result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distillscope.errors import CheckpointError, ConfigError
from distillscope.train import FINAL_WEIGHTS, LAST_CHECKPOINT, Trainer, load_model_weights
from tests.train.tiny_train_parts import (
    CE,
    Recording,
    ScaledCE,
    SimulatedKill,
    TinyNet,
    config,
    make_data,
    state_equal,
)

SETTINGS = {
    "sgd-cosine-warmup": {"optimizer": "sgd", "schedule": "cosine", "warmup_epochs": 1},
    "adam-multistep": {"optimizer": "adam", "lr": 0.01, "schedule": "multistep",
                       "milestones": [1, 2]},
}  # fmt: skip


def run(tmp: Path, kill_at: int | None, resume: bool, **cfg: object) -> tuple[TinyNet, Trainer]:
    """Train a dropout net with a trainable loss on augmented data; optionally die mid-run."""
    model = TinyNet(seed=7 if not resume else 99)  # a resumed process builds a fresh model
    loss = Recording(ScaledCE(), kill_at=kill_at)
    trainer = Trainer(
        model, loss, config(epochs=3, **cfg), checkpoint_dir=tmp / "ckpt",
        metrics_path=tmp / "metrics.jsonl", progress=False, seed=3, name="net",
    )  # fmt: skip
    trainer.fit(make_data(40, augmented=True), val=make_data(16, seed=2), resume=resume)
    return model, trainer


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_killed_then_resumed_run_is_bit_identical(tmp_path: Path, setting: str) -> None:
    cfg = SETTINGS[setting]
    straight, straight_trainer = run(tmp_path / "a", None, False, **cfg)
    with pytest.raises(SimulatedKill):
        run(tmp_path / "b", 5 + 3, False, **cfg)  # 5 batches per epoch: dies in epoch 2
    killed_lines = (tmp_path / "b/metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in killed_lines] == [1]
    resumed, resumed_trainer = run(tmp_path / "b", None, True, **cfg)

    assert state_equal(straight, resumed)
    assert state_equal(straight_trainer.loss, resumed_trainer.loss)  # loss params and buffers
    assert resumed_trainer.loss.calls == 2 * 5  # only epochs 2 and 3 ran again
    assert resumed_trainer.loss.prepare_passes == []  # prepare was not repeated
    drop_time = [{k: v for k, v in r.items() if k != "time"} for r in straight_trainer.history]
    assert drop_time == [
        {k: v for k, v in r.items() if k != "time"} for r in resumed_trainer.history
    ]
    lines = Path(tmp_path / "b/metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]
    # the killed run's wall time of epoch 1 comes back from beside the checkpoint
    assert resumed_trainer.history[0]["time"] == json.loads(killed_lines[0])["time"]
    assert all(r["time"] > 0 for r in resumed_trainer.history)
    final = TinyNet(seed=0)
    load_model_weights(tmp_path / "b/ckpt" / FINAL_WEIGHTS, final)
    assert state_equal(final, straight)


def test_resuming_a_finished_run_only_loads_the_weights(tmp_path: Path) -> None:
    done, _ = run(tmp_path, None, False)
    again, trainer = run(tmp_path, None, True)
    assert trainer.loss.calls == 0 and len(trainer.history) == 3
    assert state_equal(done, again)


def test_resume_without_checkpoint_starts_afresh(tmp_path: Path) -> None:
    fresh, _ = run(tmp_path / "a", None, False)
    model, trainer = run(tmp_path / "b", None, True)
    assert trainer.loss.calls == 15
    assert not state_equal(fresh, model)  # different initial weights (seed 99 vs 7)


def test_resume_with_another_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SimulatedKill):
        run(tmp_path, 8, False)
    with pytest.raises(ConfigError, match="written with lr=0.05 but this run has lr=0.1"):
        run(tmp_path, None, True, lr=0.1)


def test_resume_into_another_architecture_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SimulatedKill):
        run(tmp_path, 8, False)
    trainer = Trainer(
        TinyNet(hidden=8), CE(), config(epochs=3), checkpoint_dir=tmp_path / "ckpt",
        progress=False, seed=3,
    )  # fmt: skip
    with pytest.raises(CheckpointError, match="does not match the model: key 'fc1.weight'"):
        trainer.fit(make_data(40, augmented=True), resume=True)


def test_checkpoint_written_every_epoch(tmp_path: Path) -> None:
    with pytest.raises(SimulatedKill):
        run(tmp_path, 8, False)
    assert (tmp_path / "ckpt" / LAST_CHECKPOINT).is_file()
    assert not (tmp_path / "ckpt" / FINAL_WEIGHTS).exists()
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        LAST_CHECKPOINT,
        "last.volatile.json",
    ]


def test_identical_runs_write_byte_identical_checkpoint_files(tmp_path: Path) -> None:
    # wall times differ between the runs; they live in last.volatile.json, not in the tensors'
    # files (issue 24: the README promises identical checkpoints for identical runs)
    _, first = run(tmp_path / "a", None, False)
    _, second = run(tmp_path / "b", None, False)
    for name in (LAST_CHECKPOINT, FINAL_WEIGHTS):
        a, b = (tmp_path / side / "ckpt" / name for side in "ab")
        assert a.read_bytes() == b.read_bytes(), name
        assert b'"time"' not in a.read_bytes()
    times = json.loads((tmp_path / "a/ckpt/last.volatile.json").read_text())
    assert times == {"history": {"net": [{"time": r["time"]} for r in first.history]}}
    assert [r["time"] for r in first.history] != [r["time"] for r in second.history]
