"""The report's probe descriptions say which measures are this project's, with their formulas."""

from __future__ import annotations

from distillscope.probes.task import AccuracyProbe, AgreementProbe
from distillscope.report.descriptions import GENERIC, PAPERS, describe


def test_boundary_measures_are_labelled_ours_with_their_formulas() -> None:
    text = describe("decision_map")
    assert "this project's measures, not the paper's" in text
    assert "twilight zone' only in words" in text
    assert "hardness = mean of p(1) - p(2)" in text and "4-neighbour" in text
    assert "twilight = share of grid points" in text and "below 0.9" in text


def test_attacking_toy_points_is_labelled_our_extension() -> None:
    text = describe("adversarial")
    assert "attacks CIFAR-10 and TSRD images" in text
    assert "2-D toy points" in text and "this project's extension" in text
    assert "<m>/deepfool" in text and "<m>/deepfool_strong" in text
    assert text.endswith(f"[004] {PAPERS['004']}.")


def test_adherence_lists_guided_gradcam() -> None:
    text = describe("adherence")
    assert "guided_gradcam" in text and "Guided Grad-CAM" in text


def test_domain_probes_cite_paper_003_and_label_their_own_parts() -> None:
    for probe in ("domain_consensus", "shape_bias"):
        text = describe(probe)
        assert text.endswith(f"[003] {PAPERS['003']}")
        assert "ours" in text.lower()
    assert "shape decisions / (shape + texture decisions)" in describe("shape_bias")


def test_the_description_is_read_from_the_probe_class(monkeypatch) -> None:
    monkeypatch.setattr(AgreementProbe, "description", "Measures agreement.")
    assert describe("agreement") == f"Measures agreement. Source: [001] {PAPERS['001']}."
    monkeypatch.setattr(AgreementProbe, "paper", None)
    assert describe("agreement") == "Measures agreement."
    monkeypatch.setattr(AccuracyProbe, "description", None)
    assert describe("accuracy") == GENERIC


def test_unknown_and_prefixed_names_render_generically() -> None:
    assert describe("mystery") == GENERIC
    assert describe("prefix:name") == GENERIC
