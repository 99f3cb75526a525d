"""The report page: one offline HTML file, every model and number, re-rendered byte for byte."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from html import escape
from pathlib import Path
from typing import Any

import pytest

import distillscope.files as files_module
from distillscope.report import render_html, render_report
from distillscope.report.descriptions import GENERIC, PAPERS
from distillscope.report.tables import format_value, row_label

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "results_small.json"


def load_fixture() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The fixture's run directory and its report, rendered once for the module."""
    run_dir = tmp_path_factory.mktemp("run")
    shutil.copy(FIXTURE, run_dir / "results.json")
    path = render_report(run_dir)
    return run_dir, path.read_text(encoding="utf-8")


def section(page: str, anchor: str) -> str:
    """The HTML of one ``<section id=anchor>``."""
    start = page.index(f'<section id="{anchor}">')
    return page[start : page.index("</section>", start)]


def only(results: dict[str, Any], *probes: str) -> dict[str, Any]:
    """A copy of ``results`` with only ``probes`` and no training (quick to render)."""
    small = copy.deepcopy(results)
    small["probes"] = {name: small["probes"][name] for name in probes}
    small["training"] = {}
    return small


def test_report_is_one_file_next_to_results(rendered):
    run_dir, page = rendered
    assert sorted(p.name for p in run_dir.iterdir()) == ["report.html", "results.json"]
    assert page.startswith("<!DOCTYPE html>")
    images = {
        "training": 1,  # small multiples
        "probe-accuracy": 1,  # bars
        "probe-agreement": 1,
        "probe-adversarial": 1,
        "probe-decision_map": 2,  # bars + maps
        "probe-color_invariance": 2,  # bars + series
    }
    assert {anchor: section(page, anchor).count("<img") for anchor in images} == images
    assert page.count('src="data:image/png;base64,') == sum(images.values())


def test_report_fetches_nothing(rendered):
    _, page = rendered
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<script" not in page and "@import" not in page and "url(" not in page
    assert all(
        src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]*)"', page)
    )
    assert all(href.startswith("#") for href in re.findall(r'href="([^"]*)"', page))


def test_report_shows_every_model_and_every_value(rendered):
    _, page = rendered
    results = load_fixture()
    for name in results["models"]:
        assert f"</span>{name}</td>" in page
    for probe, result in results["probes"].items():
        block = section(page, f"probe-{probe}")
        for key, value in result["values"].items():
            assert f'<td class="num">{format_value(value)}</td>' in block, (probe, key)
    assert format_value(float("nan")) == "—"


def test_models_table(rendered):
    _, page = rendered
    models = section(page, "models")
    start = models.rindex("<tr>", 0, models.index("</span>kd</td>"))
    kd_row = models[start : models.index("</tr>", start)]
    cells = [
        re.sub(r"<span[^>]*></span>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", kd_row)
    ]
    assert cells == [
        "kd",
        "student",
        "mlp_small",
        "1,154",
        "1",
        "teacher",
        "kd(temperature=4, alpha=0.9)",
        "0.9242",
        "no",
    ]
    assert "<td>ce</td>" in models and '<td class="num">4,482</td>' in models


def test_pairs_read_teacher_arrow_model_in_model_order(rendered):
    _, page = rendered
    block = section(page, "probe-agreement")
    positions = [block.index(f"teacher -&gt; {m}</td>") for m in ("independent", "kd", "kd_hot")]
    assert positions == sorted(positions)
    assert "<th>agreement</th><th>kl</th>" in block


def test_descriptions_name_the_paper_and_unknown_probes_render_generically(rendered):
    _, page = rendered
    assert PAPERS["004"].split(":")[0] in section(page, "probe-adversarial")
    unknown = section(page, "probe-color_invariance")
    assert GENERIC.split(";")[0] in unknown
    assert 'alt="color_invariance series"' in unknown  # its series are plotted
    assert "<details><summary>Parameters</summary>" in unknown and "strengths" in unknown


def test_header_and_text_are_escaped(rendered):
    _, page = rendered
    assert "<h1>toy-ring &amp; friends &lt;fixture&gt;</h1>" in page
    assert "<fixture>" not in page
    header = page[page.index('<header id="run">') : page.index("</header>")]
    for text in ("2024-05-01T12:00:00+00:00", "toy2d-ring", "1 min 23 s", "2.3.1", "inner, outer"):
        assert text in header
    assert "How to read:" in header


def test_rerender_is_byte_identical_even_in_another_process(tmp_path):
    """The bytes depend on the results only, not on the process's hash seed or state."""
    results = only(load_fixture(), "agreement", "decision_map")
    (tmp_path / "results.json").write_text(json.dumps(results))
    code = "import sys; from distillscope.report import render_report; render_report(sys.argv[1])"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, env=env)
    assert (tmp_path / "report.html").read_text(encoding="utf-8") == render_html(results)


def test_decision_maps_are_drawn_and_unknown_images_are_listed():
    results = only(load_fixture(), "decision_map")
    images = results["probes"]["decision_map"]["images"]
    images["points"] = {"x": [[0.0, 1.0], [1.0, 0.0]], "y": [0, 1]}  # older points form
    page = render_html(results)
    assert 'alt="decision_map decision maps"' in page and "Images not drawn" not in page
    images["points"] = {"x": "garbage"}
    images["teacher"] = {"probs": [1, 2, 3]}  # not (H, W, K)
    page = render_html(results)
    assert "Images not drawn (not a map or numeric array): teacher, points" in page
    del results["probes"]["decision_map"]["images"]
    assert "decision maps" not in render_html(results)


def test_missing_values_render_as_dash_and_empty_probe_says_so():
    results = only(load_fixture(), "accuracy")
    results["probes"]["accuracy"]["values"] = {"kd/top1": None, "kd/top5": float("nan")}
    block = section(render_html(results), "probe-accuracy")
    assert block.count('<td class="num">—</td>') == 2
    assert "<img" not in block  # nothing to draw
    results["probes"]["accuracy"]["values"] = {}
    assert "No values recorded." in render_html(results)


def test_failed_write_keeps_the_old_report_and_leaves_no_temp_file(tmp_path, monkeypatch):
    results = only(load_fixture(), "accuracy")
    (tmp_path / "results.json").write_text(json.dumps(results))
    (tmp_path / "report.html").write_text("old")

    def fail(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(files_module.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        render_report(tmp_path)
    assert (tmp_path / "report.html").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "results.json"]


def test_skipped_entries_are_explained():
    results = json.loads(FIXTURE.read_text())
    results["probes"]["decision_map"]["params"]["skipped"] = {
        "decision_map": "inputs of shape (1, 8, 8) are not 2-D points"
    }
    html = render_html(results)
    assert "Not computed — decision_map: inputs of shape (1, 8, 8) are not 2-D points." in html


def test_models_table_names_the_group_of_mutual_learning_peers(tmp_path):
    results = only(load_fixture(), "accuracy")
    results["models"]["kd"]["group"] = "mutual"
    (tmp_path / "results.json").write_text(json.dumps(results))
    models = section(render_report(tmp_path).read_text(encoding="utf-8"), "models")
    assert models.count("(trained together in group mutual)") == 1


def test_models_table_names_a_network_s_own_training_data(tmp_path):
    results = only(load_fixture(), "accuracy")
    results["models"]["kd"]["data"] = {"name": "digits", "n_train": 1438}
    (tmp_path / "results.json").write_text(json.dumps(results))
    models = section(render_report(tmp_path).read_text(encoding="utf-8"), "models")
    assert models.count("(trained on digits, 1,438 images)") == 1


def test_ranking_orders_students_by_top1_beside_agreement(rendered, tmp_path):
    from distillscope.report.ranking import ranking_rows

    results = load_fixture()
    rows = ranking_rows(results)
    top1 = results["probes"]["accuracy"]["values"]
    assert [r["model"] for r in rows] == sorted(
        ["independent", "kd", "kd_hot"], key=lambda m: -top1[f"{m}/top1"]
    )
    assert rows[0]["top1_rank"] == 1
    agree = results["probes"]["agreement"]["values"]
    best = max(rows, key=lambda r: r["agreement"])
    assert best["agreement"] == agree[f"teacher->{best['model']}"] and best["agreement_rank"] == 1
    _, page = rendered
    ranking = section(page, "ranking")
    assert ranking.index(">" + rows[0]["model"] + "</td>") < ranking.index(
        ">" + rows[-1]["model"] + "</td>"
    )
    assert '<a href="#ranking">Ranking</a>' in page
    # two students only: nothing to rank, no section and no link
    small = only(results, "accuracy")
    del small["models"]["kd_hot"]
    (tmp_path / "results.json").write_text(json.dumps(small))
    page = render_report(tmp_path).read_text(encoding="utf-8")
    assert 'id="ranking"' not in page and "#ranking" not in page


def test_directions_mark_headers_and_the_best_student_per_column(tmp_path):
    results = only(load_fixture(), "agreement")
    values = results["probes"]["agreement"]["values"]
    results["probes"]["agreement"]["higher_is_better"] = {"": True, "kl": False}
    (tmp_path / "results.json").write_text(json.dumps(results))
    agreement = section(render_report(tmp_path).read_text(encoding="utf-8"), "probe-agreement")
    assert "<th>agreement ↑</th>" in agreement and "<th>kl ↓</th>" in agreement
    best_agree = max((v, k) for k, v in values.items() if "/" not in k)[1]
    best_kl = min((v, k) for k, v in values.items() if k.endswith("/kl"))[1]
    for key in (best_agree, best_kl):
        row = agreement[agreement.index(escape(row_label(key.partition("/")[0])) + "</td>") :]
        row = row[: row.index("</tr>")]
        assert f"<strong>{format_value(values[key])}</strong>" in row, key
    assert agreement.count("<strong>") == 2
    # results written before directions existed: no arrows, nothing bold
    del results["probes"]["agreement"]["higher_is_better"]
    (tmp_path / "results.json").write_text(json.dumps(results))
    old = section(render_report(tmp_path).read_text(encoding="utf-8"), "probe-agreement")
    assert "↑" not in old and "<strong>" not in old


def test_a_probe_s_x_ticks_reach_its_series_chart(monkeypatch):
    import distillscope.report.sections as sections

    seen: list[object] = []

    def spy(groups, palette, main, x_label=None, x_ticks=None):
        seen.append((x_label, x_ticks))
        return None

    monkeypatch.setattr(sections, "series_chart", spy)
    results = only(load_fixture(), "accuracy")
    probe = results["probes"]["accuracy"]
    probe["series"] = {"x": [0, 1], "kd/top1": [0.5, 0.4]}
    probe["params"].update(x_label="domain", x_ticks=["original", "edges"])
    render_html(results)
    assert seen == [("domain", ["original", "edges"])]


def test_model_rows_and_pair_rows_are_ranked_apart(tmp_path):
    """group_gap holds accuracy per group (model rows) and agreement per group (pair rows)."""
    results = only(load_fixture(), "agreement")
    students = [m for m, v in results["models"].items() if v.get("role") != "teacher"][:2]
    a, b = students
    results["probes"]["agreement"] = {
        "probe": "group_gap",
        "values": {
            f"{a}/g": 0.60,
            f"{b}/g": 0.70,
            f"teacher->{a}/g": 0.90,
            f"teacher->{b}/g": 0.80,
        },  # fmt: skip
        "higher_is_better": {"g": True},
        "params": {},
    }
    (tmp_path / "results.json").write_text(json.dumps(results))
    page = section(render_report(tmp_path).read_text(encoding="utf-8"), "probe-agreement")
    assert page.count("<strong>") == 2  # the best model row and the best pair row
    assert "<strong>0.7000</strong>" in page and "<strong>0.9000</strong>" in page


def test_the_header_shows_where_the_data_was_read_and_what_it_was() -> None:
    results = load_fixture()
    plain = render_html(results)
    assert "Data fingerprints" not in plain and "Identity" not in plain  # older results
    results["dataset"]["source"] = "/data/<fashion>"
    results["dataset"]["fingerprints"] = {"train": "a" * 32, "test": "b" * 32}
    results["identity"] = {"digest": "c" * 32, "runtime": {"threads": 3}}
    page = render_html(results)
    assert f"train {'a' * 16}, test {'b' * 16}" in page and "a" * 17 not in page
    assert escape("/data/<fashion>") in page and "<fashion>" not in page
    assert "<th>Threads</th><td>3</td>" in page and "c" * 16 in page


def test_the_header_says_what_a_teachers_passes_ran_in_when_not_fp32() -> None:
    results = load_fixture()
    assert "Teacher passes" not in render_html(results)
    results["teacher_precision"] = {
        "teacher": {"precision": "bf16", "requested": "auto", "agreement": 0.99956,
                    "max_logit_error": 0.0312345, "items": 512, "folded": 21},
        "t2": {"precision": "fp32", "requested": "auto", "agreement": 0.98,
               "max_logit_error": 0.22, "items": 512, "folded": 0},
        "t3": {"precision": "fp32", "requested": "fp32"},
        "t4": "not a record",
    }  # fmt: skip
    page = render_html(results)
    assert (
        "<th>Teacher passes (teacher)</th><td>bf16 (teacher_precision: auto); 21 batch norms "
        "folded into their convolutions; bf16 gave the fp32 top-1 on 99.96% of 512 training "
        "items, largest logit change 0.0312</td>"
    ) in page
    assert (
        "<th>Teacher passes (t2)</th><td>fp32 (teacher_precision: auto); bf16 gave the fp32 "
        "top-1 on 98.00% of 512 training items, largest logit change 0.22</td>"
    ) in page
    assert "Teacher passes (t3)" not in page and "Teacher passes (t4)" not in page
