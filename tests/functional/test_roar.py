"""Pixel removal by attribution rank (ROAR / DiffROAR): how many, which, ties, the fill."""

from __future__ import annotations

import pytest
import torch

from distillscope.functional.roar import removal_mask, remove_pixels


def test_the_mask_removes_the_rounded_share_of_each_image_by_magnitude() -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(5, 6, 6, generator=gen)  # distinct magnitudes
    for k in (0.1, 0.25, 0.5, 0.9):
        top = removal_mask(a, k, True)
        n = round(k * 36)
        assert top.flatten(1).sum(1).tolist() == [n] * 5
        magnitude = a.abs().flatten(1)
        kept_max = torch.where(top.flatten(1), -1.0, magnitude).max(1).values
        removed_min = torch.where(top.flatten(1), magnitude, 99.0).min(1).values
        assert (removed_min > kept_max).all()  # top: every removed pixel outranks every kept one
        assert (removal_mask(-a, k, True) == top).all()  # magnitudes, not signs
    assert not (removal_mask(a, 0.5, True) & removal_mask(a, 0.5, False)).any()


def test_ties_go_to_the_lower_index_in_both_directions() -> None:
    flat = torch.zeros(1, 2, 2)
    assert removal_mask(flat, 0.5, True).flatten().tolist() == [True, True, False, False]
    assert removal_mask(flat, 0.5, False).flatten().tolist() == [True, True, False, False]


def test_removed_pixels_take_the_fill_in_every_channel() -> None:
    x = torch.arange(8.0).view(1, 2, 2, 2)
    mask = torch.tensor([[[True, False], [False, True]]])
    out = remove_pixels(x, mask, torch.tensor([-1.0, -2.0]))
    assert out[0, 0].tolist() == [[-1.0, 1.0], [2.0, -1.0]]
    assert out[0, 1].tolist() == [[-2.0, 5.0], [6.0, -2.0]]
    assert x[0, 0, 0, 0] == 0.0  # a new tensor


def test_a_share_outside_zero_one_is_refused() -> None:
    with pytest.raises(ValueError, match="fraction=1.5 is out of range"):
        removal_mask(torch.zeros(1, 2, 2), 1.5, True)


def test_ties_in_large_maps_still_go_to_the_lower_index() -> None:
    # 4096 pixels with long runs of equal magnitude: an unstable sort reorders them
    a = torch.zeros(3, 64, 64)
    a.view(3, -1)[:, ::7] = 1.0  # 586 pixels of magnitude 1 per image, the rest 0
    top = removal_mask(a, 0.25, True).view(3, -1)  # 1024: the 586 ones, then zeros by index
    zeros_taken = torch.nonzero(top[0] & (a.view(3, -1)[0] == 0)).flatten()
    expected = torch.tensor([i for i in range(4096) if i % 7][: 1024 - 586])
    assert torch.equal(zeros_taken, expected)
    bottom = removal_mask(a, 0.25, False).view(3, -1)
    assert torch.equal(
        torch.nonzero(bottom[1]).flatten(), torch.tensor([i for i in range(4096) if i % 7][:1024])
    )


def test_fractions_zero_and_one_are_the_edges() -> None:
    a = torch.randn(2, 3, 3, generator=torch.Generator().manual_seed(1))
    assert not removal_mask(a, 0.0, True).any()
    assert removal_mask(a, 1.0, False).all()
    for bad in (-0.1, 1.1):
        with pytest.raises(
            ValueError, match=rf"^fraction={bad} is out of range; use a value in \[0, 1\]$"
        ):
            removal_mask(a, bad, True)


def test_the_fill_defaults_to_zero_and_keeps_the_inputs_dtype() -> None:
    x = torch.full((1, 2, 2, 2), 0.5, dtype=torch.float64)
    mask = torch.tensor([[[True, False], [False, False]]])
    out = remove_pixels(x, mask)
    assert out[0, :, 0, 0].tolist() == [0.0, 0.0] and out[0, :, 1, 1].tolist() == [0.5, 0.5]
    exact = remove_pixels(x, mask, 0.1)  # 0.1 as a float64, not rounded through float32
    assert exact.dtype == torch.float64 and exact[0, 0, 0, 0].item() == 0.1
