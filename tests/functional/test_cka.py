"""Centred kernel alignment: reference values, invariances, estimators and input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from distillscope.functional.cka import (
    MinibatchCKA,
    center_gram,
    debiased_cka,
    gram_cka,
    gram_linear,
    gram_rbf,
    linear_cka,
    minibatch_cka,
    rbf_cka,
    unbiased_hsic,
)


def demo_input() -> tuple[torch.Tensor, torch.Tensor]:
    """The input of Kornblith et al.'s public CKA demo notebook (the "representation_similarity"
    folder of google-research/google-research): numpy's global generator seeded with 1337, then
    ``X = randn(100, 10)`` and ``Y = randn(100, 10) + X``."""
    rs = np.random.RandomState(1337)
    x = rs.randn(100, 10)
    y = rs.randn(100, 10) + x
    return torch.from_numpy(x), torch.from_numpy(y)


# Printed by that notebook (5 decimals): "Linear CKA from Examples/Features: 0.55761",
# "RBF CKA: 0.65483" (bandwidth 0.5 x the median distance), "Linear CKA ... (Debiased): 0.51346".
DEMO_LINEAR, DEMO_RBF, DEMO_DEBIASED = 0.55761, 0.65483, 0.51346


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_reference_demo_values() -> None:
    x, y = demo_input()
    assert linear_cka(x, y) == pytest.approx(DEMO_LINEAR, abs=1e-4)
    assert rbf_cka(x, y, sigma_fraction=0.5) == pytest.approx(DEMO_RBF, abs=1e-4)
    assert debiased_cka(x, y) == pytest.approx(DEMO_DEBIASED, abs=1e-4)


def test_feature_and_gram_forms_of_linear_cka_agree() -> None:
    x, y = demo_input()  # 10 features < 100 samples: linear_cka takes the feature-space form
    from_grams = gram_cka(center_gram(gram_linear(x)), center_gram(gram_linear(y)))
    assert linear_cka(x, y) == pytest.approx(from_grams, abs=1e-12)
    wide = randn(20, 50)  # more features than samples: the Gram form
    assert linear_cka(wide, wide[:, :5]) == pytest.approx(
        gram_cka(center_gram(gram_linear(wide)), center_gram(gram_linear(wide[:, :5]))), abs=1e-12
    )


def numpy_hsic_unbiased(k: np.ndarray, m: np.ndarray) -> float:
    """Song et al. (2012), eq. 5, written out independently with numpy."""
    n = len(k)
    kt, mt = k.copy(), m.copy()
    np.fill_diagonal(kt, 0.0)
    np.fill_diagonal(mt, 0.0)
    ones = np.ones(n)
    value = (
        np.trace(kt @ mt)
        + (ones @ kt @ ones) * (ones @ mt @ ones) / ((n - 1) * (n - 2))
        - 2.0 / (n - 2) * (ones @ kt @ mt @ ones)
    )
    return float(value / (n * (n - 3)))


@pytest.mark.parametrize("n", [30, 4])  # 4: the fewest samples the estimator takes
def test_unbiased_hsic_matches_song_et_al_formula_and_u_centring(n: int) -> None:
    x, y = randn(n, 4, seed=1), randn(n, 7, seed=2)
    k, m = gram_linear(x), gram_linear(y)
    expected = numpy_hsic_unbiased(k.numpy(), m.numpy())
    assert unbiased_hsic(k, m) == pytest.approx(expected, rel=1e-10)
    u_k, u_m = center_gram(k, unbiased=True), center_gram(m, unbiased=True)
    assert float((u_k * u_m).sum()) / (n * (n - 3)) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("cka", [linear_cka, rbf_cka, debiased_cka])
def test_cka_of_a_representation_with_itself_is_one(cka) -> None:
    x = randn(50, 8)
    assert cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_linear_cka_is_invariant_to_orthogonal_maps_and_isotropic_scaling() -> None:
    x, y = randn(60, 6, seed=3), randn(60, 9, seed=4)
    y = y + x @ randn(6, 9, seed=5)  # related, so CKA is neither 0 nor 1
    q, _ = torch.linalg.qr(randn(9, 9, seed=6))
    base = linear_cka(x, y)
    assert 0.1 < base < 0.99
    assert linear_cka(x, y @ q) == pytest.approx(base, abs=1e-10)
    assert linear_cka(7.5 * x, 0.01 * y) == pytest.approx(base, abs=1e-10)
    assert debiased_cka(x, y @ q) == pytest.approx(debiased_cka(x, y), abs=1e-10)
    # ... and to a shift of either representation (centring)
    assert linear_cka(x + 3.0, y) == pytest.approx(base, abs=1e-10)


def test_linear_cka_is_not_invariant_to_an_arbitrary_invertible_map() -> None:
    x, y = randn(60, 6, seed=3), randn(60, 9, seed=4)
    y = y + x @ randn(6, 9, seed=5)
    skew = torch.diag(torch.tensor([100.0, 1, 1, 1, 1, 1, 1, 1, 0.01], dtype=torch.float64))
    assert torch.linalg.matrix_rank(skew) == 9
    assert abs(linear_cka(x, y @ skew) - linear_cka(x, y)) > 0.05


def test_unrelated_representations_have_debiased_cka_near_zero() -> None:
    x, y = randn(400, 20, seed=7), randn(400, 20, seed=8)
    assert abs(debiased_cka(x, y)) < 0.02
    assert linear_cka(x, y) > 0.03  # the biased estimator is pulled up by few samples


def test_minibatch_cka_agrees_with_the_full_debiased_estimator() -> None:
    # 4096 samples in batches of 256: both estimate the same population CKA; they agree to
    # 0.01 here (the biased full estimator is further off on few samples, not tested).
    a = randn(4096, 32, seed=9)
    b = a @ randn(32, 16, seed=10) + 2.0 * randn(4096, 16, seed=11)
    full = debiased_cka(a, b)
    assert 0.3 < full < 0.8
    assert minibatch_cka(a, b, batch_size=256) == pytest.approx(full, abs=0.01)


def test_minibatch_accumulator_counts_batches_and_shares_grams() -> None:
    x, y = randn(40, 3, seed=12), randn(40, 5, seed=13)
    acc, by_grams = MinibatchCKA(), MinibatchCKA()
    for xb, yb in zip(x.split(10), y.split(10)):
        acc.update(xb, yb)
        by_grams.update_grams(gram_linear(xb), gram_linear(yb))
    assert acc.batches == 4
    assert acc.compute() == pytest.approx(by_grams.compute(), abs=1e-12)
    assert minibatch_cka(x, y, batch_size=10) == pytest.approx(acc.compute(), abs=1e-12)
    # a last batch of fewer than 4 rows is dropped
    assert minibatch_cka(x[:42], y[:42], batch_size=20) == pytest.approx(
        minibatch_cka(x[:40], y[:40], batch_size=20)
    )


def test_rbf_bandwidth_is_a_fraction_of_the_median_distance() -> None:
    x = torch.tensor([[0.0], [1.0], [3.0]])
    # squared distances 0, 1, 9 / 1, 0, 4 / 9, 4, 0: median 1, so sigma^2 = 0.25 at 0.5
    g = gram_rbf(x, sigma_fraction=0.5)
    assert float(g[1, 2]) == pytest.approx(math.exp(-4 / (2 * 0.25)))
    assert rbf_cka(x.expand(3, 2), x) == pytest.approx(1.0)  # sqrt(2) scale: same Gram


def test_constant_representation_gives_nan() -> None:
    x, zeros = randn(10, 3), torch.zeros(10, 4)
    assert math.isnan(linear_cka(x, zeros))
    assert math.isnan(debiased_cka(x, zeros))
    acc = MinibatchCKA()
    acc.update(x, zeros)
    assert math.isnan(acc.compute())


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: linear_cka(torch.ones(5, 2, 2), torch.ones(5, 2)), "flatten each sample"),
        (lambda: linear_cka(torch.ones(5, 2), torch.ones(6, 2)), "same inputs"),
        (lambda: linear_cka(torch.ones(1, 2), torch.ones(1, 2)), "at least 2"),
        (lambda: debiased_cka(torch.ones(3, 2), torch.ones(3, 2)), "at least 4"),
        (lambda: rbf_cka(randn(5, 2), randn(5, 2), sigma_fraction=0), "> 0"),
        (lambda: minibatch_cka(randn(8, 2), randn(8, 2), batch_size=2), ">= 4"),
        (lambda: MinibatchCKA().compute(), "no minibatch"),
        (lambda: gram_cka(torch.ones(3, 3), torch.ones(4, 4)), "differ in shape"),
    ],
)
def test_bad_inputs_raise_one_line(call, message) -> None:
    with pytest.raises(ValueError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


def numpy_rbf_gram(x: np.ndarray, sigma_fraction: float) -> np.ndarray:
    """Kornblith et al.'s demo bandwidth: ``sigma^2 = fraction^2 * median`` of all ``n^2``
    squared distances (numpy's median: the mean of the two middle ones for an even count)."""
    sq = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return np.exp(-sq / (2 * sigma_fraction**2 * np.median(sq)))


def numpy_cka(k: np.ndarray, m: np.ndarray) -> float:
    h = np.eye(len(k)) - 1.0 / len(k)
    kc, mc = h @ k @ h, h @ m @ h
    return float((kc * mc).sum() / np.linalg.norm(kc) / np.linalg.norm(mc))


def test_rbf_gram_below_unit_distances_and_an_even_count_median() -> None:
    x = randn(6, 3, seed=14) * 0.05  # squared distances far below 1; 36 entries: even count
    for fraction in (0.5, 1.0, 2.0):
        g = gram_rbf(x, sigma_fraction=fraction)
        assert np.allclose(g.numpy(), numpy_rbf_gram(x.numpy(), fraction), rtol=1e-12, atol=0)
    two = torch.tensor([[0.0], [2.0]])  # squared distances 0, 4, 4, 0: median 2, not 4
    assert float(gram_rbf(two, sigma_fraction=1.0)[0, 1]) == pytest.approx(math.exp(-1.0))
    assert torch.equal(gram_rbf(x), gram_rbf(x, sigma_fraction=0.5))  # the paper's default


def test_rbf_gram_of_mostly_equal_rows_is_all_ones() -> None:
    # median squared distance 0 (5 of 9 entries): no bandwidth, a Gram matrix of ones
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 2.5]])
    assert torch.equal(gram_rbf(x), torch.ones(3, 3, dtype=torch.float64))
    assert torch.equal(gram_rbf(torch.zeros(4, 2)), torch.ones(4, 4, dtype=torch.float64))


def test_rbf_cka_default_and_other_bandwidths_match_numpy() -> None:
    x, y = demo_input()
    assert rbf_cka(x, y) == pytest.approx(DEMO_RBF, abs=1e-4)  # sigma_fraction 0.5 by default
    a, b = randn(12, 3, seed=15), randn(12, 4, seed=16)
    for fraction in (0.3, 1.0, 2.0):
        expected = numpy_cka(
            numpy_rbf_gram(a.numpy(), fraction), numpy_rbf_gram(b.numpy(), fraction)
        )
        assert rbf_cka(a, b, sigma_fraction=fraction) == pytest.approx(expected, abs=1e-12)


def test_the_smallest_sample_counts_are_accepted() -> None:
    a, b = randn(4, 3, seed=17), randn(4, 2, seed=18)
    k, m = gram_linear(a).numpy(), gram_linear(b).numpy()
    expected = numpy_hsic_unbiased(k, m)
    kk, mm = numpy_hsic_unbiased(k, k), numpy_hsic_unbiased(m, m)
    assert debiased_cka(a, b) == pytest.approx(expected / math.sqrt(kk * mm), rel=1e-10)
    assert linear_cka(a[:2], b[:2]) == pytest.approx(1.0)  # two samples: one direction each
    # batches of exactly 4 rows count, the last one included (12 rows: 8 + 4)
    x, y = randn(12, 3, seed=19), randn(12, 2, seed=20)
    acc = MinibatchCKA()
    acc.update(x[:8], y[:8])
    acc.update(x[8:], y[8:])
    assert minibatch_cka(x, y, batch_size=8) == pytest.approx(acc.compute(), abs=1e-12)
    four = MinibatchCKA()
    for xb, yb in zip(x.split(4), y.split(4)):
        four.update(xb, yb)
    assert four.batches == 3
    assert minibatch_cka(x, y, batch_size=4) == pytest.approx(four.compute(), abs=1e-12)


def test_minibatch_cka_is_nguyen_et_al_eq_2_on_numpy_hsics() -> None:
    x, y = randn(16, 3, seed=21) * 0.01, randn(16, 5, seed=22) * 0.01  # tiny HSICs
    parts = []
    for xb, yb in zip(x.split(8), y.split(8)):
        k, m = (xb @ xb.T).numpy(), (yb @ yb.T).numpy()
        parts.append(
            [numpy_hsic_unbiased(k, m), numpy_hsic_unbiased(k, k), numpy_hsic_unbiased(m, m)]
        )
    xy, xx, yy = np.mean(parts, axis=0)
    assert xx * yy < 1e-12  # far below 1: a threshold on the denominator would show
    acc = MinibatchCKA()
    for xb, yb in zip(x.split(8), y.split(8)):
        acc.update(xb, yb)
    assert acc.compute() == pytest.approx(xy / math.sqrt(xx * yy), rel=1e-9)


def test_linear_cka_takes_the_smaller_matrices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fewer features than samples: ``p x p`` products, no ``n x n`` Gram matrix; as many
    features as samples or more: the Gram form (the docstring's rule)."""
    from distillscope.functional import cka

    grams: list[tuple[int, ...]] = []

    def spy(x: torch.Tensor) -> torch.Tensor:
        grams.append(tuple(x.shape))
        return gram_linear(x)

    monkeypatch.setattr(cka, "gram_linear", spy)
    x = randn(30, 29, seed=23)
    linear_cka(x, x[:, :5])
    assert grams == []
    value = linear_cka(x[:, :6], torch.cat([x, x[:, :1]], 1))  # 30 features, 30 samples
    assert grams == [(30, 6), (30, 30)]
    assert value == pytest.approx(
        numpy_cka((x[:, :6] @ x[:, :6].T).numpy(), (x @ x.T).numpy() + np.outer(x[:, 0], x[:, 0])),
        abs=1e-12,
    )


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: linear_cka(torch.ones(5, 2), np.ones((5, 2))), "got Tensor and ndarray$"),
        (lambda: linear_cka([1.0], torch.ones(5, 2)), "got list and Tensor$"),
        (
            lambda: linear_cka(torch.ones(5, 2, 2), torch.ones(5, 2)),
            r"got shapes \(5, 2, 2\) and \(5, 2\); flatten each sample first$",
        ),
        (lambda: linear_cka(torch.ones(5, 3), torch.ones(6, 2)), "got 5 and 6 rows$"),
        (lambda: linear_cka(torch.ones(1, 3), torch.ones(1, 3)), "at least 2 samples, got 1$"),
        (lambda: debiased_cka(randn(3, 5), randn(3, 2)), "^cka needs at least 4 samples, got 3$"),
        (lambda: minibatch_cka(randn(3, 2), randn(3, 2), 4), "^cka needs at least 4 samples"),
        (lambda: MinibatchCKA().update(randn(3, 2), randn(3, 2)), "^cka needs at least 4"),
        (lambda: center_gram(torch.ones(3, 3), unbiased=True), "at least 4 samples, got 3$"),
        (lambda: unbiased_hsic(torch.ones(3, 3), torch.ones(3, 3)), "at least 4 samples, got 3$"),
        (
            lambda: unbiased_hsic(torch.ones(4, 4), torch.ones(5, 5)),
            r"differ in shape: \(4, 4\) vs \(5, 5\)$",
        ),
        (lambda: gram_cka(torch.ones(3, 4), torch.ones(3, 4)), r"square, got shape \(3, 4\)$"),
        (lambda: gram_cka(torch.ones(2, 2, 2), torch.ones(2, 2, 2)), r"shape \(2, 2, 2\)$"),
        (lambda: gram_rbf(randn(4, 2), sigma_fraction=math.nan), "a finite number, got nan$"),
        (lambda: gram_rbf(randn(4, 2), sigma_fraction="0.5"), "a finite number, got '0.5'$"),
        (lambda: minibatch_cka(randn(8, 2), randn(8, 2), 4.5), "an integer, got 4.5$"),
        (lambda: minibatch_cka(randn(8, 2), randn(8, 2), True), "an integer, got True$"),
        (
            lambda: MinibatchCKA().compute(),
            "^minibatch CKA has no minibatch yet; call update\\(\\) first$",
        ),
    ],
)
def test_bad_inputs_name_the_problem(call, message) -> None:
    with pytest.raises(ValueError, match=message):
        call()
