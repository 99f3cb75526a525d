"""Iterative FGSM (L-inf) and PGD under an L2 budget, on whole batches.

* I-FGSM (Kurakin et al. 2016; paper 003, appendix B, eq. 4): from the clean input, ``k``
  times ``x <- Clip_{x0, eps}(x + a * sign(grad_x CE(f(x), y)))``; paper 003 uses ``k = 5``.
  The paper gives no step; ours is ``a = eps / k``, the smallest step that lets ``k`` steps
  reach the edge of the ball (Kurakin et al. use 1/255 per step with ``min(eps + 4, 1.25 eps)``
  steps).
* PGD-L2 (Madry et al. 2018, the L2 form): ``steps`` times ``x <- clip(P_eps(x + a g / ||g||))``
  with ``g = grad_x CE``, ``P_eps`` the projection of ``x - x0`` onto the L2 ball of radius
  ``eps`` (per sample), ``clip`` to the valid input range. The random start is a uniformly
  drawn direction at a radius ``eps * u``, ``u ~ U[0, 1]`` (our choice).

Both reuse :mod:`distillscope.attacks.gradient`'s loss gradient (no parameter gradients are
accumulated) and draw randomness only from a caller's generator.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from distillscope.attacks.gradient import Bounds, _clip, _loss_gradient, pgd

__all__ = ["IFGSM_STEPS", "ifgsm", "l2_norms", "pgd_l2"]

#: I-FGSM iterations of paper 003 (appendix B: "k = 5 in our case").
IFGSM_STEPS = 5


def ifgsm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    steps: int = IFGSM_STEPS,
    step_size: float | None = None,
    bounds: Bounds = None,
) -> Tensor:
    """Iterative FGSM: PGD in the L-inf ball from the clean input, no random start.

    Args:
        model: A network returning ``(B, K)`` logits on inputs like ``x``, in eval mode.
        x: ``(B, ...)`` clean inputs.
        y: ``(B,)`` true labels.
        eps: L-inf budget.
        steps: ``k``.
        step_size: ``a``; default ``eps / k``.
        bounds: ``(low, high)`` valid input range, or None.

    Returns:
        ``(B, ...)`` detached adversarial inputs with ``|x' - x| <= eps``, within ``bounds``.
    """
    a = eps / steps if step_size is None else step_size
    return pgd(model, x, y, eps, a, steps=steps, random_start=False, bounds=bounds)


def l2_norms(delta: Tensor) -> Tensor:
    """``(B,)`` L2 norm of each sample's perturbation ``(B, ...)``."""
    return delta.flatten(1).norm(dim=1)


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    return values.view(-1, *([1] * (like.dim() - 1)))


def _project_l2(delta: Tensor, eps: float) -> Tensor:
    norms = l2_norms(delta).clamp_min(1e-12)  # (B,)
    return delta * _per_sample(torch.clamp(eps / norms, max=1.0), delta)


def pgd_l2(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    step_size: float,
    steps: int = 10,
    random_start: bool = True,
    bounds: Bounds = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Projected gradient ascent on the cross-entropy within the L2 ball of radius ``eps``.

    Args:
        model: A network returning ``(B, K)`` logits on inputs like ``x``, in eval mode.
        x: ``(B, ...)`` clean inputs.
        y: ``(B,)`` true labels.
        eps: L2 budget per sample.
        step_size: Length ``a`` of each normalised-gradient step.
        steps: Number of steps.
        random_start: Start from a random point of the ball (seeded by ``generator``).
        bounds: ``(low, high)`` valid input range, or None.
        generator: Source of the random start (drawn on its device, then moved).

    Returns:
        ``(B, ...)`` detached adversarial inputs with ``||x' - x||_2 <= eps`` (up to float
        error) and within ``bounds``.

    Example:
        >>> net = nn.Linear(4, 3)
        >>> x = torch.zeros(5, 4)
        >>> adv = pgd_l2(net, x, torch.zeros(5, dtype=torch.long), 0.5, 0.2,
        ...              generator=torch.Generator().manual_seed(0))
        >>> bool((l2_norms(adv - x) <= 0.5 + 1e-6).all())
        True
    """
    x0 = x.detach()
    x_adv = x0
    if random_start:
        device = generator.device if generator is not None else x0.device
        direction = torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype)
        radius = torch.rand(x0.shape[0], generator=generator, device=device, dtype=x0.dtype)
        direction, radius = direction.to(x0.device), radius.to(x0.device)
        unit = direction / _per_sample(l2_norms(direction).clamp_min(1e-12), direction)
        x_adv = _clip(x0 + unit * _per_sample(radius * eps, unit), bounds)  # (B, ...)
    for _ in range(steps):
        grad = _loss_gradient(model, x_adv, y)  # (B, ...)
        unit = grad / _per_sample(l2_norms(grad).clamp_min(1e-12), grad)
        x_adv = x_adv + step_size * unit
        x_adv = _clip(x0 + _project_l2(x_adv - x0, eps), bounds)  # project, then clip
    return x_adv.detach()
