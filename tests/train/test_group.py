"""Groups of peers trained together (DML): one loop, every peer learns, a killed group resumes
bit-identical, and misuse fails with one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from tiny_train_parts import SimulatedKill, TinyNet, config, make_data, state_equal
from torch import nn

from distillscope.contracts import Batch, Outputs
from distillscope.data.base import iter_batches
from distillscope.distill import build_loss
from distillscope.errors import ConfigError, TrainingError
from distillscope.train.group import GroupTrainer


def group(tmp: Path | None = None, kill_at: int | None = None, **kwargs: object) -> GroupTrainer:
    models = {"a": TinyNet(seed=1), "b": TinyNet(seed=2), "c": TinyNet(hidden=8, seed=3)}
    losses = {p: build_loss({"dml": {}}) for p in models}
    calls = [0]

    def count(module: nn.Module, args: object) -> None:
        calls[0] += 1  # three peers: three calls a step, after one dry run per peer at bind
        if calls[0] == kill_at:
            raise SimulatedKill(f"killed at loss call {calls[0]}")

    for loss in losses.values():
        loss.register_forward_pre_hook(count)
    return GroupTrainer(models, losses, config(epochs=3), progress=False, seed=4,
                        checkpoint_dir=tmp, metrics_path=tmp / "m.jsonl" if tmp else None,
                        **kwargs)  # fmt: skip


def test_every_peer_learns_and_logs_its_own_rows(tmp_path: Path) -> None:
    trainer = group(tmp_path)
    before = {
        p: {k: v.clone() for k, v in m.state_dict().items()} for p, m in trainer.models.items()
    }
    history = trainer.fit(make_data(), val=make_data(24, seed=1))
    for peer, model in trainer.models.items():
        assert any(not torch.equal(before[peer][k], v) for k, v in model.state_dict().items())
        assert [r["epoch"] for r in history[peer]] == [1, 2, 3]
        assert {"dml/loss", "dml/ce", "dml/kl", "val_acc"} <= set(history[peer][0])
    rows = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert sorted((r["model"], r["epoch"]) for r in rows) == sorted(
        (p, e) for p in "abc" for e in (1, 2, 3)
    )
    assert all(r["dml/kl"] > 0 for r in rows)  # the peers disagree, so they pull on each other


def test_a_killed_group_resumes_bit_identical(tmp_path: Path) -> None:
    straight = group(tmp_path / "a")
    straight.fit(make_data())
    with pytest.raises(SimulatedKill):
        group(tmp_path / "b", kill_at=3 + 3 * 6 + 5).fit(make_data())  # epoch 2 (6 steps)
    resumed = group(tmp_path / "b")
    resumed.fit(make_data(), resume=True)
    assert state_equal(straight.models, resumed.models)
    assert straight.history["b"][-1]["dml/kl"] == resumed.history["b"][-1]["dml/kl"]
    rows = [json.loads(line) for line in (tmp_path / "b" / "m.jsonl").read_text().splitlines()]
    assert len(rows) == 9  # no epoch logged twice, none missing


def test_a_group_needs_two_peers_and_dml_needs_a_group() -> None:
    with pytest.raises(ConfigError, match="two or more peers"):
        GroupTrainer({"a": TinyNet()}, {"a": build_loss({"dml": {}})}, config())
    loss = build_loss({"dml": {}})
    batch = next(iter_batches(make_data(), 4))
    with pytest.raises(TrainingError, match="put two or more students with dml in one group"):
        loss(Outputs(TinyNet()(batch.inputs)), None, batch)


def test_dml_loss_is_ce_plus_the_mean_kl_to_the_peers() -> None:
    """Golden values from the formula (Zhang et al. 2018, eq. 10), worked by hand in float64."""
    z = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]], dtype=torch.float64)
    peers = [torch.tensor([[1.0, 1.0, 0.0], [0.0, 2.0, 0.0]], dtype=torch.float64),
             torch.tensor([[0.0, 0.0, 3.0], [1.0, 0.0, 0.0]], dtype=torch.float64)]  # fmt: skip
    y = torch.tensor([0, 1])
    batch = Batch(torch.zeros(2, 1), y, torch.arange(2))
    out = build_loss({"dml": {}})(Outputs(z), None, batch, peers=[Outputs(p) for p in peers])

    def softmax(row: list[float]) -> list[float]:
        e = [math.exp(v) for v in row]
        return [v / sum(e) for v in e]

    ce = -sum(math.log(softmax(z[i].tolist())[y[i]]) for i in range(2)) / 2
    kls = []
    for p in peers:
        kl = 0.0
        for i in range(2):
            q, r = softmax(p[i].tolist()), softmax(z[i].tolist())
            kl += sum(a * math.log(a / b) for a, b in zip(q, r))
        kls.append(kl / 2)
    assert out["dml/ce"].item() == pytest.approx(ce, rel=1e-12)
    assert out["dml/kl"].item() == pytest.approx(sum(kls) / 2, rel=1e-12)
    assert out["loss"].item() == pytest.approx(ce + sum(kls) / 2, rel=1e-12)


@pytest.mark.parametrize(
    "term", [{"e2kd": {}}, {"sskd": {}}, {"hint": {"student_layer": "a", "teacher_layer": "b"}}]
)
def test_a_peer_whose_loss_reads_more_than_logits_is_refused(term: dict) -> None:
    models = {"a": TinyNet(seed=1), "b": TinyNet(seed=2)}
    losses = {"a": build_loss({"dml": {}, **term}), "b": build_loss({"dml": {}})}
    with pytest.raises(ConfigError, match="which groups do not support yet") as err:
        GroupTrainer(models, losses, config(epochs=1), progress=False)
    assert "\n" not in str(err.value)
