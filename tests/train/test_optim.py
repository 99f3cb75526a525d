"""Optimizers and learning-rate schedules."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from distillscope.errors import ConfigError
from distillscope.train import Trainer
from distillscope.train.optim import (
    adaptive_clip_grad_,
    agc_gradient,
    build_optimizer,
    build_scheduler,
    lr_factor,
)
from tests.train.tiny_train_parts import CE, TinyNet, config, make_data


def lrs_over(cfg_overrides: dict, steps_per_epoch: int) -> list[float]:
    """The learning rate used at each optimizer step of a whole run."""
    cfg = config(**cfg_overrides)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([param], cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch)
    lrs = []
    for _ in range(cfg.epochs * steps_per_epoch):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_warmup_then_cosine_to_zero() -> None:
    lrs = lrs_over({"lr": 0.2, "epochs": 4, "warmup_epochs": 1, "schedule": "cosine"}, 10)
    assert lrs[0] == pytest.approx(0.02)  # (0 + 1) / 10 of the peak
    assert lrs[4] == pytest.approx(0.1)
    assert lrs[9] == pytest.approx(0.2)  # warm-up reaches the peak on its last step
    assert lrs[10] == pytest.approx(0.2)  # cosine starts at the peak
    assert lrs[25] == pytest.approx(0.1)  # half-way through the 30 cosine steps
    assert lrs[39] == pytest.approx(0.1 * (1 + math.cos(math.pi * 29 / 30)))
    assert lr_factor(config(epochs=4, warmup_epochs=1, schedule="cosine"), 10)(40) == 0.0


def test_multistep_decays_at_milestone_epochs() -> None:
    lrs = lrs_over({"lr": 1.0, "epochs": 4, "schedule": "multistep", "milestones": [1, 3]}, 3)
    assert lrs == pytest.approx([1.0] * 3 + [0.1] * 6 + [0.01] * 3)


def test_multistep_milestones_count_warmup_epochs() -> None:
    cfg = {"lr": 1.0, "epochs": 3, "schedule": "multistep", "milestones": [2], "gamma": 0.5}
    lrs = lrs_over({**cfg, "warmup_epochs": 1}, 2)
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 1.0, 0.5, 0.5])


def test_constant_with_warmup() -> None:
    lrs = lrs_over({"lr": 0.4, "epochs": 3, "warmup_epochs": 2, "schedule": "constant"}, 2)
    assert lrs == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4])


def test_multistep_without_milestones_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="needs milestones"):
        config(schedule="multistep")  # rejected by the config, before any run starts
    with pytest.raises(ValidationError, match="increasing epochs"):
        config(schedule="multistep", milestones=[3, 2])
    cfg = config(schedule="multistep", milestones=[2])
    cfg.__dict__["milestones"] = []  # a config built around validation is still refused
    with pytest.raises(ConfigError, match="milestones"):
        lr_factor(cfg, 5)


def test_scheduler_state_is_plain_numbers() -> None:
    cfg = config(schedule="cosine")
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg)
    state = build_scheduler(opt, cfg, 4).state_dict()
    assert state["lr_lambdas"] == [None]
    assert all(isinstance(v, (int, float, bool, list, type(None))) for v in state.values())


@pytest.mark.parametrize(
    ("name", "cls", "decoupled"),
    [
        ("sgd", torch.optim.SGD, None),
        ("adam", torch.optim.Adam, False),
        ("adamw", torch.optim.AdamW, True),
    ],
)
def test_build_optimizer_kinds(name: str, cls: type, decoupled: bool | None) -> None:
    cfg = config(optimizer=name, lr=0.3, momentum=0.8, weight_decay=1e-3)
    opt = build_optimizer(torch.nn.Linear(2, 2).parameters(), cfg)
    group = opt.param_groups[0]
    assert type(opt) is cls
    assert (group["lr"], group["weight_decay"]) == (0.3, 1e-3)
    if name == "sgd":
        assert (group["momentum"], group["nesterov"]) == (0.8, False)
    else:
        assert group["decoupled_weight_decay"] is decoupled


def test_build_optimizer_rejects_no_parameters() -> None:
    with pytest.raises(ConfigError, match="nothing to train"):
        build_optimizer([], config())


# ---------------------------------------------------------------- adaptive gradient clipping
def test_agc_clips_each_unit_to_a_fraction_of_its_weight_norm() -> None:
    """Hand-computed, clip 0.01: a unit whose gradient norm exceeds ``0.01 * ||W_i||`` (with
    ``||W_i||`` floored at 1e-3) is scaled down to exactly that norm; others are kept."""
    conv_w = torch.tensor([[3.0, 4.0], [0.0, 0.0]]).view(2, 1, 1, 2)  # filter norms 5, 0
    conv_g = torch.tensor([[0.6, 0.8], [0.0, 2e-5]]).view(2, 1, 1, 2)  # gradient norms 1, 2e-5
    got = agc_gradient(conv_w, conv_g, clip=0.01).view(2, 2)
    # filter 0: 1 > 0.05 -> x 0.05; filter 1: 2e-5 > 0.01 * 1e-3 -> x 0.5
    assert torch.allclose(got, torch.tensor([[0.03, 0.04], [0.0, 1e-5]]), rtol=1e-6, atol=0)
    lin_w = torch.tensor([[1.0, 2.0, 2.0], [0.0, 0.0, 5.0]])  # row norms 3, 5
    lin_g = torch.tensor([[0.0, 0.06, 0.08], [0.01, 0.0, 0.0]])  # row norms 0.1, 0.01
    got = agc_gradient(lin_w, lin_g, clip=0.01)
    expected = torch.tensor([[0.0, 0.018, 0.024], [0.01, 0.0, 0.0]])  # 0.1 -> 0.03; 0.01 kept
    assert torch.allclose(got, expected, rtol=1e-6, atol=0)
    bias, bias_g = torch.tensor([1.0, 2.0, 2.0]), torch.tensor([0.05, 0.0, 0.0])  # one unit
    assert torch.allclose(agc_gradient(bias, bias_g, clip=0.01), torch.tensor([0.03, 0.0, 0.0]))
    assert agc_gradient(bias, bias_g, clip=0.1).equal(bias_g)  # 0.05 <= 0.3: kept


def test_agc_in_place_skips_parameters_without_gradients() -> None:
    used, unused = torch.nn.Parameter(torch.tensor([[3.0, 4.0]])), torch.nn.Parameter(torch.ones(2))
    used.grad = torch.tensor([[3.0, 4.0]])
    adaptive_clip_grad_([used, unused], clip=0.01)
    assert torch.allclose(used.grad, torch.tensor([[0.03, 0.04]])) and unused.grad is None


def test_the_trainer_clips_gradients_only_when_asked() -> None:
    data = make_data(16)

    def trained(**overrides: object) -> list[torch.Tensor]:
        net = TinyNet(dropout=0.0)
        cfg = config(epochs=1, optimizer="sgd", momentum=0.0, **overrides)
        Trainer(net, CE(), cfg, progress=False).fit(data)
        return [p.detach().clone() for p in net.parameters()]

    plain, loose, tight = trained(), trained(agc_clip=1e6), trained(agc_clip=1e-4)
    assert all(a.equal(b) for a, b in zip(plain, loose, strict=True))  # never binding: same run
    start = [p.detach() for p in TinyNet(dropout=0.0).parameters()]
    moved = [(t - s).norm() / (a - s).norm() for t, a, s in zip(tight, plain, start, strict=True)]
    assert max(moved) < 0.05  # steps of at most 1e-4 of each unit's norm


def test_agc_clip_must_be_positive() -> None:
    with pytest.raises(ValidationError, match="agc_clip"):
        config(agc_clip=0.0)
