"""Inheritance and exploration (``ie_ft``, ``ie_at``; paper 002): the distances against an
independent numpy computation, gradients into both encoders and the student, the channel split
(seeded, saved in the state, restored), the auto-encoder's stage (trains, freezes, resumes bit
for bit after a kill) and one-line errors for bad settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from distillscope.config_train import TrainConfig
from distillscope.contracts import Batch
from distillscope.distill import build_loss, create_loss
from distillscope.distill.inheritance import InheritanceExploration
from distillscope.errors import ConfigError
from distillscope.functional.inheritance import batch_linear_cka, ie_distance, ie_exploration
from distillscope.models.forward import forward_outputs
from distillscope.models.taps import FeatureTap
from distillscope.train.bind import bind_loss
from distillscope.train.checkpoint import load_train_state
from distillscope.train.stage import StageBatches, StageRunner, prepare_loss
from distillscope.train.trainer import LAST_CHECKPOINT, Trainer
from tests.train.test_stage import assert_identical, data, killing, nets, states
from tests.train.tiny_train_parts import SimulatedKill


# ------------------------------------------------------------------ numpy reference
def np_unit(x: np.ndarray) -> np.ndarray:
    flat = x.reshape(x.shape[0], -1).astype(np.float64)
    return flat / np.sqrt((flat**2).sum(axis=1, keepdims=True))


def np_cka(x: np.ndarray, y: np.ndarray) -> float:
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h
    return float((k * l_).sum() / np.sqrt((k * k).sum() * (l_ * l_).sum()))


def np_reference(a: np.ndarray, b: np.ndarray, distance: str) -> tuple[float, float]:
    """(inheritance distance, exploration loss) written from paper 002's eqs. 2-3."""
    fa, fb = np_unit(a), np_unit(b)
    cos = (fa * fb).sum(axis=1)
    if distance == "l1":
        d = float(np.abs(fa - fb).mean())
    elif distance == "l2":
        d = float(np.sqrt(((fa - fb) ** 2).mean()))
    elif distance == "cosine":
        return float((1 - cos).mean()), float(np.abs(cos).mean())
    else:
        d = 1.0 - np_cka(fa, fb)
    return d, -d


@pytest.mark.parametrize("distance", ["l1", "l2", "cosine", "cka"])
def test_distances_match_an_independent_numpy_computation(distance: str) -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 3, 4, 4)), rng.normal(size=(5, 3, 4, 4))
    want_inh, want_exp = np_reference(a, b, distance)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    assert ie_distance(ta, tb, distance).item() == pytest.approx(want_inh, rel=1e-10)
    assert ie_exploration(ta, tb, distance).item() == pytest.approx(want_exp, rel=1e-10)


def test_linear_cka_is_one_for_scaled_copies_and_zero_for_a_single_sample() -> None:
    x = torch.randn(7, 5, dtype=torch.float64)
    assert batch_linear_cka(x, 3 * x).item() == pytest.approx(1.0)
    assert batch_linear_cka(x[:1], x[:1]).item() == 0.0  # no variation over the batch


# ------------------------------------------------------------------ the term
def bound(spec: dict, seed: int = 1) -> tuple:
    student, teacher = nets()
    loss = build_loss({"ce": {}, "ie_ft": spec})
    bind_loss(loss, student, teacher, data(), device="cpu", seed=seed)
    return loss, student, teacher


def outputs(model: torch.nn.Module, x: Tensor, grad: bool) -> object:
    with FeatureTap(model, ["layer3"], detach=not grad) as tap, torch.set_grad_enabled(grad):
        return forward_outputs(model, x, tap)


def test_the_loss_is_the_weighted_sum_of_inheritance_and_exploration() -> None:
    loss, student, teacher = bound({"inheritance": 2.0, "exploration": 3.0})
    term = loss["ie_ft"]
    x = data().inputs[:8]
    s, t = outputs(student, x, False), outputs(teacher, x, False)
    out = term(s, t, Batch(x, torch.zeros(8, dtype=torch.long), torch.arange(8)))
    f_s, f_t = s.features["layer3"], t.features["layer3"]
    with torch.no_grad():
        code = term.autoencoder.encoder(f_t)
        inh = ie_distance(term.inh_encoder(f_s[:, :32]), code)  # natural split: first half
        exp = ie_exploration(term.exp_encoder(f_s[:, 32:]), code)
    assert torch.allclose(out["ie_ft/inh"], inh) and torch.allclose(out["ie_ft/exp"], exp)
    assert torch.allclose(out["loss"], 2 * inh + 3 * exp)
    assert out["ie_ft/exp"].item() < 0  # l1: the negative distance


def test_gradients_reach_both_encoders_and_the_student_not_the_autoencoder() -> None:
    loss, student, teacher = bound({"split": "random"})
    term = loss["ie_ft"]
    prepare_loss(loss, student, teacher, [])  # no stage epochs on no batches: freezes
    x = data().inputs[:8]
    s, t = outputs(student, x, True), outputs(teacher, x, False)
    term(s, t, Batch(x, torch.zeros(8, dtype=torch.long), torch.arange(8)))["loss"].backward()
    for module in (term.inh_encoder, term.exp_encoder, student.conv1):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None and not p.requires_grad for p in term.autoencoder.parameters())


@pytest.mark.parametrize(("ratio", "inh", "exp"), [(0.0, 0, 64), (0.3, 19, 45), (1.0, 64, 0)])
def test_ratio_sets_the_split_and_the_ablation_ends_drop_one_part(
    ratio: float, inh: int, exp: int
) -> None:
    loss, student, teacher = bound({"ratio": ratio})
    term = loss["ie_ft"]
    assert (len(term.inh_index), len(term.exp_index)) == (inh, exp)
    assert (term.inh_encoder is None) == (inh == 0) and (term.exp_encoder is None) == (exp == 0)
    x = data().inputs[:8]
    out = term(outputs(student, x, False), outputs(teacher, x, False),
               Batch(x, torch.zeros(8, dtype=torch.long), torch.arange(8)))  # fmt: skip
    assert torch.isfinite(out["loss"])
    assert (out["ie_ft/inh"].item() == 0) == (inh == 0)
    assert (out["ie_ft/exp"].item() == 0) == (exp == 0)


def test_random_split_is_seeded_saved_in_the_state_and_restored() -> None:
    natural = bound({})[0]["ie_ft"]
    assert torch.equal(natural.inh_index, torch.arange(32))
    a, b, c = (bound({"split": "random"}, seed)[0]["ie_ft"] for seed in (1, 1, 2))
    assert torch.equal(a.inh_index, b.inh_index) and not torch.equal(a.inh_index, c.inh_index)
    assert sorted([*a.inh_index.tolist(), *a.exp_index.tolist()]) == list(range(64))
    state = a.state_dict()
    assert {"inh_index", "exp_index"} <= set(state)
    c.load_state_dict(state)  # a resumed run binds under its seed, then loads the checkpoint
    assert torch.equal(c.inh_index, a.inh_index) and torch.equal(c.exp_index, a.exp_index)
    # the encoders do not depend on the split: both splits build the same ones
    assert torch.equal(natural.inh_encoder[0].weight, a.inh_encoder[0].weight)


def test_the_autoencoder_stage_trains_then_freezes_it_in_eval_mode() -> None:
    loss, student, teacher = bound({"autoencoder_epochs": 4, "autoencoder_lr": 0.05})
    term = loss["ie_ft"]
    batches = StageBatches(data(), 16, torch.device("cpu"), seed=2, limit=3)
    runner = StageRunner("model", progress=False)
    runner.prepare(loss, student, teacher, batches)
    errors = [row["loss"] for row in runner.history]
    assert [row["stage"] for row in runner.history] == ["ie_ft/autoencoder"] * 4
    assert errors[-1] < errors[0]  # it learns to reconstruct the teacher's map
    assert not any(p.requires_grad for p in term.autoencoder.parameters())
    loss.train()
    assert not term.autoencoder.training and term.inh_encoder.training  # frozen statistics


def fit(tmp: Path, resume: bool = False) -> dict[str, Tensor]:
    student, teacher = nets()
    loss = build_loss({"ce": {}, "ie_ft": {"split": "random", "autoencoder_epochs": 2}})
    trainer = Trainer(student, loss, TrainConfig(epochs=2, batch_size=16, lr=0.05),
                      teacher=teacher, progress=False, seed=7, checkpoint_dir=tmp)  # fmt: skip
    trainer.fit(data(), resume=resume)
    return {**states(student, loss), "rng": torch.get_rng_state()}


def test_a_run_killed_in_the_autoencoder_stage_resumes_to_identical_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight = fit(tmp_path / "a")
    with monkeypatch.context() as m:  # 3 batches a pass: killed at stage epoch 2, batch 2
        m.setattr(InheritanceExploration, "stages", killing(InheritanceExploration, at=5))
        with pytest.raises(SimulatedKill):
            fit(tmp_path / "b")
    state = load_train_state(tmp_path / "b" / LAST_CHECKPOINT)
    assert state.meta["stage"]["key"] == "ie_ft/autoencoder"
    assert state.meta["stage"]["epochs_done"] == 1
    resumed = fit(tmp_path / "b", resume=True)
    assert_identical(straight, resumed)  # the random split's indices included


def test_ie_at_compares_attention_maps_of_the_factors() -> None:
    student, teacher = nets()
    loss = build_loss({"ie_at": {}})
    bind_loss(loss, student, teacher, data(), device="cpu", seed=1)
    term = loss["ie_at"]
    x = data().inputs[:8]
    s, t = outputs(student, x, False), outputs(teacher, x, False)
    out = term(s, t, Batch(x, torch.zeros(8, dtype=torch.long), torch.arange(8)))
    assert set(out) == {"loss", "ie_at/inh", "ie_at/exp"}
    with torch.no_grad():
        code = term.autoencoder.encoder(t.features["layer3"])
        maps = code.pow(2).mean(1).flatten(1)
        inh = ie_distance(term.inh_encoder(s.features["layer3"][:, :32]).pow(2).mean(1), maps)
    assert torch.allclose(out["ie_at/inh"], inh)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"ratio": 1.5}, r"^ie_ft\.ratio=1\.5 is out of range; use a value in \[0, 1\]$"),
        ({"ratio": -0.1}, r"^ie_ft\.ratio=-0\.1 is out of range"),
        ({"split": "halves"}, r"^ie_ft\.split='halves' is invalid; use one of natural, random$"),
        ({"distance": "l3"}, r"^ie_ft\.distance='l3' is invalid; use one of l1, l2, cosine, cka$"),
        ({"inheritance": -1}, r"^ie_ft\.inheritance=-1 is out of range"),
        ({"exploration": -50}, r"^ie_ft\.exploration=-50 is out of range"),
        ({"rate": 0}, r"^ie_ft\.rate=0 is out of range"),
        ({"autoencoder_epochs": -1}, r"^ie_ft\.autoencoder_epochs=-1 is invalid"),
        ({"autoencoder_lr": 0}, r"^ie_ft\.autoencoder_lr=0 is invalid"),
    ],
)
def test_bad_settings_fail_with_one_line(params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        create_loss("ie_ft", **params)
    assert "\n" not in str(info.value)


def test_a_ratio_that_empties_a_part_fails_at_bind_with_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        bound({"ratio": 0.005})  # 64 channels: no channel would inherit
    text = str(info.value)
    assert "\n" not in text and "ie_ft.ratio=0.005 leaves a part" in text


def test_ie_od_compares_the_positive_parts_at_the_l2_distance() -> None:
    """IE-OD (paper 002, 4.2): ``||max(F_inh, 0) - max(F_T, 0)||``, normalised as every IE
    distance, against numpy."""
    student, teacher = nets()
    loss = build_loss({"ie_od": {"inheritance": 1.0, "exploration": 1.0}})
    bind_loss(loss, student, teacher, data(), device="cpu", seed=1)
    term = loss["ie_od"]
    assert term.distance == "l2"
    x = data().inputs[:8]
    s, t = outputs(student, x, False), outputs(teacher, x, False)
    out = term(s, t, Batch(x, torch.zeros(8, dtype=torch.long), torch.arange(8)))
    with torch.no_grad():
        code = term.autoencoder.encoder(t.features["layer3"]).double().numpy()
        inh = term.inh_encoder(s.features["layer3"][:, :32]).double().numpy()
        exp = term.exp_encoder(s.features["layer3"][:, 32:]).double().numpy()
    assert (code < 0).any()  # LeakyReLU: the positive part differs from the factor
    want_inh, _ = np_reference(np.maximum(inh, 0), np.maximum(code, 0), "l2")
    _, want_exp = np_reference(np.maximum(exp, 0), np.maximum(code, 0), "l2")
    assert out["ie_od/inh"].item() == pytest.approx(want_inh, rel=1e-5)
    assert out["ie_od/exp"].item() == pytest.approx(want_exp, rel=1e-5)
    assert out["loss"].item() == pytest.approx(want_inh + want_exp, rel=1e-5, abs=1e-7)


def test_the_distance_functions_refuse_bad_input_in_one_exact_line() -> None:
    a = torch.zeros(2, 3, 2, 2)
    with pytest.raises(ValueError) as info:
        ie_distance(a, torch.zeros(2, 5), "l1")
    assert str(info.value) == "factors (2, 3, 2, 2) and (2, 5) differ in size"
    with pytest.raises(ValueError) as info:
        ie_distance(a, a, "l3")
    assert str(info.value) == "unknown distance 'l3'; use one of l1, l2, cosine, cka"
