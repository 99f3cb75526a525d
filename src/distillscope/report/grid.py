"""The grid report: one self-contained page made from a grid's ``grid.json`` alone.

Per probe value (e.g. ``adversarial: pgd_strong``) a table with one row per model (or
teacher -> model pair) and one column per combination of the non-seed axes (e.g. ``T=10``); each
entry is the mean ± sample standard deviation over the seeds, with ``n`` shown when fewer seeds
than planned gave a value. A cells table links to every cell's own report. Same style as the run
report (:mod:`distillscope.report.html`): inline CSS, no script, nothing fetched.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from distillscope.errors import UserError, quoted
from distillscope.files import atomic_write_text
from distillscope.report.descriptions import describe
from distillscope.report.html import _anchors
from distillscope.report.plots import Palette
from distillscope.report.sections import _duration, _meta_table, _row_cell, _table
from distillscope.report.style import CSS
from distillscope.report.tables import MISSING, format_value, order_rows, split_key

GRID_FILE = "grid.json"
REPORT_FILE = "report.html"
GRID_SCHEMA = 1
FIX = "re-run the grid (`distillscope run GRID_CONFIG`) to write it again"

GRID_CSS = """
td.num small { color: #777; }
.status-done { color: #2a7a2a; } .status-failed { color: #b00020; font-weight: 600; }
.status-running { color: #1f5fa0; } .status-partial, .status-pending { color: #777; }
h3 { margin: 1.4em 0 0.2em; font-size: 1.05em; }
.wide { overflow-x: auto; }
.metrics { display: flex; flex-wrap: wrap; gap: 0 2.5em; align-items: flex-start; }
.metrics > div { max-width: 100%; }
"""

MAX_OPEN_CELLS = 24
"""Longer cell lists start collapsed, so the tables come first."""

HOW_TO_READ = (
    "How to read: each table is one probe value. Rows are models (or 'teacher -> model' pairs), "
    "columns are the combinations of the grid's axes other than the seed; an entry is the mean "
    "± the sample standard deviation over the seeds (n - 1 in the denominator), with n shown "
    f"when fewer seeds than planned gave a value. The shade deepens with the mean within each "
    f"table (it says nothing about better or worse). {MISSING} marks a value not computed."
)


def is_grid_dir(path: Path | str) -> bool:
    """Whether ``path`` is a grid directory (it holds ``grid.json``)."""
    return (Path(path) / GRID_FILE).is_file()


def load_grid_summary(grid_dir: Path | str) -> dict[str, Any]:
    """Read and check ``grid_dir/grid.json``.

    Raises:
        UserError: The file is missing, not JSON or not a grid summary of schema 1 (one line).
    """
    path = Path(grid_dir) / GRID_FILE
    if not path.is_file():
        raise UserError(f"{path}: file not found; {FIX}")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot be read as JSON ({exc}); {FIX}") from None
    check_grid_summary(data, str(path))
    return data


def check_grid_summary(data: object, source: str = "grid.json") -> None:
    """Check the parts of ``grid.json`` the report relies on; raise one-line :class:`UserError`."""
    if not isinstance(data, Mapping) or data.get("schema") != GRID_SCHEMA:
        got = data.get("schema") if isinstance(data, Mapping) else type(data).__name__
        raise UserError(
            f"{source}: not a grid summary of schema {GRID_SCHEMA} (got {quoted(got)}); {FIX}"
        )
    shapes = {"grid": Mapping, "models": Mapping, "cells": list, "groups": list}
    for key, kind in shapes.items():
        if not isinstance(data.get(key), kind):
            raise UserError(f"{source}: key {key!r} is missing or of the wrong type; {FIX}")
    for i, cell in enumerate(data["cells"]):
        if not isinstance(cell, Mapping) or not isinstance(cell.get("labels"), Mapping):
            raise UserError(f"{source}: cells[{i}] is not a cell object; {FIX}")
    for i, group in enumerate(data["groups"]):
        if not isinstance(group, Mapping) or not isinstance(group.get("values"), Mapping):
            raise UserError(f"{source}: groups[{i}] is not a group object; {FIX}")
        for probe, values in group["values"].items():
            if not isinstance(values, Mapping) or not all(
                isinstance(s, Mapping) for s in values.values()
            ):
                raise UserError(f"{source}: groups[{i}].values.{probe} is malformed; {FIX}")


def render_grid_report(grid_dir: Path | str) -> Path:
    """Render ``grid_dir/grid.json`` into ``grid_dir/report.html`` (atomically)."""
    grid_dir = Path(grid_dir)
    page = render_grid_html(load_grid_summary(grid_dir))
    target = grid_dir / REPORT_FILE
    atomic_write_text(target, page)
    return target


def render_grid_html(data: Mapping[str, Any]) -> str:
    """The grid report page of a parsed ``grid.json``.

    Example:
        >>> page = render_grid_html({"schema": 1, "grid": {"name": "g", "axes": []},
        ...                          "models": {}, "cells": [], "groups": []})
        >>> "<h1>g: grid</h1>" in page
        True
    """
    check_grid_summary(data)
    info = data["grid"]
    palette = Palette.for_models(data["models"])
    probes = _probe_names(data["groups"])
    anchors = _anchors(probes)
    nav = [("grid", "Grid"), ("cells", "Cells"), *((anchors[p], p) for p in probes)]
    sections = [
        _header(data),
        "<nav>" + "".join(f'<a href="#{a}">{escape(t)}</a>' for a, t in nav) + "</nav>",
        _cells_section(data),
        *(_probe_section(p, anchors[p], data, palette) for p in probes),
        "<footer>Rendered by <code>distillscope report</code> from grid.json; re-render with "
        "<code>distillscope report GRID_DIR</code>. The same statistics, one line per value: "
        '<a href="summary.csv">summary.csv</a>.</footer>',
    ]
    title = escape(str(info.get("name", "grid")))
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>distillscope grid: {title}</title>",
            f"<style>{CSS}{GRID_CSS}</style></head><body>",
            *sections,
            "</body></html>",
            "",
        ]
    )


def _probe_names(groups: Sequence[Mapping[str, Any]]) -> list[str]:
    return list(dict.fromkeys(p for g in groups for p in g["values"]))


def _header(data: Mapping[str, Any]) -> str:
    info = data["grid"]
    seed = info.get("seed_axis")
    counts = info.get("counts") or {}
    cells = ", ".join(f"{v} {k}" for k, v in counts.items())
    items: list[tuple[str, object]] = [
        ("Cells", f"{len(data['cells'])} ({cells})" if cells else len(data["cells"])),
    ]
    for axis in info.get("axes", []):
        used = axis.get("used_at") or []
        if axis.get("key") == seed:
            what = "seeds: mean and spread are taken over these"
        elif axis.get("kind") == "variable":
            what = f"variable, sets {len(used)} config key{'s' if len(used) != 1 else ''}"
        else:
            what = "config key"
        items.append((f"Axis {axis.get('key')}", f"{', '.join(axis.get('labels', []))} ({what})"))
    if seed is None:
        items.append(("Seeds", "no seed axis: every entry is a single run (n = 1)"))
    items += [("Grid key", info.get("key")), ("Updated", info.get("updated"))]
    return (
        f'<header id="grid"><h1>{escape(str(info.get("name", "grid")))}: grid</h1>'
        f"{_meta_table(items)}"
        + _axis_details(info)
        + f'<p class="how">{escape(HOW_TO_READ)}</p></header>'
    )


def _axis_details(info: Mapping[str, Any]) -> str:
    parts = []
    for axis in info.get("axes", []):
        used = axis.get("used_at") or []
        if axis.get("kind") == "variable" and used:
            keys = "".join(f"<li><code>{escape(str(u))}</code></li>" for u in used)
            parts.append(
                f"<details><summary>Keys set by {escape(str(axis.get('key')))}</summary>"
                f"<ul>{keys}</ul></details>"
            )
    return "".join(parts)


def _cells_section(data: Mapping[str, Any]) -> str:
    axes = [a.get("key") for a in data["grid"].get("axes", [])]
    rows = []
    for cell in data["cells"]:
        status = str(cell.get("status", "pending"))
        link = MISSING
        if status == "done":
            href = quote(f"{cell.get('dir', '')}/{REPORT_FILE}", safe="/=,")
            link = f'<a href="{escape(href)}">report</a>'
        error = f" — {escape(str(cell['error']))}" if cell.get("error") else ""
        rows.append(
            [
                *(escape(str(cell["labels"].get(a, MISSING))) for a in axes),
                f'<span class="status-{escape(status)}">{escape(status)}</span>{error}',
                escape(_duration(cell.get("duration_s"))),
                link,
            ]
        )
    head = [*map(str, axes), "status", "run time", "report"]
    table = _table(head, rows, numeric={len(axes) + 1})
    counts = ", ".join(f"{v} {k}" for k, v in (data["grid"].get("counts") or {}).items())
    summary = f"{len(rows)} cells" + (f": {counts}" if counts else "")
    is_open = " open" if len(rows) <= MAX_OPEN_CELLS else ""
    return (
        '<section id="cells"><h2>Cells</h2>'
        '<p class="desc">Each cell is a normal run with its own report; a re-run of the grid '
        "skips done cells and resumes partial ones.</p>"
        f"<details{is_open}><summary>{escape(summary)}</summary>{table}</details></section>"
    )


def _probe_section(probe: str, anchor: str, data: Mapping[str, Any], palette: Palette) -> str:
    groups = [g for g in data["groups"] if probe in g["values"]]
    models = list(data["models"])
    metrics: dict[str, list[str]] = {}
    for group in groups:
        for key in group["values"][probe]:
            row, metric = split_key(key)
            metrics.setdefault(metric, []).append(row)
    parts = [f'<section id="{anchor}"><h2>{escape(probe)}</h2>']
    parts.append(f'<p class="desc">{escape(describe(probe))}</p>')
    parts.append('<div class="metrics">')  # narrow tables sit side by side
    for metric, rows in metrics.items():
        title = f"{probe}: {metric}" if metric else probe
        table = _metric_table(probe, metric, order_rows(rows, models), groups, palette)
        parts.append(f"<div><h3>{escape(title)}</h3>{table}</div>")
    parts.append("</div></section>")
    return "".join(parts)


def _metric_table(
    probe: str,
    metric: str,
    rows: list[str],
    groups: Sequence[Mapping[str, Any]],
    palette: Palette,
) -> str:
    def stats(group: Mapping[str, Any], row: str) -> Mapping[str, Any] | None:
        key = f"{row}/{metric}" if metric else row
        return group["values"][probe].get(key)

    means = [
        s["mean"]
        for g in groups
        for r in rows
        if (s := stats(g, r)) is not None and isinstance(s.get("mean"), (int, float))
    ]
    low, high = (min(means), max(means)) if means else (0.0, 0.0)
    th = "".join(f"<th>{escape(h)}</th>" for h in ["model", *map(_group_title, groups)])
    body = "".join(
        f"<tr><td>{_row_cell(row, palette)}</td>"
        + "".join(_entry(stats(g, row), len(g.get("cells", [])), low, high) for g in groups)
        + "</tr>"
        for row in rows
    )
    return (
        f'<div class="wide"><table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>'
    )


def _entry(stats: Mapping[str, Any] | None, planned: int, low: float, high: float) -> str:
    if stats is None or not isinstance(stats.get("mean"), (int, float)):
        return f'<td class="num">{MISSING}</td>'
    mean, std, n = stats["mean"], stats.get("std"), stats.get("n")
    text = escape(format_value(float(mean)))
    if isinstance(std, (int, float)):
        text += f" ± {escape(format_value(float(std)))}"
    if isinstance(n, int) and n < planned:
        text += f" <small>n={n}</small>"
    shade = 0.0 if high <= low else (float(mean) - low) / (high - low)
    style = f"background:rgba(31,95,160,{0.04 + 0.22 * shade:.3f})"
    return f'<td class="num" style="{style}">{text}</td>'


def _group_title(group: Mapping[str, Any]) -> str:
    labels = group.get("labels") or {}
    if not labels:
        return "mean ± std"
    return ", ".join(f"{k}={v}" for k, v in labels.items())
