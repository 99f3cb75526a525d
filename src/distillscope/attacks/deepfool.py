"""DeepFool: the minimal perturbation that crosses the nearest (linearised) decision boundary.

Moosavi-Dezfooli, Fawzi and Frossard 2016 (DeepFool, Algorithm 2, multi-class). At the current
point ``x_i`` with true class ``y`` and logits ``f``, for every other class ``k``

    f'_k = f_k(x_i) - f_y(x_i),        w_k = grad_x f_k(x_i) - grad_x f_y(x_i)

the linearised boundary to ``k`` is ``|f'_k| / ||w_k||_2`` away; step to the nearest one,

    l = argmin_{k != y} |f'_k| / ||w_k||_2,        r_i = (|f'_l| + 1e-4) / ||w_l||_2^2 * w_l,

accumulate ``r = sum_i r_i`` and move to ``x_{i+1} = x_0 + (1 + overshoot) * r``, until the
model no longer predicts ``y`` or ``steps`` steps are done. The ``1e-4`` and the overshoot push
the point just past the boundary (the DeepFool paper's reference code uses both). Paper 004
runs it for 50 steps with overshoot 0.02 (torchattacks' defaults, which the
authors used).

The attack works on the logits ``f``, not on the softmax, so dividing them by a training
temperature (the "strong" form of paper 004) changes nothing but the ``1e-4`` constant: for
``f / T`` the step is ``(|f'_l| + 1e-4 T) / ||w_l||^2 w_l``, slightly longer. DeepFool is
therefore immune to the gradient masking of high-temperature models; paper 004's Figure 5
shows DeepFool and DeepFool (CW) within a point of each other.

Everything is batched: every sample takes its own steps, and a sample leaves the batch as soon
as it is misclassified (or when its gradients vanish and no boundary can be found). With
``bounds`` the iterate is clipped to the valid input range and ``r`` is taken back to the
clipped point, so the next step starts from where the sample really is.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["DEEPFOOL_OVERSHOOT", "DEEPFOOL_STEPS", "deepfool"]

#: Maximum DeepFool iterations: 50 (paper 004 via torchattacks' default).
DEEPFOOL_STEPS = 50
#: Overshoot past the boundary: 0.02, the DeepFool paper's reference value.
DEEPFOOL_OVERSHOOT = 0.02
#: Added to ``|f'_l|`` so that each step lands just beyond the linearised boundary (DeepFool).
_PUSH = 1e-4

Bounds = tuple[float, float] | None


def _step(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One DeepFool linearisation at ``x`` (b samples).

    Returns:
        ``(fooled, movable, r)``: ``(b,)`` whether ``x`` is already misclassified, ``(b,)``
        whether some boundary has a non-zero gradient, and the ``(b, ...)`` step ``r_i``.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = model(x)  # (b, K)
        num_classes = logits.shape[1]
        grads = [
            torch.autograd.grad(logits[:, k].sum(), x, retain_graph=k < num_classes - 1)[0]
            for k in range(num_classes)
        ]
    logits = logits.detach()
    jac = torch.stack(grads, 1).flatten(2)  # (b, K, D): d f_k / d x per sample
    fooled = logits.argmax(1) != y  # (b,)
    f_prime = logits - logits.gather(1, y[:, None])  # (b, K): f_k - f_y
    w = jac - jac[torch.arange(len(y)), y][:, None]  # (b, K, D): grad f_k - grad f_y
    w_norm = w.norm(dim=2)  # (b, K)
    dist = f_prime.abs() / w_norm  # (b, K): distance to each linearised boundary
    dist[~torch.isfinite(dist)] = torch.inf  # w_k = 0: no boundary (|f'| / 0 is inf or nan)
    dist.scatter_(1, y[:, None], torch.inf)  # the true class is no boundary
    nearest = dist.argmin(1)  # (b,) l
    movable = torch.isfinite(dist.gather(1, nearest[:, None]))[:, 0]  # (b,)
    rows = torch.arange(len(y))
    w_l = w[rows, nearest]  # (b, D)
    size = (f_prime[rows, nearest].abs() + _PUSH) / w_norm[rows, nearest].square()  # (b,)
    size = torch.where(movable, size, torch.zeros_like(size))
    r = (size[:, None] * w_l).view_as(x)  # (b, ...)
    return fooled, movable, r


def deepfool(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    steps: int = DEEPFOOL_STEPS,
    overshoot: float = DEEPFOOL_OVERSHOOT,
    bounds: Bounds = None,
) -> Tensor:
    """Untargeted multi-class DeepFool on a batch; each sample stops once it is misclassified.

    Args:
        model: A network returning ``(B, K)`` logits on inputs like ``x``, in eval mode.
        x: ``(B, ...)`` clean inputs.
        y: ``(B,)`` true labels; samples the model already misclassifies are left unchanged.
        steps: Maximum number of linearisation steps per sample.
        overshoot: Final point ``x + (1 + overshoot) * r``.
        bounds: ``(low, high)`` valid input range, or None for unbounded inputs.

    Returns:
        ``(B, ...)`` detached adversarial inputs. The perturbation is unbounded (minimal, not
        budgeted); samples still correct after ``steps`` steps, or whose gradients vanish,
        keep their last point.

    Example:
        >>> net = nn.Linear(2, 2)
        >>> with torch.no_grad():
        ...     _ = net.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
        ...     _ = net.bias.zero_()
        >>> x_adv = deepfool(net, torch.tensor([[0.5, 0.0]]), torch.tensor([0]))
        >>> net(x_adv).argmax(1).item(), round(x_adv[0, 0].item(), 3)
        (1, -0.01)
    """
    x0 = x.detach()
    y = y.to(x0.device)
    r_total = torch.zeros_like(x0)  # (B, ...)
    x_adv = x0.clone()  # (B, ...)
    active = torch.arange(len(x0), device=x0.device)  # samples still attacked
    for _ in range(steps):
        if len(active) == 0:
            break
        fooled, movable, r = _step(model, x_adv[active], y[active])
        keep = ~fooled & movable  # (b,)
        active, r = active[keep], r[keep]
        if len(active) == 0:
            break
        r_total[active] += r
        point = x0[active] + (1 + overshoot) * r_total[active]  # (b, ...)
        if bounds is not None:
            point = point.clamp(bounds[0], bounds[1])
            r_total[active] = (point - x0[active]) / (1 + overshoot)
        x_adv[active] = point
    return x_adv
