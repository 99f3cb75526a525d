"""Papers' claims as computations: declared rules, measured over seeds, verdicts with intervals.

``distillscope reproduce PAPER`` runs them (:func:`reproduce`); a claim's verdict comes from its
rule (:mod:`distillscope.claims.rule`), never from prose.
"""

from __future__ import annotations

from pathlib import Path

from distillscope.claims.declare import Claim, PaperClaims, load_claims, paper_ids
from distillscope.claims.reproduce import reproduce
from distillscope.claims.rule import interval, parse_rule, verdict

__all__ = [
    "Claim",
    "PaperClaims",
    "interval",
    "list_claims",
    "load_claims",
    "paper_ids",
    "parse_rule",
    "reproduce",
    "verdict",
]


def list_claims(root: str | Path, paper: str | None = None) -> str:
    """The papers with declared claims (or one paper's claims), one line each."""
    papers = [paper] if paper else paper_ids(Path(root))
    lines = []
    for pid in papers:
        declared = load_claims(root, pid)
        lines.append(f"{pid}  {declared.title}")
        lines.extend(f"  {cid}  ({c.config})" for cid, c in declared.claims.items())
    return "\n".join(lines) + "\n" if lines else f"no claims declared under {str(root)!r}\n"
