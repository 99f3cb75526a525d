"""Attribution adherence (paper 004, 4.2): closed forms on linear models, copies, skips."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from tiny_probe_models import TinyCNN, seeded
from torch import nn

from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.errors import ConfigError
from distillscope.probes import create_probe
from distillscope.probes.base import ProbeData, Roles

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


@pytest.mark.parametrize("methods", [[], ["lime"], "saliency"])
def test_invalid_methods_raise(methods) -> None:
    with pytest.raises(ConfigError, match="adherence.methods"):
        create_probe("adherence", methods=methods)
