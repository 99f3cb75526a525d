"""Edges of the feature-map pair losses (AT, NST, AB) and of ``same_size``: documented defaults,
the boundary cases of AB's indicators, which map ``same_size`` pools, and one-line errors
naming the function. Their formulas are pinned against the old inline code in
``test_loss_maths.py``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distillscope.functional import attention as fa


def test_attention_map_squares_by_default() -> None:
    f = torch.tensor([[[[1.0, -2.0]], [[3.0, 0.0]]]])  # (1, 2, 1, 2)
    q = torch.tensor([(1.0 + 9.0) / 2, (4.0 + 0.0) / 2])  # mean_c |A_c|^2 per position
    assert torch.allclose(fa.attention_map(f), (q / q.norm()).view(1, 2), rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    ("fn", "args"),
    [
        (fa.attention_transfer_loss, ()),
        (fa.nst_loss, ()),
        (fa.ab_loss, (1.0,)),
    ],
)
def test_unpaired_lists_name_the_function_in_one_line(fn, args) -> None:
    a = torch.rand(2, 1, 2, 2)
    name = fn.__name__
    with pytest.raises(ValueError, match=f"^{name} needs equally many maps, got 2 and 1$"):
        fn([a, a], [a], *args)


def test_boundary_loss_at_a_teacher_of_exactly_zero() -> None:
    """``t = 0`` is the off side (``t <= 0``): only ``(s + mu)^2 [s > -mu]`` counts."""
    s = torch.tensor([0.0, 0.5, -2.0])
    t = torch.zeros(3)
    margin = 1.0
    want = (0.0 + 1.0) ** 2 + (0.5 + 1.0) ** 2  # -2 is below -mu: already off
    assert fa.boundary_loss(s, t, margin).item() == pytest.approx(want)


@pytest.mark.parametrize(
    ("hs", "ht", "pooled"),
    [
        ((2, 8), (4, 4), "t"),  # equal areas: the teacher is pooled to the student's size
        ((4, 4), (2, 6), "s"),  # 16 > 12
        ((6, 2), (3, 3), "s"),  # 12 > 9 (a tall, narrow student)
        ((3, 3), (6, 2), "t"),
    ],
)
def test_same_size_compares_areas_of_non_square_maps(hs, ht, pooled: str) -> None:
    s, t = torch.rand(1, 2, *hs), torch.rand(1, 3, *ht)
    a, b = fa.same_size(s, t)
    if pooled == "s":
        assert b is t and torch.equal(a, F.adaptive_avg_pool2d(s, ht))
    else:
        assert a is s and torch.equal(b, F.adaptive_avg_pool2d(t, hs))
