"""Tests of the pure logit-distillation functions against independently computed values.

Golden values come from ``tests/fixtures/golden_losses.json`` (written by the standard-library
script ``tests/fixtures/make_golden_losses.py``) or are worked out in the test with ``math``
and ``numpy``; none of them call the code under test.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from distillscope.checks import check_range
from distillscope.errors import ConfigError
from distillscope.functional.soft_targets import (
    cross_entropy_to_uniform,
    indexed_normal,
    kd_loss,
    label_smoothing_targets,
    pseudo_soft_targets,
    soft_cross_entropy,
    soft_labels,
)
from tests.fixtures import make_golden_losses as make_golden

GOLDEN = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "golden_losses.json").read_text()
)


def golden(key: str):
    assert key in GOLDEN["expected"], f"golden value {key!r} missing; run make_golden_losses.py"
    return GOLDEN["expected"][key]


def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    raw = GOLDEN["inputs"]
    student = torch.tensor(raw["student_logits"], dtype=torch.float64)
    teacher = torch.tensor(raw["teacher_logits"], dtype=torch.float64)
    return student, teacher, torch.tensor(raw["targets"])


def np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# --- kd_loss ------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kd_loss_matches_golden(temperature: float) -> None:
    student, teacher, _ = inputs()
    got = kd_loss(student, teacher, temperature).item()
    assert got == pytest.approx(golden(f"kd_T{temperature:g}/soft"), rel=1e-12)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 10.0])
def test_kd_loss_two_classes_closed_form_has_t_squared_factor(temperature: float) -> None:
    # Student [0, 0] is uniform; the teacher [a, 0] gives p = sigmoid(a / T) on class 0, so
    # KL(p_t || p_s) = p log(2p) + (1 - p) log(2(1 - p)), and the loss is T^2 times that.
    a = 3.0
    p = 1.0 / (1.0 + math.exp(-a / temperature))
    kl = p * math.log(2 * p) + (1 - p) * math.log(2 * (1 - p))
    student = torch.zeros(1, 2, dtype=torch.float64)
    teacher = torch.tensor([[a, 0.0]], dtype=torch.float64)
    assert kd_loss(student, teacher, temperature).item() == pytest.approx(
        temperature**2 * kl, rel=1e-12
    )


def test_kd_loss_is_batch_mean_not_sum() -> None:
    student, teacher, _ = inputs()
    per_row = [kd_loss(student[i : i + 1], teacher[i : i + 1], 4.0).item() for i in range(3)]
    assert kd_loss(student, teacher, 4.0).item() == pytest.approx(np.mean(per_row), rel=1e-12)
    doubled = kd_loss(student.repeat(2, 1), teacher.repeat(2, 1), 4.0).item()
    assert doubled == pytest.approx(kd_loss(student, teacher, 4.0).item(), rel=1e-12)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(
    st.lists(st.floats(-20, 20), min_size=6, max_size=6),
    st.lists(st.floats(-20, 20), min_size=6, max_size=6),
    st.floats(0.5, 30.0),
    st.floats(-50, 50),
)
def test_kd_loss_nonnegative_and_shift_invariant(
    zs: list[float], zt: list[float], temperature: float, shift: float
) -> None:
    student = torch.tensor([zs], dtype=torch.float64).view(2, 3)
    teacher = torch.tensor([zt], dtype=torch.float64).view(2, 3)
    loss = kd_loss(student, teacher, temperature).item()
    assert loss >= -1e-12
    shifted = kd_loss(student + shift, teacher - shift, temperature).item()
    assert shifted == pytest.approx(loss, rel=1e-6, abs=1e-9)


def test_kd_loss_zero_for_identical_logits_and_rejects_bad_input() -> None:
    z = torch.randn(4, 5)
    assert kd_loss(z, z.clone(), 3.0).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match="does not match"):
        kd_loss(z, torch.randn(4, 6), 3.0)
    with pytest.raises(ConfigError, match=r"temperature=0\.0 .*\(0, inf\)"):
        kd_loss(z, z, 0.0)


# --- soft labels and cross-entropies -----------------------------------------------------


def test_soft_labels_match_numpy_softmax() -> None:
    _, teacher, _ = inputs()
    expected = np_softmax(teacher.numpy() / 2.5)
    np.testing.assert_allclose(soft_labels(teacher, 2.5).numpy(), expected, rtol=1e-12)
    flat = soft_labels(teacher, 1e6)
    np.testing.assert_allclose(flat.numpy(), np.full((3, 4), 0.25), atol=1e-5)


def test_soft_cross_entropy_by_hand() -> None:
    # Two classes, logits [log 3, 0] -> q = [3/4, 1/4]; target p = [1/2, 1/2].
    logits = torch.tensor([[math.log(3.0), 0.0]], dtype=torch.float64)
    target = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    expected = -(0.5 * math.log(0.75) + 0.5 * math.log(0.25))
    assert soft_cross_entropy(logits, target).item() == pytest.approx(expected, rel=1e-12)


def test_soft_cross_entropy_with_one_hot_is_cross_entropy() -> None:
    student, _, targets = inputs()
    onehot = F.one_hot(targets, 4).double()
    assert soft_cross_entropy(student, onehot).item() == pytest.approx(golden("ce"), rel=1e-12)
    with pytest.raises(ValueError, match="does not match"):
        soft_cross_entropy(student, onehot[:, :3])


def test_soft_cross_entropy_to_teacher_matches_golden() -> None:
    student, teacher, _ = inputs()
    got = soft_cross_entropy(student, soft_labels(teacher, 20.0)).item()
    assert got == pytest.approx(golden("soft_targets_T20/loss"), rel=1e-12)


def test_cross_entropy_to_uniform_matches_golden() -> None:
    student, _, _ = inputs()
    got = cross_entropy_to_uniform(student).item()
    assert got == pytest.approx(golden("label_smoothing/uniform"), rel=1e-12)
    assert cross_entropy_to_uniform(torch.zeros(2, 7)).item() == pytest.approx(math.log(7))


# --- label smoothing ---------------------------------------------------------------------


def test_label_smoothing_targets_by_hand() -> None:
    got = label_smoothing_targets(torch.tensor([2, 0]), num_classes=4, alpha=0.2)
    expected = [[0.05, 0.05, 0.85, 0.05], [0.85, 0.05, 0.05, 0.05]]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(got.sum(dim=1).numpy(), [1.0, 1.0], rtol=1e-6)
    onehot = label_smoothing_targets(torch.tensor([1]), num_classes=3, alpha=0.0)
    assert onehot.tolist() == [[0.0, 1.0, 0.0]]


def test_cross_entropy_to_smoothed_targets_is_paper_000_ls_loss() -> None:
    student, _, targets = inputs()
    smoothed = label_smoothing_targets(targets, 4, 0.1).double()
    got = soft_cross_entropy(student, smoothed).item()
    assert got == pytest.approx(golden("label_smoothing_alpha0.1/loss"), rel=1e-6)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan")])
def test_label_smoothing_targets_reject_bad_alpha(alpha: float) -> None:
    with pytest.raises(ConfigError, match=r"alpha=.* out of range; use a value in \[0, 1\]"):
        label_smoothing_targets(torch.tensor([0]), 3, alpha)


# --- indexed normal noise ----------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 12345])
def test_indexed_normal_matches_golden(seed: int) -> None:
    index = torch.tensor(GOLDEN["inputs"]["pseudo_index"])
    expected = np.array(golden(f"indexed_normal_seed{seed}"))
    got = indexed_normal(index, 4, seed)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_indexed_normal_depends_on_index_not_on_batch() -> None:
    index = torch.tensor([10, 3, 999, 42, 7])
    perm = torch.tensor([3, 0, 4, 2, 1])
    full = indexed_normal(index, 6, seed=1)
    assert torch.equal(indexed_normal(index[perm], 6, seed=1), full[perm])
    assert torch.equal(indexed_normal(index[2:3], 6, seed=1), full[2:3])
    assert not torch.equal(indexed_normal(index, 6, seed=2), full)


def test_indexed_normal_is_standard_normal() -> None:
    noise = indexed_normal(torch.arange(50_000), 4, seed=0).double()  # (N, 4)
    assert abs(noise.mean().item()) < 0.01
    assert noise.std().item() == pytest.approx(1.0, abs=0.01)
    assert (noise.abs() < 1.0).double().mean().item() == pytest.approx(0.6827, abs=0.01)
    corr = np.corrcoef(noise.numpy().T)  # (4, 4)
    assert np.abs(corr - np.eye(4)).max() < 0.02


def test_indexed_normal_rejects_float_index() -> None:
    with pytest.raises(ValueError, match="integer"):
        indexed_normal(torch.zeros(3), 4)


# --- pseudo soft targets -----------------------------------------------------------------


def test_pseudo_soft_targets_match_golden() -> None:
    index = torch.tensor(GOLDEN["inputs"]["pseudo_index"])
    targets = torch.tensor(GOLDEN["inputs"]["pseudo_targets"])
    got = pseudo_soft_targets(targets, 4, noise=indexed_normal(index, 4, 0))
    expected = np.array(golden("pseudo_soft_seed0/targets"))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-6)


def test_pseudo_soft_targets_shape_and_rows_sum_to_one() -> None:
    gen = torch.Generator().manual_seed(0)
    p = pseudo_soft_targets(torch.randint(0, 10, (64,), generator=gen), 10, gen)
    assert p.shape == (64, 10)
    np.testing.assert_allclose(p.sum(dim=1).numpy(), np.ones(64), rtol=1e-5)
    assert (p >= 0).all()


def test_pseudo_soft_targets_argmax_rate_matches_theory() -> None:
    # argmax p = y iff sqrt(v) (e_j - e_y) < 1 for every other class j. With e_y = a this has
    # probability  integral phi(a) Phi(a + 1 / sqrt(v))^(K - 1) da; for K = 10, v = 0.2 it is
    # about 0.742 (the paper's variance makes the label's peak miss y fairly often).
    k, n, sigma = 10, 20_000, math.sqrt(0.2)
    a = np.linspace(-9.0, 9.0, 36_001)
    phi = np.exp(-(a**2) / 2.0) / math.sqrt(2.0 * math.pi)
    big_phi = 0.5 * (1.0 + np.array([math.erf(x / math.sqrt(2.0)) for x in a + 1.0 / sigma]))
    expected = float(np.sum(phi * big_phi ** (k - 1)) * (a[1] - a[0]))
    gen = torch.Generator().manual_seed(3)
    targets = torch.randint(0, k, (n,), generator=gen)
    p = pseudo_soft_targets(targets, k, gen, variance=0.2, temperature=0.15)
    rate = (p.argmax(dim=1) == targets).double().mean().item()
    assert expected == pytest.approx(0.742, abs=0.002)
    assert rate == pytest.approx(expected, abs=0.015)


def test_pseudo_soft_targets_without_noise_by_hand() -> None:
    # variance 0: p = softmax(onehot / 0.15): peak e^(1/0.15) / (e^(1/0.15) + K - 1).
    p = pseudo_soft_targets(torch.tensor([1]), 3, variance=0.0, temperature=0.15)
    peak = math.exp(1 / 0.15) / (math.exp(1 / 0.15) + 2)
    np.testing.assert_allclose(p.numpy(), [[(1 - peak) / 2, peak, (1 - peak) / 2]], rtol=1e-5)


def test_pseudo_soft_targets_generator_is_reproducible() -> None:
    targets = torch.tensor([0, 1, 2, 3])
    first = pseudo_soft_targets(targets, 4, torch.Generator().manual_seed(5))
    second = pseudo_soft_targets(targets, 4, torch.Generator().manual_seed(5))
    other = pseudo_soft_targets(targets, 4, torch.Generator().manual_seed(6))
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_pseudo_soft_targets_reject_bad_arguments() -> None:
    y = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="either generator or noise"):
        pseudo_soft_targets(y, 3, torch.Generator(), noise=torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
        pseudo_soft_targets(y, 3, noise=torch.zeros(2, 4))
    with pytest.raises(ConfigError, match=r"variance=-0\.2"):
        pseudo_soft_targets(y, 3, variance=-0.2)
    with pytest.raises(ConfigError, match=r"temperature=0"):
        pseudo_soft_targets(y, 3, temperature=0)


# --- check_range -------------------------------------------------------------------------


def test_check_range_messages_name_parameter_value_and_range() -> None:
    assert check_range("x", 1, 0.0, 1.0) == 1.0
    with pytest.raises(
        ConfigError, match=r"^kd\.alpha=1\.5 is out of range; use a value in \[0, 1\]$"
    ):
        check_range("kd.alpha", 1.5, 0.0, 1.0)
    with pytest.raises(ConfigError, match=r"^t=0 is out of range; use a value in \(0, inf\)$"):
        check_range("t", 0, 0.0, low_open=True)
    with pytest.raises(ConfigError, match=r"^t=True is not a number"):
        check_range("t", True, 0.0)
    with pytest.raises(ConfigError, match=r"^t='4' is not a number"):
        check_range("t", "4", 0.0)  # type: ignore[arg-type]


# --- documented defaults, input checks, no warnings --------------------------------------


def test_documented_defaults() -> None:
    student, teacher, targets = inputs()
    assert kd_loss(student, teacher).item() == kd_loss(student, teacher, 4.0).item()
    assert torch.equal(soft_labels(teacher), soft_labels(teacher, 1.0))
    assert torch.equal(
        label_smoothing_targets(targets, 4), label_smoothing_targets(targets, 4, 0.1)
    )
    index = torch.tensor([0, 5, 2**33])
    assert torch.equal(indexed_normal(index, 3), indexed_normal(index, 3, seed=0))
    noise = indexed_normal(index, 3)
    assert torch.equal(
        pseudo_soft_targets(torch.tensor([0, 1, 2]), 3, noise=noise),
        pseudo_soft_targets(torch.tensor([0, 1, 2]), 3, None, 0.2, 0.15, noise=noise),
    )


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda z: soft_labels(z), "teacher_logits"),
        (lambda z: soft_cross_entropy(z, z), "logits"),
        (lambda z: cross_entropy_to_uniform(z), "logits"),
        (lambda z: kd_loss(z, z), "student_logits"),
    ],
)
def test_logits_that_are_not_a_batch_of_rows_are_refused(call, name: str) -> None:
    for bad in (torch.zeros(4), torch.zeros(2, 3, 4)):
        message = f"{name} must have shape (B, K), got {tuple(bad.shape)}"
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            call(bad)


def test_soft_labels_refuse_a_temperature_that_is_not_positive() -> None:
    z = torch.zeros(1, 3)
    for bad in (0.0, -1.0):
        with pytest.raises(
            ConfigError, match=rf"^temperature={bad} is out of range; use a value in \(0, inf\)$"
        ):
            soft_labels(z, bad)
    assert soft_labels(z, 0.5).tolist() == [[pytest.approx(1 / 3)] * 3]  # below 1 is fine


@pytest.mark.parametrize(
    "call",
    [
        lambda k: label_smoothing_targets(torch.tensor([0]), k),
        lambda k: indexed_normal(torch.tensor([0]), k),
        lambda k: pseudo_soft_targets(torch.tensor([0]), k),
    ],
)
def test_class_counts_below_one_are_refused_and_one_class_works(call) -> None:
    with pytest.raises(
        ConfigError, match=r"^num_classes=0 is out of range; use a value in \[1, inf\)$"
    ):
        call(0)
    assert call(1).shape == (1, 1)


def test_pseudo_soft_targets_refuse_noise_and_generator_together_by_name() -> None:
    message = "pass either generator or noise to pseudo_soft_targets, not both"
    with pytest.raises(ValueError, match=f"^{message}$"):
        pseudo_soft_targets(torch.tensor([0]), 2, torch.Generator(), noise=torch.zeros(1, 2))


def test_the_functions_raise_no_warning() -> None:
    # softmax without an explicit dim warns (implicit dimension choice); every call names it
    student, teacher, targets = inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kd_loss(student, teacher)
        soft_cross_entropy(student, soft_labels(teacher))
        cross_entropy_to_uniform(student)
        pseudo_soft_targets(targets, 4, torch.Generator().manual_seed(0))


def np_mix32(x: np.ndarray) -> np.ndarray:
    """The documented 32-bit mix on uint64 arrays (products of two 32-bit numbers fit)."""
    mask = np.uint64(0xFFFFFFFF)
    x = x ^ (x >> np.uint64(16))
    x = (x * np.uint64(0x7FEB352D)) & mask
    x = x ^ (x >> np.uint64(15))
    x = (x * np.uint64(0x846CA68B)) & mask
    return x ^ (x >> np.uint64(16))


def np_indexed_normal(index: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """``indexed_normal`` as documented, in numpy with float64 uniforms."""
    mask = np.uint64(0xFFFFFFFF)
    idx = index.astype(np.uint64)
    key = np_mix32(np.full_like(idx, seed & 0xFFFFFFFF))
    key = np_mix32(key ^ (idx & mask))
    key = np_mix32(key ^ ((idx >> np.uint64(32)) & mask))[:, None]
    bits = np_mix32(np_mix32(key ^ np.arange(2 * num_classes, dtype=np.uint64)[None]))
    u = (bits.astype(np.float64) + 0.5) / 2.0**32
    return np.sqrt(-2.0 * np.log(u[:, 0::2])) * np.cos(2.0 * np.pi * u[:, 1::2])


def test_numpy_reference_is_the_golden_scripts_hash() -> None:
    index = [0, 1, 2, 41, 2**32 + 5, 2**40 + 3]
    expected = [make_golden.indexed_normal(i, 3, 9) for i in index]
    np.testing.assert_allclose(np_indexed_normal(np.array(index), 3, 9), expected, rtol=1e-14)


def test_indexed_normal_keeps_float64_uniforms_for_every_index_width() -> None:
    # Near u1 = 1 the Box-Muller radius sqrt(-2 log u1) is steep: uniforms rounded to float32
    # would move ~1 value in 2,000 by more than 1e-6; int32 indices hash like int64 ones.
    index = np.arange(40_000)
    expected = torch.from_numpy(np_indexed_normal(index, 4, 9)).float()
    for dtype in (torch.int64, torch.int32):
        got = indexed_normal(torch.from_numpy(index).to(dtype), 4, seed=9)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    big = np.array([2**31 + 3, 2**33 + 1])
    got = indexed_normal(torch.from_numpy(big), 4, seed=9)
    torch.testing.assert_close(got, torch.from_numpy(np_indexed_normal(big, 4, 9)).float())
