"""The sections of the report page: run header, models, training and one per probe.

Every function returns an HTML fragment; all text from the results is escaped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Container, Mapping
from html import escape
from typing import Any

from distillscope.report.descriptions import describe
from distillscope.report.maps import (
    array_grid,
    decision_map_grid,
    gradient_grid,
    heatmap_grid,
    parse_images,
)
from distillscope.report.plots import (
    Palette,
    bar_chart,
    reliability_chart,
    series_chart,
    training_chart,
)
from distillscope.report.tables import (
    MISSING,
    PAIR,
    format_value,
    group_series,
    order_rows,
    row_label,
    split_reliability,
    subject,
    value_table,
)
from distillscope.report.tokens import token_figure

HOW_TO_READ = (
    "How to read: every section compares all models side by side. Colours mark each model "
    "throughout: greys are teachers, browns independent students (no teacher), bright colours "
    "distilled students; dashed lines in bar charts repeat the teachers' and independent "
    "students' values. Rows 'teacher -> model' compare a model with its teacher. "
    f"{MISSING} marks a value that was not computed or is not a number."
)


def _plain(value: object) -> str:
    """A config-like value as short text: strings as is, floats without trailing zeros."""
    if value is None:
        return MISSING
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value, ensure_ascii=False)


def _table(head: list[str], rows: list[list[str]], numeric: Container[int]) -> str:
    """An HTML table of plain-text ``head`` and HTML cells; ``numeric`` columns align right."""
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _meta_table(items: list[tuple[str, object]]) -> str:
    """A two-column table of labels and plain values."""
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(_plain(v))}</td></tr>" for k, v in items)
    return f'<table class="meta">{rows}</table>'


def _details(summary: str, inner: str) -> str:
    """A collapsed block; ``inner`` is HTML."""
    return f"<details><summary>{escape(summary)}</summary>{inner}</details>"


def _figure(uri: str | None, alt: str) -> str:
    """An embedded plot, or nothing when there is none."""
    return "" if uri is None else f'<img src="{uri}" alt="{escape(alt)}">'


def _duration(seconds: object) -> str:
    """Seconds as ``"12.3 s"``, ``"4 min 05 s"`` or ``"2 h 03 min"``."""
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return MISSING
    s = int(round(seconds))
    if seconds < 60:
        return f"{seconds:.1f} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _identity_rows(results: Mapping[str, Any]) -> list[tuple[str, object]]:
    """Where the data was read, what it was (fingerprints) and the run's identity, when the
    results record them (``docs/reuse.md``)."""
    data, identity = results.get("dataset", {}), results.get("identity")
    rows: list[tuple[str, object]] = []
    if data.get("source"):
        rows.append(("Data read from", data["source"]))
    prints = data.get("fingerprints")
    if isinstance(prints, Mapping) and prints:
        rows.append(
            ("Data fingerprints", ", ".join(f"{k} {str(v)[:16]}" for k, v in prints.items()))
        )
    if isinstance(identity, Mapping):
        rt = identity.get("runtime") if isinstance(identity.get("runtime"), Mapping) else {}
        rows.append(("Threads", rt.get("threads")))
        rows.append(("Identity", str(identity.get("digest", ""))[:16]))
    return rows


def _precision_rows(results: Mapping[str, Any]) -> list[tuple[str, object]]:
    """What each teacher's passes for its students ran in, when a run asked for other than fp32
    (``teacher_precision``): the choice, the batch norms folded, whether the passes ran as one
    oneDNN graph, what the check saw."""
    rows: list[tuple[str, object]] = []
    chosen = results.get("teacher_precision")
    for teacher, rec in chosen.items() if isinstance(chosen, Mapping) else ():
        if not isinstance(rec, Mapping) or rec.get("requested") in (None, "fp32"):
            continue
        parts = [f"{rec.get('precision')} (teacher_precision: {rec.get('requested')})"]
        if rec.get("folded"):
            parts.append(f"{rec['folded']} batch norms folded into their convolutions")
        if rec.get("onednn"):
            parts.append("one oneDNN graph")
        agreement, error = rec.get("agreement"), rec.get("max_logit_error")
        if isinstance(agreement, (int, float)) and isinstance(error, (int, float)):
            parts.append(
                f"bf16 gave the fp32 top-1 on {agreement:.2%} of {_plain(rec.get('items'))} "
                f"training items, largest logit change {error:.3g}"
            )
        rows.append((f"Teacher passes ({teacher})", "; ".join(parts)))
    return rows


def header(results: Mapping[str, Any]) -> str:
    """The page header: run name and metadata, dataset, how to read, the resolved config.

    Args:
        results: Checked results (see :func:`~distillscope.results.check_results`).
    """
    run, data = results["run"], results.get("dataset", {})
    shape = data.get("input_shape")
    dataset = (
        f"{_plain(data.get('name'))}: {_plain(data.get('num_classes'))} classes, "
        f"{format_value(data.get('n_train'))} train / {format_value(data.get('n_test'))} test, "
        f"input {' x '.join(map(str, shape)) if isinstance(shape, list) else MISSING}"
    )
    meta = _meta_table(
        [
            ("Created", run.get("created")),
            ("Dataset", dataset),
            ("Device", run.get("device")),
            ("Seed", run.get("seed")),
            ("Duration", _duration(run.get("duration_s"))),
            ("Config file", run.get("config_file")),
            ("distillscope", run.get("distillscope_version")),
            ("torch", run.get("torch_version")),
            *_precision_rows(results),
            *_identity_rows(results),
        ]
    )
    names = data.get("class_names") or []
    config = json.dumps(results.get("config", {}), indent=2, ensure_ascii=False)
    return (
        f'<header id="run"><h1>{escape(str(run.get("name", "run")))}</h1>{meta}'
        + (_details("Class names", f"<p>{escape(', '.join(map(str, names)))}</p>") if names else "")
        + _details("Resolved configuration", f"<pre>{escape(config)}</pre>")
        + f'<p class="how">{escape(HOW_TO_READ)}</p></header>'
    )


def _loss(loss: object) -> str:
    """Loss terms as ``"kd(temperature=4, alpha=0.9) + ce"``."""
    if not isinstance(loss, Mapping):
        return _plain(loss)
    terms = []
    for name, params in loss.items():
        args = (
            ", ".join(f"{k}={_plain(v)}" for k, v in params.items())
            if isinstance(params, Mapping)
            else ""
        )
        terms.append(f"{name}({args})" if args else str(name))
    return " + ".join(terms) or MISSING


def models_section(results: Mapping[str, Any], palette: Palette) -> str:
    """The models table: role, architecture, size, training setup, final held-out accuracy.

    Args:
        results: Checked results.
        palette: The report's model colours (a swatch before each name).
    """
    training = results.get("training", {})
    rows = []
    for name, spec in results["models"].items():
        epochs = training.get(name) or [{}]
        reused = spec.get("reused")
        rows.append(
            [
                _row_cell(name, palette),
                escape(_plain(spec.get("role"))),
                escape(_plain(spec.get("arch"))),
                escape(format_value(spec.get("params"))),
                escape(_plain(spec.get("train_temperature"))),
                escape(_plain(spec.get("teacher"))),
                escape(
                    _loss(spec.get("loss")) + _group(spec.get("group")) + _data(spec.get("data"))
                ),
                escape(format_value(epochs[-1].get("val_acc"))),
                MISSING if reused is None else ("yes" if reused else "no"),
            ]
        )
    head = [
        "model",
        "role",
        "architecture",
        "parameters",
        "train T",
        "teacher",
        "loss",
        "final val acc",
        "reused from cache",
    ]
    return f'<section id="models"><h2>Models</h2>{_table(head, rows, numeric={3, 4, 7})}</section>'


def _directions(raw: object, columns: list[str]) -> dict[str, bool | None]:
    """Each column's direction from a probe's ``higher_is_better`` (a mapping or one bool;
    missing in results written before it existed: ``None``, neither)."""
    if isinstance(raw, Mapping):
        return {c: raw.get(c) if isinstance(raw.get(c), bool) else None for c in columns}
    return {c: raw if isinstance(raw, bool) else None for c in columns}


def _best_cells(
    table: Any, directions: Mapping[str, bool | None], results: Mapping[str, Any]
) -> set[tuple[str, str]]:
    """``(row, column)`` of the best non-teacher value per column with a known direction.

    Model rows (``kd``) and pair rows (``teacher->kd``) are ranked apart: one column can hold a
    model's own metric and a pair's (``group_gap``: accuracy per group and agreement per group).
    """
    models = results.get("models", {})
    candidates = [r for r in table.rows if (models.get(subject(r)) or {}).get("role") != "teacher"]
    kinds = [[r for r in candidates if PAIR not in r], [r for r in candidates if PAIR in r]]
    best: set[tuple[str, str]] = set()
    for column, higher in directions.items():
        if higher is None:
            continue
        for rows in kinds:
            values = {r: table.get(r, column) for r in rows}
            finite = {r: v for r, v in values.items() if v is not None and math.isfinite(v)}
            if len(finite) < 2:
                continue
            target = max(finite.values()) if higher else min(finite.values())
            best |= {(r, column) for r, v in finite.items() if v == target}
    return best


def _marked(cell: str, best: bool) -> str:
    return f"<strong>{cell}</strong>" if best else cell


def _group(group: Any) -> str:
    """`` (trained with group g)`` for a member of a mutual-learning group, else nothing."""
    return f" (trained together in group {group})" if isinstance(group, str) and group else ""


def _data(data: Any) -> str:
    """`` (trained on d, n images)`` for a network with its own training data, else nothing."""
    if not isinstance(data, Mapping) or not data.get("name"):
        return ""
    n = data.get("n_train")
    count = f", {n:,} images" if isinstance(n, int) else ""
    return f" (trained on {data['name']}{count})"


def training_section(results: Mapping[str, Any], palette: Palette) -> str:
    """Small multiples of each model's losses and held-out accuracy per epoch.

    Args:
        results: Checked results; ``training`` maps models to the trainer's epoch records.
        palette: The report's model colours.
    """
    training = results.get("training", {})
    ordered = {m: training[m] for m in order_rows(list(training), list(results["models"]))}
    chart = training_chart(ordered, palette)
    body = _figure(chart, "training curves") or '<p class="note">No training records.</p>'
    return f'<section id="training"><h2>Training</h2>{body}</section>'


def probe_section(
    name: str, probe: Mapping[str, Any], anchor: str, results: Mapping[str, Any], palette: Palette
) -> str:
    """A probe's section: description, values table, bar chart, series, images, parameters.

    Args:
        name: The probe's key in ``results["probes"]``.
        probe: Its result (``probe``, ``values``, ``series``, ``params``, ``images``).
        anchor: The section's id, for the page's navigation.
        results: Checked results (model order, class names).
        palette: The report's model colours.
    """
    models = list(results["models"])
    table = value_table(probe["values"], models)
    registered = str(probe.get("probe", name))
    title = escape(name) + (f" <small>({escape(registered)})</small>" if registered != name else "")
    parts = [f'<section id="{anchor}"><h2>{title}</h2>']
    parts.append(f'<p class="desc">{escape(describe(registered))}</p>')
    if table.rows:
        directions = _directions(probe.get("higher_is_better"), table.columns)
        arrows = {True: " ↑", False: " ↓", None: ""}
        head = ["model", *((c or name) + arrows[directions[c]] for c in table.columns)]
        best = _best_cells(table, directions, results)
        rows = [
            [_row_cell(row, palette)]
            + [
                _marked(escape(format_value(table.get(row, c))), (row, c) in best)
                for c in table.columns
            ]
            for row in table.rows
        ]
        parts.append(_table(head, rows, numeric=range(1, len(head))))
        if any(d is not None for d in directions.values()):
            parts.append(
                '<p class="note">↑ higher is better, ↓ lower is better (no arrow: neither); '
                "bold: the best student or independent model in that column.</p>"
            )
        parts.append(_figure(bar_chart(table, palette, name), f"{name} values"))
    else:
        parts.append('<p class="note">No values recorded.</p>')
    reliability, series = split_reliability(probe.get("series", {}))
    groups = group_series(series, models)
    params = probe.get("params", {})
    x_label = params.get("x_label")
    x_label = x_label if isinstance(x_label, (str, Mapping)) else None
    ticks = params.get("x_ticks")
    x_ticks = [str(t) for t in ticks] if isinstance(ticks, list) else None
    chart = series_chart(groups, palette, name, x_label, x_ticks)
    parts.append(_figure(chart, f"{name} series"))
    parts.append(_reliability(name, reliability, probe, models, palette))
    parts.append(_images(name, probe, results, palette))
    skipped = params.get("skipped")
    if isinstance(skipped, Mapping) and skipped:
        items = "; ".join(f"{escape(str(k))}: {escape(str(v))}" for k, v in skipped.items())
        parts.append(f'<p class="note">Not computed — {items}.</p>')
    parts.append(_details("Parameters", _meta_table(list(params.items())) if params else "none"))
    parts.append("</section>")
    return "".join(parts)


def _row_cell(row: str, palette: Palette) -> str:
    """A table's first cell: the row's model colour and its label."""
    return (
        f'<span class="sw" style="background:{palette.colour(row)}"></span>{escape(row_label(row))}'
    )


def _reliability(
    name: str,
    bins: Mapping[str, Mapping[str, list[float | None]]],
    probe: Mapping[str, Any],
    models: list[str],
    palette: Palette,
) -> str:
    """One reliability diagram per model with one (the calibration probe's series), titled with
    its equal-width ECE when the values have it."""
    ordered = {m: bins[m] for m in order_rows(list(bins), models)}
    values = probe["values"]
    titles = {
        m: f"{m}\nECE {format_value(values[f'{m}/ece'])}" for m in ordered if f"{m}/ece" in values
    }
    edges = probe.get("params", {}).get("bin_edges")
    edges = edges if isinstance(edges, list) else None
    return _figure(
        reliability_chart(ordered, palette, edges, titles), f"{name} reliability diagrams"
    )


def _images(
    name: str, probe: Mapping[str, Any], results: Mapping[str, Any], palette: Palette
) -> str:
    """Decision maps (titled with their hardness), labelled heat maps, gradient grids, other
    arrays, sentences coloured by attribution, and a note on what is not drawn."""
    images = parse_images(probe.get("images", {}))
    values = probe["values"]
    titles = {
        m: f"{m}\nhardness {format_value(values[f'{m}/hardness'])}"
        for m in images.maps
        if f"{m}/hardness" in values
    }
    class_names = [str(c) for c in results.get("dataset", {}).get("class_names") or []]
    parts = [
        _figure(decision_map_grid(images, titles, palette, class_names), f"{name} decision maps"),
        _figure(heatmap_grid(images.heatmaps), f"{name} heat maps"),
        *(
            _figure(gradient_grid(g, palette), f"{name} gradients" + ("" if k == name else f" {k}"))
            for k, g in images.gradients.items()
        ),
        _figure(array_grid(images.arrays), f"{name} images"),
        *(token_figure(t, palette) for t in images.tokens.values()),
    ]
    if images.skipped:
        skipped = ", ".join(images.skipped)
        parts.append(
            f'<p class="note">Images not drawn (not a map or numeric array): {escape(skipped)}</p>'
        )
    return "".join(parts)
