"""Random weight directions and the summary of a loss-against-noise curve (sharpness).

Two kinds of Gaussian direction ``d`` for a perturbation ``theta + sigma * d``:

- ``"absolute"``: every entry ``N(0, 1)``, so ``sigma`` is the noise's standard deviation in
  weight units (random perturbations of the kind Keskar et al. 2017, "On large-batch training
  for deep learning: generalization gap and sharp minima", relate to sharpness).
- ``"relative"``: filter normalisation after Li et al. 2018, "Visualizing the loss landscape
  of neural nets": a Gaussian direction rescaled so that each filter ``d_f`` has the norm of the
  weights' filter ``theta_f`` (a filter: one slice along dim 0 of a weight of two or more
  dimensions, i.e. one output channel of a conv or one output unit of a linear layer), and
  zero for one-dimensional parameters (biases, normalisation scales and shifts), as Li et al.
  leave those unperturbed. ``sigma`` is then a fraction of each filter's norm: rescaling a
  filter that a batch normalisation follows leaves the network's function unchanged, and
  the perturbed network's too, whereas absolute noise of a fixed ``sigma`` weighs more on a
  filter the smaller its norm.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from distillscope.errors import ConfigError

__all__ = ["NOISE_MODES", "curve_area", "noise_direction"]

#: Kinds of weight noise; the first is the default.
NOISE_MODES = ("relative", "absolute")


def noise_direction(
    params: Sequence[Tensor], mode: str, generator: torch.Generator
) -> list[Tensor]:
    """A Gaussian direction for ``params``, one tensor per parameter, on their devices.

    The noise is drawn on the CPU from ``generator``, parameter after parameter, so the same
    seed gives the same direction on every device.

    Args:
        params: The weights ``theta`` (read only).
        mode: ``"relative"`` (filter-normalised) or ``"absolute"`` (see the module docstring).
        generator: The source of the noise.

    Example:
        >>> w = torch.tensor([[3.0, 4.0], [0.0, 1.0]])
        >>> d = noise_direction([w, torch.ones(2)], "relative", torch.Generator().manual_seed(0))
        >>> [round(float(n), 4) for n in d[0].norm(dim=1)], d[1].tolist()
        ([5.0, 1.0], [0.0, 0.0])
    """
    if mode not in NOISE_MODES:
        raise ConfigError(f"noise={mode!r} is unknown; use one of {', '.join(NOISE_MODES)}")
    directions = []
    for p in params:
        d = torch.randn(p.shape, generator=generator, dtype=torch.float64)
        if mode == "relative":
            if p.dim() < 2:
                d = torch.zeros_like(d)
            else:
                w = p.detach().to("cpu", torch.float64)
                scale = w.flatten(1).norm(dim=1) / d.flatten(1).norm(dim=1).clamp_min(1e-12)
                d = d * scale.reshape(-1, *([1] * (p.dim() - 1)))
        directions.append(d.to(p.device, p.dtype))
    return directions


def curve_area(sigmas: Sequence[float], losses: Sequence[float]) -> float:
    """Mean loss rise over a noise sweep: ``1/(s_max - s_0) int (L(s) - L(s_0)) ds``.

    The trapezoid rule over the sorted ``sigmas`` (the first one the unperturbed point, 0 in
    the sharpness probe), divided by the sweep's width: a loss rise in the loss's units, 0 for
    a flat curve, comparable between sweeps of different widths.

    Example:
        >>> curve_area([0.0, 0.5, 1.0], [1.0, 1.0, 3.0])
        0.5
    """
    if len(sigmas) != len(losses) or len(sigmas) < 2:
        raise ValueError("curve_area needs two or more (sigma, loss) points")
    base = losses[0]
    area = 0.0
    for i in range(1, len(sigmas)):
        rise = (losses[i] - base + losses[i - 1] - base) / 2.0
        area += rise * (sigmas[i] - sigmas[i - 1])
    return area / (sigmas[-1] - sigmas[0])
