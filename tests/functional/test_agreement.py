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
