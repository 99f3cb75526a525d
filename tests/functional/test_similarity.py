"""Cosine adherence of flattened maps (paper 004, 4.2)."""

from __future__ import annotations

import math

import pytest
import torch

from distillscope.functional.similarity import (
    batch_cosine,
    cosine_parts,
    flat_cosine,
    pooled_cosine,
)


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


def test_batch_cosine_golden() -> None:
    # Three 2x2 maps per model, pooled by hand:
    # <a, b> = 2 + 0 + (-3) = -1; ||a||^2 = 4 + 1 + 9 = 14; ||b||^2 = 1 + 4 + 1 = 6.
    a = torch.tensor([[[2.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [0.0, 0.0]], [[0.0, 0.0], [3.0, 0.0]]])
    b = torch.tensor(
        [[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [2.0, 0.0]], [[0.0, 0.0], [-1.0, 0.0]]]
    )
    got = batch_cosine(a, b)
    assert got.dtype == torch.float64 and got.shape == (1,)
    assert got.item() == pytest.approx(-1 / math.sqrt(14 * 6))
    # per image the cosines are 1, 0 and -1: their mean (0) is not the pooled value
    assert flat_cosine(a, b).mean().item() == pytest.approx(0.0, abs=1e-7)


def test_batch_cosine_groups_consecutive_samples_and_keeps_a_short_last_group() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [3.0, 4.0], [1.0, 0.0]])
    b = torch.tensor([[1.0, 1.0], [0.0, 1.0], [1.0, -1.0], [3.0, 4.0], [0.0, 5.0]])
    got = batch_cosine(a, b, group_size=2).tolist()
    # group 1: <.,.> = 1 + 2 = 3, |a|^2 = 1 + 4 = 5, |b|^2 = 2 + 1 = 3
    # group 2: <.,.> = 0 + 25 = 25, |a|^2 = 2 + 25 = 27, |b|^2 = 2 + 25 = 27
    # group 3 (short): <.,.> = 0
    assert got == pytest.approx([3 / math.sqrt(15), 25 / 27, 0.0])
    whole = batch_cosine(a, b, group_size=5).item()
    assert whole == pytest.approx((3 + 25 + 0) / math.sqrt((5 + 27 + 1) * (3 + 27 + 25)))
    assert batch_cosine(a, b).item() == pytest.approx(whole)


def test_batch_cosine_is_one_image_cosine_for_groups_of_one() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 3, 4, generator=g), torch.randn(6, 3, 4, generator=g)
    torch.testing.assert_close(batch_cosine(a, b, group_size=1).float(), flat_cosine(a, b))


def test_pooled_cosine_of_zero_maps_is_zero_and_tiny_maps_do_not_underflow() -> None:
    assert pooled_cosine(cosine_parts(torch.zeros(3, 4), torch.ones(3, 4))).item() == 0.0
    tiny = torch.tensor([[3e-30, 4e-30]])
    assert batch_cosine(tiny, torch.tensor([[3.0, 4.0]])).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="group_size"):
        batch_cosine(tiny, tiny, group_size=0)


@pytest.mark.parametrize("tiny_side", ["a", "b", "both"])
def test_cosine_parts_keep_tiny_maps_of_either_side_in_float64(tiny_side: str) -> None:
    # squares of 1e-30 underflow in float32 (1e-60 < 1e-45): each map must go to float64
    tiny, big = torch.tensor([[3e-30, 4e-30]]), torch.tensor([[3.0, 4.0]])
    a = tiny if tiny_side in ("a", "both") else big
    b = tiny if tiny_side in ("b", "both") else big
    parts = cosine_parts(a, b)
    assert parts.dtype == torch.float64
    sq = {"tiny": 25e-60, "big": 25.0}
    sq_a, sq_b = sq["tiny" if a is tiny else "big"], sq["tiny" if b is tiny else "big"]
    want = [[math.sqrt(sq_a * sq_b), sq_a, sq_b]]  # the maps are parallel: <a, b> = |a| |b|
    torch.testing.assert_close(parts, torch.tensor(want, dtype=torch.float64), rtol=1e-6, atol=0)
    assert batch_cosine(a, b).item() == pytest.approx(1.0)
    assert flat_cosine(a, b).item() == pytest.approx(1.0)


def test_flat_cosine_scales_each_map_by_its_own_largest_value() -> None:
    # one sample zero on one side, one with maps of very different sizes: only the zero sample
    # is 0, and the others keep their exact cosines
    a = torch.tensor([[0.0, 0.0], [1e-30, 0.0], [2.0, 1.0]])
    b = torch.tensor([[1.0, 2.0], [1e20, 1e20], [-1e-25, 0.0]])
    got = flat_cosine(a, b)
    torch.testing.assert_close(got, torch.tensor([0.0, 1 / math.sqrt(2), -2 / math.sqrt(5)]))


def test_pooled_cosine_is_zero_when_either_side_is_zero() -> None:
    assert pooled_cosine(torch.tensor([[0.0, 4.0, 0.0]], dtype=torch.float64)).item() == 0.0
    assert pooled_cosine(torch.tensor([[0.0, 0.0, 4.0]], dtype=torch.float64)).item() == 0.0
    assert pooled_cosine(torch.tensor([[-6.0, 4.0, 9.0]], dtype=torch.float64)).item() == -1.0


def test_shape_mismatch_names_both_shapes() -> None:
    for f in (flat_cosine, cosine_parts, batch_cosine):
        with pytest.raises(ValueError, match=r"^maps differ in shape: \(2, 4\) vs \(2, 6\)$"):
            f(torch.ones(2, 4), torch.ones(2, 2, 3))
