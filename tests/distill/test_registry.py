"""Tests generated from the loss registry: every registered term obeys the LossTerm contract."""

from __future__ import annotations

import pytest
import torch

import distillscope.distill  # noqa: F401  (registers every loss term)
from distillscope.contracts import Batch, Outputs
from distillscope.distill import create_loss, loss_names
from distillscope.distill.base import NEEDS as KNOWN_NEEDS
from distillscope.distill.base import LossTerm
from distillscope.errors import ConfigError, TrainingError
from distillscope.registry import LOSSES

B, K = 8, 5
# Terms that need features or explanations get their inputs in their own family's tests.
LOGIT_ONLY = {"logits", "teacher"}
# Parameters of terms that have required ones (layer paths), for the generated tests.
PAIR = {"student_layer": "a", "teacher_layer": "b"}
LAYERS = {"student_layers": ["a"], "teacher_layers": ["b"]}
EXAMPLE_PARAMS = {
    **dict.fromkeys(["hint", "sp", "rkd", "pkt", "cc", "crd", "ft", "cat_kd"], PAIR),
    **dict.fromkeys(["at", "nst", "vid", "ab", "ofd", "reviewkd"], LAYERS),
}


def random_inputs(seed: int = 0) -> tuple[Outputs, Outputs, Batch]:
    gen = torch.Generator().manual_seed(seed)
    student = Outputs(torch.randn(B, K, generator=gen, requires_grad=False).requires_grad_())
    teacher = Outputs(3.0 * torch.randn(B, K, generator=gen))
    batch = Batch(
        inputs=torch.randn(B, 2, generator=gen),
        targets=torch.randint(0, K, (B,), generator=gen),
        index=torch.randperm(100, generator=gen)[:B],
    )
    return student, teacher, batch


def build(name: str) -> LossTerm:
    term = create_loss(name, **EXAMPLE_PARAMS.get(name, {}))
    if not term.needs <= LOGIT_ONLY:
        pytest.skip(f"{name} needs {sorted(term.needs - LOGIT_ONLY)}; tested with its family")
    return term


def run(term: LossTerm, seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    student, teacher, batch = random_inputs(seed)
    out = term(student, teacher if term.needs_teacher else None, batch)
    return out, student.logits


def test_first_terms_are_registered() -> None:
    assert {"ce", "label_smoothing", "pseudo_soft", "kd", "soft_targets"} <= set(loss_names())


@pytest.mark.parametrize("name", LOSSES.list())
def test_term_class_contract(name: str) -> None:
    cls = LOSSES.get(name)
    assert issubclass(cls, LossTerm)
    assert cls.name == name, "the class's name attribute must equal its registry key"
    assert cls.needs <= KNOWN_NEEDS
    assert "logits" in cls.needs or "features" in cls.needs or "explanation" in cls.needs
    assert cls.__doc__ and len(cls.__doc__.strip()) > 40


@pytest.mark.parametrize("name", LOSSES.list())
def test_forward_gives_finite_scalar_loss_and_scalar_parts(name: str) -> None:
    term = build(name)
    out, _ = run(term)
    assert "loss" in out
    assert out["loss"].dim() == 0 and torch.isfinite(out["loss"])
    parts = [key for key in out if key != "loss"]
    assert parts, "every term returns at least one named part"
    for key in parts:
        assert key.startswith(f"{name}/"), f"part {key!r} is not prefixed with {name!r}/"
        assert out[key].dim() == 0 and torch.isfinite(out[key]), key


@pytest.mark.parametrize("name", LOSSES.list())
def test_backward_gives_finite_nonzero_student_grads(name: str) -> None:
    term = build(name)
    out, logits = run(term)
    out["loss"].backward()
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", LOSSES.list())
def test_same_inputs_give_identical_outputs(name: str) -> None:
    first, _ = run(build(name), seed=1)
    second, _ = run(build(name), seed=1)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


@pytest.mark.parametrize("name", LOSSES.list())
def test_missing_teacher_raises_for_teacher_terms(name: str) -> None:
    term = build(name)
    student, _, batch = random_inputs()
    if term.needs_teacher:
        with pytest.raises(TrainingError, match=f"{name!r} needs the teacher"):
            term(student, None, batch)
    else:
        assert torch.isfinite(term(student, None, batch)["loss"])


def test_create_loss_unknown_name_lists_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown loss 'kdd'; valid choices: .*\bkd\b.*"):
        create_loss("kdd")


def test_create_loss_unknown_parameter_lists_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown parameter 'tau' .*alpha, temperature"):
        create_loss("kd", tau=4.0)


def test_loss_names_filters_with_fnmatch() -> None:
    assert loss_names("label_*") == ["label_smoothing"]
    assert loss_names() == LOSSES.list()


@pytest.mark.parametrize("name", LOSSES.list())
def test_unknown_parameter_is_rejected(name: str) -> None:
    # A term without its own __init__ inherits nn.Module's **kwargs and would accept anything.
    with pytest.raises(ConfigError, match=f"unknown parameter 'not_a_param' for loss {name!r}"):
        create_loss(name, not_a_param=1)


def test_a_missing_required_parameter_is_one_config_error() -> None:
    # OFD's pre-ReLU layers have no default (feature terms' layers otherwise default to the
    # models' declared ones, tests/distill/test_feature_base.py)
    with pytest.raises(ConfigError, match="loss 'ofd' needs parameter 'student_layers'"):
        create_loss("ofd", teacher_layers=["layer2"])
