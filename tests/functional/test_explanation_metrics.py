"""EPG, IoU, diagonal shifts and closer votes on hand-made maps (golden values)."""

from __future__ import annotations

import pytest
import torch

from distillscope.errors import TrainingError
from distillscope.functional.explanation_metrics import (
    closer_votes,
    energy_pointing_game,
    explanation_loss,
    mask_share,
    region_iou,
    relevant_region,
    shift_cosine,
    shift_diagonal,
)

MASK = torch.tensor(
    [
        [0, 0, 0, 0],
        [0, 1, 1, 0],
        [0, 1, 1, 0],
        [0, 0, 0, 0],
    ],
    dtype=torch.bool,
)[None]  # (1, 4, 4): 4 of 16 pixels


def test_epg_is_one_inside_and_the_area_share_for_a_uniform_map() -> None:
    inside = torch.where(MASK, 2.0, -1.0)  # negative energy outside is ignored
    uniform = torch.full((1, 4, 4), 0.3)
    assert energy_pointing_game(inside, MASK).item() == 1.0
    assert energy_pointing_game(uniform, MASK).item() == pytest.approx(0.25)
    assert mask_share(MASK).item() == 0.25


def test_epg_golden_value_and_zero_energy() -> None:
    maps = torch.tensor([[[1.0, 0, 0, 0], [0, 2, 0, 0], [0, 0, 3, 0], [0, 0, 0, 4]]])
    # Inside: 2 + 3 = 5 of a total 10.
    assert energy_pointing_game(maps, MASK).item() == pytest.approx(0.5)
    assert energy_pointing_game(-maps, MASK).item() == 0.0
    assert energy_pointing_game(torch.zeros(1, 4, 4), MASK).item() == 0.0


def test_epg_is_scale_free_for_tiny_maps() -> None:
    maps = torch.where(MASK, 1e-12, 1e-12 / 3)
    assert energy_pointing_game(maps, MASK).item() == pytest.approx(4 / (4 + 12 / 3))


def test_iou_golden_values() -> None:
    # Scaled map = map / 4 (min 0): region > 0.5 = {3, 4} at (2, 2) and (3, 3).
    maps = torch.tensor([[[1.0, 0, 0, 0], [0, 2, 0, 0], [0, 0, 3, 0], [0, 0, 0, 4]]])
    assert relevant_region(maps)[0].nonzero().tolist() == [[2, 2], [3, 3]]
    # Intersection {(2, 2)} = 1, union = mask 4 + (3, 3) = 5.
    assert region_iou(maps, MASK).item() == pytest.approx(1 / 5)
    # Threshold 0.3 (scaled 0.25, 0.5, 0.75, 1): region {2, 3, 4}: intersection 2, union 5.
    assert region_iou(maps, MASK, threshold=0.3).item() == pytest.approx(2 / 5)
    # Threshold 0.2: all four: intersection 2, union 4 + 2 = 6.
    assert region_iou(maps, MASK, threshold=0.2).item() == pytest.approx(2 / 6)
    # The map equal to the mask, and a constant map (every pixel selected: 4 / 16).
    assert region_iou(MASK.float(), MASK).item() == 1.0
    assert region_iou(torch.full((1, 4, 4), 2.0), MASK).item() == pytest.approx(0.25)


def test_iou_min_max_scaling_and_empty_cases() -> None:
    # Positive part [1, 2, 3, 4] scaled by min-max: [0, 1/3, 2/3, 1] -> the last two.
    row = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])
    assert relevant_region(row).tolist() == [[[False, False, True, True]]]
    empty = torch.zeros(1, 4, 4, dtype=torch.bool)
    assert region_iou(torch.zeros(1, 4, 4), empty).item() == 0.0  # empty union
    assert region_iou(-torch.ones(1, 4, 4), MASK).item() == 0.0  # nothing selected


def test_metrics_reject_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="maps and masks"):
        energy_pointing_game(torch.ones(1, 4, 4), torch.ones(1, 4, 5, dtype=torch.bool))


def test_shift_diagonal_moves_down_right_with_both_fills() -> None:
    x = torch.arange(16.0).view(1, 1, 4, 4)
    edge = shift_diagonal(x, 2)[0, 0]
    assert edge[2:, 2:].tolist() == x[0, 0, :2, :2].tolist()
    assert edge[0].tolist() == [0.0, 0.0, 0.0, 1.0]  # the first row, repeated, shifted
    filled = shift_diagonal(x.expand(1, 2, 4, 4), 1, fill=torch.tensor([-1.0, 5.0]))
    assert filled[0, 0, 0].tolist() == [-1.0] * 4 and filled[0, 1, :, 0].tolist() == [5.0] * 4
    assert filled[0, 1, 1:, 1:].tolist() == x[0, 0, :3, :3].tolist()
    assert shift_diagonal(x, 0) is x
    with pytest.raises(ValueError, match="shift must be in"):
        shift_diagonal(x, 4)


def test_shift_cosine_is_one_for_maps_that_move_with_the_image() -> None:
    maps = torch.rand(3, 6, 6, generator=torch.Generator().manual_seed(0))
    for s in range(6):
        moved = shift_diagonal(maps[:, None], s)[:, 0]
        assert torch.allclose(shift_cosine(maps, moved, s), torch.ones(3))
    still = shift_cosine(maps, maps, 2)  # a map that stays put while the image moves
    assert (still < 1).all()


def test_closer_votes_count_ties_as_half() -> None:
    ref = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    # a wins, b wins, equal cosines, zero reference map (both 0).
    assert closer_votes(ref, a, b).tolist() == [1.0, 0.0, 0.5, 0.5]
    assert closer_votes(ref, ref, b).tolist()[:2] == [1.0, 0.5]


def test_scores_are_per_image_in_a_batch() -> None:
    maps = torch.stack(
        [
            torch.tensor([[1.0, 0, 0, 0], [0, 2, 0, 0], [0, 0, 3, 0], [0, 0, 0, 4]]),
            torch.tensor([[0.0, 0, 0, 0], [0, 9, 9, 0], [0, 1, 5, 0], [0, 0, 0, 0]]) + 10,
        ]
    )  # the second: positive part 10 .. 19, min-max scaled on its own
    masks = torch.cat([MASK, torch.zeros(1, 4, 4, dtype=torch.bool)])
    masks[1, 0, :2] = True  # 2 pixels, both at the minimum 10
    # EPG: 5 / 10, then 2 * 10 / (12 * 10 + 19 + 19 + 11 + 15) = 20 / 184
    assert energy_pointing_game(maps, masks).tolist() == pytest.approx([0.5, 20 / 184])
    assert mask_share(masks).tolist() == [0.25, 2 / 16]
    # regions (scaled > 0.5): {3, 4} of the first; {19, 19, 15} of the second (15 -> 5/9)
    region = relevant_region(maps)
    assert region[0].nonzero().tolist() == [[2, 2], [3, 3]]
    assert region[1].nonzero().tolist() == [[1, 1], [1, 2], [2, 2]]
    # IoU: 1 / 5; the second: no overlap, union 3 + 2
    assert region_iou(maps, masks).tolist() == pytest.approx([1 / 5, 0.0])


def test_iou_of_one_selected_pixel_and_constant_maps_below_one() -> None:
    dot = torch.zeros(1, 4, 4)
    dot[0, 1, 2] = 0.7
    assert region_iou(dot, dot > 0).item() == 1.0  # union of a single pixel
    half = torch.full((1, 4, 4), 0.5)  # constant and positive: every pixel, whatever its value
    assert relevant_region(half).all()
    assert region_iou(half, MASK).item() == pytest.approx(0.25)


def test_shift_diagonal_fill_takes_the_images_dtype() -> None:
    x = torch.full((1, 1, 3, 3), 0.25)
    out = shift_diagonal(x, 1, fill=torch.tensor([-1]))  # an integer fill value
    assert out.dtype == torch.float32
    assert out[0, 0].tolist() == [[-1.0, -1.0, -1.0], [-1.0, 0.25, 0.25], [-1.0, 0.25, 0.25]]


def test_shift_cosine_refuses_unequal_maps_or_a_shift_past_the_map() -> None:
    maps = torch.rand(2, 4, 5, generator=torch.Generator().manual_seed(1))
    message = r"got \(2, 4, 5\), \(2, 4, 5\) and shift 4$"
    with pytest.raises(ValueError, match=message):
        shift_cosine(maps, maps, 4)  # min(H, W) = 4: nothing left to compare
    with pytest.raises(ValueError, match=r"got \(2, 4, 5\), \(1, 4, 5\) and shift 1$"):
        shift_cosine(maps, maps[:1], 1)
    assert shift_cosine(maps, maps, 3).shape == (2,)


def test_explanation_loss_on_hand_made_maps() -> None:
    t = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 2.0], [0.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]]])
    s = torch.stack([3 * t[0], t[2], -t[2]])  # cosines 1, 2 / (sqrt(5) sqrt(2)), -1
    cos = torch.tensor([1.0, 2 / (5**0.5 * 2**0.5), -1.0])
    assert explanation_loss(s, t).item() == pytest.approx((1 - cos).mean().item(), abs=1e-7)
    message = r"\(2, 3, 3\) and teacher explanations \(2, 9\) differ in shape; explain inputs"
    with pytest.raises(TrainingError, match=message):
        explanation_loss(torch.zeros(2, 3, 3), torch.zeros(2, 9))
