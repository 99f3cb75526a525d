"""Training precision: bf16 autocast trains with fp32 weights and close to fp32, fp32 is
unchanged, fp16 without CUDA is refused in one line before anything trains."""

from __future__ import annotations

import pytest
import torch

from distillscope.distill import build_loss
from distillscope.errors import ConfigError
from distillscope.train.precision import (
    LOGIT_BOUND,
    TeacherPrecision,
    autocast,
    choose_teacher_precision,
)
from distillscope.train.teacher_cache import TeacherCache
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


class Scaled(torch.nn.Module):
    """Logits ``scale * W x``: at a large scale bf16 moves them by far more than the bound."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(8, 3)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * self.scale


def test_auto_takes_bf16_only_where_it_keeps_the_fp32_answers() -> None:
    x = make_data(200).inputs
    cpu = torch.device("cpu")
    small = choose_teacher_precision(Scaled(0.01), x, cpu, "auto")
    assert small.precision == "bf16" and small.agreement == 1.0
    assert small.max_logit_error <= LOGIT_BOUND and small.items == 200
    large = choose_teacher_precision(Scaled(1000.0), x, cpu, "auto")
    assert large.precision == "fp32" and large.max_logit_error > LOGIT_BOUND
    forced = choose_teacher_precision(Scaled(1000.0), x, cpu, "bf16")
    assert forced.precision == "bf16"  # asked for: kept, with what the check saw
    assert choose_teacher_precision(Scaled(1.0), x, cpu, "fp32") == TeacherPrecision("fp32", "fp32")
    with pytest.raises(ConfigError, match=r"^teacher_precision='fp8' is invalid"):
        choose_teacher_precision(Scaled(1.0), x, cpu, "fp8")


def test_a_bf16_cache_holds_fp32_tensors_close_to_the_fp32_cache() -> None:
    data, teacher = make_data(64), TinyNet(hidden=16, seed=2)
    exact = TeacherCache.build(teacher, data, 16, "cpu", ["act"], progress=False)
    low = TeacherCache.build(teacher, data, 16, "cpu", ["act"], progress=False,
                             precision="bf16")  # fmt: skip
    assert (exact.precision, low.precision) == ("fp32", "bf16")
    assert low.logits.dtype == torch.float32 and low.features["act"].dtype == torch.float32
    assert not torch.equal(low.logits, exact.logits)
    assert (low.logits - exact.logits).abs().max() <= LOGIT_BOUND
