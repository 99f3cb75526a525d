"""Charts of the report, drawn with matplotlib's Agg canvas and embedded as base64 PNG.

No pyplot: every figure is a standalone :class:`~matplotlib.figure.Figure` on its own Agg canvas,
so rendering neither needs nor changes the user's backend. PNGs are saved without the
"Software" metadata and under a fixed style, so the same results give the same bytes.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import matplotlib
import matplotlib.style
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from distillscope.report.tables import SeriesGroup, ValueTable, row_label, subject

DPI = 100
STYLE = {
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 7,
}
# Role groups -> colours: greys for teachers, browns for independent students, the tab10/tab20
# hues (without their grey and brown) for distilled students, light greys for anything else.
PALETTES = {
    "teacher": ["#1a1a1a", "#555555", "#808080", "#a8a8a8"],
    "independent": ["#8c564b", "#c49c94", "#a0522d", "#d2b48c"],
    "student": [
        *["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#e377c2", "#bcbd22", "#17becf"],
        *["#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#f7b6d2", "#dbdb8d", "#9edae5"],
    ],
    "other": ["#c7c7c7", "#dddddd"],
}
LINESTYLES = {"teacher": "--", "independent": "-.", "student": "-", "other": ":"}
UNKNOWN_COLOUR = "#bbbbbb"


def role_group(role: object) -> str:
    """The colour group of a model role: ``teacher``, ``independent``, ``student`` or ``other``.

    Example:
        >>> [role_group(r) for r in ("control_teacher", "independent", "student", "foreign")]
        ['teacher', 'independent', 'student', 'other']
    """
    role = str(role)
    if role.endswith("teacher"):
        return "teacher"
    return role if role in ("independent", "student") else "other"


@dataclass(frozen=True)
class Palette:
    """One colour per model, used by every table and chart of a report.

    Attributes:
        colours: Model name -> hex colour.
        groups: Model name -> role group (see :func:`role_group`).
    """

    colours: dict[str, str]
    groups: dict[str, str]

    @classmethod
    def for_models(cls, models: Mapping[str, Mapping[str, Any]]) -> Palette:
        """Colour models in display order, cycling through their role group's colours.

        Example:
            >>> p = Palette.for_models({"t": {"role": "teacher"}, "kd": {"role": "student"}})
            >>> p.colours, p.colour("t->kd")
            ({'t': '#1a1a1a', 'kd': '#1f77b4'}, '#1f77b4')
        """
        colours, groups, used = {}, {}, dict.fromkeys(PALETTES, 0)
        for name, spec in models.items():
            group = role_group(spec.get("role") if isinstance(spec, Mapping) else None)
            palette = PALETTES[group]
            colours[name] = palette[used[group] % len(palette)]
            groups[name] = group
            used[group] += 1
        return cls(colours, groups)

    def colour(self, row: str) -> str:
        """Colour of a row: that of its model (the student, for a pair)."""
        return self.colours.get(subject(row), UNKNOWN_COLOUR)

    def group(self, row: str) -> str:
        """Role group of a row's model, ``other`` when unknown."""
        return self.groups.get(subject(row), "other")


@contextmanager
def plot_style() -> Iterator[None]:
    """Matplotlib's defaults plus :data:`STYLE`, whatever the user's matplotlibrc says."""
    with matplotlib.style.context("default"), matplotlib.rc_context(STYLE):
        yield


def to_data_uri(fig: Figure) -> str:
    """Render ``fig`` as a PNG ``data:`` URI, with no metadata that varies between runs."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def grid(n: int, max_cols: int, width: float, height: float, **kw: Any) -> tuple[Figure, list]:
    """A constrained figure with ``n`` panels of ``width`` x ``height`` inches; extras removed."""
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = list(fig.subplots(rows, cols, squeeze=False, **kw).flat)
    for ax in axes[n:]:
        fig.delaxes(ax)
    return fig, axes[:n]


def _number(value: object) -> float:
    """``value`` as a float, NaN when missing."""
    return math.nan if value is None else float(value)


def bar_chart(table: ValueTable, palette: Palette, main: str) -> str | None:
    """Horizontal bars, one panel per metric and one bar per row, coloured by model.

    Teachers' and independent students' values are repeated as thin vertical reference lines,
    so every student reads against them. Missing values get no bar and a "—" label.

    Args:
        table: The probe's values.
        palette: The report's model colours.
        main: Title of the ``""`` metric (the probe's name).

    Returns:
        A PNG data URI, or ``None`` when the table has no number to draw.
    """
    if not any(math.isfinite(_number(v)) for v in table.cells.values()):
        return None
    height = 0.6 + 0.2 * len(table.rows)
    with plot_style():
        fig, axes = grid(len(table.columns), 3, 3.4, height, sharey=True)
        positions = range(len(table.rows))
        for ax, column in zip(axes, table.columns):
            values = [_number(table.get(row, column)) for row in table.rows]
            drawn = [v if math.isfinite(v) else 0.0 for v in values]
            bars = ax.barh(positions, drawn, color=[palette.colour(r) for r in table.rows])
            labels = [format_label(v) for v in values]
            ax.bar_label(bars, labels=labels, padding=2, fontsize=6)
            for row, value in zip(table.rows, values):
                if palette.group(row) in ("teacher", "independent") and math.isfinite(value):
                    ax.axvline(value, color=palette.colour(row), lw=0.8, ls="--", zorder=0)
            ax.set_title(column or main)
            ax.margins(x=0.2)
            if not any(drawn):  # every bar 0: a plain 0..1 axis, not matplotlib's 1e-17 ticks
                ax.set_xlim(0.0, 1.0)
            ax.grid(axis="y", visible=False)
        axes[0].set_yticks(list(positions), [row_label(r) for r in table.rows])
        axes[0].invert_yaxis()
        return to_data_uri(fig)


def format_label(value: float) -> str:
    """Bar label: three significant digits, "—" for a missing value."""
    return f"{value:.3g}" if math.isfinite(value) else "—"


def series_chart(
    groups: Sequence[SeriesGroup],
    palette: Palette,
    main: str,
    x_label: str | Mapping[str, str] | None = None,
    x_ticks: Sequence[str] | None = None,
) -> str | None:
    """Line plots of a probe's series: one panel per metric, one line per row.

    Args:
        groups: Series grouped by metric (see :func:`~distillscope.report.tables.group_series`).
        palette: The report's model colours; line styles mark the role group.
        main: Title of the ``""`` metric (the probe's name).
        x_label: Label of every panel's x axis (a probe's ``params["x_label"]``), or one label
            per metric (``{"colour": ..., "crop": ...}``: panels of different sweeps), if any.
        x_ticks: Names of the x positions of a categorical axis (a probe's
            ``params["x_ticks"]``, e.g. domain names), one per point; panels whose x axis has
            another length keep numeric ticks.

    Returns:
        A PNG data URI, or ``None`` when there is no series.
    """
    if not groups:
        return None
    with plot_style():
        fig, axes = grid(len(groups), 3, 3.4, 2.4)
        handles: dict[str, Line2D] = {}
        for ax, group in zip(axes, groups):
            for row, ys in group.lines.items():
                x = group.x if group.x is not None and len(group.x) == len(ys) else range(len(ys))
                (line,) = ax.plot(
                    list(x),
                    [_number(y) for y in ys],
                    color=palette.colour(row),
                    ls=LINESTYLES[palette.group(row)],
                    marker="o",
                    ms=2.5,
                    lw=1.2,
                )
                handles.setdefault(row_label(row), line)
            ax.set_title(group.metric or main)
            label = x_label.get(group.metric) if isinstance(x_label, Mapping) else x_label
            if label:
                ax.set_xlabel(str(label))
            positions = _tick_positions(group, x_ticks)
            if positions is not None and x_ticks is not None:
                ax.set_xticks(positions, list(x_ticks), rotation=30, ha="right")
        fig.legend(list(handles.values()), list(handles), loc="outside right upper")
        return to_data_uri(fig)


def _tick_positions(group: SeriesGroup, x_ticks: Sequence[str] | None) -> list[float] | None:
    """Where a panel's categorical tick labels go: its x values (or 0..n-1), if they match."""
    if not x_ticks:
        return None
    x = list(group.x) if group.x is not None else list(range(len(x_ticks)))
    lengths = {len(ys) for ys in group.lines.values()}
    if len(x) != len(x_ticks) or lengths - {len(x)}:
        return None
    return [float(v) for v in x]


def training_chart(
    training: Mapping[str, Sequence[Mapping[str, Any]]], palette: Palette
) -> str | None:
    """Small multiples of training: per model, losses (left axis) and val accuracy (right axis).

    Loss axes are shared so models compare at a glance; the accuracy axis spans 0 to 1 (or the
    largest accuracy, if the runner logged percentages).

    Returns:
        A PNG data URI, or ``None`` when no model has an epoch record.
    """
    records = {name: list(epochs) for name, epochs in training.items() if epochs}
    if not records:
        return None
    accs = [_number(r.get("val_acc")) for epochs in records.values() for r in epochs]
    top = max([1.0, *(a for a in accs if math.isfinite(a))])
    with plot_style():
        fig, axes = grid(len(records), 5, 2.3, 1.8, sharex=True, sharey=True)
        for ax, (name, epochs) in zip(axes, records.items()):
            _training_panel(ax, name, epochs, palette.colour(name), top)
        fig.legend(
            [
                Line2D([], [], color="0.4"),
                Line2D([], [], color="0.4", ls="--"),
                Line2D([], [], color="black", ls=":", marker="."),
            ],
            ["train loss", "held-out loss", "held-out accuracy (right axis)"],
            loc="outside upper center",
            ncols=3,
        )
        return to_data_uri(fig)


def _training_panel(
    ax: Axes, name: str, epochs: Sequence[Mapping[str, Any]], colour: str, acc_top: float
) -> None:
    """One model's panel of :func:`training_chart`."""
    x = [r.get("epoch", i + 1) for i, r in enumerate(epochs)]
    for key, style in (("loss", "-"), ("val_loss", "--")):
        if any(key in r for r in epochs):
            ax.plot(x, [_number(r.get(key)) for r in epochs], color=colour, ls=style, lw=1.2)
    if any("val_acc" in r for r in epochs):
        acc = ax.twinx()
        acc.plot(x, [_number(r.get("val_acc")) for r in epochs], color="black", ls=":", marker=".")
        acc.set_ylim(0, acc_top)
        acc.tick_params(labelsize=6)
        acc.grid(False)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(name, color=colour, fontweight="bold")


def reliability_chart(
    bins: Mapping[str, Mapping[str, Sequence[float | None]]],
    palette: Palette,
    edges: Sequence[float] | None = None,
    titles: Mapping[str, str] | None = None,
) -> str | None:
    """One reliability diagram per model (Guo et al. 2017, Fig. 1, bottom row).

    Each bin is a bar of the model's accuracy in it, in the model's colour, drawn over the bin's
    confidence range; the hatched red part between the bar's top and the bin's mean confidence is
    the gap that the ECE weighs; the dashed diagonal is perfect calibration. Empty bins draw
    nothing.

    Args:
        bins: Model -> ``{"bin_accuracy", "bin_confidence"[, "bin_count"]}`` lists (see
            :func:`~distillscope.report.tables.split_reliability`), in display order.
        palette: The report's model colours.
        edges: The ``M + 1`` bin edges (a probe's ``params["bin_edges"]``); equal-width edges on
            ``[0, 1]`` when missing or of another length.
        titles: Model -> panel title (name and ECE); the name when absent.

    Returns:
        A PNG data URI, or ``None`` when there is no diagram.
    """
    if not bins:
        return None
    titles = titles or {}
    with plot_style():
        fig, axes = grid(len(bins), 4, 2.4, 2.4, sharex=True, sharey=True)
        for ax, (name, parts) in zip(axes, bins.items()):
            accuracy = [_number(v) for v in parts["bin_accuracy"]]
            confidence = [_number(v) for v in parts["bin_confidence"]]
            m = len(accuracy)
            given = [_number(e) for e in edges or []]
            bounds = given if len(given) == m + 1 else [i / m for i in range(m + 1)]
            drawn = [i for i in range(m) if math.isfinite(accuracy[i] + confidence[i])]
            left = [bounds[i] for i in drawn]
            width = [bounds[i + 1] - bounds[i] for i in drawn]
            acc = [accuracy[i] for i in drawn]
            gap = [confidence[i] - accuracy[i] for i in drawn]
            colour = palette.colour(name)
            ax.bar(left, acc, width, align="edge", color=colour, edgecolor="white", lw=0.4)
            hatched = {"fill": False, "hatch": "////", "edgecolor": "#d62728", "lw": 0.4}
            ax.bar(left, gap, width, bottom=acc, align="edge", **hatched)
            ax.plot([0, 1], [0, 1], ls="--", color="0.4", lw=0.8)
            ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence")
            ax.set_aspect("equal")
            ax.set_title(titles.get(name, name), color=colour, fontweight="bold")
        axes[0].set_ylabel("accuracy")
        fig.legend(
            [Patch(color="0.5"), Patch(fill=False, hatch="////", edgecolor="#d62728")],
            ["accuracy in bin", "gap to mean confidence"],
            loc="outside lower center",
            ncols=2,
        )
        return to_data_uri(fig)
