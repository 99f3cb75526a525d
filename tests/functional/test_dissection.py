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


# ------------------------------------------------------------------ edges and validation
def test_top_quantiles_need_two_positions_and_keep_enough_values() -> None:
    with pytest.raises(ValueError, match="^a quantile needs at least 2 values per unit, got 1$"):
        TopQuantiles(1, 1, [0.5])
    values = torch.tensor([3.0, -1.0])  # two positions: the median is their mean
    tq = TopQuantiles(1, 2, [0.5])
    tq.update(values.view(2, 1, 1, 1))
    assert tq.thresholds().tolist() == [[1.0]]
    # n = 5, q = 0.3: h = 4 * 0.7 = 2.8 reads the 3rd largest value, so floor(4 * 0.3) + 2 = 3
    # values are kept ((n - 2) q would keep 2)
    values = torch.tensor([0.0, 10.0, 20.0, 30.0, 40.0])
    tq = TopQuantiles(1, 5, [0.3])
    for v in values:  # one value per update: the kept values are all that is left
        tq.update(v.view(1, 1, 1, 1))
    assert tq.top.shape == (1, 3)
    assert tq.thresholds().item() == pytest.approx(float(np.quantile(values.numpy(), 0.7)))
    assert tq.thresholds().item() == pytest.approx(20.0 + 0.8 * 10.0)


def test_top_quantiles_start_empty_and_keep_every_value_when_q_is_large() -> None:
    # keep = min(n, floor((n - 1) 0.99) + 2) = n: every value is kept, the smallest included, so
    # a value that was never given (an uninitialised start column) would shift the threshold
    values = torch.tensor([-1.7e308, -1.6e308, -1.5e308, -1.4e308], dtype=torch.float64)
    tq = TopQuantiles(1, 4, [0.99])
    assert tq.top.shape == (1, 0) and tq.seen == 0
    tq.update(values.view(4, 1, 1, 1))
    assert tq.top.shape == (1, 4)
    h = 3 * (1 - 0.99)  # ascending index of the threshold: between the two smallest values
    want = -1.7e308 + h * (-1.6e308 - -1.7e308)
    assert tq.thresholds().item() == pytest.approx(want, rel=1e-12)


def test_tally_counts_are_float64() -> None:
    """Counts of a large probe set stay exact (float32 stops counting at 2**24)."""
    tally = Tally.zeros(2, 3, 4, 5)
    shapes = [(2, 3, 4), (2, 3), (2, 3, 5), (4,)]
    fields = (tally.both, tally.units, tally.units_cat, tally.labels)
    for field, shape in zip(fields, shapes):
        assert field.dtype == torch.float64 and field.shape == shape and not field.any()


def _tiny_batch(b: int = 2, s: int = 4, units: int = 5, seed: int = 0):
    """Random activations (B, U, 2, 2), pixel labels 0..3 (one layer), two categories."""
    gen = torch.Generator().manual_seed(seed)
    acts = torch.randn(b, units, 2, 2, generator=gen, dtype=torch.float64)
    pixels = torch.randint(0, 4, (b, 1, s, s), generator=gen)
    thresholds = torch.zeros(1, units, dtype=torch.float64)
    label_category = torch.tensor([-1, 0, 0, 1])
    return acts, thresholds, pixels, torch.zeros(b, 1, dtype=torch.long), label_category


def test_tally_batch_rejects_an_unknown_rule_and_a_missing_annotation() -> None:
    acts, thresholds, pixels, scalars, lc = _tiny_batch()
    tally = Tally.zeros(1, 5, 4, 2)
    unknown = "^unknown images rule 'all'; use one of touched, annotated$"
    with pytest.raises(ValueError, match=unknown):
        tally_batch(tally, acts, thresholds, pixels, scalars, lc, images="all")
    missing = "^images='annotated' needs the images' annotated categories$"
    with pytest.raises(ValueError, match=missing):
        tally_batch(tally, acts, thresholds, pixels, scalars, lc, images="annotated")
    assert not tally.units.any()  # nothing counted before the refusal


def test_chunk_bounds_the_units_upsampled_at_once_and_not_the_tally(monkeypatch) -> None:
    acts, thresholds, pixels, scalars, lc = _tiny_batch()  # B * S * S = 32 values per unit
    interpolate = F.interpolate
    widths: list[int] = []

    def spy(x, *args, **kwargs):
        widths.append(x.shape[1])
        return interpolate(x, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "interpolate", spy)
    tallies = []
    for chunk, want in [(1, [1] * 5), (32, [1] * 5), (64, [2, 2, 1]), (10**6, [5])]:
        widths.clear()
        tally = Tally.zeros(1, 5, 4, 2)
        tally_batch(tally, acts, thresholds, pixels, scalars, lc, chunk=chunk)
        assert widths == want, chunk  # at most chunk // (B S S) units (at least one) at once
        tallies.append(tally)
    for tally in tallies[1:]:
        for got, first in zip(vars(tally).values(), vars(tallies[0]).values()):
            assert torch.equal(got, first)
    assert len(set(tallies[0].units[0].tolist())) > 1  # units differ: a mixed-up group would show
    # a 1x1 annotation: B * S * S = 1 value per unit, so chunk 2 takes two units at once
    acts, thresholds, pixels, scalars, lc = _tiny_batch(b=1, s=1, units=3)
    widths.clear()
    tally_batch(Tally.zeros(1, 3, 4, 2), acts, thresholds, pixels, scalars, lc, chunk=2)
    assert widths == [2, 1]


def test_activation_equal_to_the_threshold_is_not_counted() -> None:
    """``M_u = {p : up(A_u)_p > T_u}`` is strict, as NetDissect-Lite's ``tally_job``."""
    acts = torch.ones(1, 1, 2, 2, dtype=torch.float64)  # upsamples to exactly 1 everywhere
    pixels = torch.ones(1, 1, 4, 4, dtype=torch.long)
    lc = torch.tensor([-1, 0])
    tally = Tally.zeros(2, 1, 2, 1)
    thresholds = torch.tensor([[1.0], [0.5]], dtype=torch.float64)
    tally_batch(tally, acts, thresholds, pixels, torch.zeros(1, 1, dtype=torch.long), lc)
    assert tally.units[:, 0].tolist() == [0.0, 16.0]
    assert tally.both[:, 0, 1].tolist() == [0.0, 16.0]


def test_float32_activations_are_upsampled_in_float64() -> None:
    gen = torch.Generator().manual_seed(0)
    acts = torch.rand(1, 1, 3, 3, generator=gen)  # float32
    up64 = F.interpolate(acts.double(), size=(8, 8), mode="bilinear", align_corners=False)
    up32 = F.interpolate(acts, size=(8, 8), mode="bilinear", align_corners=False).double()
    at = int(torch.nonzero((up32 > up64).flatten())[0])  # float32 rounds this pixel up
    threshold = up64.flatten()[at]
    tally = Tally.zeros(1, 1, 2, 1)
    pixels = torch.ones(1, 1, 8, 8, dtype=torch.long)
    tally_batch(tally, acts, threshold.view(1, 1), pixels, torch.zeros(1, 1, dtype=torch.long),
                torch.tensor([-1, 0]))  # fmt: skip
    assert tally.units.item() == float((up64 > threshold).sum())


def test_unlabelled_pixels_count_for_no_label_even_with_label_zero_alone() -> None:
    """A probe batch with no annotation at all (only label 0) tallies the units and nothing else."""
    acts = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    tally = Tally.zeros(1, 1, 1, 1)
    tally_batch(tally, acts, torch.zeros(1, 1, dtype=torch.float64),
                torch.zeros(1, 1, 4, 4, dtype=torch.long), torch.zeros(1, 1, dtype=torch.long),
                torch.tensor([-1]))  # fmt: skip
    assert tally.units.item() == 16.0
    assert tally.labels.tolist() == [0.0] and not tally.both.any() and not tally.units_cat.any()


def test_an_image_level_label_of_id_one_is_counted() -> None:
    acts = torch.ones(2, 1, 2, 2, dtype=torch.float64)
    pixels = torch.zeros(2, 1, 4, 4, dtype=torch.long)
    scalars = torch.tensor([[1], [0]])  # image 0 carries the scene label 1
    tally = Tally.zeros(1, 1, 2, 1)
    tally_batch(tally, acts, torch.zeros(1, 1, dtype=torch.float64), pixels, scalars,
                torch.tensor([-1, 0]))  # fmt: skip
    assert tally.labels.tolist() == [0.0, 16.0]  # the image's 16 pixels
    assert tally.both[0, 0].tolist() == [0.0, 16.0]
    assert tally.units_cat[0, 0].tolist() == [16.0]  # only image 0 touches category 0


def test_unit_iou_is_the_references_formula_and_label_zero_scores_zero() -> None:
    tally = Tally.zeros(1, 1, 3, 2)
    tally.both[0, 0] = torch.tensor([5.0, 1.0, 2.0])
    tally.units_cat[0, 0] = torch.tensor([1.0, 4.0])
    tally.labels[:] = torch.tensor([9.0, 1.0, 3.0])
    lc = torch.tensor([-1, 0, 1])
    iou = unit_iou(tally, lc)
    # label 1 (category 0): 1 / (1 + 1 - 1 + 1e-10); label 2 (category 1): 2 / (4 + 3 - 2 + 1e-10)
    want = [0.0, 1.0 / (1.0 + 1e-10), 2.0 / (5.0 + 1e-10)]
    assert torch.allclose(iou[0, 0], torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-15)
