"""Training precision: bf16 autocast trains with fp32 weights and close to fp32, fp32 is
unchanged, fp16 without CUDA is refused in one line before anything trains."""

from __future__ import annotations

import pytest
import torch

from distillscope.distill import build_loss
from distillscope.errors import ConfigError
from distillscope.train.precision import autocast
from distillscope.train.trainer import Trainer
from tests.train.tiny_train_parts import TinyNet, config, make_data, state_equal


def fit(precision: str, seen: list | None = None) -> TinyNet:
    net = TinyNet(hidden=32, dropout=0.0, seed=1)
    if seen is not None:  # record the dtype the first layer computes in
        net.fc1.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    cfg = config(epochs=2).model_copy(update={"precision": precision})
    Trainer(net, build_loss({"ce": {}}), cfg, progress=False, seed=3).fit(make_data(96))
    return net


def test_bf16_computes_in_bf16_keeps_fp32_weights_and_stays_close_to_fp32() -> None:
    seen: list = []
    bf16, fp32 = fit("bf16", seen), fit("fp32")
    assert torch.bfloat16 in seen  # the training forward ran under autocast
    assert all(p.dtype == torch.float32 for p in bf16.parameters())
    assert not state_equal(bf16, fp32)  # it did change the arithmetic
    for a, b in zip(bf16.parameters(), fp32.parameters()):
        assert torch.allclose(a, b, atol=0.05)


def test_fp32_is_what_it_was() -> None:
    assert state_equal(fit("fp32"), fit("fp32"))
    with autocast("fp32", torch.device("cpu")):
        assert not torch.is_autocast_enabled("cpu")


def test_fp16_without_cuda_is_refused_before_training() -> None:
    net = TinyNet(seed=1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    cfg = config(epochs=1).model_copy(update={"precision": "fp16"})
    with pytest.raises(ConfigError, match=r"^train.precision=fp16 needs a CUDA device") as info:
        Trainer(net, build_loss({"ce": {}}), cfg, progress=False).fit(make_data(32))
    assert "\n" not in str(info.value)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
