"""The method ranking: students ordered by held-out accuracy, with their agreement.

A comparison of methods (``configs/methods/compare.yaml``) trains one student per method on one
teacher/student pair; this section ranks them by the two numbers published method tables use
(top-1 accuracy) and what this tool adds (agreement with the teacher), side by side.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from html import escape
from typing import Any

from distillscope.report.plots import Palette
from distillscope.report.tables import MISSING, format_value

#: The ranking is shown from this many non-teacher models on.
MIN_RANKED = 3


def ranking_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Non-teacher models with top-1 and agreement, best top-1 first (ties: higher agreement).

    Returns ``[]`` when the accuracy probe did not run or fewer than :data:`MIN_RANKED` models
    would be ranked. ``top1_rank`` and ``agreement_rank`` count from 1; equal values share a rank.

    Example:
        >>> results = {"models": {"t": {"role": "teacher"}, **{m: {"role": "student",
        ...     "teacher": "t", "loss": {m: {}}} for m in "abc"}}, "probes": {"accuracy":
        ...     {"values": {"a/top1": 0.8, "b/top1": 0.9, "c/top1": 0.8}}, "agreement":
        ...     {"values": {"t->a": 0.95, "t->b": 0.9, "t->c": 0.85}}}}
        >>> [(r["model"], r["top1_rank"], r["agreement_rank"]) for r in ranking_rows(results)]
        [('b', 1, 2), ('a', 2, 1), ('c', 2, 3)]
    """
    probes = results.get("probes", {})
    top1 = probes.get("accuracy", {}).get("values", {})
    agree = probes.get("agreement", {}).get("values", {})
    rows = []
    for name, spec in results.get("models", {}).items():
        if spec.get("role") == "teacher" or not _finite(top1.get(f"{name}/top1")):
            continue
        teacher = spec.get("teacher")
        agreement = agree.get(f"{teacher}->{name}")
        rows.append(
            {
                "model": name,
                "loss": spec.get("loss"),
                "top1": float(top1[f"{name}/top1"]),
                "agreement": float(agreement) if _finite(agreement) else None,
            }
        )
    if len(rows) < MIN_RANKED:
        return []
    _rank(rows, "top1")
    _rank(rows, "agreement")
    rows.sort(key=lambda r: (-r["top1"], -(r["agreement"] if r["agreement"] is not None else -1)))
    return rows


def ranking_section(results: Mapping[str, Any], palette: Palette) -> str:
    """The ranking table, or ``""`` when there is nothing to rank."""
    rows = ranking_rows(results)
    if not rows:
        return ""
    head = ["top-1 rank", "model", "loss", "top-1", "agreement with teacher", "agreement rank"]
    body = "".join(
        "<tr>"
        f'<td class="num">{r["top1_rank"]}</td>'
        f'<td><span class="sw" style="background:{palette.colour(r["model"])}"></span>'
        f"{escape(r['model'])}</td>"
        f"<td>{escape(_loss_names(r['loss']))}</td>"
        f'<td class="num">{format_value(r["top1"])}</td>'
        f'<td class="num">{format_value(r["agreement"])}</td>'
        f'<td class="num">{r["agreement_rank"] if r["agreement"] is not None else MISSING}</td>'
        "</tr>"
        for r in rows
    )
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    note = (
        '<p class="note">Students and independent models ranked by held-out top-1 (the number '
        "published method tables report) beside their top-1 agreement with their teacher; equal "
        "values share a rank. A method can rank high on one and low on the other.</p>"
    )
    return (
        f'<section id="ranking"><h2>Ranking</h2>{note}<table><thead><tr>{th}</tr></thead>'
        f"<tbody>{body}</tbody></table></section>"
    )


def _rank(rows: list[dict[str, Any]], key: str) -> None:
    values = sorted({r[key] for r in rows if r[key] is not None}, reverse=True)
    for r in rows:
        r[f"{key}_rank"] = values.index(r[key]) + 1 if r[key] is not None else None


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _loss_names(loss: object) -> str:
    if isinstance(loss, Mapping):
        return " + ".join(str(k) for k in loss)
    return MISSING if loss is None else str(loss)
