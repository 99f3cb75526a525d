"""The grid report: made from grid.json alone, mean ± std tables, links to each cell's report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from distillscope.cli import main
from distillscope.errors import UserError
from distillscope.report.grid import render_grid_html, render_grid_report

REPO = Path(__file__).resolve().parents[2]


def stats(mean, std, n):
    return {"mean": mean, "std": std, "n": n}


def grid_summary() -> dict:
    cells = [
        {"id": f"T=10,seed={s}", "dir": f"cells/T=10,seed={s}", "labels": {"T": "10", "seed": s}}
        for s in "01"
    ]
    cells[0].update(status="done", duration_s=12.5)
    cells[1].update(status="failed", error="loss is nan; lower train.lr", duration_s=3.0)
    return {
        "schema": 1,
        "kind": "distillscope-grid",
        "grid": {
            "name": "toy",
            "key": "abc",
            "seed_axis": "seed",
            "axes": [
                {"key": "T", "kind": "variable", "labels": ["10", "40"], "used_at": ["a.b", "c"]},
                {"key": "seed", "kind": "path", "labels": ["0", "1"], "used_at": ["seed"]},
            ],
            "counts": {"done": 1, "failed": 1},
        },
        "models": {
            "T<&>": {"role": "teacher"},
            "kd": {"role": "student", "teacher": "T<&>"},
        },
        "cells": cells,
        "groups": [
            {
                "id": "T=10",
                "labels": {"T": "10"},
                "cells": ["T=10,seed=0", "T=10,seed=1"],
                "values": {
                    "accuracy": {
                        "kd/top1": stats(0.9, 0.1, 2),
                        "T<&>/top1": stats(0.95, None, 1),
                    },
                    "agreement": {"T<&>->kd": stats(0.8, 0.05, 2)},
                },
            },
            {
                "id": "T=40",
                "labels": {"T": "40"},
                "cells": ["T=40,seed=0", "T=40,seed=1"],
                "values": {"accuracy": {"kd/top1": stats(None, None, 0)}},
            },
        ],
    }


def test_tables_show_mean_std_and_n_per_axis_combination():
    page = render_grid_html(grid_summary())
    assert "<h3>accuracy: top1</h3>" in page and "<th>T=10</th><th>T=40</th>" in page
    assert "0.9000 ± 0.1000" in page
    assert "0.9500 <small>n=1</small>" in page  # one of two seeds gave a value
    assert "T<&>" not in page and "T&lt;&amp;&gt;" in page  # names are escaped
    # rows follow the model order: the teacher first, then the student
    assert page.index("T&lt;&amp;&gt;</td>") < page.index("kd</td>")
    assert "T&lt;&amp;&gt; -&gt; kd" in page  # a pair row of the agreement table
    assert "src=" not in page and "<script" not in page  # self-contained, fetches nothing


def test_cells_table_links_done_cells_and_shows_failures():
    page = render_grid_html(grid_summary())
    assert '<a href="cells/T=10,seed=0/report.html">report</a>' in page
    assert 'href="cells/T=10,seed=1/report.html"' not in page
    assert "loss is nan; lower train.lr" in page
    assert "Keys set by T" in page and "<code>a.b</code>" in page


def test_report_command_rerenders_a_grid_directory(tmp_path, capsys):
    (tmp_path / "grid.json").write_text(json.dumps(grid_summary()))
    assert main(["report", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "report.html")
    first = (tmp_path / "report.html").read_bytes()
    assert render_grid_report(tmp_path).read_bytes() == first  # deterministic


@pytest.mark.parametrize(
    "content",
    ["{not json", json.dumps({"schema": 2}), json.dumps({**grid_summary(), "cells": {}})],
)
def test_a_broken_grid_json_is_one_line_and_exit_2(tmp_path, capsys, content):
    (tmp_path / "grid.json").write_text(content)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "grid.json" in err[0]
    with pytest.raises(UserError):
        render_grid_report(tmp_path)


def test_the_grid_report_imports_neither_runner_nor_experiment():
    code = (
        "import sys, distillscope.report.grid; "
        "print(sorted(m for m in sys.modules if m.startswith(('distillscope.grid', "
        "'distillscope.experiment'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO / "src")},
        check=True,
    ).stdout
    assert out.strip() == "[]"
