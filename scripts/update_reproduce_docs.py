"""Copy a ``distillscope reproduce`` result into the docs and regenerate docs/reproduce.md's
claims table for that paper from it.

    python scripts/update_reproduce_docs.py runs/reproduce-003/claims.json

The claims.json is kept as ``docs/claims/paper-<id>.json`` (without machine-specific paths), and
the section of docs/reproduce.md between ``<!-- claims:<id> begin -->`` and
``<!-- claims:<id> end -->`` is replaced by the table ``claims.md`` holds (appended at the end
when the markers are missing). ``tests/claims/test_docs_current.py`` fails when the two drift.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from distillscope.claims.docs import DOCS_CLAIMS, REPRODUCE_MD, for_docs, with_section
from distillscope.errors import UserError


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        payload = for_docs(json.loads(Path(argv[0]).read_text(encoding="utf-8")))
    except (OSError, ValueError, AttributeError, UserError) as exc:
        print(f"update_reproduce_docs: cannot use {argv[0]}: {exc}", file=sys.stderr)
        return 2
    repo = Path(__file__).resolve().parents[1]
    target = repo / DOCS_CLAIMS / f"paper-{payload['paper']}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    md = repo / REPRODUCE_MD
    md.write_text(with_section(md.read_text(encoding="utf-8"), payload), encoding="utf-8")
    paper = payload["paper"]
    print(f"wrote {target.relative_to(repo)} and the paper {paper} section of {REPRODUCE_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
