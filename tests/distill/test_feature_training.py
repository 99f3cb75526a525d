"""The feature methods on real (tiny) zoo networks: binding by layer path, the pre-ReLU tap,
the prepare stages (FT's paraphraser, AB's initialisation, OFD's margin), pairs across
architectures, and a killed run that resumes to identical weights."""

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
from distillscope.functional.feature import ofd_margin
from distillscope.models.forward import forward_outputs
from distillscope.models.taps import FeatureTap
from distillscope.train import Trainer
from distillscope.train.bind import bind_loss, run_outputs

SIZE, CLASSES = 8, 3
# Student ResNet-8 (one block per stage) and teacher ResNet-14 (two), both narrow.
S_STAGES = ["layer1", "layer2", "layer3"]
S_PRE = ["layer2.0.preact", "layer3.0.preact"]
T_PRE = ["layer2.1.preact", "layer3.1.preact"]
T_BNS = ["layer2.1.bn2", "layer3.1.bn2"]
ALL_SIX = {
    "ce": {},
    "at": {"weight": 1000, "student_layers": S_STAGES, "teacher_layers": S_STAGES},
    "nst": {"weight": 50, "student_layers": ["layer3"], "teacher_layers": ["layer3"]},
    "ft": {"weight": 200, "student_layer": "layer3", "teacher_layer": "layer3", "stage1_epochs": 1},
    "ofd": {
        "weight": 0.001,
        "student_layers": S_PRE,
        "teacher_layers": T_PRE,
        "teacher_bns": T_BNS,
    },
    "ab": {"weight": 0.0, "student_layers": S_PRE, "teacher_layers": T_PRE, "stage1_epochs": 1},
    "vid": {"student_layers": S_STAGES, "teacher_layers": S_STAGES},
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


def test_all_six_bind_together_on_zoo_resnets_by_layer_path() -> None:
    loss = build_loss(ALL_SIX)
    bind_loss(loss, student(), teacher(), data(), device="cpu")  # includes the dry run
    assert loss.bound
    assert loss["ft"].paraphraser.encoder[-2].out_channels == 8  # int(0.5 * 16)
    assert [c[0].out_channels for c in loss["ofd"].connectors] == [8, 16]  # teacher widths
    assert [c[0].in_channels for c in loss["ab"].connectors] == [4, 8]  # student widths
    assert [a.shape[0] for a in loss["vid"].log_scales] == [4, 8, 16]


def test_a_cnn_map_paired_with_an_mlp_vector_fails_at_bind_naming_the_member() -> None:
    mlp = create_model("mlp", num_classes=CLASSES, in_features=SIZE * SIZE, hidden=6)
    loss = build_loss({"at": {"student_layers": ["body.act1"], "teacher_layers": ["layer3"]}})
    with pytest.raises(ConfigError, match=r"^'mlp_student': at cannot pair .*\(6,\).*\(16, 2, 2\)"):
        bind_loss(loss, mlp, teacher(), data(), device="cpu", name="mlp_student")


@pytest.mark.parametrize("name", ["ofd", "ab", "vid"])
def test_vector_methods_pair_two_mlps_through_linear_connectors(name: str) -> None:
    def mlp(hidden: int) -> nn.Module:
        return create_model("mlp", num_classes=CLASSES, in_features=SIZE * SIZE, hidden=hidden)

    loss = build_loss({name: {"student_layers": ["body.fc1"], "teacher_layers": ["body.fc2"]}})
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
    spec = {"ofd": ALL_SIX["ofd"]}
    loss = build_loss(spec)
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


def test_ft_prepare_trains_then_freezes_the_paraphraser() -> None:
    t = teacher()
    loss = build_loss({"ft": {**ALL_SIX["ft"], "stage1_epochs": 4, "stage1_lr": 0.05}})
    bind_loss(loss, student(), t, data(), device="cpu")
    ft = loss["ft"]
    before = [p.clone() for p in ft.paraphraser.parameters()]
    f_t = run_outputs(t, batches()[0], ["layer3"]).features["layer3"]
    error_before = nn.functional.mse_loss(ft.paraphraser(f_t), f_t).item()
    loss.prepare(student(), t, batches())
    after = nn.functional.mse_loss(ft.paraphraser(f_t), f_t).item()
    assert after < error_before and ft.reconstruction_error is not None
    assert any(not torch.equal(a, b) for a, b in zip(before, ft.paraphraser.parameters()))
    assert not any(p.requires_grad for p in ft.paraphraser.parameters())


def test_ab_prepare_initialises_the_student_on_the_boundary_loss() -> None:
    s, t = student(), teacher()
    loss = build_loss({"ab": {**ALL_SIX["ab"], "stage1_epochs": 10, "stage1_lr": 0.05}})
    bind_loss(loss, s, t, data(), device="cpu")
    t_out = run_outputs(t, batches()[0], T_PRE)

    def ab_now() -> float:
        loss.eval()
        value = loss(run_outputs(s, batches()[0], S_PRE), t_out, batches()[0])["ab/loss"].item()
        loss.train()
        return value

    head = s.fc.weight.clone()
    start = ab_now()
    loss.prepare(s, t, batches())
    assert ab_now() < 0.8 * start
    assert torch.equal(head, s.fc.weight)  # the classifier gets no gradient from AB


class Kill(Exception):
    """Stands for the process being killed."""


def fit(folder: Path, kill_at: int | None, resume: bool) -> tuple[nn.Module, nn.Module]:
    s, t = student(), teacher()
    loss = build_loss(ALL_SIX)
    calls = [0]

    def count(module: nn.Module, args: object) -> None:
        calls[0] += 1  # the bind's dry run counts too
        if calls[0] == kill_at:
            raise Kill

    loss.register_forward_pre_hook(count)
    cfg = TrainConfig(epochs=3, batch_size=8, lr=0.05, schedule="constant", weight_decay=0.0)
    with FeatureTap(s, loss.student_paths()) as s_tap, FeatureTap(t, loss.teacher_paths()) as t_tap:
        trainer = Trainer(s, loss, cfg, teacher=t, progress=False, checkpoint_dir=folder,
                          student_tap=s_tap, teacher_tap=t_tap, seed=3)  # fmt: skip
        trainer.fit(data(), resume=resume)
    return s, loss


def same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_killed_run_of_all_six_resumes_to_identical_weights(tmp_path: Path) -> None:
    straight, straight_loss = fit(tmp_path / "a", None, False)
    with pytest.raises(Kill):
        fit(tmp_path / "b", 1 + 3 + 2, False)  # dry run, epoch 1 (3 steps), into epoch 2
    resumed, resumed_loss = fit(tmp_path / "b", None, True)
    assert same(straight, resumed)
    assert same(straight_loss, resumed_loss)
    assert any(k.startswith("terms.ofd.margin_") for k in resumed_loss.state_dict())
