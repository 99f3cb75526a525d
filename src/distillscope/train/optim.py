"""Optimizers, per-step learning-rate schedules and adaptive gradient clipping built from a
:class:`TrainConfig`."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from distillscope.config_train import TrainConfig
from distillscope.errors import ConfigError


def build_optimizer(
    params: Iterable[Tensor] | Iterable[dict[str, Any]], cfg: TrainConfig
) -> Optimizer:
    """The optimizer ``cfg.optimizer`` over ``params`` at the peak learning rate ``cfg.lr``.

    ``sgd`` uses ``cfg.momentum`` (no Nesterov) and L2 weight decay, ``adam`` L2 weight decay,
    ``adamw`` decoupled weight decay.

    Raises:
        ConfigError: If ``params`` is empty (nothing to train).

    Example:
        >>> opt = build_optimizer(torch.nn.Linear(2, 2).parameters(), TrainConfig(lr=0.1))
        >>> type(opt).__name__, opt.param_groups[0]["momentum"]
        ('SGD', 0.9)
    """
    params = list(params)
    if not params:
        raise ConfigError("nothing to train: the model and the loss have no trainable parameters")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """The multiplier of ``cfg.lr`` after ``step`` optimizer steps, as a function.

    Steps ``0 .. W-1`` (``W = warmup_epochs * steps_per_epoch``) ramp linearly with factor
    ``(step + 1) / W``, so the first step already moves the weights. Afterwards: ``constant``
    keeps 1; ``multistep`` multiplies by ``gamma`` once per milestone epoch reached (milestones
    count epochs from the start of training, warm-up included); ``cosine`` follows
    ``0.5 * (1 + cos(pi * (step - W) / (total - W)))`` and reaches 0 after the last step.

    Raises:
        ConfigError: For ``multistep`` without milestones.

    Example:
        >>> f = lr_factor(TrainConfig(epochs=4, schedule="cosine", warmup_epochs=1), 10)
        >>> [round(f(s), 3) for s in (0, 9, 10, 25, 40)]
        [0.1, 1.0, 1.0, 0.5, 0.0]
    """
    if steps_per_epoch < 1:
        raise ConfigError(f"steps_per_epoch is {steps_per_epoch}; the training set is empty")
    if cfg.schedule == "multistep" and not cfg.milestones:
        raise ConfigError(
            "schedule 'multistep' needs milestones (epochs); set train.milestones, e.g. [30, 60]"
        )
    warmup = cfg.warmup_epochs * steps_per_epoch
    total = cfg.epochs * steps_per_epoch
    boundaries = sorted(m * steps_per_epoch for m in cfg.milestones)
    schedule, gamma = cfg.schedule, cfg.gamma

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "multistep":
            return gamma ** sum(step >= b for b in boundaries)
        if schedule == "cosine":
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return factor


def build_scheduler(optimizer: Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> LambdaLR:
    """A :class:`LambdaLR` stepped once per optimizer step, following :func:`lr_factor`.

    Its ``state_dict()`` holds only numbers (the factor is a plain function), so it serialises
    to JSON for checkpoints.

    Example:
        >>> opt = build_optimizer(torch.nn.Linear(2, 2).parameters(), TrainConfig(lr=0.1))
        >>> cfg = TrainConfig(lr=0.1, epochs=3, schedule="multistep", milestones=[1, 2])
        >>> sched = build_scheduler(opt, cfg, steps_per_epoch=2)
        >>> lrs = []
        >>> for _ in range(6):
        ...     lrs.append(round(opt.param_groups[0]["lr"], 6)); opt.step(); sched.step()
        >>> lrs
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    """
    return LambdaLR(optimizer, lr_factor(cfg, steps_per_epoch))


#: AGC's floor on a unit's parameter norm (the B-cos authors' ``eps``): a unit whose weights are
#: near zero may still move by ``clip * AGC_EPS`` in norm.
AGC_EPS = 1e-3
#: AGC's guard on a unit's gradient norm in the division (the authors' value).
AGC_GRAD_EPS = 1e-6


def unitwise_norm(x: Tensor) -> Tensor:
    """L2 norms of the units of a parameter (or of its gradient), broadcastable against it.

    A unit is an output row: for a vector or a scalar (biases, norm scales, anything with at
    most one dimension above size 1) the whole tensor; for 2-D and 3-D tensors the norm over
    dimension 1 (a linear layer's input weights of one output); from 4-D on, everything but
    dimension 0 (a conv filter). As the B-cos authors' ``unitwise_norm`` (B-cos/B-cos-v2,
    ``bcos/training/agc.py``), which refuses more than 4 dimensions; we extend the filter rule.

    Example:
        >>> unitwise_norm(torch.tensor([[3.0, 4.0], [0.0, 1.0]])).flatten().tolist()
        [5.0, 1.0]
    """
    if x.squeeze().dim() <= 1:
        return torch.linalg.vector_norm(x)
    dims = (1,) if x.dim() <= 3 else tuple(range(1, x.dim()))
    return torch.linalg.vector_norm(x, dim=dims, keepdim=True)


def agc_gradient(param: Tensor, grad: Tensor, clip: float, eps: float = AGC_EPS) -> Tensor:
    """``grad`` after adaptive gradient clipping (a new tensor; nothing is modified).

    Brock et al., "High-Performance Large-Scale Image Recognition Without Normalization"
    (NFNets, ICML 2021), eq. 3, per unit ``i`` of the parameter ``W`` and its gradient ``G``:

        G_i <- G_i * clip * max(||W_i||, eps) / ||G_i||   if ||G_i|| > clip * max(||W_i||, eps)
        G_i <- G_i                                         otherwise

    with :func:`unitwise_norm`, ``eps = 1e-3`` and ``||G_i||`` floored at ``1e-6`` in the
    division, as the B-cos authors train (``adaptive_clip_grad_`` in B-cos/B-cos-v2
    ``bcos/training/agc.py``, clip factor 0.01; the e2KD authors' trainer calls it on every
    parameter of the student, its classifier included, where NFNets leave the final layer out).

    Example:
        >>> w, g = torch.tensor([[3.0, 4.0]]), torch.tensor([[0.3, 0.4]])
        >>> [round(v, 6) for v in agc_gradient(w, g, clip=0.01)[0].tolist()]  # 0.5 > 0.01 * 5
        [0.03, 0.04]
        >>> agc_gradient(w, g, clip=0.2).equal(g)  # 0.5 < 0.2 * 5: kept
        True
    """
    max_norm = unitwise_norm(param.detach()).clamp(min=eps) * clip
    grad_norm = unitwise_norm(grad.detach())
    clipped = grad * (max_norm / grad_norm.clamp(min=AGC_GRAD_EPS))
    return torch.where(grad_norm > max_norm, clipped, grad)


@torch.no_grad()
def adaptive_clip_grad_(params: Iterable[Tensor], clip: float, eps: float = AGC_EPS) -> None:
    """Replace every ``p.grad`` of ``params`` by :func:`agc_gradient` (parameters without a
    gradient are skipped); the trainer calls it between ``backward`` and the optimizer step
    when ``train.agc_clip`` is set."""
    for p in params:
        if p.grad is not None:
            p.grad.copy_(agc_gradient(p, p.grad, clip, eps))
