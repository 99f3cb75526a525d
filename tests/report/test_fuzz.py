"""`distillscope report` on a damaged ``results.json``: a one-line error or a page, never a crash.

Random fields of a real results file are replaced by values of the wrong type or of absurd size
(strings for numbers, 1e308, 10**30, NaN, nested lists); the report either renders or raises a
:class:`~distillscope.errors.UserError`. Derandomised, a few dozen examples.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from distillscope.cli import main
from distillscope.errors import UserError
from distillscope.report.html import render_html
from distillscope.results import check_results

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "results_small.json"
BASE = json.loads(FIXTURE.read_text())

BAD = st.one_of(
    st.sampled_from(["abc", "", 1e308, -1e308, 10**30, -1, 0, True, None, float("nan")]),
    st.sampled_from([[], {}, [1, "a"], {"a": "b"}, [[1e308]], {"x": [None]}]),
)


def paths_of(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += paths_of(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node[:2]):
            out += paths_of(value, (*prefix, i))
    return out


PATHS = paths_of(BASE)


@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: report the example as found
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.sampled_from(PATHS), BAD)
def test_damaged_results_render_or_fail_with_one_line(path: tuple, value: Any) -> None:
    results = copy.deepcopy(BASE)
    node = results
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    try:
        check_results(results)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # matplotlib on 1e308
            page = render_html(results)
    except UserError as exc:
        assert "\n" not in str(exc) and str(exc)
        return
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")


HUGE = "a" * 5_000_000


def _huge_model(r: dict) -> None:
    r["models"][HUGE] = 5


def _huge_probe(r: dict) -> None:
    r["probes"][HUGE] = 5


def _huge_value(r: dict) -> None:
    r["probes"]["accuracy"]["values"][HUGE] = HUGE


def _huge_training(r: dict) -> None:
    r["training"] = {HUGE: [{"epoch": HUGE}]}


def _huge_schema(r: dict) -> None:
    r["schema"] = HUGE


@pytest.mark.parametrize(
    "damage", [_huge_model, _huge_probe, _huge_value, _huge_training, _huge_schema]
)
def test_a_5_mb_string_in_results_is_cut_in_the_error_line(tmp_path, capsys, damage) -> None:
    results = copy.deepcopy(BASE)
    damage(results)
    (tmp_path / "results.json").write_text(json.dumps(results))
    code = main(["report", str(tmp_path)])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1
    assert len(lines[0]) < 400 and "(5000000 chars)" in lines[0], lines[0][:400]
    assert lines[0].endswith("re-run `distillscope run CONFIG` to write it again")


def test_the_cli_cuts_the_middle_of_any_long_error_line(capsys, monkeypatch) -> None:
    def fail(args):
        raise UserError("bad value " + "b" * 50_000 + "; use a short one")

    monkeypatch.setattr("distillscope.cli.cmd_report", fail)
    assert main(["report", "x"]) == 2
    line = capsys.readouterr().err.strip()
    assert len(line) < 1200 and line.startswith("distillscope: error: bad value bbb")
    assert line.endswith("; use a short one") and "chars cut" in line
