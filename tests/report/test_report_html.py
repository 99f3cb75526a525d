"""The report: one offline HTML file, every model and number, re-rendered byte for byte."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from distillscope.errors import UserError
from distillscope.report import render_html, render_report
from distillscope.report.tables import format_value

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "results_small.json"


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    shutil.copy(FIXTURE, tmp_path / "results.json")
    return tmp_path


def test_report_is_one_offline_file(run_dir):
    path = render_report(run_dir)
    assert path == run_dir / "report.html"
    assert sorted(p.name for p in run_dir.iterdir()) == ["report.html", "results.json"]
    html = path.read_text()
    assert html.startswith("<!DOCTYPE html>") or html.lower().startswith("<!doctype html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<script src" not in html and "@import" not in html and "url(http" not in html
    assert "data:image/png;base64," in html  # plots are embedded


def test_report_shows_every_model_and_value(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    html = render_report(run_dir).read_text()
    for name in results["models"]:
        assert name in html
    for probe, result in results["probes"].items():
        assert f'id="{probe}"' in html or probe in html
        for value in result["values"].values():
            if isinstance(value, float | int):
                assert format_value(value) in html, (probe, value)


def test_rerender_is_byte_identical(run_dir):
    first = render_report(run_dir).read_bytes()
    second = render_report(run_dir).read_bytes()
    assert first == second


def test_text_is_escaped(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    results["run"]["name"] = "<script>alert(1)</script>"
    html = render_html(results)
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;" in html


def test_nan_and_missing_values_render_as_dash(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    first = next(iter(results["probes"].values()))
    key = next(iter(first["values"]))
    first["values"][key] = None
    html = render_html(results)
    assert "—" in html


def test_decision_maps_are_drawn(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    assert "decision_map" in results["probes"]
    with_maps = render_html(results).count("data:image/png;base64,")
    del results["probes"]["decision_map"]["images"]
    without = render_html(results).count("data:image/png;base64,")
    assert with_maps > without


@pytest.mark.parametrize(
    ("content", "needle"),
    [(None, "file not found"), (b"{not json", "not valid JSON"), (b"[1, 2]", "results.json")],
)
def test_bad_results_file_is_a_one_line_user_error(tmp_path, content, needle):
    if content is not None:
        (tmp_path / "results.json").write_bytes(content)
    with pytest.raises(UserError, match=needle) as err:
        render_report(tmp_path)
    assert "\n" not in str(err.value)
    assert "distillscope run" in str(err.value)
    assert not (tmp_path / "report.html").exists()


def test_points_in_the_probe_format_are_drawn(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    images = results["probes"]["decision_map"]["images"]
    images["points"] = {"x": [0.0, 1.0, -1.0], "y": [0.5, -0.5, 0.0], "label": [0, 1, 2]}
    html = render_html(results)
    assert "Images not drawn" not in html
    images["points"] = {"x": "garbage"}
    assert "Images not drawn" in render_html(results)
