"""Relation and contrastive maths against references written out here: RKD's distances and angles
in numpy, CRD's draws as a plain loop over the documented draw order, SSKD's error-level ranking
and view similarity by hand. (test_loss_maths.py pins the same functions against the inline
formulas the terms used before they moved into ``functional/``.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from distillscope.functional import relation as fr


def randn(seed: int, *shape: int, scale: float = 1.0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def np_distances(e: np.ndarray) -> np.ndarray:
    return np.sqrt(((e[:, None, :] - e[None, :, :]) ** 2).sum(-1))


def np_huber(a: np.ndarray, b: np.ndarray) -> float:
    x = np.abs(a - b)
    return float(np.where(x < 1, 0.5 * x**2, x - 0.5).mean())  # smooth L1, beta = 1


def np_rkd(s: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """Park et al. 2019, eq. 4-7, with loops: distances over the mean of the ``i != j`` pairs,
    angles ``<(e_j - e_i) / ||.||, (e_k - e_i) / ||.||>`` (a zero difference stays zero)."""

    def psi_d(e: np.ndarray) -> np.ndarray:
        d = np_distances(e)
        return d / d[~np.eye(len(e), dtype=bool)].mean()

    def psi_a(e: np.ndarray) -> np.ndarray:
        b = len(e)
        out = np.zeros((b, b, b))
        for i in range(b):
            diff = e - e[i]  # row j: e_j - e_i
            norms = np.linalg.norm(diff, axis=1, keepdims=True)
            unit = diff / np.maximum(norms, 1e-12)
            out[i] = unit @ unit.T
        return out

    return np_huber(psi_d(s), psi_d(t)), np_huber(psi_a(s), psi_a(t))


# ------------------------------------------------------------------------------ distances, RKD
def test_pairwise_distances_below_unit_scale_and_the_eps_of_identical_rows() -> None:
    e = randn(0, 5, 3, scale=0.01)  # every distance well below 1
    d = fr.pairwise_distances(e)
    assert np.allclose(d.numpy(), np_distances(e.numpy()), rtol=1e-9, atol=0)
    assert d.max() < 0.1 and (d.diagonal() == 0).all()
    twins = torch.zeros(2, 3, dtype=torch.float64)  # squared distance 0, clamped at eps
    assert fr.pairwise_distances(twins)[0, 1].item() == pytest.approx(1e-6, rel=1e-9)
    assert fr.pairwise_distances(twins, eps=1e-4)[0, 1].item() == pytest.approx(1e-2, rel=1e-9)


def test_pairwise_distances_keep_the_input_dtype() -> None:
    e = randn(1, 4, 3).to(torch.bfloat16)  # a float32 mask would promote the result
    assert fr.pairwise_distances(e).dtype == torch.bfloat16


@pytest.mark.parametrize("scale", [0.02, 3.0])
def test_rkd_parts_match_numpy_loops_at_any_scale(scale: float) -> None:
    s, t = randn(2, 6, 4, scale=scale), randn(3, 6, 2, 3, scale=scale)  # t flattened to 6
    distance, angle = fr.rkd_parts(s, t)
    ref_d, ref_a = np_rkd(s.numpy(), t.reshape(6, -1).numpy())
    assert distance.item() == pytest.approx(ref_d, rel=1e-9)
    assert angle.item() == pytest.approx(ref_a, rel=1e-9)
    assert ref_d > 0.01 and ref_a > 0.01


# ------------------------------------------------------------------------------ CRD draws
LABELS = torch.tensor([2, 0, 1, 0, 2, 2, 1, 0, 3, 0, 3, 1])  # 12 items; class 0 has 4, 3 has 2
INDEX = torch.tensor([4, 1, 8, 7, 0, 10])  # classes 2, 0, 3, 0, 2, 3


def reference_draws(index: Tensor, labels: Tensor, k: int, sampler: str) -> list[list[int]]:
    """The documented draws from the global generator, as a plain loop: samples grouped by class
    (ascending), in batch order within a class; per sample the negatives (the head of a random
    permutation of the other classes' items when there are ``k`` of them, else ``k`` uniform
    picks with replacement), then, for ``"relax"``, a uniform pick of the class's items."""
    y = labels.tolist()
    rows = [[i] + [-1] * k for i in index.tolist()]
    for c in sorted({y[i] for i in index.tolist()}):
        pool = [j for j in range(len(y)) if y[j] != c]
        own = [j for j in range(len(y)) if y[j] == c]
        for row in [r for r, i in enumerate(index.tolist()) if y[i] == c]:
            if len(pool) >= k:
                picks = torch.randperm(len(pool))[:k].tolist()
            else:
                picks = torch.randint(0, len(pool), (k,)).tolist()
            rows[row][1:] = [pool[p] for p in picks]
            if sampler == "relax":
                rows[row][0] = own[int(torch.randint(0, len(own), ()))]
    return rows


@pytest.mark.parametrize("sampler", ["exact", "relax"])
@pytest.mark.parametrize("k", [3, 8, 10, 30])  # class 0's pool is 8: k = 8 still permutes
def test_class_samplers_are_the_documented_draws(sampler: str, k: int) -> None:
    torch.manual_seed(k)
    expected = reference_draws(INDEX, LABELS, k, sampler)
    torch.manual_seed(k)
    draws = fr.contrast_draws(INDEX, len(LABELS), k, sampler=sampler, labels=LABELS)
    assert draws.dtype == torch.long and draws.shape == (len(INDEX), 1 + k)
    assert draws.tolist() == expected


def test_exact_is_the_default_sampler_and_reaches_every_item() -> None:
    torch.manual_seed(5)
    default = fr.contrast_draws(INDEX, 12, 30, labels=LABELS)
    torch.manual_seed(5)
    assert torch.equal(default, fr.contrast_draws(INDEX, 12, 30, sampler="exact", labels=LABELS))
    # with replacement (30 > 8 items) and without: every other-class item, no own-class one
    seen = set(default[[1, 3], 1:].flatten().tolist())
    assert seen == {j for j in range(12) if LABELS[j] != 0}
    seen = set(fr.contrast_draws(torch.tensor([1]), 12, 8, labels=LABELS)[0, 1:].tolist())
    assert seen == {j for j in range(12) if LABELS[j] != 0}


def test_relax_positives_reach_every_item_of_the_class() -> None:
    torch.manual_seed(6)
    index = torch.tensor([1] * 40)  # 40 samples of class 0 in one call
    positives = fr.contrast_draws(index, 12, 2, sampler="relax", labels=LABELS)[:, 0]
    assert set(positives.tolist()) == {1, 3, 7, 9}


def test_uniform_sampler_draws_from_all_items() -> None:
    torch.manual_seed(7)
    draws = fr.contrast_draws(INDEX, 12, 200, sampler="uniform")
    assert draws.shape == (6, 201) and draws[:, 0].tolist() == INDEX.tolist()
    assert set(draws[:, 1:].flatten().tolist()) == set(range(12))  # 0 and N - 1 included


def test_a_negative_pool_of_one_item_is_drawn_from() -> None:
    labels = torch.tensor([0, 0, 0, 1])
    draws = fr.contrast_draws(torch.tensor([0, 2]), 4, 3, labels=labels)
    assert draws.tolist() == [[0, 3, 3, 3], [2, 3, 3, 3]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sampler": "EXACT"}, "unknown CRD sampler 'EXACT'; use one of exact, relax, uniform"),
        ({"sampler": "relax", "labels": None}, "the 'relax' CRD sampler needs the label"),
        ({"labels": None}, "the 'exact' CRD sampler needs the label"),
        ({"labels": torch.zeros(4, dtype=torch.long)}, "class 0 holds every item"),
    ],
)
def test_contrast_draws_refuse_plainly(kwargs: dict, message: str) -> None:
    args = {"sampler": "exact", "labels": LABELS[:4], **kwargs}
    with pytest.raises(ValueError, match=message):
        fr.contrast_draws(torch.tensor([0, 1]), 4, 2, **args)


# ------------------------------------------------------------------------------ SSKD helpers
def reference_kept(scores: Tensor, truth: Tensor, ratio: float) -> list[int]:
    """Xu et al. 2020's error-level ranking by hand: the truth's rank counts the higher scores
    and the equal ones of a lower class index; rank 0 rows are kept, and of the others the
    ``int(ratio * wrong)`` best ranked (the lower row first on a tie)."""
    s, y = scores.tolist(), truth.tolist()
    rank = [
        sum(v > row[c] for v in row) + sum(v == row[c] for v in row[:c]) for row, c in zip(s, y)
    ]
    wrong = sorted((r, i) for i, r in enumerate(rank) if r > 0)
    kept = [i for i, r in enumerate(rank) if r == 0]
    kept += [i for _, i in wrong[: int(len(wrong) * ratio)]]
    return sorted(kept)


@pytest.mark.parametrize("ratio", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_error_level_ranking_matches_the_hand_ranking_with_ties(ratio: float) -> None:
    g = torch.Generator().manual_seed(5)
    scores = torch.randint(0, 4, (24, 20), generator=g).double()  # many ties, N != K, K > 16
    truth = torch.randint(0, 20, (24,), generator=g)
    right, second = torch.arange(0, 24, 3), torch.tensor([1, 4])
    scores[right] = scores[right].clamp(max=2)
    scores[right, truth[right]] = 3.0  # every third row: the truth alone on top
    scores[second] = scores[second].clamp(max=2)
    scores[second, truth[second]] = 3.0  # two rows: the truth second, below one higher score
    scores[second, (truth[second] + 1) % 20] = 4.0
    expected = reference_kept(scores, truth, ratio)
    assert fr.kept_by_error_level(scores, truth, ratio).tolist() == expected
    assert set(right.tolist()) <= set(expected)
    assert (ratio < 0.25) == (expected == right.tolist())  # wrong rows only when ratio allows


def test_view_similarity_is_every_cosine_of_views_against_originals() -> None:
    views, originals = randn(9, 6, 5), randn(10, 2, 5)  # V B = 6, B = 2, D = 5
    v = views.numpy() / np.linalg.norm(views.numpy(), axis=1, keepdims=True)
    o = originals.numpy() / np.linalg.norm(originals.numpy(), axis=1, keepdims=True)
    got = fr.view_similarity(views, originals)
    assert got.shape == (6, 2)
    assert np.allclose(got.numpy(), v @ o.T, rtol=0, atol=1e-12)
