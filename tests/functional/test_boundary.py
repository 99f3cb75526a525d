"""Boundary hardness and twilight zone on hand-made probability grids."""

from __future__ import annotations

import math

import pytest
import torch

from distillscope.functional.boundary import boundary_hardness, boundary_points, twilight_fraction


def two_class_grid(p_class1: list[list[float]]) -> torch.Tensor:
    """(H, W, 2) grid from the probability of class 1 at every point."""
    p1 = torch.tensor(p_class1, dtype=torch.float64)
    return torch.stack([1 - p1, p1], dim=-1)


STEP = two_class_grid([[0.0, 0.0, 1.0, 1.0]] * 3)
SMOOTH = two_class_grid([[0.05, 0.3, 0.6, 0.95]] * 3)


def test_step_boundary_is_hard_and_has_no_twilight() -> None:
    assert boundary_hardness(STEP).item() == 1.0
    assert twilight_fraction(STEP).item() == 0.0


def test_smooth_boundary_golden() -> None:
    # Boundary points: columns 1 and 2 (argmax 0 | 1); margins |0.3-0.7| = 0.4, |0.6-0.4| = 0.2.
    assert boundary_hardness(SMOOTH).item() == pytest.approx(0.3)
    # Twilight (max prob < 0.9): columns 1 and 2 of 4 -> half the grid.
    assert twilight_fraction(SMOOTH).item() == pytest.approx(0.5)


def test_hardness_does_not_depend_on_boundary_length_but_twilight_does() -> None:
    one_boundary = two_class_grid([[0.05, 0.3, 0.6, 0.95, 0.95, 0.95, 0.95, 0.95]] * 2)
    two_boundaries = two_class_grid([[0.05, 0.3, 0.6, 0.95, 0.95, 0.6, 0.3, 0.05]] * 2)
    assert boundary_hardness(one_boundary).item() == pytest.approx(0.3)
    assert boundary_hardness(two_boundaries).item() == pytest.approx(0.3)
    assert twilight_fraction(one_boundary).item() == pytest.approx(2 / 8)
    assert twilight_fraction(two_boundaries).item() == pytest.approx(4 / 8)


def test_twilight_threshold_is_a_strict_inequality() -> None:
    grid = two_class_grid([[0.1, 0.5, 0.89]])  # max probs 0.9, 0.5, 0.89
    assert twilight_fraction(grid.float(), confidence=0.9).item() == pytest.approx(2 / 3)


def test_boundary_points_mark_a_plus_around_a_single_pixel() -> None:
    labels = torch.zeros(3, 3, dtype=torch.long)
    labels[1, 1] = 2
    probs = torch.nn.functional.one_hot(labels, 3).float()
    expected = torch.tensor([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=torch.bool)
    assert torch.equal(boundary_points(probs), expected)


def test_three_classes_use_the_top_two_margin() -> None:
    probs = torch.tensor([[[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]]])
    assert boundary_hardness(probs).item() == pytest.approx((0.3 + 0.2) / 2)


def test_single_class_grid_has_no_hardness() -> None:
    assert math.isnan(boundary_hardness(two_class_grid([[0.1, 0.2], [0.3, 0.4]])).item())
