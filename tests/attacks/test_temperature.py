"""The wrappers of strong and pixel-space attacks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distillscope.attacks import PixelSpaceModel, TemperatureScaled, to_pixels


def test_temperature_scaled_divides_the_logits() -> None:
    torch.manual_seed(0)
    net = nn.Linear(3, 4)
    x = torch.randn(5, 3)
    torch.testing.assert_close(TemperatureScaled(net, 20.0)(x), net(x) / 20.0)


def test_temperature_scaling_keeps_the_prediction() -> None:
    torch.manual_seed(0)
    net = nn.Linear(3, 4)
    x = torch.randn(50, 3)
    assert torch.equal(TemperatureScaled(net, 7.0)(x).argmax(1), net(x).argmax(1))


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_temperature_must_be_positive(temperature) -> None:
    with pytest.raises(ValueError, match="positive"):
        TemperatureScaled(nn.Identity(), temperature)


def test_pixel_space_model_undoes_the_normalisation_per_channel() -> None:
    mean, std = (0.5, 0.25, 0.0), (0.5, 2.0, 1.0)
    x = torch.randn(2, 3, 4, 4)
    pixels = to_pixels(x, mean, std)
    torch.testing.assert_close(pixels[:, 1], x[:, 1] * 2.0 + 0.25)
    torch.testing.assert_close(PixelSpaceModel(nn.Identity(), mean, std)(pixels), x)


def test_pixel_space_works_on_vectors_and_without_normalisation() -> None:
    x = torch.randn(4, 2)
    torch.testing.assert_close(
        to_pixels(x, (1.0, -1.0), (2.0, 3.0)),
        x * torch.tensor([2.0, 3.0]) + torch.tensor([1.0, -1.0]),
    )
    assert to_pixels(x, None, None) is x
    assert torch.equal(PixelSpaceModel(nn.Identity(), None, None)(x), x)


def test_a_temperature_below_one_is_fine() -> None:
    net = nn.Linear(2, 2)
    x = torch.ones(1, 2)
    torch.testing.assert_close(TemperatureScaled(net, 0.5)(x), net(x) * 2)


@pytest.mark.parametrize(("mean", "std"), [((0.5,), None), (None, (0.5,))])
def test_half_a_normalisation_is_none(mean, std) -> None:
    x = torch.full((1, 1, 2, 2), 0.25)
    assert torch.equal(to_pixels(x, mean, std), x)
    model = PixelSpaceModel(nn.Identity(), mean, std)
    assert model.mean is None and model.std is None and torch.equal(model(x), x)


def test_normalisation_constants_take_the_inputs_dtype() -> None:
    x = torch.zeros(1, 2, 1, 1, dtype=torch.float64)
    out = to_pixels(x, (0.1, 0.2), (0.3, 0.7))
    assert out.dtype == torch.float64 and out.flatten().tolist() == [0.1, 0.2]
    back = PixelSpaceModel(nn.Identity(), (0.1, 0.2), (0.3, 0.7))(out)
    assert back.dtype == torch.float64 and back.abs().max().item() < 1e-15
