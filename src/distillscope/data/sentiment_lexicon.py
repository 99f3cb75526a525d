"""Generated sentiment sentences with exact word labels, from the VADER lexicon (offline).

A small stand-in for the Stanford Sentiment Treebank of paper 000 (5.4): four sentence classes
(:data:`~distillscope.data.text.CLASS_NAMES`) and a polarity label on every word, so that a
model's per-token attributions can be scored against the words that carry the sentiment.
Ours, generated at CPU scale and deterministic from ``data_seed``:

- **lexicon**: the VADER lexicon (Hutto & Gilbert 2014), ``vader_lexicon.txt`` as the
  ``vaderSentiment`` package ships it (MIT licence), read from the installed package. Its
  words are rated from -4 to 4 (a mean of ten raters, given to one decimal; a word listed twice
  keeps its last rating, as VADER's own reader does). We keep the words of letters only with
  ``|rating| >= 1`` (:data:`MIN_POLARITY`: clearly polar) and draw ``words_per_sign`` of each
  sign (one draw per ``data_seed``, shared by both splits);
- **sentences**: one to three clauses joined by ``and`` / ``but`` / ``while``, each clause
  a template filled with one lexicon word (``"the plot was {w}"``, ``"i found the cast {w}"``),
  an optional neutral opening (``"all in all ,"``) and a final ``.``. Every template word is
  outside the lexicon (a test checks it), so it is labelled 0. Each clause's word has the
  sentence's leading sign, or the other one with probability :data:`CONTRAST` (mixed
  sentences: a model must weigh the words, not find one);
- **sentence label**: ``S`` = the sum of the lexicon ratings of the sentence's words (summed
  exactly, in tenths). ``S > 0`` is positive, ``S < 0`` negative (``S = 0`` is never kept);
  ``|S| >= 3`` (:data:`VERY`) makes it *very* positive / negative, else plain: classes
  0 very negative (``S <= -3``), 1 negative (``-3 < S < 0``), 2 positive (``0 < S < 3``),
  3 very positive (``S >= 3``);
- **word labels**: :data:`~distillscope.contracts.POSITIVE` for a lexicon word rated above 0,
  :data:`~distillscope.contracts.NEGATIVE` below, 0 for every other token;
- **classes** are balanced: candidates are drawn in rounds and each class takes the first
  ``n / 4`` of its own (the first ``n % 4`` classes one more).

Inputs are ``(N, max_len)`` token ids (:mod:`distillscope.data.text`) of the vocabulary of the
training sentences; ``max_len`` must hold the longest sentence the templates can make
(:data:`LONGEST`), so nothing is ever cut.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import torch

from distillscope.contracts import NEGATIVE, POSITIVE
from distillscope.data import text
from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.data.subsets import check_split
from distillscope.errors import ConfigError, DataError
from distillscope.registry import register_text_dataset

__all__ = ["LONGEST", "lexicon", "sentence_classes", "sentiment_lexicon"]

#: The package that ships the lexicon, and the file in it.
PACKAGE = "vaderSentiment"
LEXICON_FILE = "vader_lexicon.txt"
#: Smallest ``|rating|`` (VADER's -4..4 scale) of a word we use: clearly polar words only.
MIN_POLARITY = 1.0
#: ``|S|`` from which a sentence is *very* positive / negative (about one strong word or two
#: plain ones, on VADER's scale).
VERY = 3.0
#: Chance that a clause's word has the other sign than the sentence's leading one.
CONTRAST = 0.25
#: Most clauses (lexicon words) in a sentence.
MAX_CLAUSES = 3

#: Clause templates, one lexicon word each; ``{s}`` a subject, ``{v}`` a verb.
CLAUSES = (
    "{s} {v} {w}",
    "i found {s} {w}",
    "{s} {v} just {w}",
    "what a {w} {n}",
)
SUBJECTS = (
    "the film", "this movie", "the plot", "the script", "the cast", "the ending",
    "the story", "the soundtrack", "the director", "the dialogue", "the pacing",
    "the screenplay", "the editing", "the acting", "the music",
)  # fmt: skip
VERBS = ("is", "was", "seems", "feels", "remains", "looked")
NOUNS = ("film", "movie", "story", "script", "ending", "cast")
JOINS = ("and", "but", "while")
OPENINGS = ("", "all in all ,", "in short ,", "overall ,", "to me ,")


def _clause_tokens(template: str) -> int:
    """Tokens of the longest filling of a clause template."""
    subject = max(len(s.split()) for s in SUBJECTS)
    return sum(subject if t == "{s}" else 1 for t in template.split())


#: Tokens of the longest sentence the templates can make: opening, clauses, joins and ``.``.
LONGEST = (
    max(len(o.split()) for o in OPENINGS)
    + MAX_CLAUSES * max(_clause_tokens(c) for c in CLAUSES)
    + (MAX_CLAUSES - 1)
    + 1
)


@functools.cache
def lexicon() -> Mapping[str, float]:
    """The VADER lexicon as shipped by ``vaderSentiment``: word -> mean rating in [-4, 4]
    (read once, read-only).

    Raises:
        DataError: The package is not installed, or its file cannot be read.
    """
    from importlib import resources

    try:
        content = (resources.files(PACKAGE) / LEXICON_FILE).read_text(encoding="utf-8")
    except ModuleNotFoundError:
        raise DataError(
            f"sentiment-lexicon needs the VADER lexicon of the {PACKAGE} package, which is not "
            f"installed; run `pip install {PACKAGE}` (or `pip install 'distillscope[text]'`)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(
            f"cannot read {LEXICON_FILE} of the {PACKAGE} package ({exc}); reinstall it with "
            f"`pip install --force-reinstall {PACKAGE}`"
        ) from None
    out: dict[str, float] = {}
    for number, line in enumerate(content.splitlines(), 1):
        fields = line.split("\t")
        try:
            out[fields[0]] = float(fields[1])  # a repeated word keeps its last rating (VADER)
        except (IndexError, ValueError):
            raise DataError(
                f"{LEXICON_FILE} of the {PACKAGE} package, line {number}, is not "
                f"'word<TAB>rating'; reinstall it with `pip install --force-reinstall {PACKAGE}`"
            ) from None
    return MappingProxyType(out)


def sentence_classes(tenths: np.ndarray) -> np.ndarray:
    """The classes of sentences whose lexicon ratings sum to ``tenths / 10`` (module
    docstring), -1 for a sum of 0 (such a sentence is never kept).

    Args:
        tenths: ``(m,)`` integer sums of ratings in tenths (exact: VADER gives one decimal).

    Returns:
        ``(m,)`` classes: 0 very negative, 1 negative, 2 positive, 3 very positive.

    Example:
        >>> sentence_classes(np.array([-30, -29, 0, 1, 29, 30])).tolist()
        [0, 1, -1, 2, 2, 3]
    """
    very = round(VERY * 10)
    positive = np.where(tenths >= very, 3, 2)
    negative = np.where(tenths <= -very, 0, 1)
    return np.where(tenths > 0, positive, np.where(tenths < 0, negative, -1))


def _pools(words_per_sign: int, data_seed: int) -> tuple[list[str], ...]:
    """The drawn positive words, sorted, then the negative ones (one draw per seed)."""
    lex = lexicon()
    polar = {w: r for w, r in lex.items() if re.fullmatch(r"[a-z]+", w) and abs(r) >= MIN_POLARITY}
    rng = np.random.default_rng([data_seed, 2])  # the same pool for both splits
    out = []
    for sign in (1, -1):
        words = sorted(w for w, r in polar.items() if r * sign > 0)
        if len(words) < words_per_sign:
            raise ConfigError(
                f"sentiment-lexicon.words_per_sign={words_per_sign} is more than the lexicon "
                f"has ({len(words)} words of that sign); use at most {len(words)}"
            )
        out.append(sorted(rng.choice(words, size=words_per_sign, replace=False).tolist()))
    return tuple(out)


def _tenths(words: list[str]) -> np.ndarray:
    """``(len(words),)`` int64 lexicon ratings in tenths (exact: VADER gives one decimal)."""
    lex = lexicon()
    return np.array([round(lex[w] * 10) for w in words], dtype=np.int64)


def _candidates(
    n: int, ratings: tuple[np.ndarray, np.ndarray], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """``n`` sentences' classes, balanced, with their words: ``count`` ``(n,)`` clauses,
    ``sign`` and ``word`` ``(n, MAX_CLAUSES)`` (each slot's sign and index into that sign's
    pool; slots past ``count`` unused). Drawn in rounds; each class keeps its first ones."""
    k = len(text.CLASS_NAMES)
    left = np.bincount(np.arange(n) % k, minlength=k)  # (K,) the quota still to fill
    rounds: list[dict[str, np.ndarray]] = []
    while left.any():
        m = max(4 * n, 256)
        count = rng.integers(1, MAX_CLAUSES + 1, m)  # (m,)
        lead = rng.choice(np.array([-1, 1]), m)  # (m,) the sentence's leading sign
        flip = rng.random((m, MAX_CLAUSES)) < CONTRAST  # (m, C)
        sign = np.where(flip, -lead[:, None], lead[:, None])  # (m, C)
        word = rng.integers(0, len(ratings[0]), (m, MAX_CLAUSES))  # (m, C)
        used = np.arange(MAX_CLAUSES)[None] < count[:, None]  # (m, C)
        rating = np.where(sign > 0, ratings[0][word], ratings[1][word])  # (m, C) tenths
        label = sentence_classes((rating * used).sum(1))  # (m,)
        keep = np.zeros(m, dtype=bool)
        for c in range(k):
            rows = np.flatnonzero(label == c)[: left[c]]
            keep[rows] = True
            left[c] -= len(rows)
        rounds.append({"label": label[keep], "count": count[keep], "sign": sign[keep],
                       "word": word[keep]})  # fmt: skip
    out = {key: np.concatenate([r[key] for r in rounds]) for key in rounds[0]}
    order = rng.permutation(n)
    return {key: value[order] for key, value in out.items()}


def _sentences(
    picks: dict[str, np.ndarray], pools: tuple[list[str], list[str]], rng: np.random.Generator
) -> tuple[list[list[str]], list[list[int]]]:
    """Each sentence's words and word labels, templates filled with the picked words."""
    sentences, labels = [], []
    for count, signs, words in zip(picks["count"], picks["sign"], picks["word"]):
        opening = OPENINGS[rng.integers(len(OPENINGS))].split()
        tokens, polarity = list(opening), [0] * len(opening)
        for j in range(count):
            if j:
                tokens.append(JOINS[rng.integers(len(JOINS))])
                polarity.append(0)
            positive = signs[j] > 0
            lexicon_word = pools[0 if positive else 1][words[j]]
            clause = CLAUSES[rng.integers(len(CLAUSES))].format(
                s=SUBJECTS[rng.integers(len(SUBJECTS))],
                v=VERBS[rng.integers(len(VERBS))],
                n=NOUNS[rng.integers(len(NOUNS))],
                w="{w}",
            )
            for token in clause.split():
                is_word = token == "{w}"
                tokens.append(lexicon_word if is_word else token)
                polarity.append((POSITIVE if positive else NEGATIVE) if is_word else 0)
        sentences.append([*tokens, "."])
        labels.append([*polarity, 0])
    return sentences, labels


def _check_int(key: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"sentiment-lexicon.{key}={value!r} is invalid; use an integer >= {low}")
    return value


def _split(
    train: bool, n: int, pools: tuple[list[str], list[str]], ratings: tuple, data_seed: int
) -> tuple[list[list[str]], list[list[int]], np.ndarray]:
    """One split's sentences, word labels and ``(n,)`` classes."""
    rng = np.random.default_rng([data_seed, int(train)])
    picks = _candidates(n, ratings, rng)
    sentences, labels = _sentences(picks, pools, rng)
    return sentences, labels, picks["label"]


@register_text_dataset("sentiment-lexicon")
def sentiment_lexicon(
    split: str,
    root: str | None = None,
    n_train: int = 8000,
    n_test: int = 2000,
    max_len: int = 24,
    min_count: int = 1,
    words_per_sign: int = 250,
    data_seed: int = 0,
) -> TensorDataset:
    """Generated sentiment sentences in four classes, with word labels (module docstring).

    Args:
        split: ``"train"`` or ``"test"``.
        root: Ignored (the data is generated; the lexicon comes from the installed package).
        n_train: Sentences of the training split.
        n_test: Sentences of the held-out split.
        max_len: The padded length ``L``, at least :data:`LONGEST` (nothing is cut).
        min_count: Keep the training words seen at least this often in the vocabulary.
        words_per_sign: Lexicon words drawn of each sign (the sentences' sentiment words).
        data_seed: Seed of the words drawn and of the sentences; the splits are independent
            draws over the same words.

    Returns:
        ``(N, max_len)`` token ids with ``token_labels`` (``(N, max_len)``: 1 positive word,
        -1 negative word, 0 otherwise); ``info.vocab`` is the training split's vocabulary.

    Example:
        >>> ds = sentiment_lexicon("test", n_train=400, n_test=40)
        >>> tuple(ds.inputs.shape), torch.bincount(ds.targets).tolist(), ds.info.vocab[:2]
        ((40, 24), [10, 10, 10, 10], ('[PAD]', '[UNK]'))
    """
    train = check_split(split)
    n_train = _check_int("n_train", n_train, len(text.CLASS_NAMES))
    n_test = _check_int("n_test", n_test, len(text.CLASS_NAMES))
    max_len = _check_int("max_len", max_len, 1)
    if max_len < LONGEST:
        raise ConfigError(
            f"sentiment-lexicon.max_len={max_len} would cut sentences (the longest has "
            f"{LONGEST} tokens); use max_len >= {LONGEST}"
        )
    min_count = _check_int("min_count", min_count, 1)
    words_per_sign = _check_int("words_per_sign", words_per_sign, 1)
    data_seed = _check_int("data_seed", data_seed, 0)
    pools = _pools(words_per_sign, data_seed)  # (positive words, negative words)
    ratings = (_tenths(pools[0]), _tenths(pools[1]))
    train_sentences, train_labels, train_y = _split(True, n_train, pools, ratings, data_seed)
    tokenizer = text.train_tokenizer(train_sentences, min_count)
    if train:
        sentences, labels, y = train_sentences, train_labels, train_y
    else:
        sentences, labels, y = _split(False, n_test, pools, ratings, data_seed)
    ids, token_labels = text.encode_words(tokenizer, sentences, labels, max_len)  # (N, L) each
    info = DatasetInfo(
        name="sentiment-lexicon",
        num_classes=len(text.CLASS_NAMES),
        input_shape=(max_len,),
        class_names=list(text.CLASS_NAMES),
        categories={name: list(v) for name, v in text.CATEGORIES.items()},
        pixel_range=None,
        vocab=text.vocabulary(tokenizer),
    )
    return TensorDataset(ids, torch.from_numpy(y.astype(np.int64)), info,
                         token_labels=token_labels)  # fmt: skip
