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


def test_unbiased_hsic_matches_song_et_al_formula_and_u_centring() -> None:
    x, y = randn(30, 4, seed=1), randn(30, 7, seed=2)
    k, m = gram_linear(x), gram_linear(y)
    expected = numpy_hsic_unbiased(k.numpy(), m.numpy())
    assert unbiased_hsic(k, m) == pytest.approx(expected, rel=1e-10)
    u_k, u_m = center_gram(k, unbiased=True), center_gram(m, unbiased=True)
    assert float((u_k * u_m).sum()) / (30 * 27) == pytest.approx(expected, rel=1e-10)


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
