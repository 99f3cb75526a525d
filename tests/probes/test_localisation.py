"""Localisation (paper 001, 4.3): EPG and IoU of hand-made explanations against object masks."""

from __future__ import annotations

import pytest
import torch

from distillscope.data.base import TensorDataset
from distillscope.errors import ConfigError
from distillscope.probes import create_probe
from distillscope.probes.base import ProbeData, Roles
from distillscope.probes.sampling import probe_samples
from tests.probes.map_models import MapModel, mask_data
from tests.probes.tiny_probe_models import TinyCNN, seeded

ROLES = Roles(teachers=["t"], students=["s"], teacher_of={"s": "t"})


def on_object(x, target):
    return x[:, 0]  # (B, H, W): bright on the object, noise below 0.05 elsewhere


def inside_only(x, target):
    return torch.where(x[:, 0] > 0.5, 1.0, -3.0)  # negative energy outside does not count


def uniform(x, target):
    return torch.ones_like(x[:, 0])


def masks_of(data: ProbeData, max_samples: int = 1000, seed: int = 0) -> torch.Tensor:
    samples = probe_samples(data, max_samples, seed)
    assert isinstance(samples, TensorDataset)
    return samples.masks


def test_a_map_inside_the_mask_scores_one_and_a_uniform_map_the_mask_share() -> None:
    data = mask_data()
    models = {"t": MapModel(inside_only), "s": MapModel(uniform)}
    r = create_probe("localisation", batch_size=5).run(models, data, ROLES)
    share = float(masks_of(data).flatten(1).float().mean(1).mean())
    assert r.values["t/epg"] == pytest.approx(1.0)
    assert r.values["t/iou"] == pytest.approx(1.0)  # region {scaled > 0.5} = the mask
    assert r.values["s/epg"] == pytest.approx(share)  # uniform energy: the mask's area share
    assert r.values["s/iou"] == pytest.approx(share)  # a constant map selects every pixel
    assert r.params["mask_share"] == pytest.approx(share)
    assert r.params["n_samples"] == 16


def test_noisy_map_epg_is_the_energy_share_on_the_object() -> None:
    data = mask_data()
    r = create_probe("localisation").run({"t": MapModel(on_object)}, data, Roles(["t"]))
    samples = probe_samples(data, 1000, 0)
    x, m = samples.inputs[:, 0], samples.masks
    expected = ((x * m).flatten(1).sum(1) / x.flatten(1).sum(1)).mean()
    assert r.values["t/epg"] == pytest.approx(float(expected))
    assert r.values["t/iou"] == pytest.approx(1.0)  # noise < 0.05 stays below half the range


def test_predicted_target_explains_each_models_own_class() -> None:
    # Class 3 points at the object, any other class at the background. MapModel's default
    # logits predict class 3 for every (non-negative) image; the labels are i % 4.
    def by_class(x, target):
        obj = x[:, 0] > 0.5
        return torch.where((target == 3)[:, None, None] == obj, 1.0, 0.0)

    data = mask_data()
    models = {"t": MapModel(by_class)}
    truth = create_probe("localisation", target="ground_truth").run(models, data, Roles(["t"]))
    own = create_probe("localisation", target="predicted").run(models, data, Roles(["t"]))
    assert own.values["t/epg"] == pytest.approx(1.0)
    assert truth.values["t/epg"] == pytest.approx(0.25)  # a quarter of the labels are 3
    assert own.params["target"] == "predicted"


def test_iou_threshold_changes_the_region() -> None:
    # Map: 1 on the object, 0.6 on the background, 0 at the corner (7, 7), never on an object.
    # Scaled by its range [0, 1]: object 1, background 0.6, corner 0.
    def raised(x, target):
        obj = (x[:, 0] > 0.5).float()
        out = obj + 0.6 * (1 - obj)
        out[:, 7, 7] = 0.0
        return out

    data = mask_data()
    models = {"t": MapModel(raised)}
    low = create_probe("localisation", iou_threshold=0.3).run(models, data, Roles(["t"]))
    high = create_probe("localisation", iou_threshold=0.7).run(models, data, Roles(["t"]))
    inside = masks_of(data).flatten(1).float().sum(1)  # (N,)
    assert high.values["t/iou"] == pytest.approx(1.0)  # the object only
    assert low.values["t/iou"] == pytest.approx(float((inside / 63).mean()))  # all but the corner
    # EPG counts raw energy: the background's 0.6 per pixel weighs in, at any threshold.
    expected = (inside / (inside + 0.6 * (63 - inside))).mean()
    assert low.values["t/epg"] == pytest.approx(float(expected))
    assert high.values["t/epg"] == low.values["t/epg"]


def test_gradcam_models_and_example_panels(image_models, roles) -> None:
    data = mask_data(size=8)
    r = create_probe("localisation", max_samples=6).run(image_models, data, roles)
    for m in image_models:
        assert 0.0 <= r.values[f"{m}/epg"] <= 1.0
        assert 0.0 <= r.values[f"{m}/iou"] <= 1.0
    assert list(r.images) == ["input", "object mask", *image_models]
    assert torch.tensor(r.images["teacher"]).shape == (8, 8)
    first = probe_samples(data, 6, 0)
    assert torch.equal(torch.tensor(r.images["object mask"]).bool(), first.masks[0])
    off = create_probe("localisation", max_samples=6, example_maps=False)
    assert off.run(image_models, data, roles).images == {}


def test_a_dataset_without_masks_is_skipped_with_the_fix(image_models, image_data, roles) -> None:
    r = create_probe("localisation").run(image_models, image_data, roles)
    assert r.values == {}
    assert "no object masks" in r.params["skipped"]["localisation"]
    assert "mask_source: foreground" in r.params["skipped"]["localisation"]


def test_foreground_masks_are_the_bright_pixels() -> None:
    data = mask_data()
    plain = TensorDataset(data.dataset.inputs, data.dataset.targets, data.info)
    models = {"t": MapModel(inside_only)}
    r = create_probe("localisation", mask_source="foreground").run(
        models, ProbeData(plain, data.info), Roles(["t"])
    )
    assert r.values["t/epg"] == pytest.approx(1.0)
    assert r.values["t/iou"] == pytest.approx(1.0)
    assert r.params["foreground_threshold"] == 0.1


def test_a_model_that_cannot_be_explained_is_skipped_alone() -> None:
    data = mask_data()
    plain = seeded(TinyCNN, 0)
    plain.cam_layer = None
    models = {"t": MapModel(uniform), "s": plain}
    r = create_probe("localisation", method="auto").run(models, data, ROLES)
    assert set(r.values) == {"t/epg", "t/iou"}
    assert "cam_layer" in r.params["skipped"]["s"]


def test_zero_maps_score_zero_and_are_counted() -> None:
    r = create_probe("localisation").run(
        {"t": MapModel(lambda x, y: -torch.ones_like(x[:, 0]))}, mask_data(), Roles(["t"])
    )
    assert r.values == {"t/epg": 0.0, "t/iou": 0.0}
    assert r.params["no_energy"] == {"t": 16}


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"method": "lime"}, "localisation.method='lime'"),
        ({"target": "teacher"}, "localisation.target='teacher'"),
        ({"iou_threshold": 1.0}, "localisation.iou_threshold=1.0"),
        ({"mask_source": "boxes"}, "localisation.mask_source='boxes'"),
        ({"foreground_threshold": 0.2}, "needs localisation.mask_source: foreground"),
        ({"example_maps": "yes"}, "localisation.example_maps='yes'"),
    ],
)
def test_bad_parameters_raise_one_line_config_errors(params, fragment) -> None:
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")) as err:
        create_probe("localisation", **params)
    assert "\n" not in str(err.value)
