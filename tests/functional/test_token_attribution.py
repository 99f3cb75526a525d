"""Sign agreement, AUROC and AUPRC of token attributions (paper 000 5.4) against an independent
computation: Python loops over the words, pairwise AUROC and step-wise average precision."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from distillscope.functional.token_attribution import (
    attribution_auc,
    sentence_polarity,
    sign_agreement,
    support,
    token_attribution_scores,
)


def sample(n: int = 12, length: int = 9, seed: int = 0):
    """Random attributions, word labels (about half labelled, padded tails) and polarities."""
    g = torch.Generator().manual_seed(seed)
    attr = torch.randn(n, length, generator=g, dtype=torch.float64)
    labels = torch.randint(-1, 2, (n, length), generator=g)
    lengths = torch.randint(3, length + 1, (n,), generator=g)
    pad = torch.arange(length)[None] >= lengths[:, None]  # (n, L)
    labels[pad] = 0
    attr[pad] = 0.0  # padding gets no attribution
    attr *= torch.rand(n, 1, generator=g, dtype=torch.float64) * 10  # sentences of other scales
    polarity = torch.where(torch.rand(n, generator=g) < 0.5, 1, -1)
    return attr, labels, polarity


# ---- an independent reading of the definitions ------------------------------------------------


def words(attr, labels, polarity, normalise=False):
    """``(score, supports)`` of every labelled word, by loops."""
    out = []
    for i in range(attr.shape[0]):
        row = attr[i].tolist()
        norm = math.sqrt(sum(v * v for v in row)) if normalise else 1.0
        for t, label in enumerate(labels[i].tolist()):
            if label != 0:
                out.append((row[t] / (norm or 1.0), label * int(polarity[i]) > 0))
    return out


def loop_agreement(attr, labels, polarity):
    w = words(attr, labels, polarity)
    return sum((a > 0) == sup and a != 0 for a, sup in w) / len(w)


def pairwise_auroc(w):
    """P(score of a supporting word > score of an opposing one), ties counting one half."""
    pos = [a for a, s in w if s]
    neg = [a for a, s in w if not s]
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def stepwise_ap(w):
    """sum_k (R_k - R_{k-1}) P_k over the distinct scores, highest first."""
    n_pos = sum(s for _, s in w)
    ap, tp, seen, last_recall = 0.0, 0, 0, 0.0
    for score in sorted({a for a, _ in w}, reverse=True):
        group = [s for a, s in w if a == score]
        tp += sum(group)
        seen += len(group)
        recall = tp / n_pos
        ap += (recall - last_recall) * tp / seen
        last_recall = recall
    return ap


# ---- tests --------------------------------------------------------------------------------------


def test_polarity_follows_paper_000s_four_classes_and_halves_other_even_counts() -> None:
    assert sentence_polarity(torch.tensor([3, 2, 1, 0])).tolist() == [1, 1, -1, -1]
    assert sentence_polarity(torch.tensor([0, 1]), num_classes=2).tolist() == [-1, 1]
    with pytest.raises(ValueError, match="even number"):
        sentence_polarity(torch.tensor([0, 1, 2]), num_classes=3)
    with pytest.raises(ValueError, match=r"0\.\.3"):
        sentence_polarity(torch.tensor([4]))


def test_attributions_equal_to_label_times_polarity_score_one_and_their_negation_zero() -> None:
    _, labels, polarity = sample()
    ideal = support(labels, polarity).double() * 0.7  # (N, L)
    assert sign_agreement(ideal, labels, polarity) == 1.0
    assert sign_agreement(-ideal, labels, polarity) == 0.0
    assert attribution_auc(ideal, labels, polarity) == {"auroc": 1.0, "auprc": 1.0}
    assert attribution_auc(-ideal, labels, polarity)["auroc"] == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_scores_match_the_loops(seed) -> None:
    attr, labels, polarity = sample(seed=seed)
    out = token_attribution_scores(attr, labels, polarity, normalise=False)
    assert out["agreement"] == pytest.approx(loop_agreement(attr, labels, polarity), abs=1e-12)
    raw = words(attr, labels, polarity)
    assert out["auroc"] == pytest.approx(pairwise_auroc(raw), abs=1e-12)
    assert out["auprc"] == pytest.approx(stepwise_ap(raw), abs=1e-12)
    assert out["n_words"] == len(raw) == int((labels != 0).sum())
    assert out["n_supporting"] == sum(s for _, s in raw)
    normed = words(attr, labels, polarity, normalise=True)
    scaled = attribution_auc(attr, labels, polarity, normalise=True)
    assert scaled["auroc"] == pytest.approx(pairwise_auroc(normed), abs=1e-12)
    assert scaled["auprc"] == pytest.approx(stepwise_ap(normed), abs=1e-12)


def test_normalising_each_sentence_changes_the_ranking_not_the_signs() -> None:
    attr = torch.tensor([[10.0, -20.0], [0.5, 0.1]], dtype=torch.float64)
    labels = torch.tensor([[1, -1], [1, 1]])
    polarity = torch.tensor([-1, 1])  # row 0: 10 opposes, -20 supports; row 1: both support
    # raw: the loud opposing 10 outranks every supporting word; scaled by each row's L2 norm
    # (22.36 and 0.51): 10 -> 0.447 loses to 0.5 -> 0.981 only
    assert attribution_auc(attr, labels, polarity, normalise=False)["auroc"] == 0.0
    scaled = attribution_auc(attr, labels, polarity, normalise=True)
    assert scaled["auroc"] == pytest.approx(1 / 3)
    quiet = attr.clone()
    quiet[0] *= 0.001  # the same sentence, quieter: the raw ranking moves, the scaled one not
    assert attribution_auc(quiet, labels, polarity, normalise=False)["auroc"] == pytest.approx(
        2 / 3
    )
    assert attribution_auc(quiet, labels, polarity, normalise=True) == scaled
    assert sign_agreement(quiet, labels, polarity) == sign_agreement(attr, labels, polarity)


def test_unlabelled_words_and_padding_do_not_count() -> None:
    attr, labels, polarity = sample(seed=3)
    other = attr.clone()
    other[labels == 0] = torch.randn(int((labels == 0).sum()), dtype=torch.float64) * 3
    a, b = (token_attribution_scores(x, labels, polarity, normalise=False) for x in (attr, other))
    assert a == b


def test_a_zero_attribution_has_no_sign_and_disagrees() -> None:
    labels, polarity = torch.tensor([[1, -1, 1, 0]]), torch.tensor([1])
    attr = torch.tensor([[0.0, -1.0, 2.0, 5.0]])
    assert sign_agreement(attr, labels, polarity) == pytest.approx(2 / 3)


def test_undefined_scores_are_nan() -> None:
    labels, polarity = torch.tensor([[1, 1, 0]]), torch.tensor([1])  # every word supports
    out = token_attribution_scores(torch.tensor([[1.0, -1.0, 0.0]]), labels, polarity)
    assert out["agreement"] == 0.5 and math.isnan(out["auroc"]) and math.isnan(out["auprc"])
    none = token_attribution_scores(torch.ones(1, 3), torch.zeros(1, 3, dtype=torch.long), polarity)
    assert math.isnan(none["agreement"]) and none["n_words"] == 0


@pytest.mark.parametrize(
    ("attr", "labels", "polarity", "match"),
    [
        (torch.zeros(2, 3), torch.zeros(2, 4, dtype=torch.long), torch.ones(2), r"\(N, L\)"),
        (torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long), torch.ones(3), r"\(N,\)"),
        (torch.zeros(1, 2), torch.tensor([[2, 0]]), torch.ones(1), "-1, 0 and 1"),
        (torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1), "-1, 0 and 1"),
        (torch.zeros(1, 2), torch.zeros(1, 2, dtype=torch.long), torch.zeros(1), "polarity"),
    ],
)
def test_bad_shapes_and_labels_raise(attr, labels, polarity, match) -> None:
    with pytest.raises(ValueError, match=match):
        sign_agreement(attr, labels, polarity)


def test_float32_and_float64_agree() -> None:
    attr, labels, polarity = sample(seed=4)
    a = token_attribution_scores(attr, labels, polarity)
    b = token_attribution_scores(attr.float(), labels, polarity)
    assert a["agreement"] == b["agreement"]
    np.testing.assert_allclose([a["auroc"], a["auprc"]], [b["auroc"], b["auprc"]], atol=1e-6)


def test_input_errors_are_one_exact_line() -> None:
    a, labels, polarity = torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long), torch.ones(2)
    cases = [
        ((a, labels, torch.ones(3)), "polarity must be (N,) = (2,), got (3,)"),
        ((a, labels - 2, polarity), "labels must hold the integers -1, 0 and 1 only"),
        ((a, labels, -2 * polarity), "polarity must hold -1 and 1 only"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError) as info:
            sign_agreement(*args)
        assert str(info.value) == message


def test_support_is_int64_and_the_scores_normalise_by_default() -> None:
    a, labels, polarity = sample(seed=3)
    s = support(labels, polarity)
    assert s.dtype == torch.int64 and torch.equal(s, labels.long() * polarity.long()[:, None])
    # rows of very different sizes: normalising changes the pooled ranking
    scaled = a * torch.logspace(-3, 3, len(a), dtype=a.dtype)[:, None]
    assert attribution_auc(scaled, labels, polarity) == attribution_auc(
        scaled, labels, polarity, True
    )
    assert attribution_auc(scaled, labels, polarity) != attribution_auc(
        scaled, labels, polarity, False
    )
    default = token_attribution_scores(scaled, labels, polarity)
    assert default == token_attribution_scores(scaled, labels, polarity, True)
    assert default != token_attribution_scores(scaled, labels, polarity, False)
