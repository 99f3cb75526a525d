"""Every registered probe runs on tiny models, on images and on 2-D points, with a sane result."""

from __future__ import annotations

import json
import math

import pytest

from distillscope.errors import ConfigError
from distillscope.probes import ProbeResult, create_probe, probe_names
from tests.probes.tiny_probe_models import TinyCNN

SMALL = {"batch_size": 8, "max_samples": 12, "seed": 3}


def check_result(result: ProbeResult, name: str, models: list[str]) -> None:
    assert isinstance(result, ProbeResult)
    assert result.probe == name
    for key, value in result.values.items():
        assert isinstance(value, float), key
        assert math.isfinite(value), key
        assert key.split("->")[-1].split("/")[0] in models, key
    for key, params_key in SMALL.items():
        assert result.params[key] == params_key
    json.dumps(result.to_dict())  # results.json must take it as it is
    assert ProbeResult.from_dict(result.to_dict()) == result


def test_the_first_probes_are_registered() -> None:
    expected = {"accuracy", "agreement", "class_similarity", "adherence", "adversarial"}
    assert expected | {"decision_map"} <= set(probe_names())


@pytest.mark.parametrize("name", probe_names())
def test_probe_runs_on_images(name, image_models, image_data, roles) -> None:
    result = create_probe(name, **SMALL).run(image_models, image_data, roles)
    check_result(result, name, list(image_models))
    assert result.values or result.params.get("skipped"), "no value and no reason"
    again = create_probe(name, **SMALL).run(image_models, image_data, roles)
    assert again.values == result.values  # deterministic for a fixed seed


@pytest.mark.parametrize("name", probe_names())
def test_probe_runs_on_points(name, point_models, point_data, roles) -> None:
    result = create_probe(name, **SMALL).run(point_models, point_data, roles)
    check_result(result, name, list(point_models))
    assert result.values or result.params.get("skipped"), "no value and no reason"


@pytest.mark.parametrize("name", probe_names())
def test_probe_rejects_unknown_parameters(name) -> None:
    with pytest.raises(ConfigError, match="no_such_knob"):
        create_probe(name, no_such_knob=1)


@pytest.mark.parametrize("name", probe_names())
def test_probe_leaves_models_in_their_training_mode(name, image_data, roles) -> None:
    models = {"teacher": TinyCNN(), "independent": TinyCNN(), "student": TinyCNN()}
    models["student"].train()
    models["teacher"].eval()
    create_probe(name, **SMALL).run(models, image_data, roles)
    assert models["student"].training and all(m.training for m in models["student"].modules())
    assert not models["teacher"].training
