"""Tiny models, data and loss-term stand-ins for the training tests."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillscope.config_train import TrainConfig
from distillscope.contracts import Batch, Outputs
from distillscope.data.base import DatasetInfo, DistillDataset, TensorDataset
from distillscope.distill.base import LossTerm

NUM_CLASSES = 3
IN_FEATURES = 8


def make_data(n: int = 48, augmented: bool = False, seed: int = 0) -> TensorDataset:
    """``n`` Gaussian points in 3 classes; optionally with random-noise augmentation."""
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, NUM_CLASSES, (n,), generator=g)
    centres = torch.randn(NUM_CLASSES, IN_FEATURES, generator=g) * 2.0
    inputs = centres[targets] + torch.randn(n, IN_FEATURES, generator=g)  # (n, 8)
    info = DatasetInfo("tiny", NUM_CLASSES, (IN_FEATURES,), ["a", "b", "c"])
    transform = _jitter if augmented else None
    return TensorDataset(inputs, targets, info, transform=transform)


def _jitter(x: Tensor) -> Tensor:
    """Random augmentation drawing from the global torch generator."""
    return x + 0.1 * torch.randn_like(x)


class TinyNet(nn.Module):
    """Linear -> ReLU -> Dropout -> Linear; dropout makes the global RNG matter."""

    def __init__(self, hidden: int = 16, dropout: float = 0.3, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.fc1 = nn.Linear(IN_FEATURES, hidden)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.drop(self.act(self.fc1(x))))  # (B, K)


def config(**overrides: object) -> TrainConfig:
    """A fast default training config for tests."""
    values: dict[str, object] = {
        "epochs": 2,
        "batch_size": 8,
        "lr": 0.05,
        "schedule": "constant",
        "weight_decay": 0.0,
    }
    values.update(overrides)
    return TrainConfig(**values)


class CE(LossTerm):
    """Cross-entropy stand-in."""

    name: ClassVar[str] = "ce"

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        ce = F.cross_entropy(student.logits, batch.targets)  # ()
        return {"loss": ce, "ce/ce": ce}


class KD(LossTerm):
    """Hinton-style KD stand-in with a fixed temperature of 2."""

    name: ClassVar[str] = "kd"
    needs: ClassVar[set[str]] = {"logits", "teacher"}

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        assert teacher is not None
        t = 2.0
        soft = F.kl_div(
            F.log_softmax(student.logits / t, 1),
            F.softmax(teacher.logits / t, 1),
            reduction="batchmean",
        ) * (t * t)  # ()
        hard = F.cross_entropy(student.logits, batch.targets)  # ()
        return {"loss": 0.5 * soft + 0.5 * hard, "kd/soft": soft, "kd/hard": hard}


class ScaledCE(LossTerm):
    """CE with a trainable logit scale and a step-counting buffer (loss state to checkpoint)."""

    name: ClassVar[str] = "scaled"

    def __init__(self) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(()))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        self.calls += 1
        ce = F.cross_entropy(student.logits * self.log_scale.exp(), batch.targets)  # ()
        return {"loss": ce, "scaled/ce": ce, "scaled/scale": self.log_scale.exp()}


class SimulatedKill(Exception):
    """Stands for the process being killed mid-epoch."""


class Recording(LossTerm):
    """Wraps a term; records what it receives and can fail on a chosen call."""

    def __init__(
        self,
        inner: nn.Module,
        kill_at: int | None = None,
        nan_at: int | None = None,
    ) -> None:
        super().__init__()
        self.inner = inner
        self.kill_at = kill_at
        self.nan_at = nan_at
        self.calls = 0
        self.student_logits: list[Tensor] = []
        self.teachers: list[Outputs | None] = []
        self.batches: list[Batch] = []
        self.prepare_passes: list[int] = []

    @property
    def needs_teacher(self) -> bool:  # type: ignore[override]
        return bool(getattr(self.inner, "needs_teacher", False))

    def student_paths(self) -> list[str]:
        return self.inner.student_paths()

    def teacher_paths(self) -> list[str]:
        return self.inner.teacher_paths()

    def prepare(self, student: nn.Module, teacher: nn.Module | None, batches: object) -> None:
        self.prepare_passes = [sum(1 for _ in batches) for _ in range(2)]  # type: ignore[attr-defined]

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        self.calls += 1
        if self.kill_at is not None and self.calls == self.kill_at:
            raise SimulatedKill(f"killed at loss call {self.calls}")
        self.student_logits.append(student.logits)
        self.teachers.append(teacher)
        self.batches.append(batch)
        out = dict(self.inner(student, teacher, batch))
        if self.nan_at is not None and self.calls == self.nan_at:
            bad = out["loss"] * torch.tensor(float("nan"))
            out["loss"] = out["loss"] + bad
            out["ce/ce"] = out["ce/ce"] + bad
        return out


def state_equal(a: nn.Module, b: nn.Module) -> bool:
    """Bit-identical state dicts."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def state_close(a: nn.Module, b: nn.Module, atol: float = 1e-6) -> bool:
    """State dicts equal up to float rounding (BLAS kernels may group a batch differently)."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.allclose(sa[k], sb[k], atol=atol) for k in sa)


class FeatureMatch(LossTerm):
    """CE plus the squared distance between student and teacher ``act`` features."""

    name: ClassVar[str] = "match"
    needs: ClassVar[set[str]] = {"logits", "features", "teacher"}

    def student_paths(self) -> list[str]:
        return ["act"]

    def teacher_paths(self) -> list[str]:
        return ["act"]

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        assert teacher is not None
        hint = (student.features["act"] - teacher.features["act"]).square().mean()  # ()
        ce = F.cross_entropy(student.logits, batch.targets)  # ()
        return {"loss": ce + hint, "match/hint": hint, "match/ce": ce}


class ItemDataset(DistillDataset):
    """:func:`make_data`'s points served one item at a time, as a dataset read from disk is
    (through a DataLoader, not sliced in memory)."""

    def __init__(self, n: int = 48, seed: int = 0) -> None:
        source = make_data(n, seed=seed)
        self.items = [(source.inputs[i], int(source.targets[i])) for i in range(n)]
        self.info = source.info

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        x, y = self.items[i]
        return x, y, i

    def targets_tensor(self) -> Tensor:
        return torch.tensor([y for _, y in self.items])
