"""five_band (paper 000 5.1): hand-made maps against ground-truth heat maps, and a tiny CNN."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distillscope.data import load_dataset
from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.errors import ConfigError
from distillscope.functional.five_band import BINARY_METRICS, binary_scores, five_band_scores
from distillscope.probes import create_probe
from distillscope.probes.base import ProbeData, Roles, with_directions
from distillscope.probes.sampling import probe_samples
from distillscope.report import render_html
from distillscope.report.descriptions import PAPERS, describe
from tests.probes.map_models import MapModel
from tests.probes.tiny_probe_models import TinyCNN, seeded

FIVE = ("pixel_accuracy", "recall", "precision", "fpr")
BINARY = [f"{r}_{k}" for r in ("object", "feature") for k in BINARY_METRICS]


def truth_data(n: int = 12, size: int = 8, seed: int = 0) -> ProbeData:
    """``n`` one-channel images whose pixels are their ternary truth (0, 1, 2): a square object
    with a feature row; every fourth image has no object. Labels ``i % 4``."""
    g = torch.Generator().manual_seed(seed)
    heat = torch.zeros(n, size, size, dtype=torch.uint8)
    for i in range(n):
        if i % 4 == 3:
            continue
        top, left = torch.randint(0, size // 2, (2,), generator=g).tolist()
        side = int(torch.randint(2, size // 2 + 1, (1,), generator=g))
        heat[i, top : top + side, left : left + side] = 1
        heat[i, top, left : left + side] = 2
    info = DatasetInfo(
        "truth-maps", 4, (1, size, size), [f"c{i}" for i in range(4)], mean=(0.0,), std=(1.0,)
    )
    inputs = heat.float()[:, None]  # (N, 1, H, W)
    return ProbeData(TensorDataset(inputs, torch.arange(n) % 4, info, heatmaps=heat), info)


def truth(x, target):
    return x[:, 0]  # the ground truth itself


def inverted(x, target):
    return 2.0 - x[:, 0]  # background brightest, feature darkest


def wobbly(x, target):
    return torch.sin(3.0 * x[:, 0] + torch.arange(x[0, 0].numel()).view(x.shape[-2:]))


def test_the_truth_scores_perfectly_and_images_without_objects_leave_the_binary_tasks() -> None:
    data = truth_data()
    r = create_probe("five_band", method="explain", soft_steps=1, batch_size=5).run(
        {"t": MapModel(truth)}, data, Roles(["t"])
    )
    assert r.values["t/pixel_accuracy"] == 1.0 and r.values["t/fpr"] == 0.0
    # An image with nothing to find has recall and precision 0 (Tjoa & Guan's epsilon).
    assert r.values["t/recall"] == pytest.approx(9 / 12)
    assert r.values["t/precision"] == pytest.approx(9 / 12)
    assert {k: r.values[f"t/{k}"] for k in BINARY} == dict.fromkeys(BINARY, 1.0)
    assert r.params["binary_excluded"] == {"object": 3, "feature": 3}
    assert r.params["n_samples"] == 12 and r.params["soft_steps"] == 1


def test_the_inverted_truth_scores_worst() -> None:
    r = create_probe("five_band", method="explain").run(
        {"t": MapModel(inverted)}, truth_data(), Roles(["t"])
    )
    assert r.values["t/fpr"] == 1.0  # every background pixel is in the top band
    assert r.values["t/object_auroc"] == 0.0 and r.values["t/feature_auroc"] == 0.0
    assert r.values["t/feature_recall"] == 0.0 and r.values["t/feature_f1"] == 0.0


def test_values_are_the_per_image_means_over_the_audited_samples() -> None:
    data = truth_data(n=20)
    probe = create_probe("five_band", method="explain", max_samples=15, batch_size=4, seed=2)
    r = probe.run({"t": MapModel(wobbly)}, data, Roles(["t"]))
    samples = probe_samples(data, 15, 2)
    maps = wobbly(samples.inputs, None)
    five = five_band_scores(maps, samples.heatmaps)
    for k in FIVE:
        assert r.values[f"t/{k}"] == pytest.approx(float(five[k].mean()), abs=1e-12), k
    for name, level in (("object", 1), ("feature", 2)):
        scores = binary_scores(maps, samples.heatmaps, level)
        for k in BINARY_METRICS:
            expected = float(scores[k].nanmean())  # images without an object left out
            assert r.values[f"t/{name}_{k}"] == pytest.approx(expected, abs=1e-12)
    assert r.params["binary_excluded"]["object"] == int((samples.targets == 3).sum())


class ShapesCNN(nn.Module):
    """Two conv layers and a linear head on 3-channel images."""

    cam_layer = "conv"

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.out = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.head(self.conv(x)).flatten(1))


def test_a_briefly_trained_cnn_on_heatmap_shapes() -> None:
    train = load_dataset("heatmap-shapes", "train", n_train=50, image_size=16)
    test = load_dataset("heatmap-shapes", "test", n_test=30, image_size=16)
    torch.manual_seed(0)
    net = ShapesCNN()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(5):  # a few steps: the probe reads any network, trained or not
        loss = nn.functional.cross_entropy(net(train.inputs), train.targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    models = {"teacher": net, "student": ShapesCNN()}
    data = ProbeData(test, test.info)
    probe = create_probe("five_band", soft_steps=4, soft_delta=0.05)
    r = probe.run(models, data, Roles(["teacher"], students=["student"]))
    assert set(r.values) == {f"{m}/{k}" for m in models for k in (*FIVE, *BINARY)}
    assert all(0.0 <= v <= 1.0 for v in r.values.values())
    assert r.params["method"] == "saliency" and r.params["target"] == "predicted"
    assert r.params["binary_excluded"]["object"] == 3  # the no-object class, 3 of 30
    assert list(r.images) == ["input", "ground truth", "teacher", "student"]
    assert torch.tensor(r.images["ground truth"]).shape == (16, 16)
    assert set(torch.tensor(r.images["teacher"]).unique().tolist()) <= {-2, -1, 0, 1, 2}
    assert probe.run(models, data, Roles(["teacher"])).values == r.values  # deterministic
    off = create_probe("five_band", max_samples=4, soft_steps=1, example_maps=False)
    assert off.run(models, data, Roles(["teacher"])).images == {}


def test_the_report_shows_the_scores_with_their_directions_and_the_bands() -> None:
    probe = create_probe("five_band", method="explain", soft_steps=1)
    models = {"teacher": MapModel(truth), "kd": MapModel(wobbly)}
    result = with_directions(probe, probe.run(models, truth_data(), Roles(["teacher"])))
    page = render_html(
        {
            "schema": 1,
            "run": {"name": "five-band"},
            "models": {"teacher": {"role": "teacher"}, "kd": {"role": "student"}},
            "probes": {"five_band": result.to_dict()},
        }
    )
    start = page.index('<section id="probe-five_band">')
    body = page[start : page.index("</section>", start)]
    assert "<th>pixel_accuracy ↑</th>" in body and "<th>fpr ↓</th>" in body
    assert "<th>feature_auroc ↑</th>" in body
    assert body.count("<img") == 2  # bars + the example's input, truth and bands
    assert describe("five_band").endswith(f"[000] {PAPERS['000']}.")
    assert "this project's choice" in describe("five_band")


def test_data_without_heat_maps_or_images_is_skipped_with_the_fix(
    image_models, image_data, point_models, point_data, roles
) -> None:
    r = create_probe("five_band").run(image_models, image_data, roles)
    assert r.values == {} and "no ground-truth heat maps" in r.params["skipped"]["five_band"]
    assert "heatmap-shapes" in r.params["skipped"]["five_band"]
    points = create_probe("five_band").run(point_models, point_data, roles)
    assert points.values == {} and "image inputs" in points.params["skipped"]["five_band"]


def test_a_model_that_cannot_be_explained_is_skipped_alone() -> None:
    models = {"t": MapModel(truth), "s": seeded(TinyCNN, 0)}
    r = create_probe("five_band", method="explain", soft_steps=1).run(
        models, truth_data(), Roles(["t"], students=["s"])
    )
    assert {k.split("/")[0] for k in r.values} == {"t"}
    assert "explain" in r.params["skipped"]["s"]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"method": "lime"}, "five_band.method='lime'"),
        ({"target": "teacher"}, "five_band.target='teacher'"),
        ({"soft_steps": 0}, "five_band.soft_steps=0"),
        ({"soft_delta": -0.1}, "five_band.soft_delta=-0.1"),
        ({"soft_steps": 100}, "five_band.soft_steps=100 x soft_delta=0.005 moves the 0.3"),
        ({"example_maps": "yes"}, "five_band.example_maps='yes'"),
    ],
)
def test_bad_parameters_raise_one_line_config_errors(params, fragment) -> None:
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")) as err:
        create_probe("five_band", **params)
    assert "\n" not in str(err.value)
