"""Five-band scores (Tjoa & Guan 2020; paper 000 5.1) against an independent numpy computation."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from distillscope.functional.five_band import (
    BINARY_METRICS,
    FIVE_BAND_METRICS,
    binary_scores,
    five_band_scores,
    five_bands,
    normalise_maps,
    soft_thresholds,
)


def truths(n: int = 6, size: int = 8, seed: int = 0) -> torch.Tensor:
    """``(n, size, size)`` ternary truths: a random square object (1) with a feature row (2);
    the last image has no object."""
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(n, size, size, dtype=torch.uint8)
    for i in range(n - 1):
        top, left = torch.randint(0, size // 2, (2,), generator=g).tolist()
        side = int(torch.randint(2, size // 2 + 1, (1,), generator=g))
        out[i, top : top + side, left : left + side] = 1
        out[i, top, left : left + side] = 2
    return out


# ---- an independent reading of Tjoa & Guan's code, per image, in numpy ----------------------


def numpy_bands(x: np.ndarray, th: np.ndarray) -> np.ndarray:
    """The five bands of normalised values, written as the authors' five indicator masks."""
    b1 = x <= th[0]
    b2 = (x > th[0]) & (x <= th[1])
    b4 = (x > th[2]) & (x <= th[3])
    b5 = x > th[3]
    return -2 * b1 - 1 * b2 + 1 * b4 + 2 * b5


def numpy_scores(h: np.ndarray, g: np.ndarray, steps: int, delta: float) -> np.ndarray:
    """``(4,)`` pixel accuracy, recall, precision, FPR of one map, averaged over the steps, the
    thresholds moved step by step as the authors do (``g += (-1) ** (g > 0) * delta``)."""
    top = np.abs(h).max()
    x = h / top if top > 0 else h
    th = np.array([-0.7, -0.3, 0.3, 0.7])
    rows = []
    for i in range(steps):
        if i > 0:
            th = th + (-1.0) ** (th > 0) * delta
        b = numpy_bands(x, th)
        eq = b == g
        tp = np.sum((b != 0) & (g != 0) & eq)
        fp = np.sum((b != 0) & (g == 0)) + np.sum((b != 0) & (g != 0) & ~eq)
        tn = np.sum((b == 0) & (g == 0))
        fn = np.sum((b == 0) & (g != 0))

        def ratio(a, c):
            return a / c if c else 0.0

        rows.append([eq.mean(), ratio(tp, tp + fn), ratio(tp, tp + fp), ratio(fp, fp + tn)])
    return np.mean(rows, axis=0)


def numpy_binary(score: np.ndarray, y: np.ndarray, edge: float) -> np.ndarray:
    """``(5,)`` AUROC (Mann-Whitney), average precision, precision, recall, F1 of untied scores."""
    pos, neg = score[y], score[~y]
    auroc = np.mean(pos[:, None] > neg[None, :])
    order = np.argsort(-score)
    hits = y[order]
    precision_at = np.cumsum(hits) / np.arange(1, len(y) + 1)
    ap = precision_at[hits].mean()
    hat = score > edge
    tp, fp, fn = np.sum(hat & y), np.sum(hat & ~y), np.sum(~hat & y)
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn)
    f = 2 * p * r / (p + r) if p + r else 0.0
    return np.array([auroc, ap, p, r, f])


# ---- tests ----------------------------------------------------------------------------------


def test_soft_thresholds_are_the_authors_iterated_steps() -> None:
    t = soft_thresholds()  # 56 steps of 0.005
    assert t.shape == (56, 4)
    assert t[-1].tolist() == pytest.approx([-0.425, -0.025, 0.025, 0.425])
    th = np.array([-0.7, -0.3, 0.3, 0.7])
    for i in range(1, 56):
        th = th + (-1.0) ** (th > 0) * 0.005
        assert t[i].numpy() == pytest.approx(th, abs=1e-12)


def test_bands_follow_the_authors_edges() -> None:
    edges = [-0.7, -0.69, -0.3, -0.29, 0.0, 0.3, 0.31, 0.7, 0.71, 1.0]
    x = torch.tensor([[edges]], dtype=torch.float64)  # float32 would move the edges a hair
    assert five_bands(x).tolist() == [[[-2, -1, -1, 0, 0, 0, 1, 1, 2, 2]]]
    assert five_bands(4 * x).tolist() == five_bands(x).tolist()  # scale-free (4: exact)
    assert normalise_maps(torch.zeros(1, 2, 2)).abs().sum() == 0


@pytest.mark.parametrize("steps", [1, 56])
def test_scores_match_an_independent_numpy_computation(steps) -> None:
    g = truths()
    maps = torch.randn(len(g), 8, 8, generator=torch.Generator().manual_seed(1)) + g.float()
    got = five_band_scores(maps, g, steps=steps)
    for i in range(len(g)):
        want = numpy_scores(maps[i].double().numpy(), g[i].numpy().astype(int), steps, 0.005)
        assert [float(got[k][i]) for k in FIVE_BAND_METRICS] == pytest.approx(want, abs=1e-12)


def test_the_truth_as_a_map_scores_perfectly() -> None:
    g = truths()
    plain = five_band_scores(g.float(), g, steps=1)
    objects = (g > 0).flatten(1).any(1)  # the last image has no object
    assert plain["pixel_accuracy"].tolist() == [1.0] * len(g)
    assert plain["fpr"].tolist() == [0.0] * len(g)
    assert plain["recall"][objects].tolist() == [1.0] * 5
    assert plain["precision"][objects].tolist() == [1.0] * 5
    # Nothing to find: 0/0 counts 0, as the authors' epsilon makes it.
    assert (plain["recall"][~objects].item(), plain["precision"][~objects].item()) == (0.0, 0.0)
    # Under the soft steps the 0.3 / 0.7 edges drop to 0.025 / 0.425: the truth's 0.5 reaches
    # band 2 on the later steps, a map at 0.35 for the object stays in band 1 throughout.
    soft = five_band_scores(g.float(), g)
    assert float(soft["pixel_accuracy"][0]) < 1.0
    level = torch.tensor([0.0, 0.35, 1.0])[g.long()]  # (N, H, W)
    assert five_band_scores(level, g)["pixel_accuracy"].tolist() == [1.0] * len(g)
    for positive in (1, 2):
        s = binary_scores(g.float(), g, positive)
        for k in BINARY_METRICS:
            assert s[k][objects].tolist() == [1.0] * 5, k


def test_the_inverted_truth_scores_worst() -> None:
    g = truths()
    inverted = 2.0 - g.float()  # background brightest, feature darkest
    bad = five_band_scores(inverted, g, steps=1)
    good = five_band_scores(g.float(), g, steps=1)
    noise = five_band_scores(torch.rand(g.shape, generator=torch.Generator().manual_seed(0)), g)
    objects = (g > 0).flatten(1).any(1)
    assert bad["fpr"].tolist() == [1.0] * len(g)  # every background pixel in band 2
    share_one = (g == 1).flatten(1).double().mean(1)  # only the object's band 1 agrees
    assert torch.allclose(bad["pixel_accuracy"], share_one)
    assert (bad["pixel_accuracy"] < noise["pixel_accuracy"]).all()
    assert (bad["precision"][objects] < good["precision"][objects]).all()
    # The five-band recall still credits the object's band 1 (TP) and misses the feature (FN).
    n1, n2 = ((g == level).flatten(1).sum(1) for level in (1, 2))
    assert torch.allclose(bad["recall"][objects], (n1 / (n1 + n2)).double()[objects])
    for positive in (1, 2):
        worst = binary_scores(inverted, g, positive)
        assert worst["auroc"][objects].tolist() == [0.0] * 5
        best = binary_scores(g.float(), g, positive)
        assert (worst["auprc"][objects] < best["auprc"][objects]).all()
    feature = binary_scores(inverted, g, 2)  # band 2 is the background only: nothing found
    assert feature["recall"][objects].tolist() == [0.0] * 5
    assert feature["f1"][objects].tolist() == [0.0] * 5


@pytest.mark.parametrize("positive", [1, 2])
def test_binary_scores_match_an_independent_numpy_computation(positive) -> None:
    g = truths()
    maps = torch.rand(len(g), 8, 8, generator=torch.Generator().manual_seed(2)) + 0.4 * g.float()
    got = binary_scores(maps, g, positive)
    edge = {1: 0.3, 2: 0.7}[positive]
    for i in range(len(g) - 1):
        x = maps[i].double().numpy().ravel()
        want = numpy_binary(x / np.abs(x).max(), g[i].numpy().ravel() >= positive, edge)
        assert [float(got[k][i]) for k in BINARY_METRICS] == pytest.approx(want, abs=1e-12)
    one = binary_scores(maps[:1], g[:1], positive)  # one image takes scikit-learn's other path
    assert [float(one[k][0]) for k in BINARY_METRICS] == pytest.approx(
        [float(got[k][0]) for k in BINARY_METRICS], abs=1e-12
    )


def test_images_without_an_object_have_no_binary_score() -> None:
    g = truths()
    maps = torch.rand(len(g), 8, 8, generator=torch.Generator().manual_seed(3))
    for positive in (1, 2):
        s = binary_scores(maps, g, positive)
        assert all(math.isnan(float(s[k][-1])) for k in BINARY_METRICS)
        assert all(not s[k][:-1].isnan().any() for k in BINARY_METRICS)
    whole = torch.ones(1, 8, 8, dtype=torch.uint8)  # an object filling the image: no negative
    assert math.isnan(float(binary_scores(torch.rand(1, 8, 8), whole, 1)["auroc"][0]))
    empty = binary_scores(torch.rand(1, 8, 8), torch.zeros(1, 8, 8, dtype=torch.uint8), 1)
    assert math.isnan(float(empty["f1"][0]))


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: five_band_scores(torch.zeros(2, 4, 4), torch.zeros(2, 4, 5)), "must both be"),
        (lambda: five_band_scores(torch.zeros(4, 4), torch.zeros(4, 4)), "must both be"),
        (lambda: five_band_scores(torch.zeros(1, 2, 2), torch.full((1, 2, 2), 3)), "0, 1 and 2"),
        (lambda: binary_scores(torch.zeros(1, 2, 2), torch.full((1, 2, 2), 0.5), 1), "0, 1 and 2"),
        (lambda: binary_scores(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2).long(), 3), "positive"),
        (lambda: soft_thresholds(0), "steps must be"),
        (lambda: soft_thresholds(61, 0.005), "to 0 or past another"),
    ],
)
def test_bad_inputs_raise_one_line_value_errors(call, fragment) -> None:
    with pytest.raises(ValueError, match=fragment) as err:
        call()
    assert "\n" not in str(err.value)


def test_a_wrong_truth_level_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"^heatmaps must hold the integers 0, 1 and 2 only$"):
        five_band_scores(torch.zeros(1, 2, 2), torch.full((1, 2, 2), 3))


def test_a_single_pixel_object_found_scores_one() -> None:
    """TP + FN = 1 and TP + FP = 1: the ratios are 1 / 1, not 0 (denominators of one count)."""
    s = five_band_scores(torch.tensor([[[0.0, 1.0]]]), torch.tensor([[[0, 2]]]), steps=1)
    assert {k: float(v) for k, v in s.items()} == {
        "pixel_accuracy": 1.0,
        "recall": 1.0,
        "precision": 1.0,
        "fpr": 0.0,
    }


def test_a_value_on_a_band_edge_belongs_to_the_band_below() -> None:
    maps = torch.tensor([[[0.3, 0.7, 1.0]]], dtype=torch.float64)  # normalised: itself
    s = five_band_scores(maps, torch.tensor([[[0, 1, 2]]]), steps=1)
    assert float(s["pixel_accuracy"]) == 1.0  # 0.3 is band 0, 0.7 band 1, 1.0 band 2
    mixed = five_band_scores(maps, torch.tensor([[[1, 2, 2]]]), steps=1)
    assert float(mixed["pixel_accuracy"]) == pytest.approx(1 / 3)


def test_scores_use_the_given_soft_delta() -> None:
    g = truths()
    maps = torch.randn(len(g), 8, 8, generator=torch.Generator().manual_seed(4)) + g.float()
    got = five_band_scores(maps, g, steps=3, delta=0.1)
    for i in range(len(g)):
        want = numpy_scores(maps[i].double().numpy(), g[i].numpy().astype(int), 3, 0.1)
        assert [float(got[k][i]) for k in FIVE_BAND_METRICS] == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize(("positive", "edge"), [(1, 0.3), (2, 0.7)])
def test_binary_prediction_is_strictly_above_the_band_edge(positive: int, edge: float) -> None:
    maps = torch.tensor([[[edge, 1.0, 0.0, 0.2]]], dtype=torch.float64)
    truth = torch.tensor([[[2, 2, 0, 0]]])
    s = binary_scores(maps, truth, positive)
    # predicted: only the 1.0 (the value at the edge is band positive - 1)
    assert [float(s[k][0]) for k in ("precision", "recall", "f1")] == pytest.approx([1, 0.5, 2 / 3])


@pytest.mark.parametrize("images", [1, 2])
def test_no_predicted_pixel_gives_precision_zero_without_warnings(images: int) -> None:
    g = truths(n=images + 1)[:images]  # every image has an object and background
    maps = -torch.rand(g.shape, generator=torch.Generator().manual_seed(5))  # nothing above 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn's zero_division warning included
        s = binary_scores(maps, g, 1)
    for k in ("precision", "recall", "f1"):
        assert s[k].tolist() == [0.0] * images, k


def test_an_image_without_a_negative_pixel_in_a_batch_has_no_binary_score() -> None:
    truth = torch.stack([torch.ones(4, 4, dtype=torch.long), truths(2, 4)[0].long()])
    s = binary_scores(torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(6)), truth, 1)
    for k in BINARY_METRICS:
        assert math.isnan(float(s[k][0])) and not math.isnan(float(s[k][1])), k


def test_soft_thresholds_edges() -> None:
    assert soft_thresholds(3, 0.0).tolist() == [[-0.7, -0.3, 0.3, 0.7]] * 3  # delta 0 is allowed
    # a threshold changing sign while the order holds (0.05 -> -0.05 < ...) is refused
    with pytest.raises(ValueError, match="to 0 or past another"):
        soft_thresholds(2, 0.1, (-0.7, -0.6, 0.05, 0.7))
    # edges out of order, or equal, are refused even without a step
    for bad in [(-0.3, -0.7, 0.3, 0.7), (-0.7, -0.3, 0.3, 0.3)]:
        with pytest.raises(ValueError, match="to 0 or past another"):
            soft_thresholds(1, 0.0, bad)
    # the sets are rounded to 12 decimals: decimal steps give exact decimals, and a step below
    # 5e-13 leaves the edges where they were
    assert soft_thresholds()[-1].tolist() == [-0.425, -0.025, 0.025, 0.425]
    assert soft_thresholds(2, 4e-13)[1].tolist() == [-0.7, -0.3, 0.3, 0.7]
