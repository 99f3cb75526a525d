"""Channels-last training on the CPU: same results to rounding, deterministic, resumable."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from distillscope import run_experiment
from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.distill import build_loss
from distillscope.errors import ConfigError
from distillscope.models.taps import FeatureTap
from distillscope.train import TeacherCache, Trainer
from distillscope.train.layout import channels_last, worth_trying
from tests.train.tiny_train_parts import (
    CE,
    KD,
    Recording,
    SimulatedKill,
    TinyNet,
    config,
    make_data,
    state_close,
    state_equal,
)

CPU = torch.device("cpu")


def images(n: int = 40, seed: int = 0, augmented: bool = False) -> TensorDataset:
    """``n`` 1x8x8 images in 3 classes (class = which third of the image is bright)."""
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 1, 8, 8, generator=g)  # (n, 1, 8, 8)
    for c in range(3):
        x[targets == c, :, :, c * 2 : c * 2 + 3] += 2.0
    info = DatasetInfo("tiny-img", 3, (1, 8, 8), ["a", "b", "c"])
    transform = (lambda b: b + 0.05 * torch.randn_like(b)) if augmented else None
    return TensorDataset(x, targets, info, transform=transform)


class ConvNet(nn.Module):
    """conv-BN-ReLU twice, dropout, linear: the layers whose kernels change with the layout."""

    def __init__(self, seed: int = 0, flatten_with_view: bool = False) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
            nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        )  # fmt: skip
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(8 * 4 * 4, 3)
        self.flatten_with_view = flatten_with_view

    def forward(self, x: Tensor) -> Tensor:
        h = self.body(x)  # (B, 8, 4, 4)
        h = h.view(h.shape[0], -1) if self.flatten_with_view else h.flatten(1)  # (B, 128)
        return self.fc(self.drop(h))  # (B, 3)


def fit(model: nn.Module, tmp: Path | None = None, **kwargs: object) -> Trainer:
    loss = kwargs.pop("loss", CE())
    cfg = config(epochs=3, **kwargs.pop("cfg", {}))  # type: ignore[arg-type]
    trainer = Trainer(model, loss, cfg, progress=False, seed=3, name="net",
                      checkpoint_dir=tmp, **kwargs)  # type: ignore[arg-type]  # fmt: skip
    trainer.fit(images(augmented=True), val=images(16, seed=1), resume=tmp is not None)
    return trainer


def test_conv_model_trains_channels_last_and_leaves_in_the_default_layout() -> None:
    model = ConvNet()
    trainer = fit(model)
    assert trainer.channels_last
    assert all(p.is_contiguous() for p in model.parameters())


def test_channels_last_is_deterministic_and_matches_the_default_layout_to_rounding() -> None:
    a, b, plain = ConvNet(), ConvNet(), ConvNet()
    fit(a)
    fit(b)
    trainer = fit(plain, channels_last=False)
    assert not trainer.channels_last
    assert state_equal(a, b)
    assert state_close(a, plain, atol=1e-4)


@pytest.mark.parametrize("cfg", [{"optimizer": "sgd"}, {"optimizer": "adam", "lr": 0.01}])
def test_killed_channels_last_run_resumes_bit_identical(tmp_path: Path, cfg: dict) -> None:
    straight = ConvNet(seed=7)
    fit(straight, tmp_path / "a", cfg=cfg, loss=Recording(CE()))
    with pytest.raises(SimulatedKill):
        fit(ConvNet(seed=7), tmp_path / "b", cfg=cfg, loss=Recording(CE(), kill_at=5 + 3))
    resumed = ConvNet(seed=99)  # a fresh process builds other initial weights
    trainer = fit(resumed, tmp_path / "b", cfg=cfg, loss=Recording(CE()))
    assert trainer.channels_last
    assert state_equal(straight, resumed)


def test_model_that_cannot_run_channels_last_keeps_the_default_layout() -> None:
    viewing, reference = ConvNet(flatten_with_view=True), ConvNet(flatten_with_view=True)
    before = torch.get_rng_state()
    with channels_last(viewing, images().inputs[:2], CPU) as on:
        assert not on and all(p.is_contiguous() for p in viewing.parameters())
    assert torch.equal(before, torch.get_rng_state())  # the trial pass drew nothing
    trainer = fit(viewing)
    fit(reference, channels_last=False)
    assert not trainer.channels_last
    assert state_equal(viewing, reference)  # the same run as with the layout switched off


def test_loss_reading_features_keeps_the_default_layout() -> None:
    class FeatureCE(CE):
        def student_paths(self) -> list[str]:
            return ["body"]

    net = ConvNet()
    with FeatureTap(net, ["body"]) as tap:
        trainer = fit(net, loss=FeatureCE(), student_tap=tap)
    assert not trainer.channels_last


def test_live_teacher_runs_channels_last_and_is_restored() -> None:
    teacher = ConvNet(seed=5)
    fit(teacher)
    trainer = fit(ConvNet(), loss=KD(), teacher=teacher)
    assert trainer.teacher_channels_last
    assert all(p.is_contiguous() for p in teacher.parameters())


def test_teacher_cache_leaves_a_teacher_usable_for_backward() -> None:
    teacher = ConvNet(seed=5)
    fit(teacher)
    data = images()
    cache = TeacherCache.build(teacher, data, batch_size=16, device="cpu", progress=False)
    teacher.eval()
    with torch.no_grad():
        live = teacher(data.inputs)  # (N, 3)
    assert torch.allclose(cache.logits, live, atol=1e-5)
    assert all(p.is_contiguous() and not p.is_inference() for p in teacher.parameters())
    x = data.inputs[:4].clone().requires_grad_(True)
    teacher(x).sum().backward()  # parameters made in inference mode would fail here
    assert x.grad is not None


# ------------------------------------------------------------- train.channels_last


def test_auto_is_the_default_and_off_is_the_trainer_switched_off() -> None:
    assert config().channels_last == "auto"
    auto, off, switched = ConvNet(), ConvNet(), ConvNet()
    assert fit(auto).channels_last
    assert not fit(off, cfg={"channels_last": "off"}).channels_last
    fit(switched, channels_last=False)
    assert state_equal(off, switched) and not state_equal(auto, off)


def test_on_forces_the_layout_where_auto_keeps_the_default() -> None:
    class FeatureCE(CE):
        def student_paths(self) -> list[str]:
            return ["body"]

    forced, kept = ConvNet(), ConvNet()
    with FeatureTap(forced, ["body"]) as tap:
        trainer = fit(forced, loss=FeatureCE(), student_tap=tap, cfg={"channels_last": "on"})
    assert trainer.channels_last  # auto keeps a tapped network in the default layout
    assert all(p.is_contiguous() for p in forced.parameters())  # restored on exit
    fit(kept, cfg={"channels_last": "on"})
    assert state_equal(kept, fit(ConvNet()).model)  # on = auto where auto chose the layout


@pytest.mark.parametrize(
    ("model", "data", "match"),
    [
        (lambda: ConvNet(flatten_with_view=True), images,
         r"^train.channels_last=on: ConvNet cannot run channels-last \(RuntimeError: "),
        (lambda: TinyNet(), make_data, r"^train.channels_last=on needs image batches"),
    ],
)  # fmt: skip
def test_on_refuses_in_one_line_a_model_or_data_that_cannot_run_channels_last(
    model: object, data: object, match: str
) -> None:
    net = model()  # type: ignore[operator]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    trainer = Trainer(net, CE(), config(channels_last="on"), progress=False)
    with pytest.raises(ConfigError, match=match) as info:
        trainer.fit(data())  # type: ignore[operator]
    assert "\n" not in str(info.value)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.is_contiguous() for p in net.parameters())


def test_on_is_checked_at_start_up_before_a_run_directory_exists(tmp_path: Path) -> None:
    cfg = {
        "name": "cl",
        "progress": False,
        "output_dir": str(tmp_path / "runs"),
        "data": {"name": "toy2d-ring"},
        "train": {"epochs": 1, "channels_last": "on"},
        "teacher": {"model": {"name": "mlp_full"}},
        "student": {"name": "mlp_reduced"},
        "students": {"kd": {"loss": "kd"}},
        "probes": {"accuracy": {}},
    }
    with pytest.raises(ConfigError, match=r"^teacher 'teacher': train.channels_last=on needs"):
        run_experiment(cfg, retrain_teacher=True)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("device", "precision", "expected"),
    [("cpu", "fp32", True), ("cpu", "bf16", True), ("cuda", "fp32", False),
     ("cuda", "bf16", True), ("cuda", "fp16", True), ("mps", "bf16", False)],
)  # fmt: skip
def test_auto_rule_by_device_and_precision(device: str, precision: str, expected: bool) -> None:
    # the rule only (the trial pass runs on the CPU tensors given): CUDA wants tensor cores
    net = ConvNet()
    with channels_last(net, images().inputs[:2], torch.device(device), "auto", precision) as on:
        assert on is expected
        assert net.body[3].weight.is_contiguous() is not expected
    assert not worth_trying(TinyNet(), make_data().inputs, torch.device(device), precision)


def test_on_puts_every_member_of_a_group_in_channels_last() -> None:
    models = {"a": ConvNet(1), "b": ConvNet(2)}
    losses = {m: build_loss({"dml": {}}) for m in models}
    for mode, expected in (("auto", False), ("on", True)):
        trainer = Trainer(models, losses, config(epochs=1, channels_last=mode), progress=False)
        trainer.fit(images())
        assert trainer.step is not None and trainer.step.channels_last == dict.fromkeys(
            models, expected
        )
    assert all(p.is_contiguous() for m in models.values() for p in m.parameters())
