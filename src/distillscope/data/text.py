"""A word-level tokenizer for the text datasets, and word labels carried onto its tokens.

Paper 000 (5.4 and appendix E.3) distils a BERT teacher into smaller BERTs on the Stanford
Sentiment Treebank and scores each model's Integrated Gradients per token against SST's word
labels. Ours is word-level (the contract in :mod:`distillscope.contracts`): a token is a word,
built with the ``tokenizers`` package:

- normaliser: lower-casing (``"Good"`` and ``"good"`` are one word);
- pre-tokenizer: split on whitespace, then every punctuation character stands alone
  (``"it's fine."`` -> ``it ' s fine .``);
- model: ``WordLevel`` over a vocabulary :data:`~distillscope.contracts.PAD` (id 0),
  :data:`~distillscope.contracts.UNK` (id 1), then the training words seen at least
  ``min_count`` times, by descending count, ties in alphabetical order; any other word
  becomes ``UNK``.

:func:`encode` gives ``(N, L)`` int64 ids: a sentence shorter than ``L = max_len`` is padded
with :data:`~distillscope.contracts.PAD_ID` at its end, a longer one keeps its first
``max_len`` tokens (the end is cut). A sentence given as a list of words keeps its words:
the pre-tokenizer runs inside each word, and a word it splits (``"well-made"`` -> ``well - made``)
gives each of its tokens the word's label in :func:`encode_words` (one word is one token
otherwise). Labels of padding and of unknown words are 0, as the contract says.

The ``tokenizers`` package is optional (the ``text`` extra); without it every function here
raises :class:`~distillscope.errors.DataError` naming the install command.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from distillscope.contracts import PAD, PAD_ID, UNK, UNK_ID
from distillscope.errors import ConfigError, DataError, clipped
from distillscope.files import atomic_write_text

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = [
    "CATEGORIES",
    "CLASS_NAMES",
    "TOKENIZER_FILE",
    "encode",
    "encode_words",
    "load_tokenizer",
    "save_tokenizer",
    "train_tokenizer",
    "vocabulary",
    "word_tokenizer",
]

#: Paper 000's four SST sentence classes (SST's neutral class is left out).
CLASS_NAMES = ("very negative", "negative", "positive", "very positive")
#: Negative sentences are classes 0-1, positive ones 2-3 (the class-similarity probe).
CATEGORIES = {"negative": [0, 1], "positive": [2, 3]}
#: File name of a saved tokenizer.
TOKENIZER_FILE = "tokenizer.json"
#: How to get the optional packages of the text data.
INSTALL = "pip install 'distillscope[text]'"

Text = str | Sequence[str]  # a sentence, or its words


def _tokenizers() -> Any:
    """The ``tokenizers`` package, or a one-line :class:`DataError` naming the install."""
    try:
        import tokenizers
    except ImportError:
        raise DataError(
            f"text data needs the tokenizers package, which is not installed; run `{INSTALL}`"
        ) from None
    return tokenizers


def word_tokenizer(vocab: Sequence[str]) -> Tokenizer:
    """The word-level tokenizer of ``vocab`` (token id -> word, ``PAD`` and ``UNK`` first).

    Example:
        >>> tok = word_tokenizer(["[PAD]", "[UNK]", "good", "film"])
        >>> tok.encode("A GOOD film").ids
        [1, 2, 3]
    """
    vocab = list(vocab)
    if vocab[:2] != [PAD, UNK] or len(set(vocab)) != len(vocab):
        raise ConfigError(
            f"a vocabulary must start with {PAD!r}, {UNK!r} and hold each word once, got "
            f"{clipped(vocab[:4])}...; build it with train_tokenizer"
        )
    tk = _tokenizers()
    model = tk.models.WordLevel({word: i for i, word in enumerate(vocab)}, unk_token=UNK)
    tokenizer = tk.Tokenizer(model)
    tokenizer.normalizer = tk.normalizers.Lowercase()
    tokenizer.pre_tokenizer = tk.pre_tokenizers.Sequence(
        [tk.pre_tokenizers.WhitespaceSplit(), tk.pre_tokenizers.Punctuation("isolated")]
    )
    return tokenizer


def _words(tokenizer: Tokenizer, text: Text) -> list[str]:
    """The tokens ``text`` is split into, as words (normalised, pre-tokenized)."""
    pieces = [text] if isinstance(text, str) else list(text)
    out: list[str] = []
    for piece in pieces:
        normal = tokenizer.normalizer.normalize_str(piece)
        out += [word for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(normal)]
    return out


def train_tokenizer(texts: Sequence[Text], min_count: int = 1) -> Tokenizer:
    """A word-level tokenizer whose vocabulary is the words of ``texts`` (module docstring).

    Args:
        texts: Training sentences, each a string or a list of words.
        min_count: Keep the words seen at least this often; the rest become ``UNK``.

    Example:
        >>> texts = ["a dull film.", "A fine film", "fine, fine"]
        >>> vocabulary(train_tokenizer(texts))
        ('[PAD]', '[UNK]', 'fine', 'a', 'film', ',', '.', 'dull')
        >>> vocabulary(train_tokenizer(texts, min_count=2))
        ('[PAD]', '[UNK]', 'fine', 'a', 'film')
    """
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ConfigError(f"min_count={min_count!r} is invalid; use an integer >= 1")
    splitter = word_tokenizer([PAD, UNK])
    counts = Counter(word for text in texts for word in _words(splitter, text))
    for special in (PAD, UNK):  # "[pad]" never comes out of the pre-tokenizer; be sure
        counts.pop(special, None)
    kept = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return word_tokenizer([PAD, UNK, *kept])


def vocabulary(tokenizer: Tokenizer) -> tuple[str, ...]:
    """The tokenizer's words by token id (``DatasetInfo.vocab``)."""
    by_id = sorted(tokenizer.get_vocab(with_added_tokens=False).items(), key=lambda kv: kv[1])
    return tuple(word for word, _ in by_id)


def _check_max_len(max_len: int) -> int:
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise ConfigError(f"max_len={max_len!r} is invalid; use an integer >= 1")
    return max_len


def _pad(rows: Sequence[Sequence[int]], max_len: int) -> Tensor:
    """``(N, max_len)`` int64: each row's first ``max_len`` values, then :data:`PAD_ID`."""
    out = torch.full((len(rows), max_len), PAD_ID, dtype=torch.int64)  # (N, L)
    for i, row in enumerate(rows):
        head = list(row[:max_len])
        out[i, : len(head)] = torch.tensor(head, dtype=torch.int64)
    return out


def encode(tokenizer: Tokenizer, texts: Sequence[Text], max_len: int) -> Tensor:
    """``(N, max_len)`` int64 token ids of ``texts`` (strings or lists of words): padded with
    :data:`~distillscope.contracts.PAD_ID` at the end, a longer sentence cut to its first
    ``max_len`` tokens.

    Example:
        >>> tok = word_tokenizer(["[PAD]", "[UNK]", "good", "film", "."])
        >>> encode(tok, ["good film.", "a good, good film"], max_len=4).tolist()
        [[2, 3, 4, 0], [1, 2, 1, 2]]
    """
    max_len = _check_max_len(max_len)
    words = [not isinstance(t, str) for t in texts]
    if any(words) and not all(words):
        raise ConfigError("encode takes all sentences as strings or all as lists of words")
    if not texts:
        return torch.zeros(0, max_len, dtype=torch.int64)
    inputs = [t if isinstance(t, str) else list(t) for t in texts]
    batch = tokenizer.encode_batch(inputs, is_pretokenized=all(words), add_special_tokens=False)
    return _pad([e.ids for e in batch], max_len)


def encode_words(
    tokenizer: Tokenizer,
    sentences: Sequence[Sequence[str]],
    word_labels: Sequence[Sequence[int]],
    max_len: int,
) -> tuple[Tensor, Tensor]:
    """Token ids and the word labels carried onto the tokens, ``(N, max_len)`` int64 each.

    A token takes the label of the word it came from (word-level: one word is one token; a
    word the pre-tokenizer splits gives the label to each piece); padding and unknown words
    (``UNK``) get 0; a sentence is cut as :func:`encode` cuts it.

    Args:
        tokenizer: A word-level tokenizer (:func:`train_tokenizer`).
        sentences: Each sentence's words.
        word_labels: One label per word (``POSITIVE``, ``NEGATIVE`` or 0).
        max_len: The padded length ``L``.

    Example:
        >>> tok = word_tokenizer(["[PAD]", "[UNK]", "a", "fine", "film", "-"])
        >>> ids, labels = encode_words(tok, [["a", "fine-film", "indeed"]], [[0, 1, -1]], 6)
        >>> ids.tolist(), labels.tolist()
        ([[2, 3, 5, 4, 1, 0]], [[0, 1, 1, 1, 0, 0]])
    """
    max_len = _check_max_len(max_len)
    if len(sentences) != len(word_labels):
        raise ConfigError(f"{len(sentences)} sentences but {len(word_labels)} label lists")
    for i, (words, labels) in enumerate(zip(sentences, word_labels)):
        if len(words) != len(labels):
            raise ConfigError(f"sentence {i} has {len(words)} words but {len(labels)} labels")
    if not sentences:
        empty = torch.zeros(0, max_len, dtype=torch.int64)
        return empty, empty.clone()
    inputs = [list(s) for s in sentences]
    batch = tokenizer.encode_batch(inputs, is_pretokenized=True, add_special_tokens=False)
    ids, labels = [], []
    for enc, word_label in zip(batch, word_labels):
        ids.append(enc.ids)
        labels.append(
            [0 if t == UNK_ID else int(word_label[w]) for t, w in zip(enc.ids, enc.word_ids)]
        )
    return _pad(ids, max_len), _pad(labels, max_len)


def save_tokenizer(tokenizer: Tokenizer, folder: str | Path) -> Path:
    """Write ``tokenizer`` to ``folder/tokenizer.json`` (atomically) and return the path."""
    path = Path(folder) / TOKENIZER_FILE
    atomic_write_text(path, tokenizer.to_str(pretty=True))
    return path


def load_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer saved in ``path`` (a ``tokenizer.json`` or the folder holding one).

    Raises:
        DataError: The file is missing, unreadable, or not a word-level tokenizer whose
            vocabulary starts with ``PAD``, ``UNK``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    tk = _tokenizers()
    fix = "save it again with save_tokenizer"
    try:
        text = path.read_text(encoding="utf-8")
        spec = json.loads(text)
        tokenizer = tk.Tokenizer.from_str(text)
    except FileNotFoundError:
        raise DataError(f"tokenizer file {path} not found; {fix}") from None
    except Exception as exc:  # OSError, JSON errors, and tokenizers' own plain Exception
        problem = " ".join(str(exc).split())[:120]
        raise DataError(f"tokenizer file {path} cannot be read ({problem}); {fix}") from None
    vocab = vocabulary(tokenizer)
    ours = json.loads(word_tokenizer([PAD, UNK]).to_str())
    if (
        not isinstance(spec, dict)
        or not isinstance(spec.get("model"), dict)
        or spec["model"].get("type") != "WordLevel"
        or vocab[:2] != (PAD, UNK)
        or any(spec.get(key) != ours[key] for key in ("normalizer", "pre_tokenizer"))
    ):
        raise DataError(
            f"tokenizer file {path} is not a word-level tokenizer of this project (lower-case, "
            f"whitespace and punctuation, vocabulary from {PAD}, {UNK}); {fix}"
        )
    return tokenizer
