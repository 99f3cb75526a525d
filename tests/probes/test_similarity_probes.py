"""Class-similarity entropies (paper 000, 4.1) against an independent numpy computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny_probe_models import Logits, logit_data

from distillscope.probes import create_probe
from distillscope.probes.base import Roles

K = 5
CATEGORIES = {"pair": [0, 1], "triple": [2, 3], "alone": [4]}
RNG = np.random.default_rng(3)
Y = RNG.integers(0, K, size=60)
Z = RNG.normal(size=(60, K))
Z[np.arange(60), Y] += 2.5  # most samples correct, not all
SHARP = 3.0  # the second model's logits are Z * SHARP: same argmax, lower entropy


def entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(p)).sum(-1)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def expected(z: np.ndarray, correct: np.ndarray) -> tuple[float, float]:
    entire = entropy(softmax(z[correct])).mean()
    cats = []
    for zi, yi in zip(z[correct], Y[correct]):
        members = next(c for c in CATEGORIES.values() if yi in c)
        if len(members) >= 2:
            cats.append(entropy(softmax(zi[members])))
    return float(entire), float(np.mean(cats))


def test_class_similarity_golden() -> None:
    models = {
        "a": Logits(torch.eye(K, dtype=torch.float64)),
        "b": Logits(torch.eye(K, dtype=torch.float64) * SHARP),
    }
    data = logit_data(Z, Y, CATEGORIES)
    result = create_probe("class_similarity", batch_size=16).run(models, data, Roles(["a"]))
    correct = Z.argmax(1) == Y
    assert 0 < correct.sum() < 60
    for name, z in (("a", Z), ("b", Z * SHARP)):
        entire, category = expected(z, correct)
        assert result.values[f"{name}/entire"] == pytest.approx(entire)
        assert result.values[f"{name}/category"] == pytest.approx(category)
    assert result.values["b/entire"] < result.values["a/entire"]
    assert result.params["n_samples"] == int(correct.sum())
    assert result.params["n_category_samples"] == int((correct & (Y != 4)).sum())


def test_only_samples_every_model_gets_right_count() -> None:
    flip = np.eye(K)[[1, 0, 2, 3, 4]]  # model b confuses classes 0 and 1
    models = {
        "a": Logits(torch.eye(K, dtype=torch.float64)),
        "b": Logits(torch.tensor(flip)),
    }
    result = create_probe("class_similarity").run(
        models, logit_data(Z, Y, CATEGORIES), Roles(["a"])
    )
    both = (Z.argmax(1) == Y) & ((Z @ flip).argmax(1) == Y)
    assert result.params["n_samples"] == int(both.sum())
    assert result.values["a/entire"] == pytest.approx(expected(Z, both)[0])


def test_without_categories_the_category_entropy_is_skipped() -> None:
    models = {"a": Logits(torch.eye(K, dtype=torch.float64))}
    result = create_probe("class_similarity").run(models, logit_data(Z, Y), Roles(["a"]))
    assert "a/entire" in result.values and "a/category" not in result.values
    assert "two or more classes" in result.params["skipped"]["a/category"]
