"""IE-DML (``ie_dml``; paper 002, section 3.3): the loss is eq. 5's weighted sum, gradients
reach this network, its encoders and its auto-encoder but never the peer, a group of two
learns and resumes bit-identically, the peer's own layer is tapped, and misuse fails with one
line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from distillscope.contracts import Batch
from distillscope.distill import build_loss, create_loss
from distillscope.errors import ConfigError, ModelError
from distillscope.functional.inheritance import ie_distance, ie_exploration
from distillscope.models.forward import forward_outputs
from distillscope.models.taps import FeatureTap
from distillscope.train.bind import bind_loss
from distillscope.train.trainer import Trainer
from tests.distill.test_inheritance import outputs
from tests.train.test_stage import assert_identical, data, nets, states
from tests.train.tiny_train_parts import SimulatedKill, config


def bound(spec: dict) -> tuple:
    a, b = nets()
    loss = build_loss({"ce": {}, "ie_dml": spec})
    bind_loss(loss, a, None, data(), device="cpu", seed=1, peers=[b])
    return loss, a, b


def batch_of(x: torch.Tensor) -> Batch:
    return Batch(x, torch.zeros(len(x), dtype=torch.long), torch.arange(len(x)))


def test_the_loss_is_reconstruction_inheritance_and_exploration_weighted() -> None:
    loss, a, b = bound({"reconstruction": 0.5, "inheritance": 2.0, "exploration": 3.0})
    term = loss["ie_dml"]
    x = data().inputs[:8]
    mine, peer = outputs(a, x, False), outputs(b, x, False)
    out = term(mine, None, batch_of(x), peers=[peer])
    f_a, f_b = mine.features["layer3"], peer.features["layer3"]
    with torch.no_grad():
        code = term.autoencoder.encoder(f_b)
        rec = (term.autoencoder.decoder(code) - f_b).abs().mean()
        inh = ie_distance(term.inh_encoder(f_a[:, :32]), code)  # natural split: first half
        exp = ie_exploration(term.exp_encoder(f_a[:, 32:]), code)
    for part, want in (("rec", rec), ("inh", inh), ("exp", exp)):
        assert torch.allclose(out[f"ie_dml/{part}"], want), part
    assert torch.allclose(out["loss"], 0.5 * rec + 2 * inh + 3 * exp)
    assert out["ie_dml/rec"].item() > 0 and out["ie_dml/exp"].item() < 0


def test_gradients_reach_this_network_and_its_modules_never_the_peer() -> None:
    loss, a, b = bound({})
    term = loss["ie_dml"]
    x = data().inputs[:8]
    mine, peer = outputs(a, x, True), outputs(b, x, True)  # the peer's graph kept on purpose
    term(mine, None, batch_of(x), peers=[peer])["loss"].backward()
    for module in (term.inh_encoder, term.exp_encoder, term.autoencoder, a.conv1):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    assert all(p.grad is None for p in b.parameters())


def test_the_autoencoder_learns_from_the_reconstruction_only() -> None:
    loss, a, b = bound({"reconstruction": 0.0})
    term = loss["ie_dml"]
    x = data().inputs[:8]
    term(outputs(a, x, True), None, batch_of(x), peers=[outputs(b, x, False)])["loss"].backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in term.autoencoder.parameters())
    assert all(p.grad is not None for p in term.inh_encoder.parameters())


def test_the_peer_layer_sizes_the_autoencoder_and_is_pooled_to_this_map() -> None:
    loss, a, b = bound({"peer_layer": "layer2"})  # 32 channels at 6x6; this map 64 at 3x3
    term = loss["ie_dml"]
    assert term.autoencoder.encoder[0].in_channels == 32
    assert term.inh_encoder[-3].out_channels == 16  # factor: half the peer's channels
    x = data().inputs[:8]
    with torch.no_grad(), FeatureTap(b, ["layer2"]) as tap:
        peer = forward_outputs(b, x, tap)
        out = term(outputs(a, x, False), None, batch_of(x), peers=[peer])
    assert torch.isfinite(out["loss"])


def group(tmp: Path, kill_at: int | None = None, peer_layer: str | None = None) -> Trainer:
    a, b = nets()
    spec = {} if peer_layer is None else {"peer_layer": peer_layer}
    losses = {p: build_loss({"ce": {}, "ie_dml": dict(spec)}) for p in ("a", "b")}
    calls = [0]

    def count(module: nn.Module, args: object) -> None:
        calls[0] += 1
        if calls[0] == kill_at:
            raise SimulatedKill(f"killed at loss call {calls[0]}")

    for loss in losses.values():
        loss.register_forward_pre_hook(count)
    return Trainer({"a": a, "b": b}, losses, config(epochs=2), progress=False, seed=4,
                   name="ie-dml", checkpoint_dir=tmp)  # fmt: skip


def test_a_group_of_two_learns_and_resumes_bit_identical(tmp_path: Path) -> None:
    straight = group(tmp_path / "a")
    before = states(*straight.models.values())
    history = straight.fit(data())
    after = states(*straight.models.values())
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert {"ie_dml/rec", "ie_dml/inh", "ie_dml/exp"} <= set(history["b"][0])
    with pytest.raises(SimulatedKill):
        group(tmp_path / "b", kill_at=2 + 2 * 6 + 3).fit(data())  # in epoch 2 (6 steps)
    resumed = group(tmp_path / "b")
    resumed.fit(data(), resume=True)
    assert_identical(after, states(*resumed.models.values()))
    assert_identical(states(straight.losses["a"]), states(resumed.losses["a"]))


def test_the_trainer_taps_the_layer_the_peer_reads(tmp_path: Path) -> None:
    history = group(tmp_path, peer_layer="layer2").fit(data())
    assert all(torch.isfinite(torch.tensor(r["ie_dml/rec"])) for r in history["a"])


def test_outside_a_group_or_in_a_group_of_three_it_fails_with_one_line() -> None:
    a, b = nets()
    with pytest.raises(ConfigError, match=r"^'student': ie_dml learns from a peer; put two"):
        bind_loss(build_loss({"ie_dml": {}}), a, None, data(), device="cpu")
    with pytest.raises(ConfigError, match="defined for two networks .* the group has 3"):
        bind_loss(build_loss({"ie_dml": {}}), a, None, data(), device="cpu", peers=[b, b])


def test_a_peer_layer_the_peer_lacks_fails_naming_the_peer() -> None:
    a, b = nets()
    with pytest.raises(ModelError, match=r"its peer's layers \['layer9'\]") as info:
        bind_loss(build_loss({"ie_dml": {"peer_layer": "layer9"}}), a, None, data(),
                  device="cpu", peers=[b])  # fmt: skip
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"reconstruction": -1}, r"^ie_dml\.reconstruction=-1 is out of range"),
        ({"ratio": 2}, r"^ie_dml\.ratio=2 is out of range"),
        ({"layer": ""}, r"^ie_dml\.layer='' is not a module path"),
        ({"peer_layer": 3}, r"^ie_dml\.peer_layer=3 is invalid: input should be a valid string"),
        ({"distance": "kl"}, r"^ie_dml\.distance='kl' is invalid"),
    ],
)
def test_bad_settings_fail_with_one_line(params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        create_loss("ie_dml", **params)
    assert "\n" not in str(info.value)
