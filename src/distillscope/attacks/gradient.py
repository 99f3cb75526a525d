"""Gradient-sign attacks under an L-inf budget: FGSM and PGD, on whole batches.

Both ascend the cross-entropy ``L(f(x), y)`` of the true label (untargeted):

* FGSM (Goodfellow et al. 2015): ``x' = clip(x + eps * sign(grad_x L))``.
* PGD (Madry et al. 2018): from a uniform random start in the eps-ball, ``steps`` times
  ``x <- clip(proj_eps(x + a * sign(grad_x L)))``, where ``proj_eps`` clamps ``x - x_0`` to
  ``[-eps, eps]`` and ``clip`` clamps to the valid input range.

Paper 004 (section 4.2) runs them in a weak form and a strong one (on ``f / T``, see
:mod:`distillscope.attacks.temperature`). Written here rather than taken from ``captum.robust``
so that the random start comes from a caller's ``torch.Generator`` (same adversarial examples on
every run and device) and no model parameter gradient is accumulated.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["IMAGE_EPS", "PGD_STEPS", "PGD_STEP_FRACTION", "fgsm", "fgsm_sweep", "pgd"]

#: L-inf budget on [0, 1] images: 8/255 (the CIFAR standard, paper 003 4.2).
IMAGE_EPS = 8 / 255
#: PGD iterations: 10 (ours: a common CIFAR-10 setting at a CPU cost).
PGD_STEPS = 10
#: PGD step size as a fraction of eps: 1/4, which gives 2/255 for eps = 8/255.
PGD_STEP_FRACTION = 0.25

Bounds = tuple[float, float] | None


def _clip(x: Tensor, bounds: Bounds) -> Tensor:
    return x if bounds is None else x.clamp(bounds[0], bounds[1])


def _loss_gradient(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """``grad_x sum_b CE(f(x_b), y_b)``, without touching the model's parameter gradients."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)  # (B, ...)
    return grad


def fgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float, bounds: Bounds = None) -> Tensor:
    """Fast gradient sign method: ``x' = clip(x + eps * sign(grad_x CE(f(x), y)))``.

    Args:
        model: A network returning ``(B, K)`` logits on inputs like ``x``, in eval mode.
        x: ``(B, ...)`` clean inputs.
        y: ``(B,)`` true labels.
        eps: L-inf budget.
        bounds: ``(low, high)`` valid input range, or None for unbounded inputs.

    Returns:
        ``(B, ...)`` detached adversarial inputs. Where the gradient is exactly zero (saturated
        softmax: gradient masking) the input is unchanged.

    Example:
        >>> net = nn.Linear(2, 2)
        >>> x = torch.zeros(3, 2)
        >>> (fgsm(net, x, torch.tensor([0, 1, 0]), eps=0.1) - x).abs().amax().item()
        0.10000000149011612
    """
    return fgsm_sweep(model, x, y, [eps], bounds)[0]


def fgsm_sweep(
    model: nn.Module, x: Tensor, y: Tensor, budgets: Sequence[float], bounds: Bounds = None
) -> list[Tensor]:
    """:func:`fgsm` at each of ``budgets`` from one gradient: ``clip(x + eps * sign(grad))``.

    The gradient ``grad_x CE(f(x), y)`` does not depend on ``eps``, so a sweep over budgets
    needs one forward and backward pass instead of one per budget; each result is the same
    tensor :func:`fgsm` gives at that budget, bit for bit.

    Args:
        model: A network returning ``(B, K)`` logits on inputs like ``x``, in eval mode.
        x: ``(B, ...)`` clean inputs.
        y: ``(B,)`` true labels.
        budgets: L-inf budgets.
        bounds: ``(low, high)`` valid input range, or None for unbounded inputs.

    Returns:
        ``(B, ...)`` detached adversarial inputs, one per budget, in the order of ``budgets``.

    Example:
        >>> net = nn.Linear(2, 2)
        >>> x = torch.zeros(3, 2)
        >>> small, large = fgsm_sweep(net, x, torch.tensor([0, 1, 0]), [0.1, 0.2])
        >>> torch.equal(large, 2 * small)
        True
    """
    x = x.detach()
    direction = _loss_gradient(model, x, y).sign()  # (B, ...)
    return [_clip(x + eps * direction, bounds) for eps in budgets]  # each (B, ...)


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    step_size: float,
    steps: int = PGD_STEPS,
    random_start: bool = True,
    bounds: Bounds = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Projected gradient descent (ascent on the loss) in the L-inf ball of radius ``eps``.

    Args:
        model: A network returning ``(B, K)`` logits on inputs like ``x``, in eval mode.
        x: ``(B, ...)`` clean inputs.
        y: ``(B,)`` true labels.
        eps: L-inf budget.
        step_size: Step ``a`` of each signed-gradient step.
        steps: Number of steps.
        random_start: Start from ``x + U[-eps, eps]`` instead of ``x``.
        bounds: ``(low, high)`` valid input range, or None for unbounded inputs.
        generator: Source of the random start; drawn on the generator's device, then moved to
            ``x``'s, so a seeded CPU generator gives the same start everywhere.

    Returns:
        ``(B, ...)`` detached adversarial inputs with ``|x' - x| <= eps`` and within ``bounds``.

    Example:
        >>> net = nn.Linear(2, 2)
        >>> x = torch.zeros(3, 2)
        >>> g = torch.Generator().manual_seed(0)
        >>> x_adv = pgd(net, x, torch.tensor([0, 1, 0]), 0.1, 0.025, generator=g)
        >>> bool((x_adv - x).abs().amax() <= 0.1 + 1e-7)
        True
    """
    x0 = x.detach()
    x_adv = x0
    if random_start:
        device = generator.device if generator is not None else x0.device
        noise = torch.rand(x0.shape, generator=generator, device=device, dtype=x0.dtype)
        x_adv = _clip(x0 + (2 * noise.to(x0.device) - 1) * eps, bounds)  # (B, ...)
    for _ in range(steps):
        x_adv = x_adv + step_size * _loss_gradient(model, x_adv, y).sign()  # (B, ...)
        x_adv = _clip(x0 + (x_adv - x0).clamp(-eps, eps), bounds)  # project, then clip
    return x_adv
