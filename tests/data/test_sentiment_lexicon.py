"""sentiment-lexicon: generated sentences whose classes and word labels follow the lexicon."""

from __future__ import annotations

from decimal import Decimal
from importlib import resources

import numpy as np
import pytest
import torch

from distillscope.contracts import PAD, PAD_ID, UNK, UNK_ID
from distillscope.data import dataset_names, load_dataset
from distillscope.data import sentiment_lexicon as module
from distillscope.data.sentiment_lexicon import LONGEST, sentiment_lexicon
from distillscope.errors import ConfigError, DataError

SMALL = {"n_train": 200, "n_test": 40}


def _ratings() -> dict[str, Decimal]:
    """The lexicon read again from the package's file: the last rating of a word wins."""
    text = (resources.files("vaderSentiment") / "vader_lexicon.txt").read_text(encoding="utf-8")
    out = {}
    for line in text.splitlines():
        word, rating = line.split("\t")[:2]
        out[word] = Decimal(rating)
    return out


def _class(total: Decimal) -> int:
    """The rule written again: the sign says negative/positive, |sum| >= 3 says very."""
    if total > 0:
        return 3 if total >= 3 else 2
    return 0 if total <= -3 else 1


def _sentences(ds) -> list[list[str]]:
    return [[ds.info.vocab[i] for i in row if i != PAD_ID] for row in ds.inputs.tolist()]


def test_it_is_registered_and_loads_with_params():
    assert "sentiment-lexicon" in dataset_names()
    ds = load_dataset("sentiment-lexicon", "train", n_train=12, data_seed=3)
    assert len(ds) == 12 and ds.info.name == "sentiment-lexicon"
    few = load_dataset("sentiment-lexicon", "train", per_class=2, n_train=40)  # a subset
    assert torch.bincount(few.targets).tolist() == [2, 2, 2, 2]
    assert tuple(few.token_labels.shape) == tuple(few.inputs.shape) == (8, 24)


def test_the_same_seed_gives_the_same_data_and_another_seed_other_data():
    a, b = sentiment_lexicon("train", **SMALL), sentiment_lexicon("train", **SMALL)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    assert torch.equal(a.token_labels, b.token_labels) and a.info.vocab == b.info.vocab
    assert a.fingerprint() == b.fingerprint()
    other = sentiment_lexicon("train", data_seed=1, **SMALL)
    assert _sentences(other) != _sentences(a)


@pytest.mark.parametrize(("n", "counts"), [(200, [50, 50, 50, 50]), (10, [3, 3, 2, 2])])
def test_classes_are_balanced(n, counts):
    ds = sentiment_lexicon("train", n_train=n, n_test=8)
    assert torch.bincount(ds.targets, minlength=4).tolist() == counts


def test_classes_follow_the_summed_lexicon_ratings():
    ratings = _ratings()
    ds = sentiment_lexicon("train", **SMALL)  # min_count 1: every training word is known
    mixed = 0
    for words, target in zip(_sentences(ds), ds.targets.tolist()):
        polar = [ratings[w] for w in words if w in ratings]
        assert 1 <= len(polar) <= 3
        assert _class(sum(polar)) == target
        mixed += min(polar) < 0 < max(polar)
    assert mixed > 10  # sentences with words of both signs exist (a model must weigh them)


def test_word_labels_are_exactly_the_lexicon_signs():
    ratings = _ratings()
    for split in ("train", "test"):
        ds = sentiment_lexicon(split, **SMALL)
        vocab = ds.info.vocab
        for ids, labels in zip(ds.inputs.tolist(), ds.token_labels.tolist()):
            for i, label in zip(ids, labels):
                word = vocab[i]
                if i in (PAD_ID, UNK_ID):
                    assert label == 0
                else:
                    assert label == (int(np.sign(ratings[word])) if word in ratings else 0)
        assert (ds.token_labels == 1).any() and (ds.token_labels == -1).any()


def test_template_words_are_outside_the_lexicon():
    ratings = _ratings()
    groups = (module.CLAUSES, module.SUBJECTS, module.VERBS, module.NOUNS, module.JOINS,
              module.OPENINGS)  # fmt: skip
    words = {w for group in groups for t in group for w in t.split() if w != "{w}"}
    assert words and not words & set(ratings)


def test_the_info_describes_text_and_the_test_split_uses_the_training_vocabulary():
    train = sentiment_lexicon("train", **SMALL)
    test = sentiment_lexicon("test", **SMALL)
    info = test.info
    assert info.is_text and info.vocab == train.info.vocab and info.vocab[:2] == (PAD, UNK)
    assert info.input_shape == (24,) and tuple(test.inputs.shape) == (40, 24)
    assert info.class_names == ["very negative", "negative", "positive", "very positive"]
    assert info.pixel_range is None and info.mean is None and info.std is None
    assert info.categories == {"negative": [0, 1], "positive": [2, 3]}
    lengths = (train.inputs != PAD_ID).sum(1)
    assert int(lengths.max()) <= LONGEST <= 24  # nothing cut at the default max_len
    assert (train.inputs == UNK_ID).sum() == 0


def test_a_longer_max_len_pads_and_min_count_shrinks_the_vocabulary():
    wide = sentiment_lexicon("train", max_len=30, **SMALL)
    base = sentiment_lexicon("train", **SMALL)
    assert torch.equal(wide.inputs[:, :24], base.inputs) and (wide.inputs[:, 24:] == 0).all()
    assert len(sentiment_lexicon("train", min_count=3, **SMALL).info.vocab) < len(base.info.vocab)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"max_len": LONGEST - 1}, f"would cut sentences .* use max_len >= {LONGEST}"),
        ({"n_train": 3}, "n_train=3 is invalid"),
        ({"n_test": 2.5}, "n_test=2.5 is invalid"),
        ({"words_per_sign": 0}, "words_per_sign=0"),
        ({"words_per_sign": 100_000}, "more than the lexicon has"),
        ({"data_seed": -1}, "data_seed=-1"),
        ({"min_count": True}, "min_count=True"),
    ],
)
def test_bad_params_are_one_line_config_errors(params, match):
    with pytest.raises(ConfigError, match=match) as info:
        sentiment_lexicon("train", **{**SMALL, **params})
    assert "\n" not in str(info.value)


def test_without_the_package_the_error_names_the_install(monkeypatch):
    monkeypatch.setattr(module, "PACKAGE", "no_such_lexicon_package")
    module.lexicon.cache_clear()
    try:
        with pytest.raises(DataError, match="pip install no_such_lexicon_package"):
            sentiment_lexicon("train", **SMALL)
    finally:
        module.lexicon.cache_clear()
