"""Groups of peers trained together (DML): one loop, every peer learns, a killed group resumes
bit-identical, and misuse fails with one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from distillscope.contracts import Batch, Outputs
from distillscope.data.base import iter_batches
from distillscope.distill import build_loss
from distillscope.errors import ConfigError, TrainingError
from distillscope.train import Trainer
from tests.train.tiny_train_parts import SimulatedKill, TinyNet, config, make_data, state_equal


def group(tmp: Path | None = None, kill_at: int | None = None, **kwargs: object) -> Trainer:
    models = {"a": TinyNet(seed=1), "b": TinyNet(seed=2), "c": TinyNet(hidden=8, seed=3)}
    losses = {p: build_loss({"dml": {}}) for p in models}
    calls = [0]

    def count(module: nn.Module, args: object) -> None:
        calls[0] += 1  # three peers: three calls a step, after one dry run per peer at bind
        if calls[0] == kill_at:
            raise SimulatedKill(f"killed at loss call {calls[0]}")

    for loss in losses.values():
        loss.register_forward_pre_hook(count)
    return Trainer(models, losses, config(epochs=3), progress=False, seed=4, name="group",
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
    assert straight.histories["b"][-1]["dml/kl"] == resumed.histories["b"][-1]["dml/kl"]
    rows = [json.loads(line) for line in (tmp_path / "b" / "m.jsonl").read_text().splitlines()]
    assert len(rows) == 9  # no epoch logged twice, none missing


def test_dml_needs_a_group_and_every_network_its_loss() -> None:
    loss = build_loss({"dml": {}})
    batch = next(iter_batches(make_data(), 4))
    with pytest.raises(TrainingError, match="put two or more students with dml in one group"):
        loss(Outputs(TinyNet()(batch.inputs)), None, batch)
    with pytest.raises(ConfigError, match="every network needs its loss"):
        Trainer({"a": TinyNet(), "b": TinyNet()}, {"a": build_loss({"dml": {}})}, config())
    with pytest.raises(TypeError, match="not a LossTerm"):
        Trainer(TinyNet(), nn.CrossEntropyLoss(), config())  # type: ignore[arg-type]


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


def test_peers_may_read_features_and_each_gets_its_own_taps(tmp_path: Path) -> None:
    """Groups once refused feature losses; the one step serves every member's needs."""
    models = {"a": TinyNet(seed=1), "b": TinyNet(seed=2)}
    hint = {"hint": {"student_layer": "act", "teacher_layer": "act", "weight": 1.0}}
    losses = {p: build_loss({"dml": {}, **hint}) for p in models}
    teacher = TinyNet(seed=9)
    trainer = Trainer(models, losses, config(epochs=2), teacher=teacher, progress=False,
                      name="group", checkpoint_dir=tmp_path)  # fmt: skip
    history = trainer.fit(make_data())
    for peer in models:
        assert [r["epoch"] for r in history[peer]] == [1, 2]
        assert history[peer][0]["hint/loss"] > 0
    assert not models["a"].act._forward_hooks and not teacher.act._forward_hooks  # taps gone


@pytest.mark.parametrize("name", ["half", "train", "a.b"])
def test_a_network_name_torch_cannot_key_is_one_line(name: str) -> None:
    losses = {name: build_loss({"dml": {}}), "b": build_loss({"dml": {}})}
    with pytest.raises(ConfigError, match=f"'{name}'") as err:
        Trainer({name: TinyNet(), "b": TinyNet()}, losses, config())
    assert "\n" not in str(err.value)
