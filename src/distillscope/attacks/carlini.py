"""Carlini & Wagner's L2 attack (Carlini & Wagner 2017, "Towards Evaluating the Robustness of
Neural Networks", section V-A), untargeted, on whole batches.

For each sample, over ``w`` with ``x' = lo + (hi - lo) (tanh(w) + 1) / 2`` (always in range):

    minimise  ||x' - x||_2^2 + c * max(Z(x')_y - max_{i != y} Z(x')_i, -kappa)

with Adam (``lr``, ``steps`` per ``c``), and a binary search over ``c`` per sample
(``search_steps`` rounds from ``c0``): ``c`` shrinks after a success and grows (x10 until a
first success) after a failure. The smallest successful perturbation of all rounds is kept;
samples never fooled are returned unchanged. Constants follow the paper and the common
reference implementations: ``kappa = 0``, ``lr = 0.01``, ``c0 = 1e-3`` is theirs; ours for a
CPU budget are ``search_steps = 5`` and ``steps = 100`` (the paper uses 9 and 10,000).

It reads logits (``Z``), so it is what paper 004 calls a strong attack by construction: dividing
the logits by a temperature rescales the margin but not its sign.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["CW_LR", "CW_SEARCH_STEPS", "CW_STEPS", "cw_l2"]

#: Adam learning rate (Carlini & Wagner's 1e-2).
CW_LR = 0.01
#: Adam steps per value of ``c`` (ours for CPU; the paper: 10,000).
CW_STEPS = 100
#: Binary-search rounds over ``c`` (ours; the paper: 9).
CW_SEARCH_STEPS = 5


def _margin(logits: Tensor, y: Tensor) -> Tensor:
    """``(B,)`` ``Z_y - max_{i != y} Z_i``: negative once the sample is misclassified."""
    true = logits.gather(1, y[:, None])[:, 0]  # (B,)
    others = logits.scatter(1, y[:, None], float("-inf"))  # (B, K)
    return true - others.amax(1)


def cw_l2(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    bounds: tuple[float, float] | None = (0.0, 1.0),
    c0: float = 1e-3,
    kappa: float = 0.0,
    steps: int = CW_STEPS,
    search_steps: int = CW_SEARCH_STEPS,
    lr: float = CW_LR,
) -> Tensor:
    """The smallest L2 adversarial example found for each sample (unchanged if none).

    Args:
        model: A network returning ``(B, K)`` logits on inputs like ``x``, in eval mode.
        x: ``(B, ...)`` clean inputs within ``bounds``.
        y: ``(B,)`` true labels.
        bounds: ``(low, high)`` valid input range (the tanh box), or ``None`` for unbounded
            inputs (then ``x' = x + delta`` is optimised directly, from ``delta = 0``).
        c0: Initial trade-off constant.
        kappa: Confidence margin.
        steps: Adam steps per value of ``c``.
        search_steps: Rounds of the binary search over ``c``.
        lr: Adam's learning rate.

    Returns:
        ``(B, ...)`` detached inputs (within ``bounds`` if given).
    """
    x0 = x.detach()
    b = x0.shape[0]
    if bounds is None:
        w0 = torch.zeros_like(x0)

        def image(w: Tensor) -> Tensor:
            return x0 + w

    else:
        lo, hi = bounds
        scaled = ((x0 - lo) / (hi - lo) * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6)
        w0 = torch.atanh(scaled)  # (B, ...)

        def image(w: Tensor) -> Tensor:
            return lo + (hi - lo) * (torch.tanh(w) + 1) / 2

    c = torch.full((b,), c0, dtype=x0.dtype, device=x0.device)
    low = torch.zeros_like(c)
    high = torch.full_like(c, float("inf"))
    best = x0.clone()
    best_norm = torch.full_like(c, float("inf"))
    with torch.enable_grad():
        for _ in range(search_steps):
            w = w0.clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=lr)
            fooled = torch.zeros(b, dtype=torch.bool, device=x0.device)
            for _ in range(steps):
                x_adv = image(w)  # (B, ...)
                margin = _margin(model(x_adv), y)  # (B,)
                dist = (x_adv - x0).flatten(1).pow(2).sum(1)  # (B,)
                loss = (dist + c * margin.clamp_min(-kappa)).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward(inputs=[w])
                opt.step()
                with torch.no_grad():
                    success = margin < 0  # of x_adv before this step
                    norm = dist.sqrt()
                    better = success & (norm < best_norm)
                    best[better] = x_adv.detach()[better]
                    best_norm = torch.where(better, norm, best_norm)
                    fooled |= success
            with torch.no_grad():  # binary search on c, per sample
                high = torch.where(fooled, torch.minimum(high, c), high)
                low = torch.where(fooled, low, torch.maximum(low, c))
                grow = torch.isinf(high)
                c = torch.where(grow, c * 10, (low + high) / 2)
    return best.detach()
