"""Binding a loss before training: owned modules sized from the models, deterministically,
failing in seconds on a wrong path or an inapplicable pair; a resumed run ends identical."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from distillscope.distill import build_loss
from distillscope.distill.feature import build_regressor
from distillscope.errors import ConfigError, ModelError
from distillscope.models.taps import FeatureTap
from distillscope.train import Trainer
from distillscope.train.bind import bind_loss, sample_batch
from tests.train.tiny_train_parts import (
    IN_FEATURES,
    SimulatedKill,
    TinyNet,
    config,
    make_data,
    state_equal,
)


def hint_loss(student_layer: str = "act", teacher_layer: str = "act", **extra: object):
    spec = {"hint": {"student_layer": student_layer, "teacher_layer": teacher_layer, **extra}}
    return build_loss({**spec, "kd": {"weight": 0.5}})


def bound(seed: int = 0, hidden: int = 32, rng: list | None = None) -> nn.Module:
    """A hint + KD loss bound to two tiny nets; ``rng`` gets the global RNG state before/after."""
    loss = hint_loss()
    student, teacher, data = TinyNet(hidden=16), TinyNet(hidden=hidden, seed=3), make_data()
    torch.manual_seed(123 + seed)  # TinyNet seeds the global generator: set it after them
    before = torch.get_rng_state()
    bind_loss(loss, student, teacher, data, device="cpu", seed=seed)
    if rng is not None:
        rng += [before, torch.get_rng_state()]
    return loss


def test_bind_sizes_the_regressor_from_the_teacher_feature() -> None:
    regressor = bound(hidden=32)["hint"].regressor
    assert isinstance(regressor, nn.Module)
    assert regressor(torch.zeros(2, 16)).shape == (2, 32)  # student act (16) -> teacher act (32)
    assert bound(hidden=24)["hint"].regressor(torch.zeros(2, 16)).shape == (2, 24)


def test_bind_hands_the_training_labels_to_crds_class_sampler() -> None:
    loss = build_loss({"crd": {"student_layer": "act", "teacher_layer": "act", "negatives": 8}})
    data = make_data()
    bind_loss(loss, TinyNet(hidden=16), TinyNet(hidden=32, seed=3), data, device="cpu")
    crd = loss["crd"]
    assert crd.sampler == "exact" and torch.equal(crd.labels, data.targets_tensor())


def test_bind_is_deterministic_and_leaves_the_global_rng_alone() -> None:
    rng: list = []
    a = bound(seed=0, rng=rng)
    assert torch.equal(*rng)
    b, c = bound(seed=0), bound(seed=1)
    assert state_equal(a, b)
    assert not state_equal(a, c)  # the run's seed enters the bind seed


def test_sample_batch_takes_the_first_items_and_draws_nothing() -> None:
    data = make_data(20, augmented=True)
    before = torch.get_rng_state()
    batch = sample_batch(data, "cpu")
    assert torch.equal(before, torch.get_rng_state())
    assert batch.index.tolist() == list(range(8)) and batch.inputs.shape == (8, IN_FEATURES)


def test_a_wrong_layer_path_fails_at_bind_naming_the_valid_ones() -> None:
    with pytest.raises(ModelError, match=r"no module 'layer9'.*valid paths: .*act"):
        bind_loss(hint_loss(student_layer="layer9"), TinyNet(), TinyNet(), make_data(),
                  device="cpu")  # fmt: skip


def test_an_inapplicable_pair_fails_at_bind_with_one_line() -> None:
    with pytest.raises(ConfigError, match="smaller than the teacher") as info:
        build_regressor((8, 4, 4), (8, 7, 7))
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="cannot map"):
        build_regressor((8, 4), (8, 7, 7))


@pytest.mark.parametrize(
    ("s", "t"),
    [((8, 16, 16), (4, 8, 8)), ((8, 4, 4), (4, 8, 8)), ((8, 9, 9), (4, 7, 7)), ((8, 7, 7), (12,)),
     ((6,), (4, 3, 3))],
)  # fmt: skip
def test_regressor_maps_student_shapes_to_teacher_shapes(s: tuple, t: tuple) -> None:
    regressor = build_regressor(s, t).eval()
    assert regressor(torch.zeros(2, *s)).shape == (2, *t)


def test_trainer_binds_an_unbound_loss_and_trains_the_regressor(tmp_path: Path) -> None:
    teacher = TinyNet(hidden=32, seed=5)
    loss = hint_loss()
    assert loss["hint"].regressor is None
    student = TinyNet()
    with FeatureTap(student, ["act"]) as s_tap, FeatureTap(teacher, ["act"]) as t_tap:
        trainer = Trainer(student, loss, config(epochs=1), teacher=teacher, progress=False,
                          student_tap=s_tap, teacher_tap=t_tap)  # fmt: skip
        trainer.fit(make_data())
    assert loss.bound
    before = bound(hidden=32)["hint"].regressor.state_dict()  # as bound, before training
    after = loss["hint"].regressor.state_dict()
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], v) for k, v in after.items())


def run(
    tmp: Path, kill_at: int | None, resume: bool, stage1: int = 0, method: str = "hint"
) -> tuple[TinyNet, nn.Module]:
    """Train a hint (or CRD) student for 3 epochs; the loss's ``kill_at``-th call raises."""
    teacher, student = TinyNet(hidden=32, seed=5), TinyNet(seed=1)
    if method == "crd":
        pair = {"student_layer": "act", "teacher_layer": "act"}
        loss = build_loss({"ce": {}, "crd": {"weight": 0.8, "negatives": 20, **pair}})
    else:
        loss = hint_loss(stage1_epochs=stage1)
    calls = [0]

    def count(module: nn.Module, args: object) -> None:
        calls[0] += 1  # the bind's dry run on a copy of the loss counts too
        if calls[0] == kill_at:
            raise SimulatedKill(f"killed at loss call {calls[0]}")

    loss.register_forward_pre_hook(count)
    with FeatureTap(student, ["act"]) as s_tap, FeatureTap(teacher, ["act"]) as t_tap:
        trainer = Trainer(student, loss, config(epochs=3), teacher=teacher, progress=False,
                          checkpoint_dir=tmp, student_tap=s_tap, teacher_tap=t_tap,
                          seed=4)  # fmt: skip
        trainer.fit(make_data(), resume=resume)
    return student, loss


@pytest.mark.parametrize("stage1", [0, 2])
def test_killed_run_with_an_owned_regressor_resumes_identical(tmp_path: Path, stage1: int) -> None:
    straight, straight_loss = run(tmp_path / "a", None, False, stage1)
    with pytest.raises(SimulatedKill):
        run(tmp_path / "b", 1 + 6 + 4, False, stage1)  # dry run, then epoch 2 (6 steps each)
    resumed, resumed_loss = run(tmp_path / "b", None, True, stage1)
    assert state_equal(straight, resumed)
    assert state_equal(straight_loss, resumed_loss)


def test_killed_crd_run_resumes_identical_banks_and_weights(tmp_path: Path) -> None:
    """The memory banks, Z and the negatives drawn after the kill match an unbroken run."""
    straight, straight_loss = run(tmp_path / "a", None, False, method="crd")
    with pytest.raises(SimulatedKill):
        run(tmp_path / "b", 1 + 6 + 4, False, method="crd")
    resumed, resumed_loss = run(tmp_path / "b", None, True, method="crd")
    assert state_equal(straight, resumed)
    assert state_equal(straight_loss, resumed_loss)  # banks and Z included
    assert float(resumed_loss["crd"].z_student) > 0
