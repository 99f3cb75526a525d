"""OFD on real (tiny) zoo networks: the pre-ReLU tap, binding by layer path, the margin set in
prepare from the trained teacher, pairs across architectures, and a killed run that resumes to
identical weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from distillscope import create_model
from distillscope.config_train import TrainConfig
from distillscope.contracts import Batch
from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.distill import build_loss
from distillscope.errors import ConfigError
from distillscope.functional.feature_transfer import ofd_margin
from distillscope.models.forward import forward_outputs
from distillscope.models.taps import FeatureTap
from distillscope.train import Trainer
from distillscope.train.bind import bind_loss, run_outputs

SIZE, CLASSES = 8, 3
# Student ResNet-8 (one block per stage) and teacher ResNet-14 (two), both narrow.
S_PRE = ["layer2.0.preact", "layer3.0.preact"]
T_PRE = ["layer2.1.preact", "layer3.1.preact"]
T_BNS = ["layer2.1.bn2", "layer3.1.bn2"]
OFD = {"weight": 0.001, "student_layers": S_PRE, "teacher_layers": T_PRE, "teacher_bns": T_BNS}
LOSS = {
    "ce": {},
    "ofd": OFD,
    "hint": {"weight": 10, "student_layer": "layer2", "teacher_layer": "layer2"},
}


def data(n: int = 24) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    info = DatasetInfo("tiny-images", CLASSES, (1, SIZE, SIZE), ["a", "b", "c"])
    x = torch.randn(n, 1, SIZE, SIZE, generator=g)  # (n, 1, 8, 8)
    return TensorDataset(x, torch.arange(n) % CLASSES, info)


def student() -> nn.Module:
    torch.manual_seed(1)
    return create_model("resnet8", num_classes=CLASSES, in_channels=1, width=2)


def teacher() -> nn.Module:
    torch.manual_seed(2)
    net = create_model("resnet14", num_classes=CLASSES, in_channels=1, width=4)
    with torch.no_grad():  # a teacher whose batch norms are not at their initial values
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return net.eval()


def batches(n: int = 24, size: int = 8) -> list[Batch]:
    d = data(n)
    return [
        Batch(d.inputs[i : i + size], d.targets[i : i + size], torch.arange(i, i + size))
        for i in range(0, n, size)
    ]


def test_resnet_preact_tap_is_the_block_sum_before_its_relu() -> None:
    net = teacher()
    with FeatureTap(net, ["layer2.1.preact", "layer2.1"]) as tap:
        net(data().inputs[:4])
        pre, post = tap.features["layer2.1.preact"], tap.features["layer2.1"]
    assert (pre < 0).any() and torch.equal(torch.relu(pre), post)


def test_a_cnn_map_paired_with_an_mlp_vector_fails_at_bind_naming_the_member() -> None:
    mlp = create_model("mlp", num_classes=CLASSES, in_features=SIZE * SIZE, hidden=6)
    loss = build_loss({"ofd": {"student_layers": ["body.fc1"], "teacher_layers": ["layer3"]}})
    with pytest.raises(
        ConfigError, match=r"^'mlp_student': ofd cannot pair .*\(6,\).*\(16, 2, 2\)"
    ):
        bind_loss(loss, mlp, teacher(), data(), device="cpu", name="mlp_student")


def test_two_mlps_pair_through_a_linear_connector() -> None:
    def mlp(hidden: int) -> nn.Module:
        return create_model("mlp", num_classes=CLASSES, in_features=SIZE * SIZE, hidden=hidden)

    loss = build_loss({"ofd": {"student_layers": ["body.fc1"], "teacher_layers": ["body.fc2"]}})
    s, t = mlp(6), mlp(10)
    bind_loss(loss, s, t, data(), device="cpu")
    batch = batches()[0]
    with FeatureTap(s, ["body.fc1"]) as tap:
        parts = loss(
            forward_outputs(s, batch.inputs, tap), run_outputs(t, batch, ["body.fc2"]), batch
        )
    parts["loss"].backward()
    grad = s.get_submodule("body.fc1").weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_ofd_prepare_takes_the_margin_from_the_trained_teachers_batch_norms() -> None:
    t = teacher()
    loss = build_loss({"ofd": OFD})
    bind_loss(loss, student(), t, data(), device="cpu")
    with torch.no_grad():  # "training" the teacher after start-up binding
        t.get_submodule("layer3.1.bn2").bias.add_(0.7)
    bn = t.get_submodule("layer3.1.bn2")
    assert not torch.allclose(loss["ofd"].margin(1), ofd_margin(bn.weight, bn.bias))
    loss.prepare(student(), t, batches())
    assert torch.allclose(loss["ofd"].margin(1), ofd_margin(bn.weight, bn.bias))
    assert "terms.ofd.margin_1" in loss.state_dict()  # saved with the checkpoint, loaded on resume


def test_ofd_without_batch_norms_measures_the_margin_over_the_training_batches() -> None:
    t = teacher()
    loss = build_loss({"ofd": {"student_layers": S_PRE, "teacher_layers": T_PRE}})
    bind_loss(loss, student(), t, data(), device="cpu")
    loss.prepare(student(), t, batches())
    f = run_outputs(t, Batch(data().inputs, data().targets, torch.arange(24)), T_PRE).features
    x = f[T_PRE[1]].double().transpose(0, 1).reshape(16, -1)  # (C, N H W)
    expected = ofd_margin(x.std(1, unbiased=False), x.mean(1)).float()
    assert torch.allclose(loss["ofd"].margin(1), expected, atol=1e-5)


class Kill(Exception):
    """Stands for the process being killed."""


def fit(folder: Path, kill_at: int | None, resume: bool) -> tuple[nn.Module, nn.Module]:
    """Bind at "start-up", then "train" the teacher (shift a batch norm) and fit 3 epochs."""
    s, t = student(), teacher()
    loss = build_loss(LOSS)
    bind_loss(loss, s, t, data(), device="cpu", seed=3)  # margins from the untrained teacher
    with torch.no_grad():
        t.get_submodule("layer3.1.bn2").bias.add_(0.7)  # prepare must read the trained one
    calls = [0]

    def count(module: nn.Module, args: object) -> None:
        calls[0] += 1
        if calls[0] == kill_at:
            raise Kill

    loss.register_forward_pre_hook(count)
    cfg = TrainConfig(epochs=3, batch_size=8, lr=0.05, schedule="constant", weight_decay=0.0)
    with FeatureTap(s, loss.student_paths()) as s_tap, FeatureTap(t, loss.teacher_paths()) as t_tap:
        trainer = Trainer(s, loss, cfg, teacher=t, progress=False, checkpoint_dir=folder,
                          student_tap=s_tap, teacher_tap=t_tap, seed=3)  # fmt: skip
        trainer.fit(data(), resume=resume)
    bn = t.get_submodule("layer3.1.bn2")
    assert torch.allclose(loss["ofd"].margin(1), ofd_margin(bn.weight, bn.bias))
    return s, loss


def same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_killed_ofd_run_resumes_to_identical_weights(tmp_path: Path) -> None:
    straight, straight_loss = fit(tmp_path / "a", None, False)
    with pytest.raises(Kill):
        fit(tmp_path / "b", 3 + 2, False)  # epoch 1 (3 steps), into epoch 2
    resumed, resumed_loss = fit(tmp_path / "b", None, True)
    assert same(straight, resumed)
    assert same(straight_loss, resumed_loss)
    margins = [k for k in resumed_loss.state_dict() if k.startswith("terms.ofd.margin_")]
    assert margins == ["terms.ofd.margin_0", "terms.ofd.margin_1"]
