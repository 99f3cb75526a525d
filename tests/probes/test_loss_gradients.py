"""The loss-gradient probe: the gradient against finite differences, its values against a direct
computation on the seeded samples, its figure (rows images, columns models) in the report, and
its parameter check."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.errors import ConfigError
from distillscope.probes import create_probe
from distillscope.probes.base import ProbeData, ProbeResult, Roles, with_directions
from distillscope.probes.explained import pixel_image
from distillscope.probes.loss_gradients import FIGURE_KEY, loss_input_gradient
from distillscope.probes.sampling import sample_indices
from distillscope.report import render_html
from distillscope.report.maps import clip_rescale, parse_images
from tests.probes.tiny_probe_models import TinyCNN, seeded

SMALL = {"batch_size": 5, "max_samples": 12, "seed": 3}


def tiny_rgb(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(16, 4),
    )  # fmt: skip


def rgb_data() -> ProbeData:
    g = torch.Generator().manual_seed(2)
    info = DatasetInfo(
        "tiny-rgb", 4, (3, 6, 6), ["a", "b", "c", "d"], mean=(0.5,) * 3, std=(0.5, 0.25, 0.2)
    )
    pixels = torch.rand(10, 3, 6, 6, generator=g)
    mean, std = torch.tensor(info.mean).view(3, 1, 1), torch.tensor(info.std).view(3, 1, 1)
    return ProbeData(TensorDataset((pixels - mean) / std, torch.arange(10) % 4, info), info)


def test_the_loss_gradient_matches_central_finite_differences() -> None:
    model = seeded(TinyCNN, 0).double().eval()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([1, 3])
    grad = loss_input_gradient(model, x, y)
    step = 1e-6
    fd = torch.zeros_like(x)
    for i in range(2):
        for j in range(64):
            e = torch.zeros(64, dtype=torch.float64)
            e[j] = step
            e = e.view(1, 8, 8)
            up = F.cross_entropy(model((x[i] + e)[None]), y[i : i + 1])
            down = F.cross_entropy(model((x[i] - e)[None]), y[i : i + 1])
            fd[i].view(-1)[j] = (up - down) / (2 * step)
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-9)
    assert model.block1[0].weight.grad is None  # parameter gradients untouched


def test_a_sure_model_keeps_its_gradient_direction_where_float32_autograd_loses_it() -> None:
    net = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[10.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    x, y = torch.tensor([[3.0, 0.5]]), torch.tensor([0])  # logit margin ~26: p_y = 1 in float32
    ours = loss_input_gradient(net, x, y)
    x64 = x.double().requires_grad_(True)
    (ref,) = torch.autograd.grad(F.cross_entropy(net.double()(x64), y), x64)
    net.float()
    torch.testing.assert_close(ours.double(), ref, rtol=1e-4, atol=0.0)  # float32 logits
    x32 = x.clone().requires_grad_(True)
    (naive,) = torch.autograd.grad(F.cross_entropy(net(x32), y), x32)
    assert naive[0, 0] > 0 > ref[0, 0]  # float32 autograd turns the gradient: what is avoided


def test_values_match_a_direct_computation_on_the_seeded_samples(
    image_models, image_data, roles
) -> None:
    result = create_probe("loss_gradients", **SMALL).run(image_models, image_data, roles)
    idx = sample_indices(len(image_data.dataset), 12, seed=3)
    x, y = image_data.dataset.inputs[idx], image_data.dataset.targets[idx]
    grads = {m: loss_input_gradient(net.eval(), x, y) / 0.25 for m, net in image_models.items()}
    for m, g in grads.items():
        norm = g.flatten(1).double().norm(dim=1).mean()
        assert result.values[f"{m}/norm"] == pytest.approx(float(norm), rel=1e-5)
    for t, m in roles.pairs():
        a, b = grads[t].flatten(1).double(), grads[m].flatten(1).double()
        cos = ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).mean()
        assert result.values[f"{t}->{m}/cosine"] == pytest.approx(float(cos), abs=1e-5)
    assert set(result.values) == {
        "teacher/norm", "independent/norm", "student/norm",
        "teacher->independent/cosine", "teacher->student/cosine",
    }  # fmt: skip
    assert with_directions(create_probe("loss_gradients"), result).higher_is_better == {
        "norm": None,
        "cosine": None,
    }


def test_a_copy_of_the_teacher_has_cosine_one(image_models, image_data) -> None:
    models = {"teacher": image_models["teacher"], "copy": image_models["teacher"]}
    roles = Roles(teachers=["teacher"], students=["copy"], teacher_of={"copy": "teacher"})
    result = create_probe("loss_gradients", **SMALL).run(models, image_data, roles)
    assert result.values["teacher->copy/cosine"] == pytest.approx(1.0)
    assert result.values["copy/norm"] == result.values["teacher/norm"]


def figure(result: ProbeResult) -> dict:
    return result.images[FIGURE_KEY]


def test_the_figure_shows_the_same_seeded_images_for_every_model(
    image_models, image_data, roles
) -> None:
    result = create_probe("loss_gradients", n_images=4, **SMALL).run(
        image_models, image_data, roles
    )
    drawn = figure(result)
    idx = sample_indices(len(image_data.dataset), 12, seed=3)[:4]
    expected = [pixel_image(image_data.dataset.inputs[i], image_data.info) for i in idx]
    assert drawn["inputs"] == expected  # the first 4 audited samples
    assert drawn["labels"] == [f"c{int(image_data.dataset.targets[i])}" for i in idx]
    assert list(drawn["gradients"]) == list(image_models)
    for panels in drawn["gradients"].values():
        assert len(panels) == 4
        arr = np.asarray(panels)  # (4, 8, 8), each scaled to max |g| = 1
        assert arr.shape == (4, 8, 8) and np.allclose(np.abs(arr).max((1, 2)), 1.0)
    assert result.params["n_drawn"] == 4
    other = create_probe("loss_gradients", n_images=4, **{**SMALL, "seed": 4})
    assert figure(other.run(image_models, image_data, roles))["inputs"] != drawn["inputs"]


def test_the_figure_takes_images_across_batches_up_to_max_samples(
    image_models, image_data, roles
) -> None:
    probe = create_probe("loss_gradients", n_images=7, batch_size=3, max_samples=6, seed=0)
    result = probe.run(image_models, image_data, roles)
    assert len(figure(result)["labels"]) == 6 and result.params["n_drawn"] == 6


def render(result: ProbeResult, models: dict[str, str]) -> str:
    page = render_html(
        {
            "schema": 1,
            "run": {"name": "gradients"},
            "models": {m: {"role": role} for m, role in models.items()},
            "probes": {"loss_gradients": json.loads(json.dumps(result.to_dict()))},
        }
    )
    start = page.index('<section id="probe-loss_gradients">')
    return page[start : page.index("</section>", start)]


def test_the_report_draws_the_grid_for_grey_and_rgb_images(image_models, image_data, roles) -> None:
    result = create_probe("loss_gradients", **SMALL).run(image_models, image_data, roles)
    section = render(
        result, {"teacher": "teacher", "independent": "independent", "student": "student"}
    )
    assert 'alt="loss_gradients gradients"' in section
    assert section.count("<img") == 2  # bars + grid
    models = {"teacher": tiny_rgb(0), "student": tiny_rgb(1)}
    rgb_roles = Roles(teachers=["teacher"], students=["student"], teacher_of={"student": "teacher"})
    rgb = create_probe("loss_gradients", **SMALL).run(models, rgb_data(), rgb_roles)
    assert np.asarray(figure(rgb)["gradients"]["student"]).shape == (6, 6, 6, 3)
    assert np.asarray(figure(rgb)["inputs"]).shape == (6, 6, 6, 3)
    section = render(rgb, {"teacher": "teacher", "student": "student"})
    assert 'alt="loss_gradients gradients"' in section


def test_clip_rescale_follows_tsipras_three_sigma_clip() -> None:
    g = np.random.default_rng(0).standard_t(2, size=(5, 5, 3))  # heavy tails get clipped
    low, high = g.mean() - 3 * g.std(), g.mean() + 3 * g.std()
    expected = (np.minimum(np.maximum(g, low), high) - low) / (high - low)
    np.testing.assert_allclose(clip_rescale(g), expected)
    assert clip_rescale(g).min() >= 0 and clip_rescale(g).max() <= 1
    assert (clip_rescale(np.zeros((2, 2, 3))) == 0.5).all()


def test_on_points_the_values_remain_and_the_figure_is_skipped(
    point_models, point_data, roles
) -> None:
    result = create_probe("loss_gradients", **SMALL).run(point_models, point_data, roles)
    assert "teacher->student/cosine" in result.values and result.images == {}
    assert result.params["skipped"] == {"figure": "the inputs are not images"}


@pytest.mark.parametrize("bad", [0, -1, 1.5, "6", None])
def test_bad_n_images_is_a_one_line_config_error(bad) -> None:
    with pytest.raises(ConfigError, match="loss_gradients.n_images") as info:
        create_probe("loss_gradients", n_images=bad)
    assert "\n" not in str(info.value)


def test_malformed_gradient_grids_are_listed_not_drawn() -> None:
    grey = [[0.0, 1.0], [-1.0, 0.5]]
    parsed = parse_images(
        {
            "ok": {"gradients": {"a": [grey], "b": [grey]}, "inputs": [grey, grey], "labels": 3},
            "uneven": {"gradients": {"a": [grey], "b": [grey, grey]}},
            "flat": {"gradients": {"a": [[1.0, 2.0]]}},
        }
    )
    assert list(parsed.gradients) == ["ok"] and parsed.skipped == ["uneven", "flat"]
    ok = parsed.gradients["ok"]
    assert ok.inputs == [] and ok.labels == ["0"]  # inputs of another length dropped
