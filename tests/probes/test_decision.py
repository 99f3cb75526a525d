"""Decision maps on 2-D data: grid layout, hardness of step vs smooth boundaries, skips."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from distillscope.probes import create_probe
from distillscope.probes.base import Roles


def along_y(slope: float) -> nn.Module:
    """Two classes split at y = 0 with logit gap slope * y: a sigmoid of width ~1/slope."""
    net = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[0.0, -0.5], [0.0, 0.5]]) * slope)
    return net


def test_grid_layout_and_points(point_data) -> None:
    probe = create_probe("decision_map", resolution=5, margin=0.5, max_samples=20)
    result = probe.run({"m": along_y(2.0)}, point_data, Roles(["m"]))
    image = result.images["m"]
    xy = point_data.dataset.inputs
    idx = torch.randperm(30, generator=torch.Generator().manual_seed(0))[:20]
    low, high = xy[idx].amin(0) - 0.5, xy[idx].amax(0) + 0.5
    assert image["extent"] == pytest.approx(
        [low[0].item(), high[0].item(), low[1].item(), high[1].item()]
    )
    probs = torch.tensor(image["probs"])
    assert probs.shape == (5, 5, 2)
    torch.testing.assert_close(probs.sum(-1), torch.ones(5, 5), atol=2e-3, rtol=0)
    # Row i is the i-th smallest y: class 1 (p = sigmoid(2y)) grows from the first row to the last.
    ys = torch.linspace(float(low[1]), float(high[1]), 5)
    torch.testing.assert_close(probs[:, 2, 1], torch.sigmoid(2.0 * ys), atol=1e-3, rtol=0)
    assert torch.equal(probs[:, 0], probs[:, 4])  # nothing depends on x
    points = result.images["points"]
    assert len(points["x"]) == len(points["label"]) == 20
    json.dumps(result.images)


def test_step_boundary_is_harder_than_smooth_one(point_data) -> None:
    models = {"hot": along_y(100.0), "cool": along_y(1.0)}
    result = create_probe("decision_map", resolution=60).run(models, point_data, Roles(["hot"]))
    v = result.values
    assert v["hot/hardness"] > 0.95 and v["cool/hardness"] < 0.1
    assert v["hot/twilight"] < 0.05 < 0.3 < v["cool/twilight"]


def test_single_class_model_has_twilight_but_no_hardness(point_data) -> None:
    net = nn.Linear(2, 3)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.copy_(torch.tensor([5.0, 0.0, 0.0]))
    result = create_probe("decision_map", resolution=10).run(
        {"flat": net}, point_data, Roles(["flat"])
    )
    assert result.values == {"flat/twilight": 0.0}
    assert "one class" in result.params["skipped"]["flat/hardness"]


def test_images_are_skipped_with_a_reason(image_models, image_data, roles) -> None:
    result = create_probe("decision_map").run(image_models, image_data, roles)
    assert result.values == {} and result.images == {}
    assert "not 2-D points" in result.params["skipped"]["decision_map"]
