"""The HTML report: one self-contained page made from a run's ``results.json``.

Everything is inline: CSS, and plots as base64 PNG ``data:`` URIs; the page has no script and
links to nothing outside itself. Rendering is deterministic: the same results give the same bytes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

from distillscope.errors import UserError
from distillscope.files import atomic_write_text
from distillscope.report.plots import Palette
from distillscope.report.ranking import ranking_section
from distillscope.report.sections import header, models_section, probe_section, training_section
from distillscope.report.style import CSS
from distillscope.results import FIX, SCHEMA_VERSION, check_results, load_results

REPORT_FILE = "report.html"


def render_report(run_dir: Path | str) -> Path:
    """Render ``run_dir/results.json`` into ``run_dir/report.html``, written atomically.

    Args:
        run_dir: A run directory written by ``distillscope run``.

    Returns:
        The path of the report.

    Raises:
        UserError: ``results.json`` is missing, corrupt or of another schema version.
    """
    run_dir = Path(run_dir)
    page = render_html(load_results(run_dir))
    target = run_dir / REPORT_FILE
    atomic_write_text(target, page)
    return target


def _drawn(where: str, section: Any, *args: Any) -> str:
    """``section(*args)``; a value of a type or size :func:`check_results` let through but the
    section cannot draw becomes a one-line :class:`UserError` naming the section."""
    try:
        return section(*args)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError) as exc:
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise UserError(f"results.json: {where} cannot be drawn ({reason}); {FIX}") from None


def render_html(results: Mapping[str, Any]) -> str:
    """The report page of parsed results (schema version 1).

    Raises:
        UserError: ``results`` lacks what the report needs.

    Example:
        >>> page = render_html({"schema": 1, "run": {"name": "demo"}, "models": {}})
        >>> page.startswith("<!DOCTYPE html>") and "<h1>demo</h1>" in page
        True
    """
    check_results(results)
    palette = Palette.for_models(results["models"])
    probes = results.get("probes", {})
    anchors = _anchors(list(probes))
    ranking = _drawn("ranking", ranking_section, results, palette)
    nav = [("run", "Run"), ("models", "Models")]
    nav += [("ranking", "Ranking")] if ranking else []
    nav += [("training", "Training")]
    nav += [(anchors[name], name) for name in probes]
    sections = [
        _drawn("run", header, results),
        "<nav>" + "".join(f'<a href="#{a}">{escape(t)}</a>' for a, t in nav) + "</nav>",
        _drawn("models", models_section, results, palette),
        ranking,
        _drawn("training", training_section, results, palette),
        *(
            _drawn(f"probes.{name}", probe_section, name, p, anchors[name], results, palette)
            for name, p in probes.items()
        ),
        f"<footer>Rendered by <code>distillscope report</code> from results.json "
        f"(schema {SCHEMA_VERSION}); re-render with <code>distillscope report RUN_DIR</code>."
        "</footer>",
    ]
    title = escape(str(results["run"].get("name", "run")))
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>distillscope report: {title}</title>",
            f"<style>{CSS}</style></head><body>",
            *sections,
            "</body></html>",
            "",
        ]
    )


def _anchors(names: list[str]) -> dict[str, str]:
    """Unique, URL-safe section ids for probe names."""
    anchors: dict[str, str] = {}
    for name in names:
        anchor = "probe-" + re.sub(r"[^A-Za-z0-9_-]+", "-", name)
        while anchor in anchors.values():
            anchor += "-"
        anchors[name] = anchor
    return anchors
