"""docs/reproduce.md's claims tables, generated from the ``claims.json`` kept in docs/claims/.

A paper's section sits between ``<!-- claims:<id> begin -->`` and ``<!-- claims:<id> end -->``;
:func:`with_section` rewrites it from a payload, so the page never says what the numbers do not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from distillscope.claims.declare import PAPER_ID
from distillscope.claims.write import claims_markdown
from distillscope.errors import UserError

__all__ = ["DOCS_CLAIMS", "REPRODUCE_MD", "for_docs", "section", "with_section"]

DOCS_CLAIMS = "docs/claims"
REPRODUCE_MD = "docs/reproduce.md"


def for_docs(payload: Mapping[str, Any]) -> dict[str, Any]:
    """``payload`` without what belongs to one machine (each claim's grid folder).

    Raises:
        UserError: The payload's paper is not a three-digit id (it names the kept file).
    """
    paper = str(payload.get("paper", ""))
    if not PAPER_ID.fullmatch(paper):
        raise UserError(
            f"the claims name paper {paper!r}, not a three-digit id such as 003; pass a "
            "claims.json written by `distillscope reproduce`"
        )
    out = dict(payload)
    out["claims"] = [{k: v for k, v in c.items() if k != "grid"} for c in payload["claims"]]
    return out


def _markers(paper: str) -> tuple[str, str]:
    return f"<!-- claims:{paper} begin -->", f"<!-- claims:{paper} end -->"


def section(payload: Mapping[str, Any]) -> str:
    """The marked section of a paper: its claims page one heading level down.

    Example:
        >>> text = section({"paper": "003", "title": "T", "seeds": [0, 1], "level": 0.95,
        ...                 "verdicts": {}, "claims": []})
        >>> text.splitlines()[:2]
        ['<!-- claims:003 begin -->', '## Paper 003: T']
    """
    begin, end = _markers(str(payload["paper"]))
    body = claims_markdown(payload).replace("# Paper", "## Paper", 1).rstrip("\n")
    return f"{begin}\n{body}\n{end}"


def with_section(page: str, payload: Mapping[str, Any]) -> str:
    """``page`` with the paper's marked section replaced (or appended when it has none).

    Example:
        >>> p = {"paper": "001", "title": "T", "seeds": [0], "level": 0.95, "verdicts": {},
        ...      "claims": []}
        >>> page = with_section("intro\\n", p)
        >>> with_section(page, p) == page and page.startswith("intro\\n\\n<!-- claims:001")
        True
    """
    begin, end = _markers(str(payload["paper"]))
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    new = section(payload)
    if pattern.search(page):
        return pattern.sub(lambda _: new, page, count=1)
    return page.rstrip("\n") + "\n\n" + new + "\n"
