"""The explanation-map probes in the report: description, table, bars, curves, example maps."""

from __future__ import annotations

import json

import pytest

from distillscope.probes import create_probe, probe_names
from distillscope.probes.base import Roles, with_directions
from distillscope.registry import PROBES as PROBE_REGISTRY
from distillscope.report import render_html
from distillscope.report.descriptions import PAPERS, describe
from tests.probes.map_models import mask_data
from tests.probes.tiny_probe_models import TinyCNN, seeded

PROBES = ("localisation", "explanation_shift", "cam_similarity")


def section(page: str, anchor: str) -> str:
    start = page.index(f'<section id="{anchor}">')
    return page[start : page.index("</section>", start)]


@pytest.fixture(scope="module")
def page() -> str:
    models = {
        "teacher": seeded(TinyCNN, 0, width=6),
        "independent": seeded(TinyCNN, 1),
        "independent_b": seeded(TinyCNN, 3),
        "kd": seeded(TinyCNN, 2),
    }
    roles = Roles(
        ["teacher"],
        ["independent", "independent_b"],
        ["kd"],
        {m: "teacher" for m in ("independent", "independent_b", "kd")},
    )
    data = mask_data(n=12)
    probes = {}
    for name in PROBES:
        probe = create_probe(name, max_samples=12, batch_size=6)
        probes[name] = with_directions(probe, probe.run(models, data, roles)).to_dict()
    role = {"teacher": "teacher", "kd": "student"}
    results = {
        "schema": 1,
        "run": {"name": "maps"},
        "models": {m: {"role": role.get(m, "independent")} for m in models},
        "probes": json.loads(json.dumps(probes)),  # as results.json holds them
    }
    return render_html(results)


def test_every_registered_probe_has_a_description() -> None:
    for name in probe_names():
        probe = PROBE_REGISTRY.get(name)
        assert probe.description, name
        assert probe.paper is None or probe.paper in PAPERS, name


def test_descriptions_cite_the_papers_and_label_our_measures() -> None:
    assert describe("localisation").endswith(f"[001] {PAPERS['001']}.")
    assert "this project's extension" in describe("localisation")
    assert "Our summaries" in describe("explanation_shift")
    assert "0.5 = chance" in describe("cam_similarity") and "(ours)" in describe("cam_similarity")
    assert describe("cam_similarity").endswith(f"[003] {PAPERS['003']}")  # ends with "?"


def test_each_section_has_its_table_and_plots(page: str) -> None:
    localisation = section(page, "probe-localisation")
    assert "<th>epg ↑</th><th>iou ↑</th>" in localisation
    assert localisation.count("<img") == 2  # bars + example maps
    assert 'alt="localisation images"' in localisation
    shift = section(page, "probe-explanation_shift")
    assert shift.count("<img") == 2  # bars + curves
    assert 'alt="explanation_shift series"' in shift and "curve_gap ↓" in shift
    similarity = section(page, "probe-cam_similarity")
    assert "vs_independent ↑" in similarity and "vs_independent_b ↑" in similarity
    assert "teacher -&gt; independent</td>" in similarity  # the sanity row
    assert similarity.count("<img") == 1
