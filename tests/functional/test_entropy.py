"""Entropies of class distributions: golden values computed by hand with math.log."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from distillscope.functional.entropy import (
    category_mask,
    class_output_sums,
    entropy,
    pooled_category_entropy,
    softmax_entropy,
)


def test_entropy_golden_values() -> None:
    p = torch.tensor([[0.25, 0.75], [1.0, 0.0], [0.75, 0.25]], dtype=torch.float64)
    expected = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))  # 0.5623...
    torch.testing.assert_close(entropy(p), torch.tensor([expected, 0.0, expected]).double())


def test_entropy_of_uniform_is_log_k() -> None:
    for k in (2, 3, 10):
        assert entropy(torch.full((k,), 1 / k)).item() == pytest.approx(math.log(k), rel=1e-6)


def test_softmax_entropy_matches_entropy_of_softmax() -> None:
    z = torch.randn(16, 7, generator=torch.Generator().manual_seed(0)).double()
    torch.testing.assert_close(softmax_entropy(z), entropy(torch.softmax(z, -1)))


def test_softmax_entropy_of_saturated_logits_is_zero_not_nan() -> None:
    h = softmax_entropy(torch.tensor([[1e4, 0.0, -1e4]]))
    assert h.item() == 0.0


def test_masked_entropy_renormalises_over_the_mask() -> None:
    # Classes 0 and 2 kept: probabilities exp(0), exp(log 3) -> 1/4, 3/4 after renormalising.
    z = torch.tensor([[0.0, 5.0, math.log(3.0)]])
    mask = torch.tensor([[True, False, True]])
    expected = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert softmax_entropy(z, mask).item() == pytest.approx(expected, rel=1e-5)


def test_masked_entropy_with_full_mask_equals_unmasked() -> None:
    z = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    full = torch.ones(4, dtype=torch.bool)
    torch.testing.assert_close(softmax_entropy(z, full), softmax_entropy(z))


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-30, 30), min_size=2, max_size=8),
    st.lists(st.booleans(), min_size=8, max_size=8),
)
def test_masked_entropy_lies_between_zero_and_log_of_mask_size(logits, keep) -> None:
    z = torch.tensor([logits], dtype=torch.float64)
    mask = torch.tensor(keep[: len(logits)])
    mask[0] = True  # at least one class
    h = softmax_entropy(z, mask).item()
    assert -1e-12 <= h <= math.log(int(mask.sum())) + 1e-9


def test_category_mask_golden() -> None:
    mask = category_mask({"animals": [0, 3], "vehicles": [1, 2], "other": [4]}, 5)
    expected = torch.tensor(
        [
            [1, 0, 0, 1, 0],
            [0, 1, 1, 0, 0],
            [0, 1, 1, 0, 0],
            [1, 0, 0, 1, 0],
            [0, 0, 0, 0, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(mask, expected)


def test_category_mask_first_category_wins_and_unlisted_rows_are_empty() -> None:
    mask = category_mask({"a": [0, 1], "b": [1, 2]}, 4)
    assert mask[1].tolist() == [True, True, False, False]
    assert mask[2].tolist() == [False, True, True, False]
    assert not mask[3].any()


@pytest.mark.parametrize("bad", [-1, 3, 5])
def test_category_mask_rejects_out_of_range_classes(bad: int) -> None:
    # -1 would wrap to the last class and 3 == K is one past it: both are refused
    message = rf"^category 'a' has class {bad} outside \[0, 3\); use indices 0 to 2$"
    with pytest.raises(ValueError, match=message):
        category_mask({"a": [0, bad]}, 3)


def test_category_mask_accepts_the_edges_and_an_empty_category() -> None:
    mask = category_mask({"empty": [], "edges": [0, 2]}, 3)
    assert mask.tolist() == [[True, False, True], [False, False, False], [True, False, True]]


@pytest.mark.parametrize("bad", [-1, 2])
def test_class_output_sums_rejects_targets_outside_the_classes(bad: int) -> None:
    probs = torch.tensor([[0.5, 0.5], [0.25, 0.75]])
    with pytest.raises(
        ValueError, match=rf"^targets has class {bad} outside \[0, 2\); use indices 0 to 1$"
    ):
        class_output_sums(probs, torch.tensor([0, bad]), 2)


# Paper 000's category entropy as we read it (pooled) against ours (per sample), on a case done
# by hand: classes 0 and 1 form a category, class 2 is alone; one sample of each of 0 and 1.
HAND_PROBS = torch.tensor([[0.8, 0.1, 0.1], [0.2, 0.6, 0.2]], dtype=torch.float64)
HAND_TARGETS = torch.tensor([0, 1])
HAND_MASK = category_mask({"pair": [0, 1], "alone": [2]}, 3)


def h(*p: float) -> float:
    return -sum(x * math.log(x) for x in p)


def test_pooled_category_entropy_golden() -> None:
    # Mean output restricted to {0, 1}: ((0.8 + 0.2) / 2, (0.1 + 0.6) / 2) = (0.5, 0.35),
    # normalised (10/17, 7/17).
    sums, counts = class_output_sums(HAND_PROBS, HAND_TARGETS, 3)
    pooled = pooled_category_entropy(sums, counts, HAND_MASK)
    assert pooled[0].item() == pytest.approx(h(10 / 17, 7 / 17), rel=1e-12)  # 0.6775...
    assert pooled[1].item() == pooled[0].item()  # one category, one value
    assert math.isnan(pooled[2].item())  # no sample of class 2


def test_per_sample_category_entropy_golden() -> None:
    # Sample 1 renormalised over {0, 1}: (8/9, 1/9); sample 2: (1/4, 3/4).
    logits = HAND_PROBS.log()
    per_sample = softmax_entropy(logits, HAND_MASK[HAND_TARGETS])
    torch.testing.assert_close(
        per_sample, torch.tensor([h(8 / 9, 1 / 9), h(1 / 4, 3 / 4)], dtype=torch.float64)
    )
    # The two definitions differ on this case: 0.4556 (mean per sample) vs 0.6775 (pooled).
    assert per_sample.mean().item() == pytest.approx(0.4556, abs=1e-4)
    assert h(10 / 17, 7 / 17) == pytest.approx(0.6775, abs=1e-4)


def test_pooled_entropy_can_exceed_the_per_sample_bound() -> None:
    """Confident, correct samples of three classes of one category: every per-sample category
    entropy obeys H(p|M) <= H(p) / P(M) (paper 000's Table 2 breaks that bound: category 2.90 with
    entire 0.49), while the pooled one reaches log 3."""
    k = 4
    mask = category_mask({"three": [0, 1, 2], "alone": [3]}, k)
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    logits = torch.full((6, k), -4.0, dtype=torch.float64)
    logits[torch.arange(6), targets] = 4.0
    probs = torch.softmax(logits, -1)
    entire = softmax_entropy(logits)  # (6,)
    in_cat = probs[mask[targets]].view(6, 3).sum(1)  # (6,) P(M)
    per_sample = softmax_entropy(logits, mask[targets])
    assert (per_sample <= entire / in_cat + 1e-12).all()
    bound = (entire / in_cat).mean().item()
    sums, counts = class_output_sums(probs, targets, k)
    pooled = pooled_category_entropy(sums, counts, mask)[targets].mean().item()
    assert entire.mean().item() < 0.02 and bound < 0.02
    assert pooled == pytest.approx(math.log(3), rel=1e-9)  # the samples cover the category evenly
    assert pooled > 50 * bound


def test_class_output_sums_add_over_batches() -> None:
    g = torch.Generator().manual_seed(2)
    probs = torch.softmax(torch.randn(10, 4, generator=g), -1)
    targets = torch.randint(0, 4, (10,), generator=g)
    whole = class_output_sums(probs, targets, 4)
    first, second = (
        class_output_sums(probs[:6], targets[:6], 4),
        class_output_sums(probs[6:], targets[6:], 4),
    )
    torch.testing.assert_close(first[0] + second[0], whole[0])
    assert torch.equal(first[1] + second[1], whole[1])
    assert whole[1].sum().item() == 10


def test_pooled_entropy_with_overlapping_categories_groups_by_first_category() -> None:
    # Class 1 is in "a" (first) and "b"; class 2 only in "b": its samples pool with nobody's but
    # its own, over b's classes {1, 2}.
    mask = category_mask({"a": [0, 1], "b": [1, 2]}, 3)
    probs = torch.tensor([[0.7, 0.3, 0.0], [0.2, 0.8, 0.0], [0.0, 0.4, 0.6]], dtype=torch.float64)
    sums, counts = class_output_sums(probs, torch.tensor([0, 1, 2]), 3)
    pooled = pooled_category_entropy(sums, counts, mask)
    assert pooled[0].item() == pytest.approx(h(0.45, 0.55), rel=1e-12)
    assert pooled[1].item() == pooled[0].item()
    assert pooled[2].item() == pytest.approx(h(0.4, 0.6), rel=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=12), st.integers(0, 10_000))
def test_pooled_entropy_lies_between_zero_and_log_of_category_size(targets, seed) -> None:
    mask = category_mask({"three": [0, 1, 2], "alone": [3]}, 4)
    y = torch.tensor(targets)
    z = torch.randn(len(targets), 4, generator=torch.Generator().manual_seed(seed)) * 5
    sums, counts = class_output_sums(torch.softmax(z.double(), -1), y, 4)
    pooled = pooled_category_entropy(sums, counts, mask)[:3]
    used = pooled[~pooled.isnan()]
    assert ((used >= -1e-12) & (used <= math.log(3) + 1e-9)).all()
    assert used.numel() == (3 if (y < 3).any() else 0)


def test_entropies_of_one_sample_without_a_batch_dimension() -> None:
    z = torch.tensor([0.0, math.log(3.0), 5.0])
    mask = torch.tensor([True, True, False])
    assert softmax_entropy(z, mask).item() == pytest.approx(h(0.25, 0.75), rel=1e-6)
    assert softmax_entropy(z).shape == ()


def test_pooled_entropy_normalises_a_category_mass_below_one() -> None:
    # one sample of class 0 puts 0.2 + 0.1 on its category {0, 1}: q = (2/3, 1/3)
    mask = category_mask({"pair": [0, 1]}, 3)
    sums, counts = class_output_sums(torch.tensor([[0.2, 0.1, 0.7]]), torch.tensor([0]), 3)
    pooled = pooled_category_entropy(sums, counts, mask)
    assert pooled[0].item() == pytest.approx(h(2 / 3, 1 / 3), rel=1e-12)
    assert pooled[1].item() == pooled[0].item() and math.isnan(pooled[2].item())


def test_pooled_entropy_is_nan_without_mass_or_without_samples() -> None:
    mask = category_mask({"pair": [0, 1], "other": [2]}, 3)
    probs = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    sums, counts = class_output_sums(probs, torch.tensor([0, 2]), 3)
    pooled = pooled_category_entropy(sums, counts, mask)
    assert math.isnan(pooled[0].item()) and math.isnan(pooled[1].item())  # no mass on {0, 1}
    assert pooled[2].item() == 0.0  # all of class 2's mass on its one class
    # the counts say which categories have samples at all
    no_samples = pooled_category_entropy(sums, torch.zeros(3, dtype=torch.long), mask)
    assert no_samples.isnan().all()


def test_pooled_entropy_accepts_float32_sums() -> None:
    sums, counts = class_output_sums(HAND_PROBS, HAND_TARGETS, 3)
    got = pooled_category_entropy(sums.float(), counts, HAND_MASK)
    assert got.dtype == torch.float64
    assert got[0].item() == pytest.approx(h(10 / 17, 7 / 17), rel=1e-6)
