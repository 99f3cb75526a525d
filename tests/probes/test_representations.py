"""The cka probe: matrices of CKA between teacher and model layers."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from distillscope.errors import ConfigError, ModelError
from distillscope.functional.cka import MinibatchCKA, debiased_cka, linear_cka, rbf_cka
from distillscope.models.taps import FeatureTap
from distillscope.probes import create_probe
from distillscope.probes.base import Roles
from distillscope.probes.representations import pooled_features
from distillscope.probes.sampling import probe_samples

LAYERS = ["block1", "block2"]


def features(model, data, paths, max_samples=1000, seed=0):
    """Flattened activations of ``paths`` over the probe's samples, tapped by hand."""
    samples = probe_samples(data, max_samples, seed)
    inputs = torch.stack([samples[i][0] for i in range(len(samples))])
    model.eval()
    with FeatureTap(model, paths, detach=True) as tap, torch.no_grad():
        model(inputs)
        return {p: f.flatten(1) for p, f in tap.features.items()}


@pytest.mark.parametrize(
    ("estimator", "cka"),
    [("linear", linear_cka), ("rbf", rbf_cka), ("debiased", debiased_cka)],
)
def test_matrix_matches_the_functional_estimators(
    image_models, image_data, roles, estimator, cka
) -> None:
    probe = create_probe("cka", layers=LAYERS, estimator=estimator)
    result = probe.run(image_models, image_data, roles)
    teacher = features(image_models["teacher"], image_data, LAYERS)
    for m in ("independent", "student"):
        model = features(image_models[m], image_data, LAYERS)
        for tl in LAYERS:
            for ml in LAYERS:
                expected = cka(teacher[tl], model[ml])
                assert result.values[f"teacher->{m}/{tl}:{ml}"] == pytest.approx(expected, 1e-5)
        diagonal = [result.values[f"teacher->{m}/{p}:{p}"] for p in LAYERS]
        assert result.values[f"teacher->{m}"] == pytest.approx(sum(diagonal) / 2)
        heat = result.images[f"teacher->{m}"]
        assert heat["rows"] == heat["columns"] == LAYERS
        assert heat["aligned"] == [[0, 0], [1, 1]]
        assert heat["heatmap"][0][1] == result.values[f"teacher->{m}/block1:block2"]
    assert result.params["n_samples"] == 24
    assert result.params["feature_dims"]["teacher"] == {"block1": 384, "block2": 384}


def test_a_copy_of_the_teacher_has_cka_one_on_the_diagonal(image_models, image_data) -> None:
    models = {"teacher": image_models["teacher"], "twin": copy.deepcopy(image_models["teacher"])}
    roles = Roles(teachers=["teacher"], students=["twin"], teacher_of={"twin": "teacher"})
    result = create_probe("cka", layers=LAYERS).run(models, image_data, roles)
    assert result.values["teacher->twin"] == pytest.approx(1.0, abs=1e-6)
    assert result.values["teacher->twin/block1:block2"] < 0.999


def test_minibatch_estimator_accumulates_over_the_probe_batches(
    image_models, image_data, roles
) -> None:
    probe = create_probe("cka", layers=LAYERS, estimator="minibatch", batch_size=10)
    result = probe.run(image_models, image_data, roles)
    teacher = features(image_models["teacher"], image_data, ["block2"])["block2"]
    student = features(image_models["student"], image_data, ["block1"])["block1"]
    acc = MinibatchCKA()
    for tb, sb in zip(teacher.split(10)[:2], student.split(10)[:2]):
        acc.update(tb, sb)
    # 24 images in batches of 10, 10, 4: the last one (4 images) still counts
    acc.update(teacher[20:], student[20:])
    assert result.values["teacher->student/block2:block1"] == pytest.approx(acc.compute(), 1e-6)
    assert result.params["n_samples"] == 24 and result.params["n_dropped"] == 0


def test_minibatch_drops_a_last_batch_of_fewer_than_four(image_models, image_data, roles):
    probe = create_probe("cka", layers=LAYERS, estimator="minibatch", batch_size=11)
    result = probe.run(image_models, image_data, roles)
    assert result.params["n_samples"] == 22 and result.params["n_dropped"] == 2


def test_layers_default_to_the_declared_feature_layers(image_models, image_data, roles) -> None:
    for model in image_models.values():
        model.feature_layers = ["block2"]
    result = create_probe("cka").run(image_models, image_data, roles)
    assert set(result.values) == {
        "teacher->independent",
        "teacher->independent/block2:block2",
        "teacher->student",
        "teacher->student/block2:block2",
    }


def test_a_model_without_feature_layers_needs_layers(image_models, image_data, roles) -> None:
    image_models["teacher"].feature_layers = []
    with pytest.raises(ConfigError, match="declares no feature_layers; give cka"):
        create_probe("cka").run(image_models, image_data, roles)


def test_a_wrong_layer_path_names_the_valid_ones(image_models, image_data, roles) -> None:
    with pytest.raises(ModelError, match="no module 'nope'.*valid paths"):
        create_probe("cka", layers=["nope"]).run(image_models, image_data, roles)


def test_unequal_layer_lists_align_from_the_deepest(image_models, image_data, roles) -> None:
    probe = create_probe("cka", layers=LAYERS, teacher_layers=["block2"])
    result = probe.run(image_models, image_data, roles)
    assert result.values["teacher->student"] == result.values["teacher->student/block2:block2"]
    heat = result.images["teacher->student"]
    assert heat["rows"] == ["block2"] and heat["aligned"] == [[0, 1]]
    assert len(heat["heatmap"]) == 1 and len(heat["heatmap"][0]) == 2


def test_large_maps_are_pooled_for_the_full_estimators(image_models, image_data, roles) -> None:
    probe = create_probe("cka", layers=["block1"], max_features=64)
    result = probe.run(image_models, image_data, roles)
    # teacher: 6 channels, 64 // 6 = 10 cells -> 3 x 3; students: 4 channels -> 4 x 4
    assert result.params["feature_dims"] == {
        "teacher": {"block1": 54},
        "independent": {"block1": 64},
        "student": {"block1": 64},
    }
    assert pooled_features(torch.ones(3, 5, 7), 10).shape == (3, 7)  # 10 // 7 = 1 token group


def test_no_pairs_is_skipped(image_models, image_data) -> None:
    result = create_probe("cka", layers=LAYERS).run(image_models, image_data, Roles(["teacher"]))
    assert result.values == {} and "cka" in result.params["skipped"]


def test_a_dead_layer_is_named_not_recorded(image_models, image_data, roles) -> None:
    torch.nn.init.zeros_(image_models["student"].block2[0].weight)  # block2 is constant
    result = create_probe("cka", layers=LAYERS).run(image_models, image_data, roles)
    assert "teacher->student/block1:block2" not in result.values
    assert "no variance" in result.params["skipped"]["teacher->student/block2:block2"]
    assert result.images["teacher->student"]["heatmap"][1][1] is None
    # the main value is the mean of the defined aligned entries: block1's only
    assert result.values["teacher->student"] == result.values["teacher->student/block1:block1"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"estimator": "cca"}, "cka.estimator='cca' is unknown"),
        ({"layers": "block1"}, "cka.layers='block1' is invalid"),
        ({"layers": []}, "non-empty list"),
        ({"teacher_layers": [""]}, "every entry"),
        ({"max_samples": 5000}, "use estimator: minibatch"),
        ({"estimator": "minibatch", "batch_size": 3}, "cka.batch_size=3"),
        ({"sigma_fraction": 0}, "cka.sigma_fraction=0"),
        ({"max_features": 0}, "cka.max_features=0"),
    ],
)
def test_bad_parameters_are_refused_at_construction(params, message) -> None:
    with pytest.raises(ConfigError, match=message):
        create_probe("cka", **params)
    create_probe("cka", estimator="minibatch", max_samples=50_000)  # no n x n matrix: fine


def test_a_config_with_the_cka_probe_runs_end_to_end(tmp_path, capsys) -> None:
    """``distillscope run`` with the cka probe on toy data: values, matrix and a heat map."""
    import json

    import yaml

    from distillscope.cli import main

    cfg = {
        "name": "cka",
        "seed": 0,
        "progress": False,
        "data": {"name": "toy2d-ring"},
        "train": {"epochs": 1, "batch_size": 64},
        "teacher": {"model": {"name": "mlp_full"}},
        "student": {"name": "mlp_reduced"},
        "students": {"independent": {"loss": "ce"}, "kd": {"loss": "kd"}},
        "probes": {"cka": {"max_samples": 200}},
        "teacher_store": str(tmp_path / "store"),
    }
    path = tmp_path / "cka.yaml"
    path.write_text(yaml.safe_dump(cfg))
    code = main(["run", str(path), "--output-dir", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 0, err
    run = Path(out.strip().splitlines()[-1])
    results = json.loads((run / "results.json").read_text())
    probe = results["probes"]["cka"]
    assert probe["params"]["n_samples"] == 200
    for m in ("independent", "kd"):
        assert 0.0 <= probe["values"][f"teacher->{m}"] <= 1.0 + 1e-9
        heat = probe["images"][f"teacher->{m}"]
        assert len(heat["heatmap"]) == len(heat["rows"]) and heat["rows"][0].startswith("body.")
    assert 'alt="cka heat maps"' in (run / "report.html").read_text()
