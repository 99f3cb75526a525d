"""``claims.md``: a paper's claims table, written from ``claims.json`` alone."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["DEPARTS", "claims_markdown"]

#: Written next to the verdict of a claim measured in a setting other than the paper's.
DEPARTS = " (in our setting, which departs from the paper's)"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _stat(rec: Mapping[str, Any]) -> str:
    """``mean ± sd [low, high] (n)`` of a rule record."""
    if rec["mean"] is None:
        return "no value"
    text = f"{rec['mean']:+.3f}"
    if rec["sd"] is not None:
        text += f" ± {rec['sd']:.3f}"
    if rec["interval"] is not None:
        low, high = rec["interval"]
        text += f" [{low:+.3f}, {high:+.3f}]"
    return f"{text} (n={rec['n']})"


def claims_markdown(payload: Mapping[str, Any]) -> str:
    """The Markdown page of a ``claims.json`` payload.

    Example:
        >>> rec = {"id": "c", "config": "x.yaml", "statement": "KD helps", "paper_value": "+2",
        ...        "measure": "", "departures": "", "rule": "accuracy:kd/top1 - 0.5 > 0",
        ...        "per_seed": {"0": 0.1, "1": 0.2}, "n": 2, "mean": 0.15, "sd": 0.07,
        ...        "interval": [-0.48, 0.78], "controls": {}, "missing": [],
        ...        "verdict": "inconclusive at 2 seeds"}
        >>> page = claims_markdown({"paper": "003", "title": "T", "seeds": [0, 1],
        ...                         "level": 0.95, "verdicts": {}, "claims": [rec]})
        >>> "| c | KD helps (paper: +2) |" in page
        True
    """
    seeds = ", ".join(str(s) for s in payload["seeds"])
    lines = [
        f"# Paper {payload['paper']}: {payload['title']}",
        "",
        f"Seeds {seeds}; each claim's rule is computed per seed, with the mean, the sample "
        f"standard deviation and the {round(payload['level'] * 100)}% Student-t interval over "
        "seeds. Verdicts are computed: *reproduced* when the interval lies on the rule's side "
        "of zero and every control holds, *not reproduced* when it lies on the other side, "
        "otherwise *inconclusive*.",
        "",
        "| claim | paper's statement | our setting | rule | measured: mean ± sd [95% interval] "
        "| controls | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for rec in payload["claims"]:
        setting = f"`{rec['config']}`"
        if rec["departures"]:
            setting += f"; departs: {_cell(rec['departures'])}"
        controls = "; ".join(
            f"{name}: `{c['rule']}` {_stat(c)} {'holds' if c['holds'] else 'does not hold'}"
            for name, c in rec["controls"].items()
        )
        measured = _stat(rec)
        if rec["measure"]:
            measured = f"{_cell(rec['measure'])}: {measured}"
        if rec["missing"]:
            measured += f"; missing: {', '.join(rec['missing'])}"
        lines.append(
            f"| {rec['id']} | {_cell(rec['statement'])} (paper: {_cell(rec['paper_value'])}) "
            f"| {setting} | `{rec['rule']}` | {measured} | {controls or '-'} "
            f"| {rec['verdict']}{DEPARTS if rec['departures'] else ''} |"
        )
    return "\n".join(lines) + "\n"
