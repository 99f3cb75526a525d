"""The adversarial probe: defaults, pixel space, and the gradient masking of hot models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distillscope.attacks import IMAGE_EPS
from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.errors import ConfigError
from distillscope.probes import create_probe
from distillscope.probes.base import ProbeData, Roles


def scaled_linear(scale: float) -> nn.Linear:
    """Logits scale * (-x0, x0): the boundary is x0 = 0."""
    net = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]) * scale)
    return net


@pytest.fixture
def near_boundary() -> ProbeData:
    """40 points with 0.1 <= |x0| <= 0.25, all within the default 2-D eps (0.3) of x0 = 0."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(40) % 2
    x0 = (0.1 + 0.15 * torch.rand(40, generator=g)) * (2 * y - 1)
    info = DatasetInfo("strip", 2, (2,), ["left", "right"], pixel_range=None)
    x = torch.stack([x0, torch.randn(40, generator=g)], 1)
    return ProbeData(TensorDataset(x, y, info), info)


def test_high_temperature_model_resists_weak_but_not_strong_attacks(near_boundary) -> None:
    # "hot" was trained at T = 100: logits 100x larger than "cool"'s, a saturated softmax at T = 1.
    models = {"hot": scaled_linear(1000.0), "cool": scaled_linear(10.0)}
    roles = Roles(teachers=["hot"], independent=["cool"], temperature={"hot": 100.0})
    result = create_probe("adversarial", random_start=False, batch_size=16).run(
        models, near_boundary, roles
    )
    v = result.values
    assert v["hot/clean"] == v["cool/clean"] == 1.0
    assert v["hot/fgsm"] == v["hot/pgd"] == 1.0  # gradient masking: the weak attacks fail
    assert v["hot/fgsm_strong"] == v["hot/pgd_strong"] == 0.0  # logits / T restore the gradient
    assert v["cool/fgsm"] == v["cool/fgsm_strong"] == 0.0  # T = 1: strong is the weak value
    assert result.params["eps"] == 0.3 and result.params["bounds"] is None
    assert result.params["temperatures"] == {"hot": 100.0, "cool": 1.0}


def test_image_defaults_follow_the_spec(image_models, image_data, roles) -> None:
    result = create_probe("adversarial", attacks=["pgd"], batch_size=8, max_samples=8).run(
        image_models, image_data, roles
    )
    assert result.params["eps"] == IMAGE_EPS
    assert result.params["pgd_step_size"] == pytest.approx(2 / 255)
    assert result.params["pgd_steps"] == 10 and result.params["bounds"] == [0.0, 1.0]
    assert set(result.values) == {
        f"{m}/{k}" for m in image_models for k in ("clean", "pgd", "pgd_strong")
    }
    for m in image_models:
        assert result.values[f"{m}/pgd"] <= result.values[f"{m}/clean"]


def test_attacks_run_in_pixel_space(image_data, roles) -> None:
    # A model that reads the mean pixel: an eps-step in pixels is eps / std in normalised units.
    class MeanPixel(nn.Module):
        cam_layer = None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            pixel_mean = (x * 0.25 + 0.5).mean((1, 2, 3))  # undo mean 0.5, std 0.25
            return torch.stack(
                [
                    pixel_mean - 0.5 + IMAGE_EPS / 2,
                    0.5 - pixel_mean,
                    0 * pixel_mean,
                    0 * pixel_mean,
                ],
                1,
            )

    g = torch.Generator().manual_seed(0)
    pixels = 0.5 + 0.01 * (torch.rand(8, 1, 8, 8, generator=g) - 0.5)  # mean pixel ~0.5 -> class 0
    data = ProbeData(
        TensorDataset((pixels - 0.5) / 0.25, torch.zeros(8, dtype=torch.long), image_data.info),
        image_data.info,
    )
    result = create_probe("adversarial", attacks=["fgsm"], strong=False).run(
        {"m": MeanPixel()}, data, Roles(teachers=["m"])
    )
    # Clean: class 0 wins by ~eps; FGSM lowers every pixel by eps (8/255) and flips it.
    assert result.values == {"m/clean": 1.0, "m/fgsm": 0.0}


def test_strong_false_drops_the_strong_keys(near_boundary) -> None:
    result = create_probe("adversarial", strong=False).run(
        {"m": scaled_linear(10.0)}, near_boundary, Roles(["m"])
    )
    assert set(result.values) == {"m/clean", "m/fgsm", "m/pgd"}


@pytest.mark.parametrize(
    "params",
    [
        {"attacks": ["cw"]},
        {"attacks": []},
        {"attacks": "pgd"},
        {"attacks": 5},
        {"sweep": "abc"},
        {"sweep": ["abc"]},
        {"deepfool_steps": 0},
        {"deepfool_overshoot": -0.1},
        {"deepfool_overshoot": float("nan")},
        {"attacks": ["deepfool"], "sweep": [0.1]},
        {"eps": 0.0},
        {"pgd_steps": 0},
        {"pgd_step_size": -1.0},
    ],
)
def test_invalid_parameters_raise(params) -> None:
    with pytest.raises(ConfigError, match="adversarial"):
        create_probe("adversarial", **params)


def test_eps_sweep_gives_accuracy_curves(near_boundary) -> None:
    # Points sit at 0.1 <= |x0| <= 0.25 from the boundary: eps 0.05 fools none, eps 0.3 all.
    models = {"cool": scaled_linear(10.0)}
    roles = Roles(teachers=["cool"])
    result = create_probe("adversarial", random_start=False, sweep=[0.3, 0.05, 0.2]).run(
        models, near_boundary, roles
    )
    s = result.series
    assert s["x"] == [0.05, 0.2, 0.3]  # the main eps (0.3, the 2-D default) joins the sweep
    assert s["cool/fgsm"][0] == 1.0 and s["cool/fgsm"][-1] == 0.0
    assert 0.0 < s["cool/fgsm"][1] < 1.0
    assert s["cool/fgsm"] == sorted(s["cool/fgsm"], reverse=True)  # monotone in eps
    assert result.values["cool/fgsm"] == s["cool/fgsm"][-1]  # values hold the main eps
    assert "cool/clean" not in s
    no_sweep = create_probe("adversarial", random_start=False).run(models, near_boundary, roles)
    assert no_sweep.series == {}


def test_deepfool_is_not_masked_by_a_high_temperature(near_boundary) -> None:
    # DeepFool walks the logits, not the softmax: the hot model that resists weak FGSM falls to
    # weak DeepFool too. Each point crosses x0 = 0 in one step: ||r|| = 1.02 (|x0| + 1e-4/||w||)
    # with ||w|| = 2 * (logit scale), the scale being divided by T for the strong form.
    models = {"hot": scaled_linear(1000.0), "cool": scaled_linear(10.0)}
    roles = Roles(teachers=["hot"], independent=["cool"], temperature={"hot": 100.0})
    result = create_probe("adversarial", attacks=["fgsm", "deepfool"], batch_size=16).run(
        models, near_boundary, roles
    )
    v = result.values
    assert v["hot/fgsm"] == 1.0 and v["hot/deepfool"] == v["hot/deepfool_strong"] == 0.0
    assert v["cool/deepfool"] == v["cool/deepfool_strong"] == 0.0
    dist = near_boundary.dataset.inputs[:, 0].abs().double().mean().item()
    assert v["hot/deepfool_l2"] == pytest.approx(1.02 * (dist + 1e-4 / 2000), rel=1e-5)
    assert v["hot/deepfool_strong_l2"] == pytest.approx(1.02 * (dist + 1e-4 / 20), rel=1e-5)
    assert v["hot/deepfool_strong_l2"] > v["hot/deepfool_l2"]  # only the 1e-4 push grows
    assert v["cool/deepfool_strong_l2"] == v["cool/deepfool_l2"]  # T = 1: the weak value
    p = result.params
    assert p["deepfool_steps"] == 50 and p["deepfool_overshoot"] == 0.02
    assert "unbounded" in p["deepfool_budget"]


def test_default_attacks_leave_deepfool_out(near_boundary) -> None:
    result = create_probe("adversarial").run(
        {"m": scaled_linear(10.0)}, near_boundary, Roles(["m"])
    )
    assert not any("deepfool" in key for key in [*result.values, *result.params])


def test_deepfool_on_images_stays_in_pixel_range_and_has_no_series(
    image_models, image_data, roles
) -> None:
    result = create_probe(
        "adversarial", attacks=["pgd", "deepfool"], sweep=[2 / 255], batch_size=8, max_samples=8
    ).run(image_models, image_data, roles)
    v, s = result.values, result.series
    for m in image_models:
        assert v[f"{m}/deepfool"] <= v[f"{m}/clean"]
        assert v[f"{m}/deepfool_strong"] <= v[f"{m}/clean"]
        if v[f"{m}/clean"] > v[f"{m}/deepfool"]:
            assert v[f"{m}/deepfool_l2"] > 0
        assert f"{m}/pgd" in s and f"{m}/deepfool" not in s
    assert s["x"] == [2 / 255, IMAGE_EPS]


def test_ifgsm_pgd_l2_and_cw_run_weak_and_strong_with_cw_norms(near_boundary) -> None:
    models = {"hot": scaled_linear(1000.0), "cool": scaled_linear(10.0)}
    roles = Roles(teachers=["hot"], independent=["cool"], temperature={"hot": 100.0})
    probe = create_probe("adversarial", attacks=["ifgsm", "pgd_l2", "cw_l2"], batch_size=16,
                         random_start=False, cw_steps=60, cw_search_steps=4)  # fmt: skip
    v = probe.run(models, near_boundary, roles).values
    assert v["cool/ifgsm"] == 0.0 and v["cool/pgd_l2"] == 0.0  # |x0| <= 0.25 < eps 0.3
    assert v["hot/ifgsm"] == 1.0 and v["hot/ifgsm_strong"] == 0.0  # masked, then unmasked
    assert v["cool/cw_l2"] == 0.0  # CW walks every point across x0 = 0
    # CW's perturbations are about |x0| (0.1 .. 0.25): the minimal L2 step to the boundary
    assert 0.1 <= v["cool/cw_l2_l2"] <= 0.3


def test_pgd_l2_scales_with_the_eps_sweep(near_boundary) -> None:
    models = {"cool": scaled_linear(10.0)}
    roles = Roles(teachers=["cool"])
    probe = create_probe("adversarial", attacks=["pgd_l2"], sweep=[0.05], l2_eps=0.3,
                         random_start=False, strong=False)  # fmt: skip
    result = probe.run(models, near_boundary, roles)
    series = result.series
    assert series["x"] == [0.05, 0.3] and series["cool/pgd_l2"][0] == 1.0  # l2 eps 0.05: none
    assert series["cool/pgd_l2"][1] == 0.0 and result.params["l2_eps"] == 0.3
