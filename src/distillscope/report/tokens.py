"""Sentences with their words coloured by attribution (the token_attribution probe [000 5.4]),
as HTML: each word a ``<span>`` whose background is blue for a positive attribution and red
for a negative one, its opacity the attribution's share of the largest |attribution| of that
sentence and model. Text stays text: selectable, searchable, sharp at any zoom, no PNG.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from distillscope.report.plots import Palette
from distillscope.report.tables import order_rows

__all__ = [
    "NEGATIVE_RGB",
    "POSITIVE_RGB",
    "TokenFigure",
    "parse_token_figure",
    "token_figure",
    "word_style",
]

#: The two ends of matplotlib's RdBu map, the colours the loss-gradient grid uses for the sign.
POSITIVE_RGB = (33, 102, 172)
NEGATIVE_RGB = (178, 24, 43)
#: Opacity above which a word is written in white on its colour.
WHITE_TEXT = 0.55
#: Marks of labelled words in a sentence's first row.
LABEL_MARKS = {1: "+", -1: "\u2212"}

LEGEND = (
    "Each row: one model's Integrated Gradients attribution of every word to the sentence's true "
    "class; blue positive, red negative, the colour's strength the word's share of the largest "
    "|attribution| in that row. + and \u2212 mark the words labelled positive and negative; "
    "\u2717 marks a model that misclassifies the sentence (drawn, but not scored)."
)


@dataclass
class TokenFigure:
    """Drawn sentences and every model's attributions of their words.

    Attributes:
        tokens: Per sentence, its words.
        labels: Per sentence, its class name.
        word_labels: Per sentence, each word's label (1, -1 or 0).
        attributions: Model -> per sentence, each word's attribution in ``[-1, 1]``.
        correct: Model -> per sentence, whether the model classifies it correctly.
    """

    tokens: list[list[str]]
    labels: list[str]
    word_labels: list[list[int]]
    attributions: dict[str, list[list[float]]]
    correct: dict[str, list[bool]]


def _rows(value: object, kind: type | tuple[type, ...]) -> list[list[Any]] | None:
    """``value`` as a list of lists of ``kind``, or ``None``."""
    if not isinstance(value, Sequence) or isinstance(value, str):
        return None
    out = []
    for row in value:
        if not isinstance(row, Sequence) or isinstance(row, str):
            return None
        if not all(isinstance(v, kind) and not isinstance(v, bool) for v in row):
            return None
        out.append(list(row))
    return out


def parse_token_figure(value: Mapping[str, Any]) -> TokenFigure | None:
    """A :class:`TokenFigure` from a probe's ``images`` entry, ``None`` unless every model has
    one row of numbers per sentence, each as long as its sentence; missing labels become
    indices, missing word labels 0, missing ``correct`` flags true.

    Example:
        >>> fig = parse_token_figure({"tokens": [["a", "b"]], "attributions": {"m": [[1, -0.5]]}})
        >>> fig.labels, fig.word_labels, fig.correct
        (['0'], [[0, 0]], {'m': [True]})
        >>> parse_token_figure({"tokens": [["a", "b"]], "attributions": {"m": [[1]]}}) is None
        True
    """
    tokens = _rows(value.get("tokens"), str)
    given = value.get("attributions")
    if not tokens or not isinstance(given, Mapping) or not given:
        return None
    lengths = [len(t) for t in tokens]
    attributions: dict[str, list[list[float]]] = {}
    for model, rows in given.items():
        numbers = _rows(rows, (int, float))
        if numbers is None or [len(r) for r in numbers] != lengths:
            return None
        attributions[str(model)] = [[float(v) for v in r] for r in numbers]
    labels = value.get("labels")
    ok = isinstance(labels, Sequence) and not isinstance(labels, str) and len(labels) == len(tokens)
    word_labels = _rows(value.get("word_labels"), int)
    if word_labels is None or [len(r) for r in word_labels] != lengths:
        word_labels = [[0] * n for n in lengths]
    correct: dict[str, list[bool]] = {}
    flags = value.get("correct") if isinstance(value.get("correct"), Mapping) else {}
    for model in attributions:
        f = flags.get(model)
        good = isinstance(f, Sequence) and len(f) == len(tokens)
        correct[model] = [bool(v) for v in f] if good else [True] * len(tokens)
    return TokenFigure(
        tokens,
        [str(v) for v in labels] if ok else [str(i) for i in range(len(tokens))],
        word_labels,
        attributions,
        correct,
    )


def word_style(a: float) -> str:
    """The inline style of a word with attribution ``a`` in ``[-1, 1]`` (clipped; a value that
    is not finite is drawn as 0).

    Example:
        >>> word_style(-0.5)
        'background:rgba(178,24,43,0.50)'
        >>> word_style(2.0)
        'background:rgba(33,102,172,1.00);color:#fff'
    """
    a = a if math.isfinite(a) else 0.0
    alpha = min(abs(a), 1.0)
    r, g, b = POSITIVE_RGB if a >= 0 else NEGATIVE_RGB
    white = ";color:#fff" if alpha > WHITE_TEXT else ""
    return f"background:rgba({r},{g},{b},{alpha:.2f}){white}"


def _sentence(words: list[str], marks: list[int]) -> str:
    """A sentence's words, the labelled ones marked + or -."""
    spans = []
    for word, mark in zip(words, marks):
        sup = f"<sup>{LABEL_MARKS[mark]}</sup>" if mark in LABEL_MARKS else ""
        cls = ' class="tok lab"' if sup else ' class="tok"'
        spans.append(f"<span{cls}>{escape(word)}{sup}</span>")
    return " ".join(spans)


def _coloured(words: list[str], scores: list[float]) -> str:
    """A sentence's words on their attribution colours, each with its value as a tooltip."""
    return " ".join(
        f'<span class="tok" style="{word_style(a)}" title="{a:+.3f}">{escape(w)}</span>'
        for w, a in zip(words, scores)
    )


def token_figure(figure: TokenFigure, palette: Palette) -> str:
    """The figure as an HTML table: per sentence, a row with its class and labelled words, then
    one row per model (in the report's order, named in its colour) with the coloured words.

    Returns:
        An HTML fragment (``""`` when no model has rows).
    """
    models = order_rows(list(figure.attributions), list(palette.colours))
    if not models:
        return ""
    rows = []
    for i, words in enumerate(figure.tokens):
        head = f"{escape(figure.labels[i])}: {_sentence(words, figure.word_labels[i])}"
        rows.append(f'<tr class="sentence"><th colspan="2">{head}</th></tr>')
        for m in models:
            miss = "" if figure.correct[m][i] else ' <span class="miss">\u2717</span>'
            name = (
                f'<span class="sw" style="background:{palette.colour(m)}"></span>{escape(m)}{miss}'
            )
            rows.append(
                f"<tr><td>{name}</td><td>{_coloured(words, figure.attributions[m][i])}</td></tr>"
            )
    return (
        f'<table class="tokens"><tbody>{"".join(rows)}</tbody></table>'
        f'<p class="note">{escape(LEGEND)}</p>'
    )
