"""Network dissection's maths: exact streaming thresholds, tallies equal to a slow per-image,
per-unit reference written here after NetDissect-Lite's ``tally_job``, a planted detector found
with IoU near 1 and no detector in noise, and the detector counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distillscope.functional.dissection import (
    Tally,
    TopQuantiles,
    best_concepts,
    count_detectors,
    tally_batch,
    unit_iou,
)


def test_streamed_thresholds_equal_the_exact_quantile() -> None:
    gen = torch.Generator().manual_seed(0)
    acts = torch.randn(30, 5, 4, 4, generator=gen)  # 480 positions per unit
    quantiles = [0.001, 0.005, 0.01, 0.1]
    tq = TopQuantiles(5, 30 * 16, quantiles)
    for start in range(0, 30, 7):  # uneven batches
        tq.update(acts[start : start + 7])
    values = acts.transpose(0, 1).reshape(5, -1).double()
    want = torch.stack([torch.quantile(values, 1 - q, dim=1) for q in quantiles])
    assert torch.allclose(tq.thresholds(), want, atol=1e-12)
    assert tq.top.shape[1] == int((480 - 1) * 0.1) + 2  # only what the largest q needs


def test_thresholds_refuse_a_stream_of_the_wrong_length() -> None:
    tq = TopQuantiles(2, 50, [0.005])
    tq.update(torch.zeros(1, 2, 5, 5))
    with pytest.raises(ValueError, match="saw 25 values per unit, expected 50"):
        tq.thresholds()


# ------------------------------------------------------------------ the slow reference
def slow_tally(acts, thresholds, pixels, scalars, label_category, n_labels, n_cat, images,
               annotated):  # fmt: skip
    """Per quantile, per image, per unit, as NetDissect-Lite's ``tally_job`` (numpy)."""
    q_n, n_units = thresholds.shape
    both = np.zeros((q_n, n_units, n_labels))
    units = np.zeros((q_n, n_units))
    units_cat = np.zeros((q_n, n_units, n_cat))
    labels = np.zeros(n_labels)
    labelcat = np.eye(n_cat)[np.clip(label_category, 0, None)]  # (L, C) one-hot primary
    s = pixels.shape[-1]
    for i in range(acts.shape[0]):
        px = pixels[i]  # (D, S, S)
        scal = [int(v) for v in scalars[i] if v > 0]
        counted = np.bincount(px.ravel(), minlength=n_labels).astype(float)
        counted[0] = 0
        labels += counted
        for v in scal:
            labels[v] += s * s
        for q in range(q_n):
            for u in range(n_units):
                up = F.interpolate(torch.from_numpy(acts[i, u][None, None]), size=(s, s),
                                   mode="bilinear", align_corners=False)[0, 0].numpy()  # fmt: skip
                idx = np.argwhere(up > thresholds[q, u])
                units[q, u] += len(idx)
                bt = np.bincount(px[:, idx[:, 0], idx[:, 1]].ravel(), minlength=n_labels)
                bt = bt.astype(float)
                bt[0] = 0
                tally_cat = bt @ labelcat
                both[q, u] += bt
                for v in scal:
                    tally_cat = tally_cat + labelcat[v]
                    both[q, u, v] += len(idx)
                hit = tally_cat > 0 if images == "touched" else annotated[i]
                units_cat[q, u] += len(idx) * hit
    return both, units, units_cat, labels


@pytest.mark.parametrize("images", ["touched", "annotated"])
def test_tallies_equal_the_slow_reference(images: str) -> None:
    rng = np.random.default_rng(1)
    n, n_units, n_labels, n_cat = 6, 4, 7, 3
    label_category = np.array([-1, 0, 0, 1, 1, 2, 2])  # labels 5, 6: image-level (scene)
    acts = rng.normal(size=(n, n_units, 3, 3))
    pixels = rng.integers(0, 5, size=(n, 2, 8, 8))  # two pixel layers, labels 0..4
    pixels[:, 1] = np.where(rng.random((n, 8, 8)) < 0.5, 0, pixels[:, 1])
    scalars = np.array([[5, 0], [0, 0], [6, 5], [0, 6], [0, 0], [5, 0]])
    annotated = rng.random((n, n_cat)) < 0.6
    thresholds = np.stack([np.quantile(acts.transpose(1, 0, 2, 3).reshape(n_units, -1),
                                       1 - q, axis=1) for q in (0.05, 0.2)])  # fmt: skip
    want = slow_tally(acts, thresholds, pixels, scalars, label_category, n_labels, n_cat, images,
                      annotated)  # fmt: skip
    tally = Tally.zeros(2, n_units, n_labels, n_cat)
    lc = torch.from_numpy(label_category)
    for start in (0, 4):  # two batches, units in groups of one (a tiny chunk)
        sl = slice(start, start + 4)
        tally_batch(tally, torch.from_numpy(acts[sl]), torch.from_numpy(thresholds),
                    torch.from_numpy(pixels[sl]), torch.from_numpy(scalars[sl]), lc, images,
                    torch.from_numpy(annotated[sl]), chunk=64)  # fmt: skip
    for got, expected in zip((tally.both, tally.units, tally.units_cat, tally.labels), want):
        assert np.allclose(got.numpy(), expected)
    assert tally.units.sum() > 0 and tally.both[:, :, 5:].sum() > 0  # scalars counted


def test_a_planted_detector_is_found_and_noise_is_not() -> None:
    """Unit 0 fires exactly on the 'square' concept's 2x2-block masks; unit 1 is noise."""
    gen = torch.Generator().manual_seed(0)
    n, s, h = 40, 8, 4
    cells = torch.rand(n, h, h, generator=gen) < 0.3  # (N, 4, 4) where the concept is
    mask = cells.repeat_interleave(2, 1).repeat_interleave(2, 2)  # (N, 8, 8) exact blocks
    pixels = torch.where(mask, 1, 2).view(n, 1, s, s)  # label 1 'square', 2 'background'
    acts = torch.stack([cells.double() * 10.0, torch.rand(n, h, h, generator=gen).double()], 1)
    label_category = torch.tensor([-1, 0, 0])
    tq = TopQuantiles(2, n * h * h, [0.005])
    tq.update(acts)
    # bilinear upsampling (x2) keeps >= 0.75 * 0.75 * 10 = 5.6 inside a block and gives <= 4.4
    # outside it, so T = 5 marks the blocks exactly
    thresholds = torch.tensor([[5.0, tq.thresholds()[0, 1].item()]], dtype=torch.float64)
    tally = Tally.zeros(1, 2, 3, 1)
    tally_batch(tally, acts, thresholds, pixels, torch.zeros(n, 1, dtype=torch.long),
                label_category)  # fmt: skip
    score, label, category = best_concepts(unit_iou(tally, label_category), label_category)
    assert label[0, 0].item() == 1 and score[0, 0].item() == pytest.approx(1.0, abs=1e-9)
    assert score[0, 1].item() < 0.04
    counts = count_detectors(score, label, category, 0.04, 1)
    assert counts["total"].tolist() == [1] and counts["unique"].tolist() == [1]


def test_detector_counts_per_category_and_unique_labels() -> None:
    score = torch.tensor([[0.5, 0.05, 0.04, 0.2, 0.01]])
    label = torch.tensor([[3, 3, 4, 1, 2]])
    category = torch.tensor([[1, 1, 1, 0, 0]])
    at_004 = count_detectors(score, label, category, 0.04, 2)
    assert at_004["total"].tolist() == [4]  # >= 0.04, as the reference's report
    assert at_004["unique"].tolist() == [3]  # labels 3, 4, 1
    assert at_004["per_category"].tolist() == [[1, 3]]
    assert count_detectors(score, label, category, 0.05, 2)["total"].tolist() == [3]


def test_best_concept_is_chosen_within_the_labels_primary_category() -> None:
    iou = torch.tensor([[[0.0, 0.3, 0.1, 0.6]]])  # (Q=1, U=1, L=4)
    label_category = torch.tensor([-1, 0, 1, 1])
    score, label, category = best_concepts(iou, label_category)
    assert (label.item(), category.item()) == (3, 1) and score.item() == pytest.approx(0.6)
