"""The word-level tokenizer: vocabulary order, unknown words, padding, cuts, labels, files."""

from __future__ import annotations

import json
import re
import sys
from collections import Counter

import pytest
import torch

from distillscope.contracts import PAD, PAD_ID, UNK, UNK_ID, attention_mask
from distillscope.data.text import (
    TOKENIZER_FILE,
    encode,
    encode_words,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
    vocabulary,
    word_tokenizer,
)
from distillscope.errors import ConfigError, DataError

TEXTS = [
    "The film is good. The cast is GOOD!",
    "a dull, dull film",
    "Good music; dull plot",
    "it's well-made",
]


def _words(text: str) -> list[str]:
    """The rule written again: lower case, split on spaces, every punctuation mark alone."""
    return re.findall(r"\w+|[^\w\s]", text.lower())


def test_the_vocabulary_is_pad_unk_then_words_by_count_ties_alphabetical():
    counts = Counter(w for t in TEXTS for w in _words(t))
    expected = sorted(counts, key=lambda w: (-counts[w], w))
    vocab = vocabulary(train_tokenizer(TEXTS))
    assert vocab == (PAD, UNK, *expected)
    assert vocab[2:7] == ("dull", "good", "film", "is", "the")  # 3 each, 2 each: alphabetical
    kept = vocabulary(train_tokenizer(TEXTS, min_count=2))
    assert kept == (PAD, UNK, *[w for w in expected if counts[w] >= 2])


def test_words_given_as_lists_count_as_their_tokens():
    as_lists = [["The", "film", "is", "good."], ["a", "dull,", "film"]]
    joined = [" ".join(s) for s in as_lists]
    assert vocabulary(train_tokenizer(as_lists)) == vocabulary(train_tokenizer(joined))


def test_unknown_words_and_special_token_names_become_unk():
    tok = train_tokenizer(TEXTS)
    vocab = vocabulary(tok)
    ids = encode(tok, ["good zebra [PAD] [UNK]"], max_len=10)[0].tolist()
    # "[PAD]" is text, not padding: "[", "pad", "]" are three unknown words
    assert ids == [vocab.index("good"), *[UNK_ID] * 7, PAD_ID, PAD_ID]


def test_padding_fills_the_end_with_pad_and_the_mask_marks_real_tokens():
    tok = train_tokenizer(TEXTS)
    vocab = vocabulary(tok)
    ids = encode(tok, ["dull film", "good"], max_len=5)
    assert ids.dtype == torch.int64 and tuple(ids.shape) == (2, 5)
    assert ids.tolist() == [
        [vocab.index("dull"), vocab.index("film"), PAD_ID, PAD_ID, PAD_ID],
        [vocab.index("good"), PAD_ID, PAD_ID, PAD_ID, PAD_ID],
    ]
    assert attention_mask(ids).sum(1).tolist() == [2, 1]


def test_a_longer_sentence_keeps_its_first_max_len_tokens():
    tok = train_tokenizer(TEXTS)
    vocab = vocabulary(tok)
    full = encode(tok, [TEXTS[0]], max_len=40)[0]
    words = _words(TEXTS[0])  # 10 tokens
    assert full[: len(words)].tolist() == [vocab.index(w) for w in words]
    cut = encode(tok, [TEXTS[0]], max_len=4)[0].tolist()
    assert cut == [vocab.index(w) for w in words[:4]]
    assert encode(tok, [], max_len=3).shape == (0, 3)


def test_word_labels_ride_on_their_tokens():
    tok = train_tokenizer(TEXTS)
    vocab = vocabulary(tok)
    sentences = [["A", "dull", "zebra", "film"], ["it's", "well-made", "tune"]]
    labels = [[0, -1, 1, 0], [0, 1, 1]]
    ids, token_labels = encode_words(tok, sentences, labels, max_len=8)
    assert ids.tolist()[0] == [vocab.index("a"), vocab.index("dull"), UNK_ID,
                               vocab.index("film"), 0, 0, 0, 0]  # fmt: skip
    assert token_labels.tolist()[0] == [0, -1, 0, 0, 0, 0, 0, 0]  # unknown "zebra": 0
    # "it's" -> it ' s, "well-made" -> well - made: each piece takes its word's label; the
    # unknown "tune" has 0 whatever its word's label
    assert [vocab[i] for i in ids[1] if i] == ["it", "'", "s", "well", "-", "made", UNK]
    assert token_labels.tolist()[1] == [0, 0, 0, 1, 1, 1, 0, 0]
    assert torch.equal(ids, encode(tok, sentences, max_len=8))
    short_ids, short_labels = encode_words(tok, sentences, labels, max_len=2)
    assert short_ids.tolist() == ids[:, :2].tolist()
    assert short_labels.tolist() == token_labels[:, :2].tolist()


def test_encoding_mistakes_are_config_errors():
    tok = train_tokenizer(TEXTS)
    with pytest.raises(ConfigError, match="sentence 1 has 2 words but 1 labels"):
        encode_words(tok, [["a"], ["a", "b"]], [[0], [1]], 4)
    with pytest.raises(ConfigError, match="2 sentences but 1 label lists"):
        encode_words(tok, [["a"], ["b"]], [[0]], 4)
    with pytest.raises(ConfigError, match="all as lists of words"):
        encode(tok, ["a film", ["a", "film"]], 4)
    for bad in (0, True, 2.0):
        with pytest.raises(ConfigError, match="max_len"):
            encode(tok, ["a"], bad)
    with pytest.raises(ConfigError, match="min_count"):
        train_tokenizer(TEXTS, min_count=0)
    with pytest.raises(ConfigError, match="must start with"):
        word_tokenizer(["good", PAD, UNK])
    with pytest.raises(ConfigError, match="each word once"):
        word_tokenizer([PAD, UNK, "a", "a"])


def test_save_and_load_give_the_same_tokenizer(tmp_path):
    tok = train_tokenizer(TEXTS, min_count=1)
    path = save_tokenizer(tok, tmp_path / "run")
    assert path == tmp_path / "run" / TOKENIZER_FILE and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == [TOKENIZER_FILE]  # no temporary left
    for where in (path, path.parent):
        back = load_tokenizer(where)
        assert vocabulary(back) == vocabulary(tok)
        probe = [*TEXTS, "unseen Words, well-made!"]
        assert torch.equal(encode(back, probe, 12), encode(tok, probe, 12))


def test_bad_tokenizer_files_are_data_errors_naming_the_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_tokenizer(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match=r"bad\.json cannot be read"):
        load_tokenizer(bad)
    spec = json.loads(train_tokenizer(TEXTS).to_str())
    spec["normalizer"] = None  # someone else's tokenizer: no lower-casing
    other = tmp_path / "other.json"
    other.write_text(json.dumps(spec))
    with pytest.raises(DataError, match=r"other\.json is not a word-level tokenizer"):
        load_tokenizer(other)
    spec = json.loads(word_tokenizer([PAD, UNK]).to_str())
    spec["model"]["vocab"] = {UNK: 0, PAD: 1}
    swapped = tmp_path / "swapped.json"
    swapped.write_text(json.dumps(spec))
    with pytest.raises(DataError, match="vocabulary from"):
        load_tokenizer(swapped)


def test_without_tokenizers_the_error_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # import now fails
    with pytest.raises(DataError, match=r"pip install 'distillscope\[text\]'"):
        train_tokenizer(TEXTS)
