"""ReviewKD and CAT-KD through the Trainer: bound before training, their state (ReviewKD's
fusion modules and warm-up count, CAT-KD's copy of the teacher's classifier) checkpointed, and a
killed run resumed to the same weights as an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.distill import build_loss
from distillscope.models.taps import FeatureTap
from distillscope.train import Trainer
from distillscope.train.bind import bind_loss
from tests.train.tiny_train_parts import SimulatedKill, config, state_equal

CLASSES = 3


class TinyConv(nn.Module):
    """Two conv stages (8x8, then 4x4), global pooling and a linear classifier."""

    def __init__(self, width: int = 4, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.stage1 = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, 2, padding=1), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.fc = nn.Linear(2 * width, CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.stage2(self.stage1(x))))  # (B, K)


def images(n: int = 24) -> TensorDataset:
    gen = torch.Generator().manual_seed(0)
    info = DatasetInfo("tiny-images", CLASSES, (1, 8, 8), ["a", "b", "c"])
    return TensorDataset(torch.randn(n, 1, 8, 8, generator=gen), torch.arange(n) % CLASSES, info)


SPECS = {
    "reviewkd": {
        "ce": {},
        "reviewkd": {
            "student_layers": ["stage1", "stage2", "pool"],
            "teacher_layers": ["stage1", "stage2", "pool"],
            "warmup_epochs": 2,
        },
    },
    "cat_kd": {"ce": {}, "cat_kd": {"weight": 2.0, "student_layer": "stage2",
                                    "teacher_layer": "stage2"}},
}  # fmt: skip


def run(tmp: Path, method: str, kill_at: int | None, resume: bool) -> tuple[nn.Module, nn.Module]:
    """Train a student for 3 epochs (3 steps each); the loss's ``kill_at``-th call raises."""
    teacher, student = TinyConv(width=6, seed=5), TinyConv(seed=1)
    loss = build_loss(SPECS[method])
    calls = [0]

    def count(module: nn.Module, args: object) -> None:
        calls[0] += 1  # the bind's dry run on a copy of the loss counts too
        if calls[0] == kill_at:
            raise SimulatedKill(f"killed at loss call {calls[0]}")

    loss.register_forward_pre_hook(count)
    paths = loss.student_paths()
    with FeatureTap(student, paths) as s_tap, FeatureTap(teacher, loss.teacher_paths()) as t_tap:
        trainer = Trainer(student, loss, config(epochs=3), teacher=teacher, progress=False,
                          checkpoint_dir=tmp, student_tap=s_tap, teacher_tap=t_tap,
                          seed=4)  # fmt: skip
        trainer.fit(images(), resume=resume)
    return student, loss


@pytest.mark.parametrize("method", ["reviewkd", "cat_kd"])
def test_killed_run_resumes_identical(tmp_path: Path, method: str) -> None:
    straight, straight_loss = run(tmp_path / "a", method, None, False)
    with pytest.raises(SimulatedKill):
        run(tmp_path / "b", method, 1 + 3 + 2, False)  # dry run, epoch 1, into epoch 2
    resumed, resumed_loss = run(tmp_path / "b", method, None, True)
    assert state_equal(straight, resumed)
    assert state_equal(straight_loss, resumed_loss)


def test_reviewkd_trains_its_fusion_modules_and_counts_epochs(tmp_path: Path) -> None:
    student, loss = run(tmp_path, "reviewkd", None, False)
    term = loss["reviewkd"]
    assert term.items_seen.item() == 3 * 24  # three epochs of the 24 images
    fresh = build_loss(SPECS["reviewkd"])
    bind_loss(fresh, TinyConv(seed=1), TinyConv(width=6, seed=5), images(), device="cpu", seed=4)
    before, after = fresh.state_dict(), loss.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if "abfs" in k)


def test_cat_kd_reads_the_teacher_trained_after_the_start_up_bind(tmp_path: Path) -> None:
    # The experiment binds every loss at start-up, before the teachers train (in place).
    teacher, student = TinyConv(width=6, seed=5), TinyConv(seed=1)
    loss = build_loss(SPECS["cat_kd"])
    bind_loss(loss, student, teacher, images(), device="cpu", seed=4)
    term = loss["cat_kd"]
    assert torch.equal(term.teacher_weight, teacher.fc.weight.detach())
    with torch.no_grad():
        teacher.fc.weight.mul_(3.0)  # "the teacher trains"
    with FeatureTap(student, ["stage2"]) as s_tap, FeatureTap(teacher, ["stage2"]) as t_tap:
        trainer = Trainer(student, loss, config(epochs=1), teacher=teacher, progress=False,
                          student_tap=s_tap, teacher_tap=t_tap)  # fmt: skip
        trainer.fit(images())
    assert torch.equal(term.teacher_weight, teacher.fc.weight.detach())  # read at prepare
    assert term._student_head.module is student.fc
