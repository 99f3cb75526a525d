"""The teacher-free terms ``ce``, ``label_smoothing`` and ``pseudo_soft``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distillscope.contracts import Batch, Outputs
from distillscope.distill import CrossEntropy, LabelSmoothing, PseudoSoftLabels, create_loss
from distillscope.errors import ConfigError

GOLDEN = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "golden_losses.json").read_text()
)


def golden(key: str):
    assert key in GOLDEN["expected"], f"golden value {key!r} missing; run make_golden_losses.py"
    return GOLDEN["expected"][key]


def golden_inputs() -> tuple[Outputs, Batch]:
    raw = GOLDEN["inputs"]
    student = Outputs(torch.tensor(raw["student_logits"], dtype=torch.float64))
    batch = Batch(torch.zeros(3, 1), torch.tensor(raw["targets"]), torch.arange(3))
    return student, batch


def test_ce_matches_golden() -> None:
    student, batch = golden_inputs()
    out = CrossEntropy()(student, None, batch)
    assert set(out) == {"loss", "ce/ce"}
    assert out["loss"].item() == pytest.approx(golden("ce"), rel=1e-12)
    assert torch.equal(out["loss"], out["ce/ce"])


def test_label_smoothing_matches_golden_parts() -> None:
    student, batch = golden_inputs()
    out = LabelSmoothing(alpha=0.1)(student, None, batch)
    assert set(out) == {"loss", "label_smoothing/hard", "label_smoothing/uniform"}
    assert out["label_smoothing/hard"].item() == pytest.approx(golden("ce"), rel=1e-12)
    uniform = out["label_smoothing/uniform"].item()
    assert uniform == pytest.approx(golden("label_smoothing/uniform"), rel=1e-12)
    loss = out["loss"].item()
    assert loss == pytest.approx(golden("label_smoothing_alpha0.1/loss"), rel=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5])
def test_label_smoothing_agrees_with_torch_cross_entropy(alpha: float) -> None:
    student, batch = golden_inputs()
    ours = LabelSmoothing(alpha=alpha)(student, None, batch)["loss"]
    reference = F.cross_entropy(student.logits, batch.targets, label_smoothing=alpha)
    assert ours.item() == pytest.approx(reference.item(), rel=1e-12)


def test_pseudo_soft_matches_golden_with_the_kl_methods_tau() -> None:
    """Paper 003 C.2 uses the pseudo labels "with the KL method": tau = 4 and the tau^2 factor."""
    student, batch = golden_inputs()
    term = PseudoSoftLabels()
    assert term.kl_temperature == 4.0
    out = term(student, None, batch)
    assert set(out) == {"loss", "pseudo_soft/soft"}
    assert out["loss"].item() == pytest.approx(golden("pseudo_soft_seed0_tau4/loss"), rel=1e-5)


def test_pseudo_soft_at_kl_temperature_1_is_the_plain_soft_cross_entropy() -> None:
    student, batch = golden_inputs()
    term = PseudoSoftLabels(kl_temperature=1.0)
    out = term(student, None, batch)
    assert out["loss"].item() == pytest.approx(golden("pseudo_soft_seed0_tau1/loss"), rel=1e-5)
    target = term.targets(batch, student.logits.shape[1]).double()  # (B, K)
    plain = -(target * student.logits.log_softmax(1)).sum(1).mean()
    assert out["loss"].item() == pytest.approx(plain.item(), rel=1e-12)


def make_batch(index: list[int], targets: list[int]) -> Batch:
    return Batch(torch.zeros(len(index), 1), torch.tensor(targets), torch.tensor(index))


def test_pseudo_soft_target_is_fixed_per_dataset_index() -> None:
    term = PseudoSoftLabels(seed=3)
    labels = {5: 0, 9: 2, 13: 4, 2: 1}
    first = term.targets(make_batch([5, 9, 13], [labels[i] for i in (5, 9, 13)]), 5)
    # Another epoch: the same samples in another order, among other samples.
    second = term.targets(make_batch([13, 2, 5], [labels[i] for i in (13, 2, 5)]), 5)
    assert torch.equal(first[0], second[2])  # index 5
    assert torch.equal(first[2], second[0])  # index 13
    assert torch.equal(term.targets(make_batch([9], [2]), 5)[0], first[1])


def test_pseudo_soft_targets_differ_between_seeds() -> None:
    batch = make_batch([0, 1, 2, 3], [0, 1, 2, 3])
    a = PseudoSoftLabels(seed=0).targets(batch, 4)
    b = PseudoSoftLabels(seed=1).targets(batch, 4)
    assert not torch.allclose(a, b)


def test_pseudo_soft_targets_mostly_peak_at_the_label() -> None:
    n, k = 4000, 5
    gen = torch.Generator().manual_seed(0)
    batch = Batch(torch.zeros(n, 1), torch.randint(0, k, (n,), generator=gen), torch.arange(n))
    p = PseudoSoftLabels().targets(batch, k)
    assert p.shape == (n, k)
    np.testing.assert_allclose(p.sum(dim=1).numpy(), np.ones(n), rtol=1e-5)
    # P(argmax = y) = 0.839 for K = 5 and variance 0.2 (see the functional tests).
    rate = (p.argmax(dim=1) == batch.targets).float().mean().item()
    assert rate == pytest.approx(0.839, abs=0.03)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("label_smoothing", {"alpha": 1.5}, r"label_smoothing\.alpha=1\.5 .*\[0, 1\]"),
        ("label_smoothing", {"alpha": -0.01}, r"label_smoothing\.alpha=-0\.01 "),
        ("pseudo_soft", {"variance": -0.2}, r"pseudo_soft\.variance=-0\.2 .*\[0, inf\)"),
        ("pseudo_soft", {"temperature": 0.0}, r"pseudo_soft\.temperature=0\.0 .*\(0, inf\)"),
        ("pseudo_soft", {"seed": -1}, r"pseudo_soft\.seed=-1 is out of range"),
        ("pseudo_soft", {"seed": 1.5}, r"pseudo_soft\.seed=1\.5 is invalid"),
        ("pseudo_soft", {"kl_temperature": 0}, r"pseudo_soft\.kl_temperature=0 .*\(0, inf\)"),
        ("ce", {"alpha": 0.1}, r"unknown parameter 'alpha' for loss 'ce'; valid parameters: "),
    ],
)
def test_invalid_parameters_raise_config_error(name: str, params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_loss(name, **params)
