"""``CombinedLoss`` and ``build_loss``: weighting, parts, and the YAML loss block."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import pytest
import torch
import yaml
from torch import Tensor, nn

from distillscope.contracts import Batch, Outputs
from distillscope.distill import (
    CombinedLoss,
    CrossEntropy,
    KnowledgeDistillation,
    LabelSmoothing,
    LossTerm,
    build_loss,
)
from distillscope.errors import ConfigError


class ScaledMean(LossTerm):
    """Test term: a trainable scale times the mean logit, with feature paths and prepare."""

    name: ClassVar[str] = "scaled_mean"
    needs: ClassVar[set[str]] = {"logits", "features", "teacher"}

    def __init__(self, paths: list[str], value: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(value))
        self.paths = paths
        self.prepared_with: list[int] = []

    def student_paths(self) -> list[str]:
        return self.paths

    def teacher_paths(self) -> list[str]:
        return [f"teacher.{p}" for p in self.paths]

    def prepare(
        self, student: nn.Module, teacher: nn.Module | None, batches: Iterable[Batch]
    ) -> None:
        self.prepared_with = [len(b) for b in batches]

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        value = self.scale * student.logits.mean()
        return {"loss": value, "scaled_mean/value": value.detach()}


def inputs() -> tuple[Outputs, Outputs, Batch]:
    gen = torch.Generator().manual_seed(0)
    student = Outputs(torch.randn(6, 4, generator=gen, dtype=torch.float64))
    teacher = Outputs(torch.randn(6, 4, generator=gen, dtype=torch.float64))
    batch = Batch(torch.zeros(6, 1), torch.tensor([0, 1, 2, 3, 0, 1]), torch.arange(6))
    return student, teacher, batch


def test_weighted_sum_and_parts_are_kept() -> None:
    student, teacher, batch = inputs()
    ce, ls = CrossEntropy(), LabelSmoothing(alpha=0.2)
    loss = CombinedLoss({"ce": ce, "label_smoothing": ls}, {"ce": 0.5, "label_smoothing": 2.0})
    out = loss(student, teacher, batch)
    ce_out, ls_out = ce(student, None, batch), ls(student, None, batch)
    expected = 0.5 * ce_out["loss"].item() + 2.0 * ls_out["loss"].item()
    assert out["loss"].item() == pytest.approx(expected, rel=1e-12)
    assert set(out) == {
        "loss",
        "ce/loss",
        "ce/ce",
        "label_smoothing/loss",
        "label_smoothing/hard",
        "label_smoothing/uniform",
    }
    assert torch.equal(out["label_smoothing/loss"], ls_out["loss"])
    assert torch.equal(out["label_smoothing/uniform"], ls_out["label_smoothing/uniform"])
    assert not loss.needs_teacher


def test_same_kind_under_two_keys_keeps_both_parts() -> None:
    student, teacher, batch = inputs()
    t1, t4 = KnowledgeDistillation(1.0, 0.5), KnowledgeDistillation(4.0, 0.5)
    out = CombinedLoss({"kd_t1": t1, "kd_t4": t4}, {"kd_t1": 1.0, "kd_t4": 1.0})(
        student, teacher, batch
    )
    assert torch.equal(out["kd_t1/soft"], t1(student, teacher, batch)["kd/soft"])
    assert torch.equal(out["kd_t4/soft"], t4(student, teacher, batch)["kd/soft"])
    assert not torch.equal(out["kd_t1/soft"], out["kd_t4/soft"])


def test_term_parameters_are_registered_and_get_gradients() -> None:
    student, _, batch = inputs()
    term = ScaledMean(["layer1"], value=2.0)
    loss = CombinedLoss(
        {"scaled_mean": term, "ce": CrossEntropy()}, {"scaled_mean": 3.0, "ce": 1.0}
    )
    assert [p is term.scale for p in loss.parameters()] == [True]
    loss(student, None, batch)["loss"].backward()
    assert term.scale.grad.item() == pytest.approx(3.0 * student.logits.mean().item())


def test_paths_needs_and_prepare_are_forwarded() -> None:
    a, b = ScaledMean(["layer1", "layer2"]), ScaledMean(["layer2", "layer3"])
    loss = CombinedLoss({"a": a, "b": b, "kd": KnowledgeDistillation()}, dict(a=1, b=1, kd=1))
    assert loss.student_paths() == ["layer1", "layer2", "layer3"]
    assert loss.teacher_paths() == ["teacher.layer1", "teacher.layer2", "teacher.layer3"]
    assert loss.needs == {"logits", "features", "teacher"}
    assert loss.needs_teacher
    batches = [inputs()[2], inputs()[2]]
    loss.prepare(nn.Linear(1, 4), None, batches)
    assert a.prepared_with == [6, 6] and b.prepared_with == [6, 6]


def test_build_loss_from_yaml_block() -> None:
    spec = yaml.safe_load("{kd: {temperature: 4, alpha: 0.9}, ce: {weight: 0.5}}")
    loss = build_loss(spec)
    assert loss.weights == {"kd": 1.0, "ce": 0.5}
    assert loss["kd"].temperature == 4.0 and loss["kd"].alpha == 0.9
    student, teacher, batch = inputs()
    out = loss(student, teacher, batch)
    kd = KnowledgeDistillation(4.0, 0.9)(student, teacher, batch)["loss"]
    ce = CrossEntropy()(student, None, batch)["loss"]
    assert out["loss"].item() == pytest.approx(kd.item() + 0.5 * ce.item(), rel=1e-12)
    assert {"kd/soft", "kd/hard", "kd/loss", "ce/ce", "ce/loss"} <= set(out)


def test_build_loss_accepts_bare_term() -> None:
    loss = build_loss(yaml.safe_load("{ce: null}"))
    assert loss.weights == {"ce": 1.0}
    assert isinstance(loss["ce"], CrossEntropy)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, r"loss must be a non-empty mapping"),
        ({"kdd": {}}, r"unknown loss 'kdd'; valid choices: .*\bkd\b"),
        ({"kd": {"tau": 2}}, r"unknown parameter 'tau' for loss 'kd'"),
        ({"kd": {"alpha": 2}}, r"kd\.alpha=2 is out of range"),
        ({"ce": {"weight": -1}}, r"ce\.weight=-1 is out of range; use a finite number >= 0"),
        ({"ce": {"weight": "big"}}, r"ce\.weight='big' is not a number; use a number >= 0"),
        ({"ce": 0.5}, r"loss\.ce must be a mapping of parameters, got 0\.5"),
    ],
)
def test_build_loss_rejects_bad_specs(spec: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_loss(spec)


def test_combined_loss_rejects_mismatched_or_bad_keys() -> None:
    with pytest.raises(ConfigError, match=r"missing weights for \['ce'\]"):
        CombinedLoss({"ce": CrossEntropy()}, {})
    with pytest.raises(ConfigError, match=r"weights without a term \['kd'\]"):
        CombinedLoss({"ce": CrossEntropy()}, {"ce": 1.0, "kd": 1.0})
    with pytest.raises(ConfigError, match=r"bad loss term key: .*can't contain"):
        CombinedLoss({"a.b": CrossEntropy()}, {"a.b": 1.0})
    with pytest.raises(ConfigError, match="at least one term"):
        CombinedLoss({}, {})


def test_colliding_part_names_raise() -> None:
    class Clash(LossTerm):
        """Test term whose part name collides with the automatic ``<key>/loss``."""

        name: ClassVar[str] = "clash"

        def __init__(self) -> None:
            super().__init__()

        def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict:
            value = student.logits.sum()
            return {"loss": value, "clash/loss": value}

    student, _, batch = inputs()
    with pytest.raises(ValueError, match=r"logs 'clash/loss' twice"):
        CombinedLoss({"clash": Clash()}, {"clash": 1.0})(student, None, batch)
