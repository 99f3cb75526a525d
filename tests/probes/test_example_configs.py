"""The shipped probe example configs load and build their probes with the paper's settings."""

from __future__ import annotations

from pathlib import Path

from distillscope.config import load_config
from distillscope.probes import create_probe

EXAMPLES = Path(__file__).resolve().parents[2] / "configs" / "examples"


def test_adherence_paper004_example_builds_paper_probes() -> None:
    cfg = load_config(EXAMPLES / "adherence-paper004.yaml")
    probes = {name: create_probe(name, **params) for name, params in cfg.probes.items()}
    adherence = probes["adherence"]
    assert adherence.methods == ["saliency", "integrated_gradients", "guided_gradcam"]
    assert (adherence.aggregate, adherence.aggregate_batch) == ("batch", 100)
    assert probes["adversarial"].attacks == ["fgsm", "pgd", "deepfool"]
    assert cfg.teachers["FT_tempT"].train == {"temperature": 20}


def test_explanation_probes_example_builds_the_map_probes() -> None:
    cfg = load_config(EXAMPLES / "explanation-probes.yaml")
    probes = {name: create_probe(name, **params) for name, params in cfg.probes.items()}
    assert probes["localisation"].mask_source == "foreground"
    assert probes["explanation_shift"].shifts == list(range(17))  # paper 001 Fig. 5: 0..16
    assert (probes["cam_similarity"].method, probes["cam_similarity"].target) == (
        "gradcam",
        "ground_truth",
    )
    independent = [n for n, s in cfg.students.items() if n.startswith("independent")]
    assert len(independent) == 2  # the sanity pair of paper 003
    assert len({cfg.students[n].seed for n in independent}) == 2  # two seeds


def test_domain_probes_example_pairs_a_shape_biased_teacher_with_texture_biased_data() -> None:
    cfg = load_config(EXAMPLES / "domain-probes.yaml")
    probes = {name: create_probe(name, **params) for name, params in cfg.probes.items()}
    assert probes["domain_consensus"].domains[0] == "original"
    assert "shape_bias" in probes
    assert cfg.data.name == "textured-fashion" and cfg.data.params["texture"] == "class"
    assert cfg.teachers["teacher"].data.params["texture"] == "random"


def test_calibration_gradients_example_audits_paper_000s_three_students() -> None:
    cfg = load_config(EXAMPLES / "calibration-gradients.yaml")
    probes = {name: create_probe(name, **params) for name, params in cfg.probes.items()}
    assert probes["calibration"].n_bins == 15  # Guo et al.
    assert probes["loss_gradients"].n_images == 6
    assert {n: s.role for n, s in cfg.students.items()}["scratch"] == "independent"
    assert cfg.data.name == "digits"  # ships with scikit-learn: nothing to download
