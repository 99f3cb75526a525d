"""Cosine adherence of flattened maps (paper 004, 4.2)."""

from __future__ import annotations

import math

import pytest
import torch

from distillscope.functional.similarity import flat_cosine


def test_flat_cosine_golden() -> None:
    a = torch.tensor([[1.0, 2.0, 2.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    b = torch.tensor([[2.0, 4.0, 4.0], [0.0, 3.0, 0.0], [-1.0, -1.0, 0.0]])
    expected = torch.tensor([1.0, 0.0, -1.0])
    torch.testing.assert_close(flat_cosine(a, b), expected)


def test_flat_cosine_flattens_all_but_the_batch_dimension() -> None:
    a = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # (1, 2, 2)
    b = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    assert flat_cosine(a, b).item() == pytest.approx(0.5)  # 1 / (sqrt 2 * sqrt 2)


def test_flat_cosine_matches_torch_reference() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 3, 4, 4, generator=g), torch.randn(7, 3, 4, 4, generator=g)
    expected = torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)
    torch.testing.assert_close(flat_cosine(a, b), expected)


def test_zero_map_has_similarity_zero() -> None:
    a = torch.zeros(2, 5)
    b = torch.ones(2, 5)
    assert flat_cosine(a, b).tolist() == [0.0, 0.0]
    assert flat_cosine(a, a).tolist() == [0.0, 0.0]


def test_tiny_maps_do_not_underflow() -> None:
    a = torch.tensor([[3e-30, 4e-30]])
    b = torch.tensor([[3.0, 4.0]])
    assert flat_cosine(a, b).item() == pytest.approx(1.0)
    c = torch.tensor([[4e-30, -3e-30]])
    assert math.isclose(flat_cosine(b, c).item(), 0.0, abs_tol=1e-6)


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="differ"):
        flat_cosine(torch.ones(2, 4), torch.ones(2, 5))
