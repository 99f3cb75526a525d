"""Model colours, decision-map colour mixing, image parsing and the embedded PNG charts."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from matplotlib.axes import Axes

from distillscope.report.maps import (
    class_colours,
    decision_map_grid,
    heatmap_grid,
    mix_class_colours,
    parse_images,
)
from distillscope.report.plots import (
    PALETTES,
    UNKNOWN_COLOUR,
    Palette,
    _tick_positions,
    bar_chart,
    role_group,
    series_chart,
    training_chart,
)
from distillscope.report.tables import group_series, value_table

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_bytes(uri: str | None) -> bytes:
    assert uri is not None and uri.startswith("data:image/png;base64,")
    data = base64.b64decode(uri.split(",", 1)[1])
    assert data.startswith(PNG_SIGNATURE)
    return data


def toy_study() -> dict[str, dict[str, str]]:
    """Paper 004's 20 flavours: 4 teachers and 16 students, plus an independent and a foreign."""
    models = {f"T{i}": {"role": "teacher"} for i in range(4)}
    models["scratch"] = {"role": "independent"}
    models.update({f"S{i}": {"role": "student"} for i in range(16)})
    models["foreign"] = {"role": "foreign"}
    return models


def test_role_groups():
    groups = [role_group(r) for r in ("teacher", "control_teacher", "independent", "student")]
    assert groups == ["teacher", "teacher", "independent", "student"]
    assert role_group("foreign") == role_group(None) == "other"


def test_palette_colours_by_role_distinct_and_stable():
    models = toy_study()
    palette = Palette.for_models(models)
    assert [palette.colours[f"T{i}"] for i in range(4)] == PALETTES["teacher"]
    assert palette.colours["scratch"] == PALETTES["independent"][0]
    students = [palette.colours[f"S{i}"] for i in range(16)]
    assert len(set(students)) == 16 and set(students) <= set(PALETTES["student"])
    assert palette.colours["foreign"] in PALETTES["other"]
    assert Palette.for_models(models) == palette  # same models, same colours
    assert palette.colour("T0->S3") == palette.colours["S3"]
    assert palette.group("T0->S3") == "student"
    assert palette.colour("ghost") == UNKNOWN_COLOUR and palette.group("ghost") == "other"


def test_palette_cycles_when_a_group_runs_out():
    models = {f"T{i}": {"role": "teacher"} for i in range(5)}
    palette = Palette.for_models(models)
    assert palette.colours["T4"] == palette.colours["T0"]


def test_mixing_keeps_sure_points_pure_and_blends_unsure_ones():
    colours = class_colours(3)
    probs = np.array([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1 / 3, 1 / 3, 1 / 3], [0.0, 0.0, 0.0]]])
    rgb = mix_class_colours(probs, colours)  # (1, 4, 3)
    assert rgb.shape == (1, 4, 3)
    np.testing.assert_allclose(rgb[0, 0], colours[0])
    np.testing.assert_allclose(rgb[0, 1], colours[2])
    np.testing.assert_allclose(rgb[0, 2], colours.mean(0))
    np.testing.assert_allclose(rgb[0, 3], 0.0)  # no probability at all: black
    unnormalised = mix_class_colours(np.array([[[2.0, 2.0, 0.0]]]), colours)
    np.testing.assert_allclose(unnormalised[0, 0], colours[:2].mean(0))


def test_class_colours_are_distinct_for_many_classes():
    for k in (2, 10, 12):
        colours = class_colours(k)
        assert colours.shape == (k, 3)
        assert len({tuple(c) for c in colours.round(6)}) == k
        assert colours.min() >= 0.0 and colours.max() <= 1.0


def test_parse_images_sorts_maps_points_arrays_and_the_rest():
    images = {
        "kd": {"extent": [-1, 1, -2, 2], "probs": [[[0.2, 0.8], [0.6, 0.4]]]},
        "bad": {"probs": [0.5, 0.5]},
        "points": {"x": [0.0, 1.0], "y": [2.0, 3.0], "label": [1, 0]},
        "heat": [[0.0, 1.0], [1.0, 0.0]],
        "rgb": np.zeros((2, 2, 3)).tolist(),
        "ragged": [[1.0], [1.0, 2.0]],
        "text": "x",
    }
    parsed = parse_images(images)
    assert list(parsed.maps) == ["kd"] and parsed.maps["kd"].shape == (1, 2, 2)
    assert parsed.extents == {"kd": [-1.0, 1.0, -2.0, 2.0]}
    assert parsed.points is not None
    np.testing.assert_allclose(parsed.points[0], [[0.0, 2.0], [1.0, 3.0]])
    assert parsed.points[1].tolist() == [1, 0]
    assert list(parsed.arrays) == ["heat", "rgb"]
    assert parsed.skipped == ["bad", "ragged", "text"]


def test_charts_are_metadata_free_deterministic_pngs():
    palette = Palette.for_models({"t": {"role": "teacher"}, "kd": {"role": "student"}})
    table = value_table({"t/top1": 0.9, "kd/top1": 0.8, "kd/top5": None}, list(palette.colours))
    first = png_bytes(bar_chart(table, palette, "accuracy"))
    assert png_bytes(bar_chart(table, palette, "accuracy")) == first
    assert b"Software" not in first and b"matplotlib" not in first.lower()
    groups = group_series({"x": [0, 1], "t->kd": [1.0, 0.5]}, list(palette.colours))
    png_bytes(series_chart(groups, palette, "invariance"))
    png_bytes(training_chart({"kd": [{"epoch": 1, "loss": 1.0, "val_acc": 0.5}]}, palette))
    maps = parse_images({"kd": {"probs": [[[0.5, 0.5]]]}, "points": {"x": [[0, 0]], "y": [1]}})
    png_bytes(decision_map_grid(maps, {"kd": "kd\nhardness 0.5"}, palette, ["a", "b"]))


@pytest.mark.parametrize(
    "draw",
    [
        lambda p: bar_chart(value_table({"kd/top1": None}, ["kd"]), p, "accuracy"),
        lambda p: series_chart([], p, "x"),
        lambda p: training_chart({"kd": []}, p),
        lambda p: decision_map_grid(parse_images({"a": [[1.0]]}), {}, p),
    ],
)
def test_nothing_to_draw_gives_no_chart(draw):
    assert draw(Palette.for_models({"kd": {"role": "student"}})) is None


def test_categorical_ticks_label_the_x_positions_they_match():
    palette = Palette.for_models({"t": {"role": "teacher"}, "kd": {"role": "student"}})
    groups = group_series(
        {"x": [0, 1, 2], "kd/accuracy": [0.9, 0.5, 0.4], "t->kd/consensus": [1.0, 0.7, 0.6]},
        list(palette.colours),
    )
    names = ["original", "edges", "sketch"]
    assert [_tick_positions(g, names) for g in groups] == [[0.0, 1.0, 2.0]] * 2
    assert _tick_positions(groups[0], names[:2]) is None  # another length: numeric ticks
    assert _tick_positions(groups[0], None) is None
    plain = png_bytes(series_chart(groups, palette, "domain_consensus", "domain"))
    named = png_bytes(series_chart(groups, palette, "domain_consensus", "domain", names))
    assert named != plain  # the names are drawn
    assert png_bytes(series_chart(groups, palette, "domain_consensus", "domain", names)) == named


@pytest.mark.parametrize(
    ("x_label", "expected"),
    [
        (
            {"colour": "jitter strength s", "shift": "maximum shift"},
            ["jitter strength s", "maximum shift"],
        ),
        ("strength", ["strength", "strength"]),
        ({"colour": "jitter strength s"}, ["jitter strength s"]),  # no label for shift
    ],
)
def test_series_panels_take_one_x_label_or_their_own(monkeypatch, x_label, expected):
    labels: list[str] = []
    monkeypatch.setattr(Axes, "set_xlabel", lambda self, text, *a, **k: labels.append(text))
    palette = Palette.for_models({"kd": {"role": "student"}})
    series = {
        "x/colour": [0.1, 0.4],
        "kd/colour": [1.0, 0.9],
        "x/shift": [1, 2],
        "kd/shift": [1.0, 0.7],
    }
    png_bytes(series_chart(group_series(series, ["kd"]), palette, "invariance", x_label))
    assert labels == expected


def test_labelled_heat_maps_are_parsed_and_drawn():
    images = {
        "t->kd": {
            "heatmap": [[0.9, None], [0.2, 0.8]],
            "rows": ["l1", "l2"],
            "columns": ["a", "b"],
            "row_label": "t",
            "aligned": [[0, 0], [1, 1], [5, 5], "x"],
        },
        "odd": {"heatmap": [[0.5, 0.1]], "rows": ["only one label", "too many"]},
        "bad": {"heatmap": "nope"},
    }
    parsed = parse_images(images)
    assert list(parsed.heatmaps) == ["t->kd", "odd"] and parsed.skipped == ["bad"]
    heat = parsed.heatmaps["t->kd"]
    assert heat.rows == ["l1", "l2"] and heat.columns == ["a", "b"] and heat.row_label == "t"
    assert np.isnan(heat.values[0, 1]) and heat.marked == [(0, 0), (1, 1)]
    assert parsed.heatmaps["odd"].rows == ["0"]  # labels of the wrong length: indices
    first = png_bytes(heatmap_grid(parsed.heatmaps))
    assert png_bytes(heatmap_grid(parsed.heatmaps)) == first
    assert heatmap_grid({}) is None


def test_a_metric_whose_bars_are_all_zero_gets_a_plain_unit_axis(monkeypatch):
    import distillscope.report.plots as plots

    figures = []
    monkeypatch.setattr(plots, "to_data_uri", lambda fig: figures.append(fig) or "data:")
    palette = Palette.for_models({"t": {"role": "teacher"}, "kd": {"role": "student"}})
    table = value_table({"t/object": 0.0, "kd/object": 0.0, "t/color": 3.0, "kd/color": 9.0},
                        list(palette.colours))  # fmt: skip
    bar_chart(table, palette, "dissection")
    zero, nonzero = figures[0].axes[:2]
    assert zero.get_xlim() == (0.0, 1.0)
    assert nonzero.get_xlim()[1] > 9.0
