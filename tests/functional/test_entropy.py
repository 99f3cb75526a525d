"""Entropies of class distributions: golden values computed by hand with math.log."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from distillscope.functional.entropy import category_mask, entropy, softmax_entropy


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


def test_category_mask_rejects_out_of_range_classes() -> None:
    with pytest.raises(ValueError, match="'a'"):
        category_mask({"a": [0, 5]}, 3)
