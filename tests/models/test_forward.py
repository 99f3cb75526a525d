"""forward_outputs, model_device and count_parameters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distillscope.contracts import Outputs
from distillscope.errors import ModelError
from distillscope.models import FeatureTap, count_parameters, forward_outputs, model_device


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3))


def test_forward_outputs_holds_logits_and_tapped_features() -> None:
    net = _net()
    out = forward_outputs(net, torch.randn(5, 2), FeatureTap(net, ["1"]))
    assert isinstance(out, Outputs)
    assert out.logits.shape == (5, 3)
    assert list(out.features) == ["1"] and out.features["1"].shape == (5, 4)
    assert out.logits.requires_grad and out.features["1"].requires_grad


def test_forward_outputs_without_tap_has_no_features() -> None:
    out = forward_outputs(_net(), torch.randn(5, 2))
    assert out.features == {} and out.logits.shape == (5, 3)


def test_forward_outputs_rejects_a_tap_on_a_module_that_did_not_run() -> None:
    net, other = _net(), _net()
    tap = FeatureTap(other, ["1"])
    other(torch.randn(1, 2))  # stale features must not leak into the next call
    with pytest.raises(ModelError, match="tapped module '1' did not run"):
        forward_outputs(net, torch.randn(5, 2), tap)


def test_forward_outputs_rejects_non_logit_outputs() -> None:
    with pytest.raises(ModelError, match=r"returned shape \(5, 4, 1\), expected logits of shape"):
        forward_outputs(nn.Unflatten(1, (4, 1)), torch.randn(5, 4))


def test_model_device() -> None:
    assert model_device(_net()) == torch.device("cpu")
    assert model_device(nn.ReLU()) == torch.device("cpu")  # no parameters at all
    assert model_device(nn.Linear(2, 3, device="meta")) == torch.device("meta")


def test_count_parameters_counts_shared_weights_once() -> None:
    layer = nn.Linear(2, 2)  # 4 + 2
    frozen = nn.Linear(2, 3)  # 6 + 3
    frozen.requires_grad_(False)
    net = nn.Sequential(layer, layer, frozen)
    assert count_parameters(net) == 15
    assert count_parameters(net, trainable_only=True) == 6
