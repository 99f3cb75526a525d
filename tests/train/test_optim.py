"""Optimizers and learning-rate schedules."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from distillscope.errors import ConfigError
from distillscope.train.optim import build_optimizer, build_scheduler, lr_factor
from tests.train.tiny_train_parts import config


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
