"""Attribution adherence (paper 004, 4.2): closed forms on linear models, copies, skips."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from captum.attr import GuidedGradCam, IntegratedGradients, Saliency
from torch import nn

from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.errors import ConfigError
from distillscope.probes import create_probe
from distillscope.probes.base import ProbeData, Roles
from distillscope.probes.sampling import sample_indices
from tests.probes.tiny_probe_models import TinyCNN, seeded

ROLES = Roles(teachers=["t"], students=["s"], teacher_of={"s": "t"})


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_adherence_of_linear_models_golden() -> None:
    # Saliency of z = Wx + b is |W[y]|; Integrated Gradients from 0 is x * W[y].
    d, k, n = 6, 3, 20
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, d, generator=g), torch.arange(n) % k
    info = DatasetInfo("vectors", k, (d,), ["a", "b", "c"], pixel_range=None)
    data = ProbeData(TensorDataset(x, y, info), info)
    models = {
        "t": seeded(nn.Linear, 0, in_features=d, out_features=k),
        "s": seeded(nn.Linear, 1, in_features=d, out_features=k),
    }
    result = create_probe("adherence", batch_size=8).run(models, data, ROLES)
    wt, ws = (models[m].weight.detach().numpy()[y.numpy()] for m in ("t", "s"))
    xn = x.numpy()
    assert result.values["t->s/saliency"] == pytest.approx(
        cosine_rows(np.abs(wt), np.abs(ws)).mean(), rel=1e-5
    )
    ig = cosine_rows(xn * wt, xn * ws).mean()
    assert result.values["t->s/integrated_gradients"] == pytest.approx(ig, rel=1e-4, abs=1e-5)
    assert result.params["skipped"] == {"t->s/gradcam": "GradCAM needs image inputs"}
    assert result.params["target"] == "ground_truth"


def test_a_copy_of_the_teacher_adheres_perfectly(image_data) -> None:
    teacher = seeded(TinyCNN, 0)
    models = {"t": teacher, "s": copy.deepcopy(teacher)}
    result = create_probe("adherence", batch_size=8, ig_steps=8).run(models, image_data, ROLES)
    assert set(result.values) == {"t->s/saliency", "t->s/integrated_gradients", "t->s/gradcam"}
    for key, value in result.values.items():
        assert value == pytest.approx(1.0, abs=1e-5), key


def test_different_models_adhere_less_and_in_range(image_data, image_models, roles) -> None:
    result = create_probe("adherence", methods=["saliency", "gradcam"], batch_size=8).run(
        image_models, image_data, roles
    )
    assert set(result.values) == {
        f"teacher->{m}/{method}"
        for m in ("independent", "student")
        for method in ("saliency", "gradcam")
    }
    for value in result.values.values():
        assert 0.0 <= value < 0.999


def test_model_without_cam_layer_skips_gradcam_only(image_data) -> None:
    student = seeded(TinyCNN, 1)
    student.cam_layer = None
    models = {"t": seeded(TinyCNN, 0), "s": student}
    result = create_probe("adherence", methods=["saliency", "gradcam"], batch_size=8).run(
        models, image_data, ROLES
    )
    assert list(result.values) == ["t->s/saliency"]
    assert result.params["skipped"] == {"t->s/gradcam": "model 's' has no cam_layer"}


def test_what_a_method_needs_is_asked_of_its_explainer(image_data, monkeypatch) -> None:
    from distillscope.explain.attribution import SaliencyExplainer

    # a requirement declared on the explainer class reaches the probe's skip reasons unchanged
    monkeypatch.setattr(SaliencyExplainer, "lacks", classmethod(lambda cls, m: "has no wings"))
    models = {"t": seeded(TinyCNN, 0), "s": seeded(TinyCNN, 1)}
    result = create_probe("adherence", methods=["saliency", "gradcam"], batch_size=8).run(
        models, image_data, ROLES
    )
    assert list(result.values) == ["t->s/gradcam"]
    assert result.params["skipped"] == {"t->s/saliency": "model 't' has no wings"}


@pytest.mark.parametrize("methods", [[], ["lime"], "saliency"])
def test_invalid_methods_raise(methods) -> None:
    with pytest.raises(ConfigError, match="adherence.methods"):
        create_probe("adherence", methods=methods)


def pooled(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_batch_aggregate_of_linear_models_golden() -> None:
    # Saliency maps of linear models are |W[y]|: pool them over groups of 7 consecutive audited
    # samples (the last group of 20 holds 6), with probe batches of 8 that straddle the groups.
    d, k, n = 6, 3, 20
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, d, generator=g), torch.arange(n) % k
    info = DatasetInfo("vectors", k, (d,), ["a", "b", "c"], pixel_range=None)
    data = ProbeData(TensorDataset(x, y, info), info)
    models = {
        "t": seeded(nn.Linear, 0, in_features=d, out_features=k),
        "s": seeded(nn.Linear, 1, in_features=d, out_features=k),
    }
    probe = create_probe(
        "adherence", methods=["saliency"], aggregate="batch", aggregate_batch=7, batch_size=8
    )
    result = probe.run(models, data, ROLES)
    order = sample_indices(n, 1000, seed=0).numpy()  # the probe's sample order
    wt, ws = (np.abs(models[m].weight.detach().numpy()[y.numpy()[order]]) for m in ("t", "s"))
    expected = np.mean([pooled(wt[i : i + 7], ws[i : i + 7]) for i in range(0, n, 7)])
    assert result.values["t->s/saliency"] == pytest.approx(expected, rel=1e-6)
    assert result.params["aggregate"] == "batch" and result.params["aggregate_batch"] == 7
    assert result.params["n_groups"] == 3 and result.params["n_samples"] == n
    per_image = create_probe("adherence", methods=["saliency"]).run(models, data, ROLES)
    assert per_image.values["t->s/saliency"] != pytest.approx(expected, rel=1e-3)
    other_batches = create_probe(
        "adherence", methods=["saliency"], aggregate="batch", aggregate_batch=7, batch_size=3
    ).run(models, data, ROLES)
    assert other_batches.values == pytest.approx(result.values, rel=1e-9)


def test_paper004_preset_reproduces_the_authors_captum_computation(image_data) -> None:
    # The authors' code: captum Saliency (abs), IntegratedGradients (zero baseline, 50 steps),
    # GuidedGradCam on the last conv block, for the true label, cosine over the flattened batch.
    # With 24 images (< 100) there is one group, so the sample order does not matter.
    models = {"t": seeded(TinyCNN, 0, width=6), "s": seeded(TinyCNN, 1, width=6)}
    result = create_probe("adherence", preset="paper004", batch_size=24).run(
        models, image_data, ROLES
    )
    assert result.params["preset"] == "paper004" and result.params["n_groups"] == 1
    x, y = image_data.dataset.inputs, image_data.dataset.targets
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # captum warns about its ReLU hooks
        maps = {
            name: {
                "saliency": Saliency(net).attribute(x.clone().requires_grad_(), target=y),
                "integrated_gradients": IntegratedGradients(net).attribute(
                    x.clone().requires_grad_(), target=y
                ),
                "guided_gradcam": GuidedGradCam(net, net.block2).attribute(
                    x.clone().requires_grad_(), target=y
                ),
            }
            for name, net in ((n, m.eval()) for n, m in models.items())
        }
    assert set(result.values) == {f"t->s/{method}" for method in maps["t"]}
    for method in maps["t"]:
        a, b = (maps[m][method].detach().double().numpy() for m in ("t", "s"))
        assert result.values[f"t->s/{method}"] == pytest.approx(pooled(a, b), abs=1e-5), method


def test_guided_gradcam_of_a_copy_adheres_perfectly_and_is_skipped_on_points(image_data) -> None:
    teacher = seeded(TinyCNN, 0)
    models = {"t": teacher, "s": copy.deepcopy(teacher)}
    result = create_probe("adherence", methods=["guided_gradcam"], batch_size=8).run(
        models, image_data, ROLES
    )
    assert result.values["t->s/guided_gradcam"] == pytest.approx(1.0, abs=1e-6)
    info = DatasetInfo("vectors", 3, (2,), ["a", "b", "c"], pixel_range=None)
    points = ProbeData(TensorDataset(torch.randn(6, 2), torch.arange(6) % 3, info), info)
    linear = {"t": nn.Linear(2, 3), "s": nn.Linear(2, 3)}
    skipped = create_probe("adherence", preset="paper004").run(linear, points, ROLES)
    assert skipped.params["skipped"] == {
        "t->s/guided_gradcam": "Guided Grad-CAM needs image inputs"
    }
    assert set(skipped.values) == {"t->s/saliency", "t->s/integrated_gradients"}


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"preset": "paper003"}, "adherence.preset"),
        ({"preset": ["paper004"]}, "adherence.preset"),
        ({"methods": 3}, "adherence.methods"),
        ({"preset": "paper004", "methods": ["gradcam"]}, "conflicts with adherence.preset"),
        ({"preset": "paper004", "aggregate": "image"}, "conflicts with adherence.preset"),
        ({"preset": "paper004", "ig_steps": 8}, "adherence.ig_steps=8 conflicts"),
        ({"aggregate": "group"}, "adherence.aggregate="),
        ({"aggregate_batch": 10}, "needs adherence.aggregate: batch"),
        ({"aggregate": "batch", "aggregate_batch": 0}, "adherence.aggregate_batch=0"),
    ],
)
def test_invalid_aggregate_and_preset_raise(params, match) -> None:
    with pytest.raises(ConfigError, match=match):
        create_probe("adherence", **params)


def test_preset_accepts_its_own_values_and_defaults_are_unchanged() -> None:
    probe = create_probe("adherence", preset="paper004", aggregate="batch", aggregate_batch=100)
    assert probe.methods == ["saliency", "integrated_gradients", "guided_gradcam"]
    default = create_probe("adherence")
    assert default.methods == ["saliency", "integrated_gradients", "gradcam"]
    assert default.aggregate == "image" and default.ig_steps == 50


def test_bcos_weights_adhere_between_bcos_models_and_are_skipped_for_others(image_data) -> None:
    from distillscope.models import create_model

    def bcos(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return create_model("bcos_mnist_cnn", num_classes=4, input_size=8,
                            input_mean=(0.5,), input_std=(0.25,))  # fmt: skip

    teacher = bcos(0)
    models = {"t": teacher, "s": copy.deepcopy(teacher), "o": bcos(1), "plain": seeded(TinyCNN, 2)}
    roles = Roles(
        ["t"], students=["s", "o", "plain"], teacher_of={m: "t" for m in ["s", "o", "plain"]}
    )
    result = create_probe("adherence", methods=["bcos"], batch_size=8).run(
        models, image_data, roles
    )
    assert result.values["t->s/bcos"] == pytest.approx(1.0, abs=1e-5)
    assert -1.0 <= result.values["t->o/bcos"] < 0.99
    assert result.params["skipped"] == {"t->plain/bcos": "model 'plain' is not a B-cos model"}
