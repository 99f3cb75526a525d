"""The report's probe descriptions say which measures are this project's, with their formulas."""

from __future__ import annotations

from distillscope.report.descriptions import PAPERS, describe


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
