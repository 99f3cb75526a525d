"""ECE, reliability bins, NLL, Brier and the NLL's logit gradient against hand-computed values
and independent numpy computations (and torchmetrics' ECE, when it is installed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distillscope.functional.calibration import (
    brier_score,
    expected_calibration_error,
    negative_log_likelihood,
    nll_logit_gradient,
    reliability_bins,
    top1_confidence,
)

RNG = np.random.default_rng(0)


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def numpy_ece_width(conf: np.ndarray, correct: np.ndarray, m: int) -> float:
    """Guo et al.'s estimator with right-closed bins ((b - 1)/m, b/m], written with a loop."""
    total = 0.0
    for b in range(1, m + 1):
        inside = (conf > (b - 1) / m) & (conf <= b / m)
        if b == 1:
            inside |= conf == 0
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    return total


def numpy_ece_mass(conf: np.ndarray, correct: np.ndarray, m: int) -> float:
    """Equal-mass bins: sorted position j (stable sort) goes to bin floor(j m / n)."""
    order = np.argsort(conf, kind="stable")
    bins = np.arange(len(conf)) * m // len(conf)
    total = 0.0
    for b in range(m):
        idx = order[bins == b]
        if len(idx):
            total += len(idx) / len(conf) * abs(correct[idx].mean() - conf[idx].mean())
    return total


def test_a_perfectly_calibrated_model_has_zero_ece_in_both_binnings() -> None:
    # confidence 0.6: 6 of 10 right, 0.8: 8 of 10, 1.0: 10 of 10; each half of a group keeps
    # the group's accuracy, so 6 equal-mass bins of 5 are calibrated too
    conf = t([0.6] * 10 + [0.8] * 10 + [1.0] * 10)
    correct = torch.tensor([1, 1, 1, 0, 0] * 2 + [1, 1, 1, 1, 0] * 2 + [1] * 10)
    assert float(expected_calibration_error(conf, correct)) == pytest.approx(0.0, abs=1e-12)
    for m in (3, 6):
        ece = expected_calibration_error(conf, correct, m, "mass")
        assert float(ece) == pytest.approx(0.0, abs=1e-12)


def test_a_known_miscalibrated_case_gives_the_hand_computed_ece() -> None:
    # 0.95-confident but right half the time, 0.55-confident and right 3 times in 4:
    # ECE = 4/8 |0.5 - 0.95| + 4/8 |0.75 - 0.55| = 0.225 + 0.1
    conf = t([0.95] * 4 + [0.55] * 4)
    correct = torch.tensor([1, 0, 1, 0, 1, 1, 1, 0])
    assert float(expected_calibration_error(conf, correct, n_bins=10)) == pytest.approx(0.325)
    bins = reliability_bins(conf, correct, n_bins=10)
    assert bins.count.tolist() == [0, 0, 0, 0, 0, 4, 0, 0, 0, 4]
    assert bins.accuracy[5].item() == 0.75 and bins.accuracy[9].item() == 0.5
    assert math.isnan(bins.accuracy[0].item()) and math.isnan(bins.confidence[0].item())
    assert float(expected_calibration_error(conf, correct, 2, "mass")) == pytest.approx(0.325)


def test_ece_matches_an_independent_numpy_computation() -> None:
    conf = RNG.uniform(0.1, 1.0, size=500)
    correct = RNG.uniform(size=500) < conf**2  # overconfident
    for m in (1, 7, 15):
        got = expected_calibration_error(t(conf), torch.tensor(correct), m)
        assert float(got) == pytest.approx(numpy_ece_width(conf, correct, m), rel=1e-12)
        got = expected_calibration_error(t(conf), torch.tensor(correct), m, "mass")
        assert float(got) == pytest.approx(numpy_ece_mass(conf, correct, m), rel=1e-12)
    assert float(expected_calibration_error(t(conf), torch.tensor(correct))) > 0.05


def test_a_confidence_on_an_edge_falls_in_the_bin_it_closes() -> None:
    edges = torch.linspace(0, 1, 16, dtype=torch.float64)
    bins = reliability_bins(edges, torch.ones(16), n_bins=15)
    # 0 and 1/15 both in bin 0, m/15 in bin m - 1, 1.0 in the last bin
    assert bins.count.tolist() == [2] + [1] * 14
    assert bins.confidence[0].item() == pytest.approx(1 / 30)
    assert bins.lower.tolist() == edges[:-1].tolist() and bins.upper.tolist() == edges[1:].tolist()


def test_equal_mass_bins_hold_equal_counts() -> None:
    conf = t(RNG.uniform(size=60))
    bins = reliability_bins(conf, torch.zeros(60), n_bins=15, binning="mass")
    assert bins.count.tolist() == [4] * 15
    assert (bins.lower <= bins.upper).all() and (bins.upper[:-1] <= bins.lower[1:]).all()
    assert bins.lower[0].item() == conf.min().item() and bins.upper[-1].item() == conf.max().item()
    uneven = reliability_bins(conf[:58], torch.zeros(58), n_bins=15, binning="mass").count
    assert int(uneven.sum()) == 58 and int(uneven.max() - uneven.min()) == 1


def test_equal_mass_bins_split_ties_and_leave_bins_empty_below_n_bins_samples() -> None:
    bins = reliability_bins(t([0.7] * 4), torch.tensor([1, 1, 0, 0]), n_bins=2, binning="mass")
    assert bins.count.tolist() == [2, 2] and bins.accuracy.tolist() == [1.0, 0.0]  # input order
    few = reliability_bins(t([0.3, 0.9]), torch.tensor([0, 1]), n_bins=4, binning="mass")
    assert few.count.tolist() == [1, 0, 1, 0] and math.isnan(few.lower[1].item())


def test_ece_matches_torchmetrics_off_the_edges() -> None:
    tm = pytest.importorskip("torchmetrics.functional.classification")
    logits = torch.from_numpy(RNG.normal(scale=3.0, size=(400, 10)))
    targets = torch.from_numpy(RNG.integers(0, 10, size=400))
    probs = torch.softmax(logits, -1)
    conf, correct = top1_confidence(logits, targets)
    for m in (5, 15):
        ref = tm.multiclass_calibration_error(probs, targets, 10, n_bins=m, norm="l1")
        ours = float(expected_calibration_error(conf, correct, m))
        assert ours == pytest.approx(float(ref), rel=1e-6)  # torchmetrics bins in float32


def test_nll_and_brier_golden() -> None:
    z = RNG.normal(size=(6, 4))
    y = RNG.integers(0, 4, size=6)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    nll = -np.log(p[np.arange(6), y])
    brier = ((p - np.eye(4)[y]) ** 2).sum(1)
    np.testing.assert_allclose(negative_log_likelihood(t(z), torch.tensor(y)).numpy(), nll)
    np.testing.assert_allclose(brier_score(t(z), torch.tensor(y)).numpy(), brier)
    sure = t([[0.0, 800.0]])  # a sure wrong answer: Brier's maximum, a finite large NLL
    assert brier_score(sure, torch.tensor([0])).item() == 2.0
    assert negative_log_likelihood(sure, torch.tensor([0])).item() == pytest.approx(800.0)


def test_top1_confidence_is_the_largest_probability() -> None:
    z = t(RNG.normal(size=(5, 3)))
    conf, correct = top1_confidence(z, torch.tensor([0, 1, 2, 0, 1]))
    assert conf.dtype == torch.float64
    torch.testing.assert_close(conf, torch.softmax(z, -1).amax(-1))
    assert correct.tolist() == (z.argmax(-1) == torch.tensor([0, 1, 2, 0, 1])).tolist()


def test_the_nll_logit_gradient_is_autograds_and_keeps_the_true_class_when_sure() -> None:
    z = t(RNG.normal(size=(5, 4))).requires_grad_(True)
    y = torch.tensor([0, 1, 2, 3, 0])
    (auto,) = torch.autograd.grad(F.cross_entropy(z, y, reduction="sum"), z)
    torch.testing.assert_close(nll_logit_gradient(z.detach(), y), auto)
    sure = torch.tensor([[30.0, 0.0, 0.0]])  # p_y rounds to 1 in float32
    (naive,) = torch.autograd.grad(
        F.cross_entropy(sure.requires_grad_(True), torch.tensor([0])), sure
    )
    assert naive[0, 0].item() == 0.0  # float32 autograd loses the true-class term
    g = nll_logit_gradient(sure, torch.tensor([0]))
    assert g[0, 0].item() == pytest.approx(-2 * math.exp(-30), rel=1e-9)
    assert g.sum().item() == 0.0


@pytest.mark.parametrize(
    ("conf", "correct", "n_bins", "binning", "match"),
    [
        ([0.5, 0.6], [1], 15, "width", "differ in size"),
        ([], [], 15, "width", "no sample"),
        ([1.5], [1], 15, "width", r"\[0, 1\]"),
        ([0.5], [1], 0, "width", "n_bins=0"),
        ([0.5], [1], 15, "quantile", "binning='quantile'"),
    ],
)
def test_bad_inputs_raise_one_line_errors(conf, correct, n_bins, binning, match) -> None:
    with pytest.raises(ValueError, match=match) as info:
        reliability_bins(t(conf), torch.tensor(correct), n_bins, binning)
    assert "\n" not in str(info.value)


def test_input_errors_are_one_exact_line() -> None:
    conf, hit = torch.tensor([0.5, 0.9]), torch.tensor([1, 0])
    cases = [
        (
            (conf, hit[:1]),
            "confidence and correct differ in size: 2 vs 1; pass one of each per sample",
        ),
        ((conf[:0], hit[:0]), "no sample to bin; pass at least one confidence"),
        ((conf + 1, hit), "confidences must lie in [0, 1]; pass probabilities, not logits"),
        ((conf, hit, True), "n_bins=True is invalid; use an integer >= 1"),
        ((conf, hit, 2.0), "n_bins=2.0 is invalid; use an integer >= 1"),
        ((conf, hit, 4, "quantile"), "binning='quantile' is unknown; use one of width, mass"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError) as info:
            reliability_bins(*args)
        assert str(info.value) == message


def test_the_logit_functions_work_in_float64_on_any_leading_shape() -> None:
    z = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))  # float32, (2, 3, K)
    y = torch.tensor([[0, 1, 2], [3, 0, 1]])
    flat_z, flat_y = z.reshape(6, 4), y.reshape(6)
    brier = brier_score(z, y)
    assert brier.dtype == torch.float64 and brier.shape == (2, 3)
    torch.testing.assert_close(brier.reshape(6), brier_score(flat_z, flat_y))
    conf, correct = top1_confidence(z, y)
    assert conf.dtype == torch.float64 and conf.shape == (2, 3)
    p = torch.softmax(z.double(), -1)
    torch.testing.assert_close(conf, p.amax(-1), rtol=0, atol=0)
    assert torch.equal(correct, p.argmax(-1) == y)
    nll = negative_log_likelihood(flat_z, flat_y)
    assert nll.dtype == torch.float64
    torch.testing.assert_close(nll, -p.reshape(6, 4).log()[torch.arange(6), flat_y])
    grad = nll_logit_gradient(flat_z, flat_y)
    assert grad.dtype == torch.float64


def test_single_sample_bins_and_a_confidence_of_exactly_one() -> None:
    conf = torch.tensor([0.1, 0.6, 1.0], dtype=torch.float64)
    bins = reliability_bins(conf, torch.tensor([0, 1, 1]), n_bins=3)
    assert bins.count.tolist() == [1, 1, 1]  # 1.0 lands in the last bin
    assert bins.accuracy.tolist() == [0.0, 1.0, 1.0]
    assert bins.confidence.tolist() == [0.1, 0.6, 1.0]
    assert bins.ece().item() == pytest.approx((0.1 + 0.4 + 0.0) / 3)


def test_equal_mass_bins_split_ties_by_sample_order() -> None:
    # 4096 equal confidences: a stable sort keeps the sample order, so the first half of the
    # samples (all correct) fills bin 0
    n = 4096
    conf = torch.full((n,), 0.5, dtype=torch.float64)
    hit = (torch.arange(n) < n // 2).long()
    bins = reliability_bins(conf, hit, n_bins=2, binning="mass")
    assert bins.accuracy.tolist() == [1.0, 0.0]


def test_nll_and_its_gradient_on_a_leading_shape_are_those_of_the_rows() -> None:
    # (2, 3, K): six samples in a grid; each entry is its row's value (the last axis is K)
    z = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.tensor([[0, 1, 2], [3, 0, 1]])
    logp = z - z.exp().sum(-1, keepdim=True).log()  # log softmax by hand
    nll = negative_log_likelihood(z, y)
    assert nll.shape == (2, 3)
    want = torch.stack([-logp[a, b, y[a, b]] for a in range(2) for b in range(3)]).view(2, 3)
    torch.testing.assert_close(nll, want, rtol=1e-12, atol=0)
    grad = nll_logit_gradient(z, y)
    assert grad.shape == (2, 3, 4)
    torch.testing.assert_close(grad, logp.exp() - F.one_hot(y, 4).double(), rtol=0, atol=1e-15)
    single = negative_log_likelihood(z[:1, :1], y[:1, :1])  # a grid of one sample
    assert single.shape == (1, 1)


def test_the_nll_gradient_is_k_wide_when_the_targets_miss_the_last_class() -> None:
    z = torch.zeros(2, 4, dtype=torch.float64)  # p = 1/4 everywhere
    g = nll_logit_gradient(z, torch.tensor([0, 1]))
    assert g.tolist() == [[-0.75, 0.25, 0.25, 0.25], [0.25, -0.75, 0.25, 0.25]]


def test_float32_confidences_are_binned_in_float64() -> None:
    conf = torch.tensor([0.1, 0.35, 0.6, 0.95])  # float32
    hit = torch.tensor([0, 1, 1, 0])
    for binning in ("width", "mass"):
        got = reliability_bins(conf, hit, 2, binning)
        want = reliability_bins(conf.double(), hit, 2, binning)
        for field in ("lower", "upper", "confidence", "accuracy"):
            assert getattr(got, field).dtype == torch.float64, (binning, field)
            assert torch.equal(getattr(got, field), getattr(want, field)), (binning, field)
        assert torch.equal(got.count, want.count)
