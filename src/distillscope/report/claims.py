"""The claims report: ``reproduce-<paper>/report.html``, made from ``claims.json`` alone."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

from distillscope.errors import UserError, quoted
from distillscope.files import atomic_write_text
from distillscope.report.sections import _table
from distillscope.report.style import CSS

__all__ = ["CLAIMS_FILE", "is_claims_dir", "render_claims_html", "render_claims_report"]

CLAIMS_FILE = "claims.json"
REPORT_FILE = "report.html"
CLAIMS_CSS = """
#claims table{table-layout:fixed;width:100%}
#claims th:nth-child(1){width:8%}#claims th:nth-child(2){width:24%}
#claims th:nth-child(3){width:14%}#claims th:nth-child(4){width:14%}
#claims th:nth-child(5){width:16%}#claims th:nth-child(6){width:14%}
#claims th:nth-child(7){width:10%}
#claims td{vertical-align:top;overflow-wrap:anywhere}
#claims code{overflow-wrap:anywhere;font-size:0.85em}
.verdict{font-weight:600}
.verdict.reproduced{color:#1b7a3a}
.verdict.not-reproduced{color:#b3261e}
.verdict.inconclusive{color:#8a6d00}
"""


def is_claims_dir(path: Path | str) -> bool:
    """Whether ``path`` holds a ``claims.json`` written by ``distillscope reproduce``."""
    return (Path(path) / CLAIMS_FILE).is_file()


def render_claims_report(folder: Path | str) -> Path:
    """Render ``folder/claims.json`` into ``folder/report.html`` (atomically).

    Raises:
        UserError: ``claims.json`` is missing, unreadable or not a claims file.
    """
    folder = Path(folder)
    source = folder / CLAIMS_FILE
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(
            f"cannot read {quoted(source)} ({exc}); re-run `distillscope reproduce`"
        ) from None
    if not isinstance(data, dict) or data.get("kind") != "distillscope-claims":
        raise UserError(f"{quoted(source)} is not a claims file of `distillscope reproduce`")
    target = folder / REPORT_FILE
    atomic_write_text(target, render_claims_html(data, folder))
    return target


def _verdict_class(verdict: str) -> str:
    if verdict == "reproduced":
        return "reproduced"
    if verdict == "not reproduced":
        return "not-reproduced"
    return "inconclusive"


def _stat(rec: Mapping[str, Any]) -> str:
    if rec.get("mean") is None:
        return "no value"
    text = f"{rec['mean']:+.3f}"
    if rec.get("sd") is not None:
        text += f" ± {rec['sd']:.3f}"
    if rec.get("interval") is not None:
        low, high = rec["interval"]
        text += f" [{low:+.3f}, {high:+.3f}]"
    return f"{text} (n={rec['n']})"


def _grid_link(grid: str, folder: Path | None) -> str:
    if not grid:
        return ""
    target = Path(grid) / REPORT_FILE
    href = os.path.relpath(target, folder) if folder is not None else str(target)
    return f' <a href="{escape(Path(href).as_posix())}">grid report</a>'


def render_claims_html(data: Mapping[str, Any], folder: Path | None = None) -> str:
    """The page of a parsed ``claims.json``; links to each grid's report relative to ``folder``.

    Example:
        >>> rec = {"id": "c", "config": "x.yaml", "grid": "", "statement": "KD helps",
        ...        "paper_value": "+2", "measure": "m", "departures": "", "rule": "a:b > 0",
        ...        "per_seed": {"0": 0.1}, "n": 1, "mean": 0.1, "sd": None, "interval": None,
        ...        "controls": {}, "missing": [], "verdict": "inconclusive at 1 seeds"}
        >>> page = render_claims_html({"paper": "003", "title": "T", "seeds": [0],
        ...                            "level": 0.95, "verdicts": {}, "claims": [rec]})
        >>> '<span class="verdict inconclusive">inconclusive at 1 seeds</span>' in page
        True
    """
    seeds = ", ".join(str(s) for s in data["seeds"])
    counts = ", ".join(f"{n} {escape(v)}" for v, n in data.get("verdicts", {}).items())
    head = ["claim", "paper's statement", "our setting", "rule", "measured", "controls", "verdict"]
    rows = []
    for rec in data["claims"]:
        setting = f"<code>{escape(rec['config'])}</code>" + _grid_link(rec.get("grid", ""), folder)
        if rec["departures"]:
            setting += f"<br>departs: {escape(rec['departures'])}"
        measured = escape(_stat(rec))
        if rec["measure"]:
            measured = f"{escape(rec['measure'])}: {measured}"
        per_seed = ", ".join(
            f"{s}: {'–' if v is None else f'{v:+.3f}'}" for s, v in rec["per_seed"].items()
        )
        measured += f"<br><small>per seed {escape(per_seed)}</small>"
        if rec["missing"]:
            measured += f"<br>missing: {escape(', '.join(rec['missing']))}"
        controls = "<br>".join(
            f"{escape(name)}: <code>{escape(c['rule'])}</code> {escape(_stat(c))} "
            f"{'holds' if c['holds'] else 'does not hold'}"
            for name, c in rec["controls"].items()
        )
        verdict = rec["verdict"]
        departs = "<br><small>in our setting, which departs from the paper's</small>"
        rows.append(
            [
                escape(rec["id"]),
                f"{escape(rec['statement'])}<br><small>paper: {escape(rec['paper_value'])}</small>",
                setting,
                f'<span class="rule"><code>{escape(rec["rule"])}</code></span>',
                measured,
                controls or "–",
                f'<span class="verdict {_verdict_class(verdict)}">{escape(verdict)}</span>'
                + (departs if rec["departures"] else ""),
            ]
        )
    title = f"Paper {escape(str(data['paper']))}: {escape(str(data['title']))}"
    level = round(float(data.get("level", 0.95)) * 100)
    intro = (
        f"<p>Seeds {escape(seeds)}. Each claim's rule is computed per seed; measured = mean ± "
        f"sample standard deviation [{level}% Student-t interval] over seeds. Verdicts are "
        "computed: <em>reproduced</em> when the interval lies on the rule's side of zero and "
        "every control holds, <em>not reproduced</em> when it lies on the other side, otherwise "
        f"<em>inconclusive</em>. Verdicts: {counts or 'none'}.</p>"
    )
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>distillscope claims: {title}</title>",
            f"<style>{CSS}{CLAIMS_CSS}</style></head><body>",
            f"<h1>{title}</h1>",
            intro,
            '<section id="claims"><h2>Claims</h2>',
            _table(head, rows, numeric=()),
            "</section>",
            "<footer>Rendered by <code>distillscope reproduce</code> from claims.json; "
            "re-render with <code>distillscope report FOLDER</code>.</footer>",
            "</body></html>",
            "",
        ]
    )
