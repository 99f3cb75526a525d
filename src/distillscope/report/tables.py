"""Pure data helpers of the report: parse result keys, order rows, format numbers.

A probe's value keys are ``"<model>[/<metric>]"`` or ``"<teacher>-><model>[/<metric>]"``. The
report shows them as a table with one row per model (or pair) and one column per metric; the
metric ``""`` is the probe's main value, shown under the probe's own name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MISSING = "—"
"""What the report shows for a value that is absent, ``None`` or NaN."""

PAIR = "->"


def format_value(value: object) -> str:
    """Format one number for a table cell, the same way everywhere in the report.

    Integers get thousands separators; floats four decimals, or scientific notation when they
    are tiny or huge; ``None`` and NaN become an em dash.

    Example:
        >>> [format_value(v) for v in (0.91234, 272474, 1e-05, None, float("nan"), 12345.6)]
        ['0.9123', '272,474', '1.000e-05', '—', '—', '12,346']
    """
    if value is None or isinstance(value, bool):
        return MISSING if value is None else str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if not isinstance(value, float):
        return str(value)
    if math.isnan(value):
        return MISSING
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    size = abs(value)
    if size != 0 and (size < 1e-3 or size >= 1e15):
        return f"{value:.3e}"
    if size >= 1e4:
        return f"{value:,.0f}"
    return f"{value + 0.0:.4f}"  # + 0.0 turns -0.0 into 0.0


def split_key(key: str) -> tuple[str, str]:
    """Split a value key into its row (model or pair) and its metric (``""`` if none).

    Example:
        >>> split_key("teacher->kd/kl"), split_key("kd")
        (('teacher->kd', 'kl'), ('kd', ''))
    """
    row, _, metric = key.partition("/")
    return row, metric


def subject(row: str) -> str:
    """The model a row is about: the model itself, or the student of a pair.

    Example:
        >>> subject("teacher->kd"), subject("kd")
        ('kd', 'kd')
    """
    return row.rpartition(PAIR)[2]


def row_label(row: str) -> str:
    """How a row is shown: pairs read ``"teacher -> model"``.

    Example:
        >>> row_label("teacher->kd")
        'teacher -> kd'
    """
    return row.replace(PAIR, f" {PAIR} ")


def order_rows(rows: Sequence[str], models: Sequence[str]) -> list[str]:
    """Sort rows by the display order of their model; a model's own row comes before its pairs.

    Rows about unknown models keep their first-seen order, after the known ones.

    Example:
        >>> order_rows(["t->b", "b", "zz", "t->a"], ["t", "a", "b"])
        ['t->a', 'b', 't->b', 'zz']
    """
    position = {name: i for i, name in enumerate(models)}

    def key(row: str) -> tuple[int, int, int]:
        teacher = row.rpartition(PAIR)[0]
        is_pair = int(bool(teacher))
        return position.get(subject(row), len(position)), is_pair, position.get(teacher, 0)

    return sorted(dict.fromkeys(rows), key=key)


@dataclass(frozen=True)
class ValueTable:
    """A probe's values as a table.

    Attributes:
        rows: Row keys (``"kd"`` or ``"teacher->kd"``) in display order.
        columns: Metric names in first-seen order; ``""`` is the probe's main value.
        cells: ``(row, column) -> value``; absent cells are missing values.
    """

    rows: list[str]
    columns: list[str]
    cells: dict[tuple[str, str], float | None]

    def get(self, row: str, column: str) -> float | None:
        """The cell's value, ``None`` if absent."""
        return self.cells.get((row, column))


def value_table(values: Mapping[str, float | None], models: Sequence[str]) -> ValueTable:
    """Arrange a probe's ``values`` as rows (models, pairs) by columns (metrics).

    Example:
        >>> t = value_table({"t->s/kl": 0.1, "t->s": 0.9, "t/top1": 0.95}, ["t", "s"])
        >>> t.rows, t.columns, t.get("t->s", "kl")
        (['t', 't->s'], ['kl', '', 'top1'], 0.1)
    """
    cells = {split_key(key): value for key, value in values.items()}
    rows = order_rows([row for row, _ in cells], models)
    columns = list(dict.fromkeys(column for _, column in cells))
    return ValueTable(rows=rows, columns=columns, cells=cells)


@dataclass(frozen=True)
class SeriesGroup:
    """The series of one metric, ready to plot as lines.

    Attributes:
        metric: Metric name, ``""`` for the probe's main series.
        x: The x axis, or ``None`` when the probe stored none.
        lines: Row key -> y values, in display order.
    """

    metric: str
    x: list[float] | None
    lines: dict[str, list[float | None]]


def group_series(
    series: Mapping[str, Sequence[float | None]], models: Sequence[str]
) -> list[SeriesGroup]:
    """Group series by metric; ``"x"`` / ``"x/<metric>"`` keys become the groups' x axes.

    A metric without its own ``"x/<metric>"`` uses the shared ``"x"``, if there is one.

    Example:
        >>> g = group_series({"x": [0, 1], "t->s": [1.0, 0.5], "s": [0.9, 0.4]}, ["t", "s"])
        >>> [(x.metric, x.x, list(x.lines)) for x in g]
        [('', [0, 1], ['s', 't->s'])]
    """
    axes: dict[str, list[float]] = {}
    lines: dict[str, dict[str, list[float | None]]] = {}
    for key, ys in series.items():
        row, metric = split_key(key)
        if row == "x":
            axes[metric] = list(ys)
        else:
            lines.setdefault(metric, {})[row] = list(ys)
    groups = []
    for metric, by_row in lines.items():
        ordered = {row: by_row[row] for row in order_rows(list(by_row), models)}
        groups.append(SeriesGroup(metric, axes.get(metric, axes.get("")), ordered))
    return groups


#: Series metrics that make one reliability diagram per model (the calibration probe's).
RELIABILITY_METRICS = ("bin_accuracy", "bin_confidence", "bin_count")


def split_reliability(
    series: Mapping[str, Sequence[float | None]],
) -> tuple[dict[str, dict[str, list[float | None]]], dict[str, list[float | None]]]:
    """Reliability-diagram series by model, and every other series.

    A model has a diagram when it has both a ``bin_accuracy`` and a ``bin_confidence`` series
    of the same length (``bin_count`` optional); its :data:`RELIABILITY_METRICS` series leave the
    rest. Series of a model without a complete diagram stay in the rest.

    Example:
        >>> bins, rest = split_reliability(
        ...     {"x": [0.5], "m/bin_accuracy": [1.0], "m/bin_confidence": [0.9], "m/ece": [0.1]}
        ... )
        >>> bins, list(rest)
        ({'m': {'bin_accuracy': [1.0], 'bin_confidence': [0.9]}}, ['x', 'm/ece'])
    """
    found: dict[str, dict[str, list[float | None]]] = {}
    for key, ys in series.items():
        row, metric = split_key(key)
        if metric in RELIABILITY_METRICS and row != "x":
            found.setdefault(row, {})[metric] = list(ys)
    bins = {
        row: parts
        for row, parts in found.items()
        if {"bin_accuracy", "bin_confidence"} <= set(parts)
        and len(parts["bin_accuracy"]) == len(parts["bin_confidence"])
    }
    rest = {
        key: list(ys)
        for key, ys in series.items()
        if not (split_key(key)[0] in bins and split_key(key)[1] in RELIABILITY_METRICS)
    }
    return bins, rest
