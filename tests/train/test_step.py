"""The training step's order of passes: the teacher before the students, on the very tensor
the students get (views included), so no pass waits on or copies another's input."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from distillscope.config_train import TrainConfig
from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.distill import build_loss
from distillscope.distill.self_supervised import rotated_views
from distillscope.models import create_model
from distillscope.train import TeacherCache, Trainer
from tests.train.tiny_train_parts import TinyNet, make_data

INFO = DatasetInfo("toy", 10, (1, 12, 12), [str(i) for i in range(10)])


def images(n: int = 16) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 1, 12, 12, generator=g), torch.arange(n) % 10, INFO)


def resnets() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    student = create_model("resnet8", num_classes=10, in_channels=1)
    return student, create_model("resnet8", num_classes=10, in_channels=1).eval()


def recorded(**models: nn.Module) -> list[tuple[str, Tensor]]:
    """Every forward pass of ``models``, in order: (name, input)."""
    calls: list[tuple[str, Tensor]] = []
    for name, model in models.items():
        model.register_forward_pre_hook(lambda m, args, name=name: calls.append((name, args[0])))
    return calls


def test_the_teacher_runs_before_the_student_in_each_step():
    student, teacher = TinyNet(seed=0), TinyNet(seed=1).eval()
    calls = recorded(student=student, teacher=teacher)
    cfg = TrainConfig(epochs=1, batch_size=8, max_batches=3)
    Trainer(student, build_loss({"kd": {}}), cfg, teacher=teacher, progress=False).fit(make_data())
    steps = [name for name, _ in calls[-6:]]  # the 3 training steps (binding ran before them)
    assert steps == ["teacher", "student"] * 3


def test_sskd_feeds_the_teacher_the_students_batch_and_views_tensor():
    student, teacher = resnets()
    calls = recorded(student=student, teacher=teacher)
    cfg = TrainConfig(epochs=1, batch_size=16, max_batches=1)
    loss = build_loss({"sskd": {"head_epochs": 0}})
    Trainer(student, loss, cfg, teacher=teacher, progress=False, seed=0).fit(images())
    (t_name, t_in), (s_name, s_in) = calls[-2:]
    assert (t_name, s_name) == ("teacher", "student")
    assert t_in is s_in  # one concatenation, fed to both
    x = s_in[:16]  # the batch, then its 90, 180 and 270 degree rotations
    assert torch.equal(s_in, torch.cat([x, rotated_views(x)]))


def test_sskd_with_a_cache_runs_the_teacher_live_on_the_views_alone():
    student, teacher = resnets()
    data = images()
    cache = TeacherCache.build(teacher, data, 16, "cpu", feature_paths=["pool"], progress=False)
    calls = recorded(student=student, teacher=teacher)
    cfg = TrainConfig(epochs=1, batch_size=16, max_batches=1)
    loss = build_loss({"sskd": {"head_epochs": 0}})
    Trainer(student, loss, cfg, teacher=teacher, teacher_cache=cache, progress=False,
            seed=0).fit(data)  # fmt: skip
    (t_name, t_in), (s_name, s_in) = calls[-2:]
    assert (t_name, s_name) == ("teacher", "student")
    assert torch.equal(t_in, rotated_views(s_in[:16]))  # (3B, 1, 12, 12)
    assert t_in.data_ptr() == s_in[16:].data_ptr()  # the students' views, not a copy
