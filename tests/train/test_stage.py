"""The stage runner (train/stage.py): every stage-using term (hint, ab, ft, sskd) trains through
it bit for bit as its old private loop did (copied below as the reference), a run killed in a
stage resumes to identical weights, a non-finite stage loss fails with one line, and every stage
epoch writes a metrics line."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillscope.config_train import TrainConfig
from distillscope.contracts import Batch
from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.data.vision import RandomCropFlip
from distillscope.distill import build_loss
from distillscope.distill.attention import ActivationBoundaries
from distillscope.distill.factor import FactorTransfer
from distillscope.distill.feature import Hint
from distillscope.distill.self_supervised import (
    ROTATIONS,
    SelfSupervisedKD,
    rotated_views,
)
from distillscope.errors import TrainingError
from distillscope.functional.relation import view_similarity as similarity
from distillscope.models import create_model
from distillscope.models.forward import forward_outputs
from distillscope.models.taps import FeatureTap
from distillscope.train.bind import bind_loss
from distillscope.train.checkpoint import load_train_state
from distillscope.train.stage import StageBatches, prepare_loss
from distillscope.train.trainer import LAST_CHECKPOINT, Trainer, logged_epochs
from tests.train.tiny_train_parts import SimulatedKill

INFO = DatasetInfo("toy", 10, (1, 12, 12), [str(i) for i in range(10)])
PRE = ["layer1.0.preact", "layer2.0.preact", "layer3.0.preact"]
SPECS = {
    "hint": {"hint": {"student_layer": "layer2", "teacher_layer": "layer2", "stage1_epochs": 2}},
    "ab": {"ab": {"weight": 0, "stage1_epochs": 2, "student_layers": PRE, "teacher_layers": PRE}},
    "ft": {"ft": {"student_layer": "layer3", "teacher_layer": "layer3", "paraphraser_epochs": 2}},
    "sskd": {"sskd": {"head_epochs": 2}},
}
TERMS = {"hint": Hint, "ab": ActivationBoundaries, "ft": FactorTransfer, "sskd": SelfSupervisedKD}


def data(n: int = 48) -> TensorDataset:
    """Square images with a random crop-flip (drawn from the global generator)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 12, 12, generator=g)
    return TensorDataset(x, torch.arange(n) % 10, INFO, transform=RandomCropFlip(2, flip=True))


def nets() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(3)
    return (create_model("resnet8", num_classes=10, in_channels=1),
            create_model("resnet8", num_classes=10, in_channels=1))  # fmt: skip


def states(*modules: nn.Module) -> dict[str, Tensor]:
    return {f"{i}.{k}": v.clone() for i, m in enumerate(modules) for k, v in m.state_dict().items()}


def assert_identical(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]


# ------------------------------------------------- the old private loops, as the reference
def old_hint(term: Hint, student: nn.Module, teacher: nn.Module, batches: object) -> None:
    regressor = term._regressor()
    params = [*student.parameters(), *regressor.parameters()]
    optimizer = torch.optim.Adam([p for p in params if p.requires_grad], lr=term.stage1_lr)
    was_training = student.training
    student.train()
    regressor.train()
    teacher.eval()
    with (
        FeatureTap(student, [term.student_layer]) as s_tap,
        FeatureTap(teacher, [term.teacher_layer], detach=True) as t_tap,
    ):
        for _ in range(term.stage1_epochs):
            for batch in batches:  # type: ignore[attr-defined]
                with torch.no_grad():
                    t = forward_outputs(teacher, batch.inputs, t_tap)
                s = forward_outputs(student, batch.inputs, s_tap)
                loss = term._mse(s, t)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    student.train(was_training)


def old_ab(term: ActivationBoundaries, student: nn.Module, teacher: nn.Module, batches) -> None:
    params = [p for p in (*student.parameters(), *term.connectors.parameters())
              if p.requires_grad]  # fmt: skip
    optimizer = torch.optim.Adam(params, lr=term.stage1_lr)
    was_training = student.training
    student.train()
    teacher.eval()
    with (
        FeatureTap(student, term.student_layers) as s_tap,
        FeatureTap(teacher, term.teacher_layers, detach=True) as t_tap,
    ):
        for _ in range(term.stage1_epochs):
            for batch in batches:
                with torch.no_grad():
                    t_out = forward_outputs(teacher, batch.inputs, t_tap)
                s_out = forward_outputs(student, batch.inputs, s_tap)
                loss = term._loss(s_out, t_out)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    student.train(was_training)


def old_ft(term: FactorTransfer, student: nn.Module, teacher: nn.Module, batches) -> None:
    encoder, decoder = term._paraphraser()
    params = [*encoder.parameters(), *decoder.parameters()]
    optimizer = torch.optim.Adam(params, lr=term.paraphraser_lr)
    teacher.eval()
    with FeatureTap(teacher, [term.teacher_layer], detach=True) as tap:
        for _ in range(term.paraphraser_epochs):
            for batch in batches:
                with torch.no_grad():
                    t = forward_outputs(teacher, batch.inputs, tap)
                t = t.features[term.teacher_layer]
                loss = F.mse_loss(decoder(encoder(t)), t)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    for p in (*encoder.parameters(), *decoder.parameters()):
        p.requires_grad_(False)


def old_sskd(term: SelfSupervisedKD, student: nn.Module, teacher: nn.Module, batches) -> None:
    head = term.teacher_head
    assert head is not None and term.teacher_layer
    optimizer = torch.optim.SGD(head.parameters(), lr=term.head_lr, momentum=0.9,
                                weight_decay=5e-4)  # fmt: skip
    was_training = teacher.training
    teacher.eval()
    head.train()
    try:
        with FeatureTap(teacher, [term.teacher_layer], detach=True) as tap:
            for _ in range(term.head_epochs):
                for batch in batches:
                    x = batch.inputs
                    with torch.no_grad():
                        out = forward_outputs(teacher, torch.cat([x, rotated_views(x)]), tap)
                    rep = head(out.features[term.teacher_layer].flatten(1))
                    n = len(batch)
                    simi = similarity(rep[n:], rep[:n])
                    target = torch.arange(n, device=x.device).repeat(len(ROTATIONS))
                    loss = F.cross_entropy(simi, target)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
    finally:
        teacher.train(was_training)
    head.requires_grad_(False)
    head.eval()


OLD = {"hint": old_hint, "ab": old_ab, "ft": old_ft, "sskd": old_sskd}


def prepared(method: str, old: bool) -> tuple[dict[str, Tensor], list[bool], Tensor]:
    """The student's and the loss's states, requires_grad flags and the global generator after
    the method's preparation, by the old loop or through the runner."""
    student, teacher = nets()
    train = data()
    loss = build_loss(SPECS[method])
    bind_loss(loss, student, teacher, train, device="cpu", seed=1)
    teacher.eval()
    torch.manual_seed(11)  # the augmentation draws from here
    batches = StageBatches(train, 16, torch.device("cpu"), seed=2, limit=3)
    if old:
        OLD[method](loss[method], student, teacher, batches)
    else:
        prepare_loss(loss, student, teacher, batches)
    flags = [p.requires_grad for p in (*student.parameters(), *loss.parameters())]
    return states(student, loss), flags, torch.get_rng_state()


@pytest.mark.parametrize("method", sorted(SPECS))
def test_a_stage_through_the_runner_equals_the_old_private_loop(method: str) -> None:
    old_state, old_flags, old_rng = prepared(method, old=True)
    new_state, new_flags, new_rng = prepared(method, old=False)
    assert_identical(old_state, new_state)
    assert old_flags == new_flags
    assert torch.equal(old_rng, new_rng)  # the same augmentation draws, in the same order
    student, _ = nets()
    changed = not torch.equal(new_state["0.conv1.weight"], student.state_dict()["conv1.weight"])
    assert changed == (method in ("hint", "ab"))  # ft and sskd train only the term's modules


# ----------------------------------------------------------------- kill and resume
def killing(cls: type, at: int | None, value: float | None = None) -> Callable:
    """``cls.stages`` whose stages' loss raises :class:`SimulatedKill` (or returns the loss
    times ``value``) at its ``at``-th call, counted over every stage of the class."""
    original = cls.stages
    calls = [0]

    def stages(self: object, student: nn.Module, teacher: nn.Module | None) -> list:
        out = []
        for stage in original(self, student, teacher):

            @contextmanager
            def wrapped(open_: Callable = stage.open) -> Iterator[Callable[[Batch], Tensor]]:
                with open_() as loss_of:

                    def counted(batch: Batch) -> Tensor:
                        calls[0] += 1
                        if calls[0] == at and value is None:
                            raise SimulatedKill(f"killed at stage call {at}")
                        loss = loss_of(batch)
                        return loss * value if calls[0] == at else loss

                    yield counted

            out.append(dataclasses.replace(stage, open=wrapped))
        return out

    return stages


def fit(
    tmp: Path, method: str, resume: bool = False, metrics: Path | None = None, epochs: int = 2
) -> dict[str, Tensor]:
    student, teacher = nets()
    loss = build_loss({"ce": {}, **SPECS[method]} if method != "sskd" else SPECS[method])
    trainer = Trainer(student, loss, TrainConfig(epochs=epochs, batch_size=16, lr=0.05),
                      teacher=teacher, progress=False, seed=7, checkpoint_dir=tmp,
                      metrics_path=metrics)  # fmt: skip
    trainer.fit(data(), resume=resume)
    return {**states(student, loss), "rng": torch.get_rng_state()}


@pytest.mark.parametrize("method", sorted(SPECS))
def test_a_run_killed_in_a_stage_resumes_to_identical_weights(
    tmp_path: Path, method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight = fit(tmp_path / "a", method)
    with monkeypatch.context() as m:  # 3 batches a pass: killed at stage epoch 2, batch 2
        m.setattr(TERMS[method], "stages", killing(TERMS[method], at=5))
        with pytest.raises(SimulatedKill):
            fit(tmp_path / "b", method)
    state = load_train_state(tmp_path / "b" / LAST_CHECKPOINT)
    assert state.meta["stage"]["epochs_done"] == 1 and state.meta["prepared"] is False
    resumed = fit(tmp_path / "b", method, resume=True)
    assert_identical(straight, resumed)


def test_a_run_killed_after_its_stage_resumes_to_identical_weights(tmp_path: Path) -> None:
    """Killed in the first epoch of training: the checkpoint is the stage's last."""
    straight = fit(tmp_path / "a", "hint")
    student, teacher = nets()
    loss = build_loss({"ce": {}, **SPECS["hint"]})
    calls = [0]

    def count(module: nn.Module, args: object) -> None:
        calls[0] += 1  # the bind's dry run counts too
        if calls[0] == 3:
            raise SimulatedKill("killed in the first epoch")

    loss.register_forward_pre_hook(count)
    trainer = Trainer(student, loss, TrainConfig(epochs=2, batch_size=16, lr=0.05),
                      teacher=teacher, progress=False, seed=7,
                      checkpoint_dir=tmp_path / "b")  # fmt: skip
    with pytest.raises(SimulatedKill):
        trainer.fit(data())
    assert_identical(straight, fit(tmp_path / "b", "hint", resume=True))


def test_a_group_killed_in_its_second_members_stage_resumes_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first member's stage is skipped on resume (its result is restored), its passes
    counted; the second member continues its stage."""

    def group(tmp: Path, resume: bool = False) -> dict[str, Tensor]:
        torch.manual_seed(3)
        teacher = create_model("resnet8", num_classes=10, in_channels=1)
        models = {m: create_model("resnet8", num_classes=10, in_channels=1) for m in "ab"}
        losses = {m: build_loss({"ce": {}, **SPECS["hint"]}) for m in "ab"}
        trainer = Trainer(models, losses, TrainConfig(epochs=1, batch_size=16, lr=0.05),
                          teacher=teacher, progress=False, seed=7, checkpoint_dir=tmp,
                          name="pair")  # fmt: skip
        trainer.fit(data(), resume=resume)
        return {**states(*models.values(), *losses.values()), "rng": torch.get_rng_state()}

    straight = group(tmp_path / "a")
    with monkeypatch.context() as m:  # member a: 6 stage calls; b killed at its epoch 2
        m.setattr(Hint, "stages", killing(Hint, at=6 + 4))
        with pytest.raises(SimulatedKill):
            group(tmp_path / "b")
    assert_identical(straight, group(tmp_path / "b", resume=True))


# -------------------------------------------------------------- errors and metrics
def test_a_non_finite_stage_loss_fails_with_one_line_naming_the_stage_and_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Hint, "stages", killing(Hint, at=4, value=float("nan")))
    with pytest.raises(TrainingError) as info:
        fit(tmp_path, "hint")
    text = str(info.value)
    assert "\n" not in text
    assert "'hint/stage1'" in text and "'model'" in text
    assert "stage epoch 2" in text and "step 4" in text and "batch 1" in text


def test_every_stage_epoch_writes_one_metrics_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    metrics = tmp_path / "metrics.jsonl"
    with monkeypatch.context() as m:
        m.setattr(Hint, "stages", killing(Hint, at=5))
        with pytest.raises(SimulatedKill):
            fit(tmp_path / "ck", "hint", metrics=metrics)
    fit(tmp_path / "ck", "hint", resume=True, metrics=metrics)
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    stage_rows = [r for r in rows if "stage" in r]
    assert [(r["model"], r["stage"], r["epoch"]) for r in stage_rows] == [
        ("model", "hint/stage1", 1),
        ("model", "hint/stage1", 2),
    ]  # each stage epoch once, the one before the kill not repeated
    assert all(isinstance(r["loss"], float) and r["loss"] > 0 for r in stage_rows)
    assert [r["epoch"] for r in rows if "stage" not in r] == [1, 2]
    assert rows.index(stage_rows[-1]) < rows.index(next(r for r in rows if "stage" not in r))
    assert logged_epochs(metrics, "model") == {1, 2}  # stage lines are not training epochs
