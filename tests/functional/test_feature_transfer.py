"""Edges of OFD's and FT's tensor functions: the exact tail cut of ``ofd_margin`` and its
dtype, the zero target of ``ofd_loss``, ``match_spatial`` on non-square maps, and one-line
errors. Their formulas are pinned in ``test_loss_maths.py`` and
``tests/distill/test_overhaul.py``."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from distillscope.functional import feature_transfer as ff


def test_a_tail_of_exactly_the_cut_gets_minus_three_std() -> None:
    """``Phi(-mean/std) <= 0.001`` gives ``-3 std`` (the authors' ``<=``)."""
    mean = torch.tensor([3.0902323061678136], dtype=torch.float64)  # Phi(-3.0902...) = 0.001
    tail = 0.5 * torch.erfc(mean / math.sqrt(2.0))  # as the module computes it
    assert tail.item() == ff.OFD_TAIL_PROBABILITY  # the float64 value sits exactly on the cut
    std = torch.ones(1, dtype=torch.float64)
    assert ff.ofd_margin(std, mean).item() == -3.0
    above = mean - 1e-6  # a hair more tail: the conditional mean m - s phi(z) / Phi(-z)
    z = above.item()
    pdf = math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    want = z - pdf / (0.5 * math.erfc(z / math.sqrt(2)))
    assert ff.ofd_margin(std, above).item() == pytest.approx(want, rel=1e-9)


def test_margins_come_back_in_the_std_dtype() -> None:
    std, mean = torch.tensor([1.0, 2.0]), torch.tensor([0.0, -1.0])
    m = ff.ofd_margin(std, mean)
    assert m.dtype == torch.float32
    assert m[0].item() == pytest.approx(-math.sqrt(2 / math.pi), rel=1e-6)
    assert ff.ofd_margin(std.double(), mean).dtype == torch.float64


def test_ofd_loss_leaves_a_student_below_a_zero_target() -> None:
    """Where ``t' = 0`` and ``s < 0`` the student is already below: ``s <= t' <= 0`` adds 0."""
    t = torch.tensor([[0.0, 0.0]])
    margin = torch.tensor([-1.0, -1.0])  # max(0, -1) = 0
    s = torch.tensor([[-1.0, 2.0]])
    assert ff.ofd_loss(s, t, margin).item() == 4.0  # only (2 - 0)^2


def test_ofd_loss_takes_the_features_dtype_for_the_margin() -> None:
    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 3, 2, 2, generator=gen), torch.randn(2, 3, 2, 2, generator=gen)
    margin = torch.tensor([-0.1, -0.2, -0.3], dtype=torch.float64)
    loss = ff.ofd_loss(s, t, margin)
    assert loss.dtype == torch.float32  # float32 features stay float32
    target = torch.maximum(t, margin.float().view(1, 3, 1, 1))
    want = ((s - target).pow(2) * ((s > target) | (target > 0))).sum() / 2
    assert torch.equal(loss, want)


def test_match_spatial_pools_each_axis_of_non_square_maps() -> None:
    s, t = torch.rand(1, 2, 4, 8), torch.rand(1, 3, 8, 8)
    a, b = ff.match_spatial(s, t)
    assert a is s  # already the smaller along both axes: returned as it is
    assert torch.equal(b, F.adaptive_avg_pool2d(t, (4, 8)))
    a, b = ff.match_spatial(t, s)
    assert b is s and torch.equal(a, F.adaptive_avg_pool2d(t, (4, 8)))
    s, t = torch.rand(1, 2, 8, 4), torch.rand(1, 3, 4, 8)  # each larger along one axis
    a, b = ff.match_spatial(s, t)
    assert torch.equal(a, F.adaptive_avg_pool2d(s, (4, 4)))
    assert torch.equal(b, F.adaptive_avg_pool2d(t, (4, 4)))


@pytest.mark.parametrize(
    ("s", "t"),
    [((2, 3, 4, 4), (2, 3)), ((2, 3), (2, 3, 4, 4)), ((2, 3, 4), (2, 3, 4))],
)
def test_features_of_different_kinds_are_refused_in_one_line(s, t) -> None:
    message = f"features must both be maps (B, C, H, W) or both vectors (B, D), got {s} and {t}"
    with pytest.raises(ValueError) as err:
        ff.match_spatial(torch.zeros(s), torch.zeros(t))
    assert str(err.value) == message


def test_ofd_loss_refuses_shapes_that_differ_in_one_line() -> None:
    with pytest.raises(ValueError) as err:
        ff.ofd_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(3))
    assert str(err.value) == "ofd: student (2, 3) and teacher (2, 4) differ"
