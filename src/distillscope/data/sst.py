"""The Stanford Sentiment Treebank (Socher et al. 2013), four sentence classes and word labels.

Paper 000 (5.4, appendix E.3) trains BERTs on SST's sentences in four classes, SST's neutral
class left out, and scores Integrated Gradients per token against SST's word labels. Read from
the published PTB trees (``trainDevTestTrees_PTB.zip``: ``trees/train.txt``, ``dev.txt``,
``test.txt``), one tree per line, every node ``(label children)`` with a sentiment label 0..4
(0 very negative, 2 neutral, 4 very positive) and every leaf ``(label word)``::

    (3 (2 It) (4 (4 (2 's) (4 (3 (2 a) (3 lark)) ...

- **sentence label**: the root's, 0, 1, 3, 4 -> classes 0, 1, 2, 3
  (:data:`~distillscope.data.text.CLASS_NAMES`); sentences whose root is 2 (neutral) are left
  out;
- **word labels**: each leaf's own label, 0 or 1 -> :data:`~distillscope.contracts.NEGATIVE`,
  3 or 4 -> :data:`~distillscope.contracts.POSITIVE`, 2 -> 0;
- **words**: the leaves, with the PTB escapes ``-LRB-`` / ``-RRB-`` read back as ``(`` / ``)``;
  tokenized word-level (:mod:`distillscope.data.text`), the vocabulary from the sentences
  kept of ``train.txt``.

The folder is ``root`` (and nothing else) when given, else ``$DISTILLSCOPE_DATA``, else
``~/.cache/distillscope/data``; in it the three files may sit directly or in ``trees/``,
``sst/``, ``sst/trees/`` or ``trainDevTestTrees_PTB/trees/``. Nothing is downloaded.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from distillscope.contracts import NEGATIVE, PAD_ID, POSITIVE
from distillscope.data import text
from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.data.subsets import check_split
from distillscope.data.vision import CACHE_DIR, DATA_ENV
from distillscope.errors import ConfigError, DataError
from distillscope.registry import register_text_dataset

__all__ = ["HOLDOUTS", "SUBDIRS", "Tree", "parse_tree", "read_trees", "sst"]

log = logging.getLogger(__name__)

#: Subfolders searched inside the place (besides the place itself).
SUBDIRS = ("trees", "sst", "sst/trees", "trainDevTestTrees_PTB/trees")
#: The held-out files each ``holdout`` reads (paper 000 scores attributions on both).
HOLDOUTS = {"test": ("test.txt",), "dev": ("dev.txt",), "dev+test": ("dev.txt", "test.txt")}
#: Root label -> sentence class (2, neutral, is left out).
SENTENCE_CLASS = {0: 0, 1: 1, 3: 2, 4: 3}
#: Leaf label -> word label.
WORD_LABEL = {0: NEGATIVE, 1: NEGATIVE, 2: 0, 3: POSITIVE, 4: POSITIVE}
#: PTB escapes of the brackets, read back.
UNESCAPE = {"-LRB-": "(", "-RRB-": ")"}
WHERE = "https://nlp.stanford.edu/sentiment/ (trainDevTestTrees_PTB.zip)"

Tree = tuple[int, list[str], list[int]]  # (root label, leaf words, leaf labels)


class _Malformed(ValueError):
    """A line that is not one PTB tree; its message says why."""


def _tokens(line: str) -> list[str]:
    return line.replace("(", " ( ").replace(")", " ) ").split()


def parse_tree(line: str) -> Tree:
    """The root label, the leaves' words and the leaves' labels of one PTB tree.

    Raises:
        ValueError: The line is not one well-formed tree (the message says what is wrong).

    Example:
        >>> parse_tree("(3 (2 It) (4 (3 works) (2 .)))")
        (3, ['It', 'works', '.'], [2, 3, 2])
    """
    tokens = _tokens(line)
    if not tokens or tokens[0] != "(":
        raise _Malformed("it does not start with '('")
    words: list[str] = []
    labels: list[int] = []
    stack: list[list[int]] = []  # open nodes: [label, children seen]
    root = -1
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not stack and root >= 0:
            if token == ")":
                raise _Malformed("unbalanced parentheses (a ')' closes nothing)")
            raise _Malformed("text follows the end of the tree")
        if token == "(":
            if i + 1 >= len(tokens) or tokens[i + 1] in ("(", ")"):
                raise _Malformed("a node has no label")
            label = _label(tokens[i + 1])
            if stack and stack[-1][1] < 0:
                raise _Malformed("a leaf '(label word)' has children")
            if stack:
                stack[-1][1] += 1
            stack.append([label, 0])
            i += 2
            if i < len(tokens) and tokens[i] not in ("(", ")"):  # a leaf: (label word)
                words.append(UNESCAPE.get(tokens[i], tokens[i]))
                labels.append(label)
                stack[-1][1] = -1  # marks a leaf
                i += 1
            continue
        if token == ")":
            label, children = stack.pop()
            if children == 0:
                raise _Malformed("a node has neither a word nor children")
            if not stack:
                root = label
            i += 1
            continue
        raise _Malformed(f"word {token!r} is not alone in a leaf '(label word)'")
    if stack:
        raise _Malformed(f"unbalanced parentheses ({len(stack)} '(' left open)")
    return root, words, labels


def _label(token: str) -> int:
    try:
        label = int(token)
    except ValueError:
        raise _Malformed(f"label {token!r} is not an integer") from None
    if label not in WORD_LABEL:
        raise _Malformed(f"label {label} is outside 0..4")
    return label


def read_trees(path: Path) -> list[Tree]:
    """Every tree of a PTB file, one per line (blank lines skipped).

    Raises:
        DataError: One line naming the file, the line and what is wrong with it.
    """
    trees = []
    try:
        with open(path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    trees.append(parse_tree(line))
                except _Malformed as exc:
                    raise DataError(
                        f"{path}, line {number}: not a PTB sentiment tree: {exc}; replace the "
                        f"file with the one from {WHERE}"
                    ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(
            f"cannot read {path} ({exc}); replace it with the one from {WHERE}"
        ) from None
    if not trees:
        raise DataError(f"{path} holds no tree; replace it with the one from {WHERE}")
    return trees


def search_places(root: str | os.PathLike[str] | None) -> list[Path]:
    """The folders searched for ``train.txt``, in order (module docstring)."""
    if root is not None:
        base = Path(root).expanduser()
    elif os.environ.get(DATA_ENV):
        base = Path(os.environ[DATA_ENV]).expanduser()
    else:
        base = CACHE_DIR
    return [base, *(base / s for s in SUBDIRS)]


def find_folder(root: str | os.PathLike[str] | None, files: tuple[str, ...]) -> Path:
    """The first searched folder holding ``train.txt``, checked to hold ``files`` too.

    Raises:
        DataError: No folder holds ``train.txt``, or the one that does lacks a file.
    """
    places = search_places(root)
    folder = next((p for p in places if (p / "train.txt").is_file()), None)
    if folder is None:
        raise DataError(
            f"SST not found: no train.txt in {places[0]} or its subfolders "
            f"{', '.join(SUBDIRS)}; download {WHERE}, unzip it and pass --data-root (or set "
            f"{DATA_ENV}) to the folder holding trees/ (nothing is downloaded for you)"
        )
    missing = [name for name in files if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"SST in {folder} lacks {', '.join(missing)}; put the trees/ files of {WHERE} "
            "there (train.txt, dev.txt and test.txt)"
        )
    return folder


def _labelled(trees: list[Tree]) -> tuple[list[list[str]], list[list[int]], list[int]]:
    """The non-neutral sentences: their words, word labels and classes."""
    kept = [t for t in trees if t[0] in SENTENCE_CLASS]
    words = [t[1] for t in kept]
    labels = [[WORD_LABEL[x] for x in t[2]] for t in kept]
    return words, labels, [SENTENCE_CLASS[t[0]] for t in kept]


@register_text_dataset("sst")
def sst(
    split: str,
    root: str | None = None,
    max_len: int = 64,
    min_count: int = 2,
    holdout: str = "test",
) -> TensorDataset:
    """SST sentences in four classes with word labels, from the PTB trees (module docstring).

    Args:
        split: ``"train"`` (``train.txt``) or ``"test"`` (the ``holdout`` files).
        root: The folder holding the trees (module docstring for the search).
        max_len: The padded length ``L``; a longer sentence keeps its first ``max_len``
            tokens (the number cut is logged); 64 holds nearly every SST sentence.
        min_count: Keep the training words seen at least this often in the vocabulary
            (2: a word seen once in training becomes ``UNK``, so ``UNK`` is trained too).
        holdout: The held-out files: ``test`` (``test.txt``), ``dev`` (``dev.txt``) or
            ``dev+test`` (both, as paper 000's attribution scores).

    Returns:
        ``(N, max_len)`` token ids with ``token_labels``; ``info.vocab`` is ``train.txt``'s
        vocabulary.
    """
    train = check_split(split)
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise ConfigError(f"sst.max_len={max_len!r} is invalid; use an integer >= 1")
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ConfigError(f"sst.min_count={min_count!r} is invalid; use an integer >= 1")
    if holdout not in HOLDOUTS:
        raise ConfigError(f"sst.holdout={holdout!r} is invalid; use one of {', '.join(HOLDOUTS)}")
    files = ("train.txt",) if train else ("train.txt", *HOLDOUTS[holdout])
    folder = find_folder(root, files)
    train_words, train_labels, train_y = _labelled(read_trees(folder / "train.txt"))
    tokenizer = text.train_tokenizer(train_words, min_count)
    if train:
        words, labels, y = train_words, train_labels, train_y
    else:
        words, labels, y = [], [], []
        for name in HOLDOUTS[holdout]:
            part = _labelled(read_trees(folder / name))
            words, labels, y = words + part[0], labels + part[1], y + part[2]
    if not y:
        raise DataError(
            f"SST in {folder} has no non-neutral sentence for the {split} split; replace the "
            f"files with those of {WHERE}"
        )
    ids, token_labels = text.encode_words(tokenizer, words, labels, max_len + 1)  # (N, L + 1)
    cut = int((ids[:, max_len] != PAD_ID).sum())  # sentences with a token past L
    ids, token_labels = ids[:, :max_len].contiguous(), token_labels[:, :max_len].contiguous()
    if cut:
        log.info("sst %s: %d of %d sentences cut to max_len=%d tokens", split, cut, len(y), max_len)
    info = DatasetInfo(
        name="sst",
        num_classes=len(text.CLASS_NAMES),
        input_shape=(max_len,),
        class_names=list(text.CLASS_NAMES),
        categories={name: list(v) for name, v in text.CATEGORIES.items()},
        pixel_range=None,
        source=str(folder),
        vocab=text.vocabulary(tokenizer),
    )
    return TensorDataset(ids, torch.tensor(y, dtype=torch.int64), info, token_labels=token_labels)
