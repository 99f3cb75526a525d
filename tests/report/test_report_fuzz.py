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

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from distillscope.errors import UserError
from distillscope.report.html import render_html
from distillscope.report.results import check_results

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
