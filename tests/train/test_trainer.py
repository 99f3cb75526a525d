"""The training loop: temperature, teachers and caches, NaN guard, metrics, evaluation."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.errors import ConfigError, TrainingError
from distillscope.models.taps import FeatureTap
from distillscope.train import TeacherCache, Trainer, evaluate
from tests.train.tiny_train_parts import (
    CE,
    KD,
    FeatureMatch,
    ItemDataset,
    Recording,
    ScaledCE,
    SimulatedKill,
    TinyNet,
    config,
    make_data,
    state_close,
    state_equal,
)


def test_student_logits_are_divided_by_the_training_temperature() -> None:
    data = make_data(16)
    student = TinyNet(dropout=0.0)
    before = copy.deepcopy(student)
    loss = Recording(CE())
    Trainer(student, loss, config(epochs=1, temperature=4.0, max_batches=1), progress=False).fit(
        data
    )
    received = loss.student_logits[0]
    with torch.no_grad():
        raw = before(loss.batches[0].inputs)  # (B, K) at T=1, before the first step
    assert torch.allclose(received, raw / 4.0, atol=1e-6)
    assert received.requires_grad


def test_temperature_one_passes_the_logits_through() -> None:
    loss = Recording(CE())
    student = TinyNet(dropout=0.0)
    before = copy.deepcopy(student)
    Trainer(student, loss, config(epochs=1, max_batches=1), progress=False).fit(make_data(8))
    with torch.no_grad():
        assert torch.allclose(loss.student_logits[0], before(loss.batches[0].inputs), atol=1e-6)


def test_kd_with_cache_equals_kd_with_live_teacher() -> None:
    data = make_data(48)
    teacher = TinyNet(hidden=32, seed=5)
    cache = TeacherCache.build(teacher, data, batch_size=8, device="cpu", progress=False)
    students = []
    for kwargs in ({"teacher": teacher}, {"teacher_cache": cache}):
        student = TinyNet(seed=1)
        Trainer(student, KD(), config(epochs=1), progress=False, **kwargs).fit(data)
        students.append(student)
    # the cache groups images into other batches than training does: equal up to rounding
    assert state_close(*students)
    assert not state_close(students[0], TinyNet(seed=1))  # training moved the weights


def test_live_teacher_is_frozen_eval_and_restored() -> None:
    teacher = TinyNet(hidden=32, seed=5)
    teacher.train()
    modes: list[bool] = []
    teacher.register_forward_hook(lambda m, i, o: modes.append(m.training))
    weights = copy.deepcopy(teacher.state_dict())
    loss = Recording(KD())
    Trainer(TinyNet(), loss, config(epochs=1), teacher=teacher, progress=False).fit(make_data(16))
    # one call to bind the loss on a sample, then one per step; always in eval mode
    assert modes == [False, False, False]
    assert teacher.training and all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in weights.items())
    assert not loss.teachers[0].logits.requires_grad


def test_teacher_is_not_run_when_cached_or_not_needed() -> None:
    data = make_data(16)
    teacher = TinyNet(hidden=32, seed=5)
    calls: list[int] = []
    cache = TeacherCache.build(teacher, data, 8, "cpu", progress=False)
    teacher.register_forward_hook(lambda m, i, o: calls.append(1))
    Trainer(TinyNet(), KD(), config(), teacher=teacher, teacher_cache=cache, progress=False).fit(
        data
    )
    loss = Recording(CE())
    Trainer(TinyNet(), loss, config(), teacher=teacher, progress=False).fit(data)
    assert calls == [] and loss.teachers[0] is None


def test_missing_teacher_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="needs a teacher; pass teacher= or teacher_cache="):
        Trainer(TinyNet(), KD(), config(), progress=False).fit(make_data(8))


def test_nan_guard_names_epoch_step_batch_and_term() -> None:
    data = make_data(24)  # 3 batches per epoch
    loss = Recording(CE(), nan_at=5)  # epoch 2, second batch
    model = TinyNet()
    trainer = Trainer(model, loss, config(epochs=3), progress=False, name="student_ce")
    with pytest.raises(TrainingError) as info:
        trainer.fit(data)
    message = str(info.value)
    assert "'student_ce' at epoch 2, step 5 (batch 2 of 3, dataset indices " in message
    assert "loss=nan" in message and "ce/ce=nan" in message
    assert "\n" not in message and "lower train.lr" in message
    assert all(torch.isfinite(p).all() for p in model.parameters())  # the bad step never ran


def test_diverged_weights_are_blamed_on_the_network_being_trained() -> None:
    model = TinyNet()
    with torch.no_grad():
        model.fc2.weight.fill_(float("inf"))  # e.g. a teacher whose lr was far too high
    trainer = Trainer(model, CE(), config(epochs=1), progress=False, name="teacher")
    with pytest.raises(TrainingError) as info:
        trainer.fit(make_data(8))
    assert "'teacher''s logits are non-finite" in str(info.value)
    assert "student" not in str(info.value)


def test_max_batches_and_loss_parameters_are_trained() -> None:
    loss = Recording(ScaledCE())
    cfg = config(epochs=2, max_batches=2)
    history = Trainer(TinyNet(), loss, cfg, progress=False).fit(make_data(48))
    assert loss.calls == 4 and len(history) == 2
    assert loss.inner.log_scale.item() != 0.0  # the optimizer covers the loss's parameters


def test_prepare_runs_once_with_reiterable_batches() -> None:
    loss = Recording(CE())
    Trainer(TinyNet(), loss, config(epochs=2, max_batches=2), progress=False).fit(make_data(48))
    assert loss.prepare_passes == [2, 2]  # iterated twice, capped at max_batches


def test_metrics_lines_parse_and_hold_the_parts(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    data = make_data(32)
    trainer = Trainer(
        TinyNet(), KD(), config(epochs=2), teacher=TinyNet(seed=3), metrics_path=path,
        name="kd_student", progress=False,
    )  # fmt: skip
    history = trainer.fit(data, val=make_data(16, seed=1))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == history
    assert [r["epoch"] for r in rows] == [1, 2]
    for row in rows:
        assert row["model"] == "kd_student"
        assert {"loss", "kd/soft", "kd/hard", "train_acc", "val_acc", "val_loss", "lr", "time"} <= (
            row.keys()
        )
        assert row["loss"] == pytest.approx(0.5 * row["kd/soft"] + 0.5 * row["kd/hard"])
        assert 0.0 <= row["train_acc"] <= 1.0 and 0.0 <= row["val_acc"] <= 1.0


def test_loss_means_and_accuracy_match_a_manual_count() -> None:
    data = make_data(24)
    loss = Recording(CE())
    model = TinyNet(dropout=0.0)
    history = Trainer(model, loss, config(epochs=1), progress=False).fit(data)
    pairs = list(zip(loss.student_logits, loss.batches))
    ce = [F.cross_entropy(z, b.targets).item() for z, b in pairs]
    correct = sum(int((z.argmax(1) == b.targets).sum()) for z, b in pairs)
    assert history[0]["ce/ce"] == pytest.approx(sum(ce) / 3, rel=1e-6)
    assert history[0]["train_acc"] == pytest.approx(correct / 24)


def test_evaluate_accuracy_and_loss() -> None:
    info = DatasetInfo("eye", 3, (3,), ["a", "b", "c"])
    data = TensorDataset(torch.eye(3) * 100, torch.tensor([0, 1, 1]), info)
    model = nn.Sequential(nn.Identity(), nn.Dropout(0.9)).train()
    result = evaluate(model, data, batch_size=2)
    assert result["acc"] == pytest.approx(2 / 3)
    assert result["loss"] == pytest.approx(100 / 3, rel=1e-5)  # one wrong by a margin of 100
    assert model.training  # mode restored


def test_feature_loss_gets_tapped_features_live_and_cached() -> None:
    data = make_data(24)
    teacher = TinyNet(seed=5)
    cache = TeacherCache.build(teacher, data, 8, "cpu", feature_paths=["act"], progress=False)
    students = []
    for kwargs in ({"teacher": teacher}, {"teacher_cache": cache}):
        student = TinyNet(seed=1, dropout=0.0)
        loss = Recording(FeatureMatch())
        taps = {"teacher_tap": FeatureTap(teacher, ["act"])} if "teacher" in kwargs else {}
        trainer = Trainer(student, loss, config(epochs=1), progress=False,
                          student_tap=FeatureTap(student, ["act"]), **taps, **kwargs)  # fmt: skip
        history = trainer.fit(data)
        assert history[0]["match/hint"] > 0
        assert loss.teachers[0].features["act"].shape == (8, 16)
        students.append(student)
    assert state_equal(*students)


def test_feature_loss_without_taps_gets_the_trainer_s_own_taps() -> None:
    """Same weights as with the caller's taps; the trainer's taps are gone after fit."""
    data = make_data(16)
    teacher = TinyNet(seed=5)
    students = []
    for own in (False, True):
        student = TinyNet(seed=1, dropout=0.0)
        taps = {} if own else {"student_tap": FeatureTap(student, ["act"]),
                               "teacher_tap": FeatureTap(teacher, ["act"])}  # fmt: skip
        trainer = Trainer(student, FeatureMatch(), config(epochs=1), teacher=teacher,
                          progress=False, **taps)  # fmt: skip
        assert trainer.fit(data)[0]["match/hint"] > 0
        for tap in taps.values():
            tap.remove()
        assert trainer.student_tap is (None if own else taps["student_tap"])
        assert not any(m._forward_hooks for m in [*student.modules(), *teacher.modules()])
        students.append(student)
    assert state_equal(*students)


def test_progress_bar_and_deterministic_mode(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(epochs=1, deterministic=True)
    Trainer(TinyNet(), CE(), cfg, progress=True, name="shown").fit(make_data(16))
    assert "shown 1/1" in capsys.readouterr().err
    assert not torch.are_deterministic_algorithms_enabled()  # restored after fit


def test_chance_warning_flags_only_a_final_accuracy_at_chance() -> None:
    from distillscope.train.evaluate import chance_warning

    history = [
        {"epoch": 1, "val_acc": 0.6, "loss": 2.0},
        {"epoch": 2, "val_acc": 0.11, "loss": 9.0},
    ]
    warning = chance_warning("kd", history, 10)
    assert warning is not None and "(0.110 held-out, chance 0.100)" in warning and "9" in warning
    assert chance_warning("kd", history[:1], 10) is None  # 0.6 is well above chance
    assert chance_warning("kd", [{"epoch": 1, "val_acc": 0.13}], 10) is None  # beyond the margin
    assert chance_warning("kd", [{"epoch": 1, "loss": 3.0}], 10) is None  # never validated
    assert chance_warning("kd", [{"epoch": 1, "val_acc": 0.51}], 2) is not None


def test_loader_workers_do_not_change_results() -> None:
    # a dataset read item by item goes through a DataLoader; its batch order is the seed's
    nets, histories = [], []
    for workers in (0, 2):
        net = TinyNet(seed=1)  # dropout: the global generator must advance the same way
        cfg = config(epochs=1, loader_workers=workers)
        trainer = Trainer(net, CE(), cfg, progress=False, seed=3)
        histories.append(trainer.fit(ItemDataset(45), val=ItemDataset(20, seed=1)))
        nets.append(net)
    assert state_equal(*nets)
    assert [{k: v for k, v in r.items() if k != "time"} for r in histories[0]] == [
        {k: v for k, v in r.items() if k != "time"} for r in histories[1]
    ]


def test_a_run_resumes_with_another_number_of_loader_workers(tmp_path: Path) -> None:
    straight, resumed = TinyNet(seed=1), TinyNet(seed=1)
    # Recording in every run: its prepare reads the batches (the same draws each time)
    Trainer(straight, Recording(CE()), config(), progress=False, seed=3).fit(ItemDataset(24))
    killed = Recording(CE(), kill_at=3 + 2)  # 3 steps per epoch: in the second epoch
    with pytest.raises(SimulatedKill):
        Trainer(TinyNet(seed=1), killed, config(), progress=False, seed=3,
                checkpoint_dir=tmp_path).fit(ItemDataset(24))  # fmt: skip
    Trainer(resumed, Recording(CE()), config(loader_workers=2), progress=False, seed=3,
            checkpoint_dir=tmp_path).fit(ItemDataset(24), resume=True)  # fmt: skip
    assert state_equal(straight, resumed)
