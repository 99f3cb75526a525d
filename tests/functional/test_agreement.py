"""Correctness, agreement and KL divergence per sample, against values computed with numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from distillscope.functional.agreement import kl_divergence, top1_match, topk_correct


def test_topk_correct_golden() -> None:
    z = torch.tensor([[0.1, 0.5, 0.4, 0.0], [3.0, 2.0, 1.0, 0.0], [0.5, 0.0, 1.0, 2.0]])
    y = torch.tensor([2, 2, 1])
    assert topk_correct(z, y, 1).tolist() == [False, False, False]
    assert topk_correct(z, y, 2).tolist() == [True, False, False]
    assert topk_correct(z, y, 3).tolist() == [True, True, False]


def test_topk_is_clipped_to_the_number_of_classes() -> None:
    z = torch.randn(6, 3)
    assert topk_correct(z, torch.tensor([0, 1, 2, 0, 1, 2]), k=10).all()


def test_top1_match_golden() -> None:
    a = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    b = torch.tensor([[5.0, 1.0, 0.0], [0.0, 0.0, 1.0], [-1.0, -2.0, 0.0]])
    assert top1_match(a, b).tolist() == [True, False, True]


def test_kl_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    zp, zq = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    p = np.exp(zp) / np.exp(zp).sum(1, keepdims=True)
    q = np.exp(zq) / np.exp(zq).sum(1, keepdims=True)
    expected = (p * np.log(p / q)).sum(1)
    got = kl_divergence(torch.from_numpy(zp), torch.from_numpy(zq)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_kl_golden_two_classes() -> None:
    p = torch.log(torch.tensor([[0.5, 0.5]], dtype=torch.float64))
    q = torch.log(torch.tensor([[0.25, 0.75]], dtype=torch.float64))
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert kl_divergence(p, q).item() == pytest.approx(expected, rel=1e-12)


def test_kl_of_identical_distributions_is_zero_and_saturated_logits_give_no_nan() -> None:
    z = torch.tensor([[1e4, 0.0], [0.3, -0.2]])
    assert torch.equal(kl_divergence(z, z), torch.zeros(2))
    out = kl_divergence(torch.tensor([[1e4, 0.0]]), torch.tensor([[0.0, 0.0]]))
    assert out.item() == pytest.approx(math.log(2.0), rel=1e-6)


def test_kl_with_classes_the_teacher_rules_out_takes_0_log_0_as_0() -> None:
    # A teacher whose logits are masked to -inf gives p_k = 0 on those classes; their terms
    # p_k (log p_k - log q_k) = 0 * (-inf) must count as 0, not NaN.
    p = torch.tensor([[0.0, float("-inf"), 0.0], [float("-inf"), 2.0, float("-inf")]])
    q = torch.tensor([[0.0, 0.0, math.log(2.0)], [1.0, 1.0, 1.0]])
    # row 1: p = (1/2, 0, 1/2), q = (1/4, 1/4, 1/2); row 2: p = (0, 1, 0), q uniform
    expected = [0.5 * math.log(2.0), math.log(3.0)]
    assert kl_divergence(p, q).tolist() == pytest.approx(expected, rel=1e-6)


def test_kl_rounding_below_zero_is_clamped_to_zero() -> None:
    # identical distributions from different logits: the difference of log-softmaxes rounds to
    # tiny values of either sign, the result is never negative
    z = torch.randn(64, 10, generator=torch.Generator().manual_seed(0))
    out = kl_divergence(z, z + 3.0)
    assert (out >= 0).all() and out.max().item() < 1e-5


def test_topk_default_is_top1_and_k_is_clipped_to_k_classes() -> None:
    z = torch.tensor([[0.1, 0.5, 0.4], [3.0, 2.0, 1.0]])
    y = torch.tensor([2, 0])
    assert topk_correct(z, y).tolist() == [False, True]
    assert topk_correct(z, y, k=3).tolist() == topk_correct(z, y, k=4).tolist() == [True, True]


def test_one_sample_without_a_batch_dimension() -> None:
    # the class dimension is the last one: a single (K,) sample gives a single value
    p, q = torch.tensor([0.0, math.log(3.0)]), torch.tensor([math.log(3.0), 0.0])
    expected = 0.25 * math.log(1 / 3) + 0.75 * math.log(3)  # p = (1/4, 3/4), q = (3/4, 1/4)
    assert kl_divergence(p, q).item() == pytest.approx(expected, rel=1e-6)
    assert kl_divergence(p, q).shape == ()
    assert top1_match(p, q).item() is False and top1_match(p, p).item() is True
    assert topk_correct(p, torch.tensor(1)).item() is True
    assert topk_correct(p, torch.tensor(0)).item() is False
    assert topk_correct(p, torch.tensor(0), k=5).item() is True  # k clipped to K = 2


def test_topk_correct_on_leading_dimensions() -> None:
    # (2, 3, K): two groups of three samples, classes on the last dimension
    z = torch.tensor([[0.1, 0.5, 0.4, 0.0], [3.0, 2.0, 1.0, 0.0], [0.5, 0.0, 1.0, 2.0]])
    y = torch.tensor([2, 2, 1])
    stacked = topk_correct(torch.stack([z, z.flip(-1)]), torch.stack([y, 3 - y]), k=2)
    assert stacked.tolist() == [[True, False, False], [True, False, False]]


def test_top1_match_compares_each_sample_over_its_classes() -> None:
    # four samples of two classes: a (B, K) batch with B != K
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.0, 3.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert top1_match(a, b).tolist() == [True, False, False, True]
