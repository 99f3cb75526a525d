"""Invariance probe (paper 003, 4.3 / C.4 / C.5): agreement on two views, per transform."""

from __future__ import annotations

import json
import re

import pytest
import torch
from torch import Tensor, nn

from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.errors import ConfigError
from distillscope.probes import create_probe
from distillscope.probes.base import ProbeData, Roles, with_directions
from distillscope.report import render_html
from tests.probes.tiny_probe_models import TinyCNN, seeded

ROLES = Roles(["t"], students=["s"], teacher_of={"s": "t"})
SMALL = {"batch_size": 32, "max_samples": 64}


def image_data(
    n: int = 64,
    channels: int = 1,
    size: int = 8,
    pixels: Tensor | None = None,
    pixel_range: tuple[float, float] = (0.0, 1.0),
) -> ProbeData:
    """Random images in ``pixel_range``, normalised with mean 0.5 and std 0.25 of that range."""
    low, high = pixel_range
    if pixels is None:
        g = torch.Generator().manual_seed(0)
        pixels = low + (high - low) * torch.rand(n, channels, size, size, generator=g)
    channels = pixels.shape[1]
    mean, std = low + 0.5 * (high - low), 0.25 * (high - low)
    info = DatasetInfo(
        name="views",
        num_classes=2,
        input_shape=tuple(pixels.shape[1:]),
        class_names=["dark", "bright"],
        mean=(mean,) * channels,
        std=(std,) * channels,
        pixel_range=pixel_range,
    )
    targets = torch.arange(len(pixels)) % 2
    return ProbeData(TensorDataset((pixels - mean) / std, targets, info), info)


class Constant(nn.Module):
    """Ignores its input: always class 1."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.tensor([0.0, 1.0], device=x.device).expand(len(x), 2) + 0 * x.sum()


class PixelThreshold(nn.Module):
    """Class 1 when the (channel-mean) intensity of pixel ``(3, 4)`` exceeds 0.5."""

    def __init__(self, info: DatasetInfo) -> None:
        super().__init__()
        self.mean, self.std = info.mean[0], info.std[0]

    def forward(self, x: Tensor) -> Tensor:
        p = (x[:, :, 3, 4] * self.std + self.mean).mean(1)  # (B,) pixel value
        return torch.stack([0.5 - p, p - 0.5], 1)  # (B, 2)


class Recorder(nn.Module):
    """A constant model that keeps every input it is shown."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Tensor] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append(x.detach().clone())
        return torch.zeros(len(x), 2)


def test_a_model_that_ignores_its_input_agrees_everywhere() -> None:
    data = image_data(size=16)
    r = create_probe("invariance", **SMALL).run({"t": Constant()}, data, Roles(["t"]))
    for family in ("colour", "crop", "shift"):
        assert r.values[f"t/{family}"] == 1.0
        assert r.series[f"t/{family}"] == [1.0] * 4
    assert r.series["x/colour"] == [0.1, 0.2, 0.4, 0.8]
    assert r.series["x/crop"] == [0.25, 0.5, 0.75, 0.9]
    assert r.series["x/shift"] == [1.0, 2.0, 4.0, 8.0] and "skipped" not in r.params
    assert r.params["n_samples"] == 64 and "colouring" in r.params  # grey data


@pytest.mark.parametrize("channels", [1, 3])
def test_colour_agreement_of_a_brightness_reader_falls_with_the_strength(channels: int) -> None:
    data = image_data(n=256, channels=channels)
    strengths = [0.0, 0.2, 0.5, 1.0]
    r = create_probe(
        "invariance", families=["colour"], colour_strengths=strengths, max_samples=256
    ).run({"t": Constant(), "s": PixelThreshold(data.info)}, data, ROLES)
    curve = r.series["s/colour"]
    assert curve[0] == 1.0  # s = 0: the jittered view is the un-jittered one
    assert curve[0] > curve[1] > curve[2] > curve[3]
    assert curve[3] < 0.9
    assert r.series["t/colour"] == [1.0] * 4
    gap = sum(1.0 - a for a in curve) / 4
    assert r.values["t->s/colour_gap"] == pytest.approx(gap)
    assert r.values["s/colour"] == pytest.approx(sum(curve) / 4)
    assert set(r.values) == {"t/colour", "s/colour", "t->s/colour_gap"}


def test_whole_image_crops_and_zero_shifts_agree_for_any_model() -> None:
    data = image_data(channels=1)
    models = {"t": seeded(TinyCNN, 0), "s": PixelThreshold(data.info)}
    r = create_probe(
        "invariance", families=["crop", "shift"], crop_scales=[0.3, 1.0], max_shifts=[0, 3], **SMALL
    ).run(models, data, ROLES)
    for m in models:
        assert r.series[f"{m}/crop"][1] == 1.0
        assert r.series[f"{m}/shift"][0] == 1.0
    assert r.series["s/crop"][0] < 1.0 and r.series["s/shift"][1] < 1.0  # it reads one pixel
    assert r.values["t->s/crop_gap"] >= 0


@pytest.mark.parametrize("pixel_range", [(0.0, 1.0), (-1.0, 3.0)])
@pytest.mark.parametrize("channels", [1, 3])
def test_every_view_stays_in_the_pixel_range(channels, pixel_range) -> None:
    data = image_data(channels=channels, pixel_range=pixel_range)
    recorder = Recorder()
    create_probe(
        "invariance", colour_strengths=[0.5, 1.0], crop_scales=[0.2], max_shifts=[5], **SMALL
    ).run({"t": recorder}, data, Roles(["t"]))
    seen = torch.cat(recorder.seen)  # (views, C, H, W) normalised
    assert seen.shape[1:] == (channels, 8, 8)  # the model's own channel count
    mean, std = data.info.mean[0], data.info.std[0]
    pixels = seen * std + mean
    low, high = pixel_range
    assert pixels.min() >= low - 1e-5 and pixels.max() <= high + 1e-5
    assert (pixels == low).any()  # the shifts' black fill


def test_grey_images_are_colourised_and_shown_as_luminance() -> None:
    """Black / white halves: after colourising, the black half takes the luminance of a random
    background colour (< 0.5), the white half that of a foreground colour (>= 0.5)."""
    pixels = torch.zeros(32, 1, 8, 8)
    pixels[:, :, :, 4:] = 1.0
    data = image_data(pixels=pixels)
    recorder = Recorder()
    create_probe("invariance", families=["colour"], colour_strengths=[0.0], **SMALL).run(
        {"t": recorder}, data, Roles(["t"])
    )
    assert len(recorder.seen) == 2  # the base view, then the jittered one (the same at s = 0)
    base = recorder.seen[0] * data.info.std[0] + data.info.mean[0]  # (32, 1, 8, 8) pixels
    assert base.shape == (32, 1, 8, 8)
    dark, bright = base[:, 0, :, :4], base[:, 0, :, 4:]  # (32, 8, 4) each
    assert (dark < 0.5).all() and (bright >= 0.5).all()
    assert torch.allclose(dark, dark[:, :1, :1].expand_as(dark))  # one colour per image
    assert dark[:, 0, 0].std() > 0.05 and bright[:, 0, 0].std() > 0.05  # random per image
    assert torch.equal(recorder.seen[1], recorder.seen[0])


def test_views_are_drawn_from_the_seed() -> None:
    data = image_data()
    models = {"t": seeded(TinyCNN, 0), "s": PixelThreshold(data.info)}

    def run(seed: int) -> tuple[dict[str, float], Tensor]:
        recorder = Recorder()
        probe = create_probe("invariance", seed=seed, **SMALL)
        values = probe.run({**models, "r": recorder}, data, ROLES).values
        return values, torch.cat(recorder.seen)

    (a, views_a), (b, views_b), (_, views_c) = run(0), run(0), run(1)
    assert a == b and torch.equal(views_a, views_b)
    assert not torch.equal(views_a, views_c)


def test_the_control_teacher_is_audited_like_any_model() -> None:
    data = image_data()
    models = {"t": Constant(), "t_star": PixelThreshold(data.info), "s": Constant()}
    roles = Roles(["t", "t_star"], students=["s"], teacher_of={"s": "t"})
    probe = create_probe("invariance", families=["crop"], control_teacher="t_star", **SMALL)
    assert probe.models_named() == {"control_teacher": ["t_star"]}
    r = probe.run(models, data, roles)
    assert r.values["t_star/crop"] < 1.0 and r.params["control_teacher"] == "t_star"
    with pytest.raises(ConfigError, match="t_star"):
        probe.run({"t": Constant()}, data, Roles(["t"]))
    with pytest.raises(ConfigError, match="invariance.control_teacher"):
        create_probe("invariance", control_teacher="")


def test_what_does_not_apply_is_skipped_with_a_reason() -> None:
    two_channel = image_data(channels=2)
    r = create_probe("invariance", max_shifts=[2, 8, 9], **SMALL).run(
        {"t": Constant()}, two_channel, Roles(["t"])
    )
    assert "t/colour" not in r.values and "1 (grey) or 3 (RGB)" in r.params["skipped"]["colour"]
    assert r.series["x/shift"] == [2.0] and "8 pixels" in r.params["skipped"]["shift 8, 9"]
    points = ProbeData(two_channel.dataset, DatasetInfo("pts", 2, (2,), ["a", "b"]))
    r = create_probe("invariance").run({"t": Constant()}, points, Roles(["t"]))
    assert r.values == {} and "image inputs" in r.params["skipped"]["invariance"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"families": []}, "invariance.families=[] is invalid; use a non-empty list"),
        ({"families": ["colour", "blur"]}, "invariance.families has 'blur'; use a list of colour"),
        ({"colour_strengths": []}, "invariance.colour_strengths=[] is invalid; use"),
        ({"colour_strengths": [0.2, 1.5]}, "invariance.colour_strengths=1.5 is out of range; use"),
        (
            {"crop_scales": [0.0]},
            "invariance.crop_scales=0.0 is out of range; use a value in (0, 1]",
        ),
        ({"crop_scales": [1.2]}, "invariance.crop_scales=1.2 is out of range"),
        ({"max_shifts": [-1]}, "invariance.max_shifts=-1 is invalid; use an integer >= 0"),
        # Types are checked by the registry from the signature, before the constructor runs.
        ({"families": "colour"}, "invariance.families='colour' is invalid"),
        ({"max_shifts": [2.5]}, "invariance.max_shifts=[2.5] is invalid"),
        ({"max_shifts": 4}, "invariance.max_shifts=4 is invalid"),
    ],
)
def test_bad_parameters_raise_one_line_config_errors(params, message) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        create_probe("invariance", **params)
    assert "\n" not in str(error.value)


def test_sweeps_are_sorted_and_deduplicated() -> None:
    probe = create_probe("invariance", families=["shift", "colour"], colour_strengths=[0.4, 0.1])
    assert probe.sweeps == {"colour": [0.1, 0.4], "shift": [1, 2, 4, 8]}
    assert create_probe("invariance", max_shifts=[4, 4, 1]).max_shifts == (1, 4)


def test_the_report_draws_one_panel_per_family() -> None:
    data = image_data()
    models = {"t": Constant(), "independent": seeded(TinyCNN, 1), "s": PixelThreshold(data.info)}
    roles = Roles(["t"], ["independent"], ["s"], {"independent": "t", "s": "t"})
    probe = create_probe("invariance", **SMALL)
    result = with_directions(probe, probe.run(models, data, roles)).to_dict()
    results = {
        "schema": 1,
        "run": {"name": "views"},
        "models": {
            "t": {"role": "teacher"},
            "independent": {"role": "independent"},
            "s": {"role": "student"},
        },  # fmt: skip
        "probes": {"invariance": json.loads(json.dumps(result))},
    }
    page = render_html(results)
    start = page.index('<section id="probe-invariance">')
    section = page[start : page.index("</section>", start)]
    assert "<h2>invariance</h2>" in section and "[003]" in section and "Our summaries" in section
    assert "colour ↑" in section and "colour_gap ↓" in section and "shift_gap ↓" in section
    assert 'alt="invariance series"' in section and section.count("<img") == 2  # bars + curves
