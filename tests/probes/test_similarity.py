"""Class-similarity entropies (paper 000, 4.1) against an independent numpy computation.

The pooled reference follows paper 000's Table 2 as docs/probes.md reads it (no author code for
it is public): per category, the entropy of the mean softmax output over the category's samples,
restricted to the category's classes and normalised; each sample counts its category's value.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distillscope.errors import ConfigError
from distillscope.probes import create_probe
from distillscope.probes.base import Roles
from tests.probes.tiny_probe_models import Logits, logit_data

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


def expected(z: np.ndarray, correct: np.ndarray, definition: str = "pooled") -> tuple[float, float]:
    entire = entropy(softmax(z[correct])).mean()
    cats = []
    for zi, yi in zip(z[correct], Y[correct]):
        members = next(c for c in CATEGORIES.values() if yi in c)
        if len(members) < 2:
            continue
        if definition == "per_sample":
            cats.append(entropy(softmax(zi[members])))
        else:  # pooled over the samples of yi's category, counted once per sample
            same = np.isin(Y, members) & correct
            mean = softmax(z[same])[:, members].mean(0)
            cats.append(entropy(mean / mean.sum()))
    return float(entire), float(np.mean(cats))


@pytest.mark.parametrize("definition", ["pooled", "per_sample"])
def test_class_similarity_golden(definition: str) -> None:
    models = {
        "a": Logits(torch.eye(K, dtype=torch.float64)),
        "b": Logits(torch.eye(K, dtype=torch.float64) * SHARP),
    }
    data = logit_data(Z, Y, CATEGORIES)
    probe = create_probe(
        "class_similarity", batch_size=16, mask_models="all", category_entropy=definition
    )
    result = probe.run(models, data, Roles(["a"]))
    correct = Z.argmax(1) == Y
    assert 0 < correct.sum() < 60
    for name, z in (("a", Z), ("b", Z * SHARP)):
        entire, category = expected(z, correct, definition)
        assert result.values[f"{name}/entire"] == pytest.approx(entire)
        assert result.values[f"{name}/category"] == pytest.approx(category)
    assert result.values["b/entire"] < result.values["a/entire"]
    assert result.params["category_entropy"] == definition
    assert result.params["n_samples"] == int(correct.sum())
    assert result.params["n_category_samples"] == int((correct & (Y != 4)).sum())


def test_default_category_entropy_is_pooled_and_differs_from_per_sample() -> None:
    models = {"a": Logits(torch.eye(K, dtype=torch.float64) * SHARP)}
    data = logit_data(Z, Y, CATEGORIES)
    default = create_probe("class_similarity", mask_models="all").run(models, data, Roles(["a"]))
    ours = create_probe("class_similarity", mask_models="all", category_entropy="per_sample")
    per_sample = ours.run(models, data, Roles(["a"]))
    assert default.params["category_entropy"] == "pooled"
    assert default.params["n_categories"] == 2  # "pair" and "triple"; "alone" has one class
    assert default.values["a/entire"] == per_sample.values["a/entire"]
    # confident outputs: per sample nearly one-hot, pooled over two-class categories near log 2
    assert per_sample.values["a/category"] < 0.2 < 0.5 < default.values["a/category"]


@pytest.mark.parametrize("bad", ["paper", "", None, 1])
def test_invalid_category_entropy_is_a_config_error(bad: object) -> None:
    words = "pooled, per_sample" if isinstance(bad, str) else "valid string"
    with pytest.raises(ConfigError, match=f"class_similarity.category_entropy=.*{words}"):
        create_probe("class_similarity", category_entropy=bad)


def test_only_samples_every_model_gets_right_count() -> None:
    flip = np.eye(K)[[1, 0, 2, 3, 4]]  # model b confuses classes 0 and 1
    models = {
        "a": Logits(torch.eye(K, dtype=torch.float64)),
        "b": Logits(torch.tensor(flip)),
    }
    result = create_probe("class_similarity", mask_models="all").run(
        models, logit_data(Z, Y, CATEGORIES), Roles(["a"])
    )
    both = (Z.argmax(1) == Y) & ((Z @ flip).argmax(1) == Y)
    assert result.params["n_samples"] == int(both.sum())
    assert result.values["a/entire"] == pytest.approx(expected(Z, both)[0])


def test_without_categories_the_category_entropy_is_skipped() -> None:
    models = {"a": Logits(torch.eye(K, dtype=torch.float64))}
    probe = create_probe("class_similarity", mask_models="all")
    result = probe.run(models, logit_data(Z, Y), Roles(["a"]))
    assert "a/entire" in result.values and "a/category" not in result.values
    assert "two or more classes" in result.params["skipped"]["a/category"]


FLIP = np.eye(K)[[1, 0, 2, 3, 4]]  # confuses classes 0 and 1


def three_models() -> tuple[dict, Roles, np.ndarray, np.ndarray]:
    """A teacher that confuses classes 0 and 1, and two students that are right where Z is."""
    models = {
        "teacher": Logits(torch.tensor(FLIP)),
        "scratch": Logits(torch.eye(K, dtype=torch.float64)),
        "kd": Logits(torch.eye(K, dtype=torch.float64) * SHARP),
    }
    roles = Roles(["teacher"], independent=["scratch"], students=["kd"])
    students_right = Z.argmax(1) == Y
    teacher_right = (Z @ FLIP).argmax(1) == Y
    return models, roles, students_right, teacher_right


def test_default_mask_is_the_compared_students_not_the_teacher() -> None:
    """Paper 000, Table 2: samples that all compared models (scratch, KD, LS) get right."""
    models, roles, students_right, teacher_right = three_models()
    assert (students_right & ~teacher_right).any()  # the teacher would shrink the mask
    result = create_probe("class_similarity").run(models, logit_data(Z, Y, CATEGORIES), roles)
    assert result.params["mask_models"] == "students"
    assert result.params["mask_names"] == ["scratch", "kd"]
    assert result.params["n_samples"] == int(students_right.sum())
    assert result.values["scratch/entire"] == pytest.approx(expected(Z, students_right)[0])
    # the teacher's entropies are reported too, on the same samples
    assert result.values["teacher/entire"] == pytest.approx(expected(Z @ FLIP, students_right)[0])


def test_mask_over_all_models_includes_the_teacher() -> None:
    models, roles, students_right, teacher_right = three_models()
    probe = create_probe("class_similarity", mask_models="all")
    result = probe.run(models, logit_data(Z, Y, CATEGORIES), roles)
    both = students_right & teacher_right
    assert result.params["mask_names"] == ["teacher", "scratch", "kd"]
    assert result.params["n_samples"] == int(both.sum()) < int(students_right.sum())
    assert result.values["kd/category"] == pytest.approx(expected(Z * SHARP, both)[1])


def test_mask_over_listed_models() -> None:
    models, roles, _, teacher_right = three_models()
    probe = create_probe("class_similarity", mask_models=["teacher"])
    result = probe.run(models, logit_data(Z, Y, CATEGORIES), roles)
    assert result.params["mask_names"] == ["teacher"]
    assert result.params["n_samples"] == int(teacher_right.sum())
    with pytest.raises(ConfigError, match=r"mask_models names \['ls'\].*'scratch'"):
        create_probe("class_similarity", mask_models=["ls"]).run(
            models, logit_data(Z, Y, CATEGORIES), roles
        )


def test_students_mask_without_students_is_skipped_with_the_reason() -> None:
    models = {"a": Logits(torch.eye(K, dtype=torch.float64))}
    result = create_probe("class_similarity").run(models, logit_data(Z, Y), Roles(["a"]))
    assert result.values == {}
    assert "mask_models: all" in result.params["skipped"]["a/entire"]


@pytest.mark.parametrize("bad", ["teacher", [], [""], 3, ["a", 1]])
def test_invalid_mask_models_is_a_config_error(bad: object) -> None:
    with pytest.raises(ConfigError, match="class_similarity.mask_models=.*(students, all|invalid)"):
        create_probe("class_similarity", mask_models=bad)
