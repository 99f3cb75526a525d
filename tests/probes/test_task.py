"""Accuracy and agreement probes on models whose logits are known: golden values from numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distillscope.errors import ConfigError
from distillscope.probes import create_probe
from distillscope.probes.base import ProbeData, Roles
from tests.probes.tiny_probe_models import Logits, logit_data

K = 5
RNG = np.random.default_rng(0)
Z = RNG.normal(size=(40, K))
Y = RNG.integers(0, K, size=40)
PERM = np.eye(K)[[0, 1, 2, 4, 3]]  # the student swaps classes 3 and 4


def make_data() -> ProbeData:
    return logit_data(Z, Y)


MODELS = {
    "t": Logits(torch.eye(K, dtype=torch.float64)),
    "s": Logits(torch.tensor(PERM) * 0.5),
}
ROLES = Roles(teachers=["t"], students=["s"], teacher_of={"s": "t"})


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_accuracy_golden() -> None:
    result = create_probe("accuracy", topk=2, batch_size=7).run(MODELS, make_data(), ROLES)
    zs = Z @ PERM * 0.5
    for name, z in (("t", Z), ("s", zs)):
        assert result.values[f"{name}/top1"] == pytest.approx(np.mean(z.argmax(1) == Y))
        top2 = np.argsort(-z, 1)[:, :2]
        assert result.values[f"{name}/top2"] == pytest.approx(np.mean((top2 == Y[:, None]).any(1)))
    assert result.params["n_samples"] == 40 and result.params["topk"] == 2


def test_topk_is_clipped_to_the_number_of_classes() -> None:
    result = create_probe("accuracy").run(MODELS, make_data(), ROLES)
    assert result.params["topk"] == K
    assert result.values[f"t/top{K}"] == 1.0
    assert "t/top5" in result.values and "t/top6" not in result.values


def test_topk_must_be_a_positive_integer() -> None:
    with pytest.raises(ConfigError, match="accuracy.topk"):
        create_probe("accuracy", topk=0)


def test_agreement_and_kl_golden() -> None:
    result = create_probe("agreement", batch_size=16).run(MODELS, make_data(), ROLES)
    zs = Z @ PERM * 0.5
    assert result.values["t->s"] == pytest.approx(np.mean(Z.argmax(1) == zs.argmax(1)))
    p, q = softmax(Z), softmax(zs)
    assert result.values["t->s/kl"] == pytest.approx(np.mean((p * np.log(p / q)).sum(1)))
    assert 0 < result.values["t->s"] < 1  # the swap changes some predictions, not all


def test_agreement_of_a_model_with_itself_is_one() -> None:
    models = {"t": MODELS["t"], "copy": MODELS["t"]}
    roles = Roles(teachers=["t"], independent=["copy"], teacher_of={"copy": "t"})
    result = create_probe("agreement").run(models, make_data(), roles)
    assert result.values == {"t->copy": 1.0, "t->copy/kl": 0.0}


def test_agreement_without_pairs_is_skipped_with_a_reason() -> None:
    result = create_probe("agreement").run(MODELS, make_data(), Roles(teachers=["t"]))
    assert result.values == {}
    assert "pair" in result.params["skipped"]["agreement"]


def test_roles_naming_a_missing_model_raise() -> None:
    roles = Roles(teachers=["t"], students=["ghost"], teacher_of={"ghost": "t"})
    with pytest.raises(ConfigError, match="'ghost'"):
        create_probe("agreement").run(MODELS, make_data(), roles)


def test_max_samples_and_seed_choose_the_samples() -> None:
    data = make_data()
    small = create_probe("accuracy", max_samples=10, seed=4).run(MODELS, data, ROLES)
    assert small.params["n_samples"] == 10
    idx = torch.randperm(40, generator=torch.Generator().manual_seed(4))[:10].numpy()
    assert small.values["t/top1"] == pytest.approx(np.mean(Z[idx].argmax(1) == Y[idx]))
