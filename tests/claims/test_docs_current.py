"""docs/reproduce.md's claims tables are generated from docs/claims/*.json and must be current."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from distillscope.claims.docs import DOCS_CLAIMS, REPRODUCE_MD, for_docs, section, with_section
from distillscope.errors import UserError

REPO = Path(__file__).resolve().parents[2]
KEPT = sorted((REPO / DOCS_CLAIMS).glob("paper-*.json"))


@pytest.mark.parametrize("path", KEPT, ids=[p.stem for p in KEPT])
def test_reproduce_md_shows_the_kept_claims(path: Path) -> None:
    payload = json.loads(path.read_text(encoding="utf-8"))
    page = (REPO / REPRODUCE_MD).read_text(encoding="utf-8")
    assert section(payload) in page, (
        f"{REPRODUCE_MD} is not current with {path.name}; run "
        "scripts/update_reproduce_docs.py on the claims.json it came from"
    )
    assert all("grid" not in c for c in payload["claims"])  # no machine paths in the docs


def test_a_section_is_replaced_not_repeated() -> None:
    rec = {"id": "c", "config": "x.yaml", "grid": "/somewhere/grid", "statement": "s",
           "paper_value": "p", "measure": "", "departures": "", "rule": "a:b > 0",
           "per_seed": {"0": 0.1, "1": 0.2}, "n": 2, "mean": 0.15, "sd": 0.07,
           "interval": [-0.5, 0.8], "controls": {}, "missing": [],
           "verdict": "inconclusive at 2 seeds"}  # fmt: skip
    payload = for_docs({"paper": "002", "title": "T", "seeds": [0, 1], "level": 0.95,
                        "verdicts": {}, "claims": [rec]})  # fmt: skip
    assert "grid" not in payload["claims"][0]
    page = with_section("# Reproduce\n\ntext\n", payload)
    again = with_section(page.replace("inconclusive", "reproduced"), payload)
    assert again == page and page.count("<!-- claims:002 begin -->") == 1


@pytest.mark.parametrize("paper", ["../../x", "", "3", "003/../004"])
def test_a_paper_that_is_not_an_id_is_refused_before_it_becomes_a_path(paper: str) -> None:
    with pytest.raises(UserError, match="not a three-digit id"):
        for_docs({"paper": paper, "claims": []})


def test_the_update_script_refuses_bad_claims_in_one_line_and_writes_nothing(
    tmp_path: Path,
) -> None:
    script = REPO / "scripts" / "update_reproduce_docs.py"
    page = (REPO / REPRODUCE_MD).read_bytes()
    kept = sorted(p.name for p in (REPO / DOCS_CLAIMS).iterdir())
    bad = {"truncated": '{"paper": "003", "claims": [', "escaping": '{"paper": "../../x"}'}
    for name, text in bad.items():
        path = tmp_path / f"{name}.json"
        path.write_text(text, encoding="utf-8")
        run = subprocess.run([sys.executable, str(script), str(path)], capture_output=True,
                             text=True, timeout=120)  # fmt: skip
        assert run.returncode == 2, (name, run.stderr)
        assert len(run.stderr.strip().splitlines()) == 1 and "cannot use" in run.stderr, name
    assert (REPO / REPRODUCE_MD).read_bytes() == page
    assert sorted(p.name for p in (REPO / DOCS_CLAIMS).iterdir()) == kept
