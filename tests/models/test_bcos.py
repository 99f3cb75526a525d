"""B-cos layers and models: the B-cos transform's formula, dynamic linearity in explanation
mode (contributions sum to the logit), the [p, 1 - p] encoding and the uncentred norms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distillscope.config import ModelSpec
from distillscope.contracts import Batch, Outputs
from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.distill import create_loss
from distillscope.errors import ConfigError
from distillscope.models import create_model
from distillscope.models.bcos_layers import (
    BcosConv2d,
    BcosEncode,
    BcosLinear,
    LogitBias,
    UncenteredBatchNorm2d,
    explanation_mode,
    is_bcos,
)
from distillscope.plan import build_model

CNNS = [("bcos_mnist_cnn", {}), ("bcos_resnet8", {}), ("bcos_resnet_cifar", {"depth": 14})]


def test_bcos_linear_is_cos_times_the_unit_weight_response_and_maxout_takes_the_max():
    rng = np.random.default_rng(0)
    layer = BcosLinear(5, 3, max_out=2)
    w = rng.normal(size=(6, 5))
    x = rng.normal(size=(4, 5))
    layer.weight.data = torch.tensor(w, dtype=torch.float32)
    w_hat = w / np.linalg.norm(w, axis=1, keepdims=True)
    lin = (x @ w_hat.T).reshape(4, 3, 2).max(2)  # MaxOut of consecutive pairs
    expected = lin * np.abs(lin) / np.linalg.norm(x, axis=1, keepdims=True)  # |cos| * w^T x
    got = layer(torch.tensor(x, dtype=torch.float32)).detach().numpy()
    assert np.allclose(got, expected, atol=1e-5)


def test_bcos_conv_is_bcos_linear_on_every_patch():
    torch.manual_seed(0)
    conv = BcosConv2d(3, 4, kernel_size=3, stride=2, padding=1)
    linear = BcosLinear(27, 4)
    linear.weight.data = conv.weight.data.flatten(1).clone()
    x = torch.randn(2, 3, 9, 9)
    patches = F.unfold(x, 3, padding=1, stride=2).transpose(1, 2)  # (B, L, 27)
    expected = linear(patches).transpose(1, 2).reshape(2, 4, 5, 5)
    assert torch.allclose(conv(x), expected, atol=1e-5)


@pytest.mark.parametrize(("name", "params"), CNNS)
def test_contributions_sum_to_the_logit_minus_its_bias(name, params):
    """Dynamic linearity: in explanation mode ``logit = sum(W(x) * [p, 1 - p]) + bias``."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=1, **params)
    x = torch.randn(4, 1, 28, 28)
    model.train()
    model(x)  # running statistics away from their initial values
    model.eval()
    logits = model(x)
    target = torch.tensor([0, 3, 7, 9])
    contributions = model.explain(x, target).flatten(1).sum(1)  # (B,)
    chosen = logits.gather(1, target[:, None])[:, 0] - model.logit_bias.bias
    assert torch.allclose(contributions, chosen, rtol=1e-4, atol=1e-4)
    # outside explanation mode the plain gradient is a different (non-linear) quantity
    x_in = x.clone().requires_grad_(True)
    grad = torch.autograd.grad(model(x_in).gather(1, target[:, None]).sum(), x_in)[0]
    enc = model.encode(x)
    w = model.dynamic_weights(x, target)
    plain, dynamic = (grad * x).flatten(1).sum(1), (w * enc).flatten(1).sum(1)
    assert (plain - dynamic).abs().max() > 0.1 * dynamic.abs().max()


def test_explanation_mode_changes_gradients_not_outputs_and_is_restored():
    torch.manual_seed(1)
    model = create_model("bcos_resnet8", num_classes=10, in_channels=1).eval()
    x = torch.randn(3, 1, 16, 16)
    before = model(x)
    with explanation_mode(model):
        assert torch.equal(model(x), before)
        assert all(m.detach for m in model.modules() if hasattr(m, "detach") and m is not model)
    with pytest.raises(RuntimeError), explanation_mode(model):
        raise RuntimeError("boom")
    flags = [m.detach for m in model.modules() if isinstance(m, (BcosConv2d, BcosEncode))]
    assert flags and not any(flags)


def test_the_vit_explains_with_its_dynamic_weights():
    torch.manual_seed(0)
    model = create_model("bcos_vit_tiny", num_classes=10, depth=2, dim=32).eval()
    x = torch.randn(2, 1, 28, 28)
    w = model.dynamic_weights(x, torch.tensor([1, 2]))
    assert w.shape == (2, 2, 28, 28) and w.abs().sum() > 0
    # the learned position embedding is a bias: contributions match the logit only up to it
    logits = model(x)
    got = model.explain(x, torch.tensor([1, 2])).flatten(1).sum(1)
    assert torch.allclose(got, logits[[0, 1], [1, 2]] - model.logit_bias.bias, atol=0.05)


def test_the_encoding_recovers_pixels_and_appends_their_inverse():
    pixels = torch.rand(2, 3, 4, 4)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    normed = (pixels - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    out = BcosEncode(mean, std)(normed)
    assert torch.allclose(out, torch.cat([pixels, 1 - pixels], 1), atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"input_mean": (0.5,), "input_std": None}, "give both"),
        ({"input_mean": (0.5,), "input_std": (0.0,)}, "std > 0"),
        ({"input_mean": (0.5, 0.5), "input_std": (1.0, 1.0)}, "one per channel"),
    ],
)
def test_bad_normalisation_constants_are_one_line(kwargs, needle):
    with pytest.raises(ConfigError, match=needle) as err:
        create_model("bcos_mnist_cnn", num_classes=10, in_channels=1, **kwargs)
    assert "\n" not in str(err.value)


def test_the_experiment_hands_a_bcos_model_the_datas_normalisation():
    info = DatasetInfo("t", 10, (1, 28, 28), list("abcdefghij"), mean=(0.29,), std=(0.35,))
    data = TensorDataset(torch.zeros(4, 1, 28, 28), torch.arange(4), info)
    model = build_model(ModelSpec(name="bcos_resnet8"), data)
    assert model.encode.mean.flatten().tolist() == pytest.approx([0.29])
    assert model.encode.std.flatten().tolist() == pytest.approx([0.35])
    assert is_bcos(model) and not is_bcos(create_model("resnet8", num_classes=10))


def test_uncentred_batch_norm_only_rescales_and_tracks_the_variance():
    torch.manual_seed(0)
    bn = UncenteredBatchNorm2d(3)
    x = torch.randn(8, 3, 5, 5) * 2 + 1
    out = bn(x)
    var = x.var(dim=(0, 2, 3), unbiased=False)
    assert torch.allclose(out, x / (var + bn.eps).sqrt().view(1, 3, 1, 1), atol=1e-5)
    assert torch.allclose(bn.running_var, 0.9 + 0.1 * var, atol=1e-6)
    bn.eval()
    assert torch.allclose(bn(x), x / (bn.running_var + bn.eps).sqrt().view(1, 3, 1, 1))


def test_logit_bias_is_the_log_prior_odds():
    assert LogitBias(10).bias == pytest.approx(math.log(1 / 9))
    assert LogitBias(2).bias == 0.0


def test_bce_matches_its_formula_with_smoothing():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(3, 4))
    y = np.array([0, 2, 3])
    t = np.eye(4)[y] * 0.9 + 0.1 / 4
    s = 1 / (1 + np.exp(-z))
    expected = -np.mean(t * np.log(s) + (1 - t) * np.log(1 - s))
    batch = Batch(torch.zeros(3, 1), torch.tensor(y), torch.arange(3))
    got = create_loss("bce", smoothing=0.1)(Outputs(torch.tensor(z)), None, batch)["loss"]
    assert got.item() == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ConfigError, match="bce.smoothing"):
        create_loss("bce", smoothing=1.0)
