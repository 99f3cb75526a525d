"""active_neurons and sharpness: constructed models with a known answer, exact restoration."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.errors import ConfigError, ModelError
from distillscope.probes import create_probe
from distillscope.probes.base import ProbeData, Roles
from distillscope.probes.landscape import default_layer
from tests.probes.tiny_probe_models import TinyCNN, seeded

ROLES = Roles(teachers=["a"])


def orthogonal(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    return q  # (d, d)


class SubspaceReader(nn.Module):
    """``z = x`` (the ``rep`` layer), logits ``z @ B A``: the loss sees only the span of B."""

    def __init__(self, basis: torch.Tensor, mix: torch.Tensor) -> None:
        super().__init__()
        self.rep = nn.Identity()
        self.head = nn.Linear(basis.shape[0], mix.shape[1], bias=False)
        with torch.no_grad():
            self.head.weight.copy_((basis @ mix).T)  # (K, D)
        self.feature_layers = ["rep"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rep(x))


def vector_data(d: int, k_classes: int, n: int = 300, seed: int = 0) -> ProbeData:
    g = torch.Generator().manual_seed(seed)
    info = DatasetInfo("vectors", k_classes, (d,), [str(c) for c in range(k_classes)])
    x = torch.randn(n, d, generator=g)
    y = torch.randint(0, k_classes, (n,), generator=g)
    return ProbeData(TensorDataset(x, y, info), info)


def reader(d: int, k: int, classes: int, seed: int) -> SubspaceReader:
    basis = orthogonal(d, seed)[:, :k]  # (D, k)
    mix, _ = torch.linalg.qr(torch.randn(classes, k, generator=torch.Generator().manual_seed(seed)))
    return SubspaceReader(basis, 3.0 * mix.T)  # (k, K), well conditioned


@pytest.mark.parametrize("k", [1, 3, 5])
def test_active_neurons_finds_the_k_directions_the_head_reads(k: int) -> None:
    data = vector_data(d=12, k_classes=8)
    result = create_probe("active_neurons", share=0.999, max_samples=300).run(
        {"a": reader(12, k, 8, seed=k)}, data, ROLES
    )
    assert result.values["a"] == k
    assert result.values["a/dim"] == 12
    assert result.params["layers"] == {"a": "rep"}
    assert len(result.series["a/spectrum"]) == 12
    assert result.series["a/captured"][-1] == pytest.approx(1.0)


def test_active_neurons_is_invariant_to_a_rotation_of_the_representation() -> None:
    data = vector_data(d=10, k_classes=6, n=200)
    model = reader(10, 4, 6, seed=1)
    r = orthogonal(10, 7)
    rotated = reader(10, 4, 6, seed=1)
    with torch.no_grad():  # x -> x R, head W -> W R: the same logits in a rotated basis
        rotated.head.weight.copy_(model.head.weight @ r)
    inputs = torch.stack([data.dataset[i][0] for i in range(len(data.dataset))])
    targets = data.dataset.targets_tensor()
    turned = ProbeData(TensorDataset(inputs @ r, targets, data.info), data.info)
    probe = create_probe("active_neurons", share=0.9, max_samples=200)
    a = probe.run({"a": model}, data, ROLES)
    b = probe.run({"a": rotated}, turned, ROLES)
    assert a.values["a"] == b.values["a"]
    torch.testing.assert_close(
        torch.tensor(a.series["a/spectrum"]),
        torch.tensor(b.series["a/spectrum"]),
        atol=1e-5,
        rtol=1e-4,
    )


def test_active_neurons_at_a_linear_head_is_at_most_classes_minus_one(image_data) -> None:
    model = seeded(TinyCNN, 0, width=8)
    model.feature_layers = []  # none declared: the default is the head's input, D = 32
    result = create_probe("active_neurons", share=1.0).run({"a": model}, image_data, ROLES)
    assert result.params["layers"] == {"a": "head.2 (input)"}
    assert result.values["a/dim"] == 32
    assert 1 <= result.values["a"] <= 3  # the CE gradient W^T (p - y) spans K - 1 = 3 directions


def test_active_neurons_reads_a_named_feature_map_flattened(image_data) -> None:
    models = {"a": seeded(TinyCNN, 0), "b": seeded(TinyCNN, 1)}
    result = create_probe("active_neurons", layer="block2").run(models, image_data, ROLES)
    assert result.values["a/dim"] == 4 * 8 * 8
    assert 1 <= result.values["a"] <= len(image_data.dataset)  # at most N directions
    with pytest.raises(ModelError, match="nope"):
        create_probe("active_neurons", layer="nope").run(models, image_data, ROLES)


def test_active_neurons_survives_an_in_place_relu_after_the_layer(image_data) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(inplace=True), nn.Linear(16, 4))
    result = create_probe("active_neurons", layer="1").run({"a": model}, image_data, ROLES)
    assert result.values["a/dim"] == 16 and result.values["a"] >= 1


def test_active_neurons_parameters_are_checked() -> None:
    for bad in ({"share": 0.0}, {"share": 1.2}, {"layer": ""}, {"layer": 3}):
        with pytest.raises(ConfigError):
            create_probe("active_neurons", **bad)


def test_default_layer_is_the_last_declared_feature_layer() -> None:
    model = reader(4, 2, 3, seed=0)
    assert default_layer(model) == ("rep", False)
    with pytest.raises(ModelError, match="layer"):
        default_layer(nn.Sequential(nn.ReLU()))


class BNNet(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 0) -> ReLU -> pool -> linear, on 1x8x8 images."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4, eps=0.0)
        self.head = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bn(self.conv(x)))


def bn_net(seed: int, scale: float = 1.0) -> BNNet:
    net = seeded(BNNet, seed)
    with torch.no_grad():
        net.bn.running_mean.copy_(torch.linspace(-0.1, 0.1, 4) * scale)
        net.bn.running_var.copy_(torch.linspace(0.5, 2.0, 4) * scale**2)
        net.conv.weight.mul_(scale)
    return net


def test_sharpness_restores_the_weights_bit_for_bit_and_runs_in_eval_mode(image_data) -> None:
    models = {"a": bn_net(0), "b": seeded(TinyCNN, 1)}
    models["a"].train()
    before = {m: {k: v.clone() for k, v in net.state_dict().items()} for m, net in models.items()}
    create_probe("sharpness", sigmas=[0.5, 1.0], draws=2).run(models, image_data, ROLES)
    for m, net in models.items():
        after = net.state_dict()
        assert all(torch.equal(before[m][k], after[k]) for k in after), m  # BN stats too
    assert models["a"].training


def test_sharpness_is_seeded_deterministic_and_per_model(image_data) -> None:
    def run(seed: int, names: list[str]) -> dict[str, float]:
        models = {m: seeded(TinyCNN, i) for i, m in enumerate(["a", "b"]) if m in names}
        probe = create_probe("sharpness", sigmas=[0.3, 0.6], draws=2, seed=seed)
        return probe.run(models, image_data, ROLES).values

    both = run(0, ["a", "b"])
    assert run(0, ["a", "b"]) == both
    assert run(0, ["a"])["a"] == both["a"]  # a model's noise does not depend on the others
    assert run(1, ["a", "b"])["a"] != both["a"]


def test_sharpness_curve_starts_at_the_clean_loss_and_rises(image_data) -> None:
    model = seeded(TinyCNN, 0)
    probe = create_probe("sharpness", sigmas=[0.5, 2.0, 8.0], draws=2)
    result = probe.run({"a": model}, image_data, ROLES)
    inputs = torch.stack([image_data.dataset[i][0] for i in range(len(image_data.dataset))])
    with torch.no_grad():
        clean = nn.functional.cross_entropy(
            model(inputs).double(), image_data.dataset.targets_tensor()
        )
    assert result.series["x"] == [0.0, 0.5, 2.0, 8.0]
    assert result.series["a/loss"][0] == pytest.approx(float(clean))
    assert result.values["a/clean_loss"] == result.series["a/loss"][0]
    assert result.series["a/loss"][-1] > result.series["a/loss"][0]
    assert result.values["a"] > 0


def test_relative_noise_ignores_a_rescaling_absorbed_by_batch_norm(image_data) -> None:
    nets = {"a": bn_net(0), "b": bn_net(0, scale=5.0)}  # the same function
    for noise in ("relative", "absolute"):
        probe = create_probe("sharpness", noise=noise, sigmas=[0.2, 0.4], draws=2)
        r = probe.run(nets, image_data, ROLES)
        assert r.values["a/clean_loss"] == pytest.approx(r.values["b/clean_loss"], rel=1e-5)
        same = r.series["a/loss"] == pytest.approx(r.series["b/loss"], rel=1e-4)
        assert same == (noise == "relative"), noise


def test_sharpness_parameters_are_checked() -> None:
    assert create_probe("sharpness", sigmas=[0.2, 0.1, 0.2]).sigmas == [0.0, 0.1, 0.2]
    assert create_probe("sharpness", noise="absolute").sigmas[-1] == 0.01
    for bad in ({"noise": "gauss"}, {"sigmas": [0.0]}, {"sigmas": [-1.0]}, {"sigmas": 0.1},
                {"draws": 0}):  # fmt: skip
        with pytest.raises(ConfigError):
            create_probe("sharpness", **bad)


def test_active_neurons_defaults_to_the_last_declared_feature_layer(image_data) -> None:
    result = create_probe("active_neurons").run({"a": seeded(TinyCNN, 0)}, image_data, ROLES)
    assert result.params["layers"] == {"a": "block2"}  # TinyCNN declares block1, block2
