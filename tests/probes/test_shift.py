"""Explanation shift (paper 001, Fig. 5): equivariant explainers score 1, positional ones less."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from distillscope.errors import ConfigError
from distillscope.probes import create_probe
from distillscope.probes.base import Roles
from distillscope.probes.shift import _fill
from tests.probes.map_models import MapModel, mask_data

ROLES = Roles(teachers=["t"], students=["s"], teacher_of={"s": "t"})


class PixelSum(nn.Module):
    """``z_c = a_c * sum_p w_p x_p``: with ``w = 1`` the logit is the sum of the pixels and
    Integrated Gradients from 0 is ``a_c * w * x`` exactly (linear model)."""

    cam_layer = None

    def __init__(self, weights: Tensor) -> None:
        super().__init__()
        self.register_buffer("w", weights)  # (1, H, W)
        self.register_buffer("a", torch.tensor([1.0, 2.0, -1.0, 0.5]))

    def forward(self, x: Tensor) -> Tensor:
        return (x * self.w).flatten(1).sum(1, keepdim=True) * self.a  # (B, K)


def test_translation_equivariant_explanations_score_one_at_every_shift() -> None:
    data = mask_data(size=8)
    models = {"t": PixelSum(torch.ones(1, 8, 8)), "s": MapModel(lambda x, y: x[:, 0])}
    r = create_probe("explanation_shift", method="integrated_gradients", max_shift=5).run(
        {"t": models["t"]}, data, Roles(["t"])
    )
    assert r.series["x"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert r.series["t"] == pytest.approx([1.0] * 6)
    assert r.values["t"] == pytest.approx(1.0)
    own = create_probe("explanation_shift", max_shift=5, fill="black").run(models, data, ROLES)
    assert own.values["s"] == pytest.approx(1.0)  # the map is the input itself (method auto)


def test_position_dependent_explanations_score_below_one() -> None:
    data = mask_data(size=8)
    ramp = torch.linspace(0.1, 2.0, 64).view(1, 8, 8)  # weights that depend on the position
    models = {"t": PixelSum(torch.ones(1, 8, 8)), "s": PixelSum(ramp)}
    r = create_probe("explanation_shift", method="integrated_gradients", max_shift=4).run(
        models, data, ROLES
    )
    assert r.series["s"][0] == pytest.approx(1.0)
    assert all(c < 0.999 for c in r.series["s"][1:])
    assert r.values["s"] < 0.999
    gap = sum(abs(a - b) for a, b in zip(r.series["s"][1:], r.series["t"][1:])) / 4
    assert r.values["t->s/curve_gap"] == pytest.approx(gap)
    assert r.values["t->s/curve_gap"] > 0


def test_shift_cosine_of_a_hand_computed_case() -> None:
    # Explanation = squared distance from the top-left pixel, independent of the input: shifted
    # back by s it is compared with itself moved by s. For a 3x3 image and s = 1 the shared 2x2
    # areas are [[0, 1], [1, 2]] and [[2, 5], [5, 8]].
    grid = torch.tensor([[0.0, 1.0, 4.0], [1.0, 2.0, 5.0], [4.0, 5.0, 8.0]])
    model = MapModel(lambda x, y: grid.expand(len(x), 3, 3).clone())
    data = mask_data(n=4, size=3)
    r = create_probe("explanation_shift", max_shift=1).run({"t": model}, data, Roles(["t"]))
    a, b = torch.tensor([0.0, 1, 1, 2]), torch.tensor([2.0, 5, 5, 8])
    expected = float(a @ b / (a.norm() * b.norm()))
    assert r.series["t"] == pytest.approx([1.0, expected])


def test_shifts_beyond_the_image_are_dropped_with_the_reason() -> None:
    r = create_probe("explanation_shift", max_shift=12, shift_step=3).run(
        {"t": MapModel(lambda x, y: x[:, 0])}, mask_data(size=8), Roles(["t"])
    )
    assert r.params["shifts"] == [0, 3, 6]
    assert r.series["x"] == [0.0, 3.0, 6.0]
    assert "shorter side is 8 pixels" in r.params["skipped"]["shifts 8..12"]


def test_black_fill_is_pixel_zero_in_model_input_space(image_data) -> None:
    # image_data: mean 0.5, std 0.25, so a black pixel is (0 - 0.5) / 0.25 = -2.
    assert _fill(image_data.info).tolist() == [-2.0]


def test_non_image_data_is_skipped(point_models, point_data, roles) -> None:
    r = create_probe("explanation_shift").run(point_models, point_data, roles)
    assert r.values == {} and "image inputs" in r.params["skipped"]["explanation_shift"]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"max_shift": 0}, "explanation_shift.max_shift=0"),
        ({"shift_step": 0}, "explanation_shift.shift_step=0"),
        ({"fill": "wrap"}, "explanation_shift.fill='wrap'"),
        ({"method": "lime"}, "explanation_shift.method='lime'"),
        ({"target": "teacher"}, "explanation_shift.target='teacher'"),
    ],
)
def test_bad_parameters_raise_one_line_config_errors(params, fragment) -> None:
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")) as err:
        create_probe("explanation_shift", **params)
    assert "\n" not in str(err.value)
