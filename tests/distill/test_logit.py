"""The ``kd`` and ``soft_targets`` terms against golden values and their papers' definitions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distillscope.contracts import Batch, Outputs
from distillscope.distill import KnowledgeDistillation, SoftTargets, create_loss
from distillscope.errors import ConfigError, TrainingError

GOLDEN = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "golden_losses.json").read_text()
)


def golden(key: str) -> float:
    assert key in GOLDEN["expected"], f"golden value {key!r} missing; run make_golden_losses.py"
    return GOLDEN["expected"][key]


def golden_inputs(requires_grad: bool = False) -> tuple[Outputs, Outputs, Batch]:
    raw = GOLDEN["inputs"]
    student = torch.tensor(raw["student_logits"], dtype=torch.float64)
    teacher = torch.tensor(raw["teacher_logits"], dtype=torch.float64)
    teacher.requires_grad_(requires_grad)
    targets = torch.tensor(raw["targets"])
    batch = Batch(torch.zeros(3, 1), targets, torch.arange(3))
    return Outputs(student.requires_grad_(requires_grad)), Outputs(teacher), batch


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_matches_golden_with_alpha_0_9(temperature: float) -> None:
    student, teacher, batch = golden_inputs()
    out = create_loss("kd", temperature=temperature, alpha=0.9)(student, teacher, batch)
    assert set(out) == {"loss", "kd/soft", "kd/hard"}
    assert out["kd/soft"].item() == pytest.approx(golden(f"kd_T{temperature:g}/soft"), rel=1e-12)
    assert out["kd/hard"].item() == pytest.approx(golden("kd/hard"), rel=1e-12)
    assert out["loss"].item() == pytest.approx(
        golden(f"kd_T{temperature:g}_alpha0.9/loss"), rel=1e-12
    )


def test_kd_defaults_follow_the_papers() -> None:
    """Paper 000, appendix B.2: T = 4 and alpha = 0.5."""
    term = KnowledgeDistillation()
    assert (term.temperature, term.alpha) == (4.0, 0.5)
    assert term.needs == {"logits", "teacher"}
    student, teacher, batch = golden_inputs()
    loss = term(student, teacher, batch)["loss"].item()
    assert loss == pytest.approx(golden("kd_T4_alpha0.5/loss"), rel=1e-12)


def test_kd_alpha_endpoints_select_one_part() -> None:
    student, teacher, batch = golden_inputs()
    hard_only = KnowledgeDistillation(temperature=4.0, alpha=0.0)(student, teacher, batch)
    soft_only = KnowledgeDistillation(temperature=4.0, alpha=1.0)(student, teacher, batch)
    assert hard_only["loss"].item() == pytest.approx(golden("ce"), rel=1e-12)
    assert soft_only["loss"].item() == pytest.approx(golden("kd_T4/soft"), rel=1e-12)


def test_kd_gradient_flows_to_student_only() -> None:
    student, teacher, batch = golden_inputs(requires_grad=True)
    KnowledgeDistillation()(student, teacher, batch)["loss"].backward()
    assert student.logits.grad is not None and student.logits.grad.abs().sum() > 0
    assert teacher.logits.grad is None


def test_kd_soft_gradient_is_p_s_minus_p_t_times_t_over_b() -> None:
    # d/dz_s [T^2 KL(p_t^T || p_s^T)] = T (p_s^T - p_t^T) / B for the batch-mean loss.
    student, teacher, batch = golden_inputs(requires_grad=True)
    t = 4.0
    KnowledgeDistillation(temperature=t, alpha=1.0)(student, teacher, batch)["loss"].backward()
    p_s = F.softmax(student.logits.detach() / t, dim=1)
    p_t = F.softmax(teacher.logits.detach() / t, dim=1)
    np.testing.assert_allclose(
        student.logits.grad.numpy(), (t * (p_s - p_t) / 3).numpy(), rtol=1e-10
    )


@pytest.mark.parametrize("temperature", [2.0, 20.0])
def test_soft_targets_matches_golden(temperature: float) -> None:
    student, teacher, batch = golden_inputs()
    out = SoftTargets(temperature=temperature)(student, teacher, batch)
    assert set(out) == {"loss", "soft_targets/soft"}
    expected = golden(f"soft_targets_T{temperature:g}/loss")
    assert out["loss"].item() == pytest.approx(expected, rel=1e-12)
    assert torch.equal(out["loss"], out["soft_targets/soft"])


def test_soft_targets_use_student_logits_as_given() -> None:
    # The student's own training temperature is the trainer's job: the loss must not divide
    # the student's logits by T, so a uniform teacher target gives CE(z_s, u) unchanged by T.
    student, _, batch = golden_inputs()
    flat_teacher = Outputs(torch.zeros(3, 4, dtype=torch.float64))
    low = SoftTargets(temperature=1.0)(student, flat_teacher, batch)["loss"]
    high = SoftTargets(temperature=50.0)(student, flat_teacher, batch)["loss"]
    assert low.item() == pytest.approx(golden("label_smoothing/uniform"), rel=1e-12)
    assert high.item() == pytest.approx(low.item(), rel=1e-12)


@pytest.mark.parametrize("cls", [KnowledgeDistillation, SoftTargets])
def test_teacher_terms_without_teacher_raise(cls: type) -> None:
    student, _, batch = golden_inputs()
    with pytest.raises(TrainingError, match="needs the teacher's outputs.*teacher cache"):
        cls()(student, None, batch)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("kd", {"temperature": -1.0}, r"kd\.temperature=-1\.0 is out of range.*\(0, inf\)"),
        ("kd", {"temperature": 0}, r"kd\.temperature=0 is out of range"),
        ("kd", {"alpha": 1.2}, r"kd\.alpha=1\.2 is out of range; use a value in \[0, 1\]"),
        ("kd", {"alpha": -0.1}, r"kd\.alpha=-0\.1 is out of range"),
        ("kd", {"alpha": "high"}, r"kd\.alpha='high' is (not a number|invalid)"),
        ("soft_targets", {"temperature": 0.0}, r"soft_targets\.temperature=0\.0 is out of"),
    ],
)
def test_invalid_parameters_raise_config_error(name: str, params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_loss(name, **params)
