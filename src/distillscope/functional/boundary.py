"""How hard a model's decision boundaries are, read off a grid of predicted probabilities.

Paper 004 (Trustworthy Distillation?), section 5.1.1: a model trained at temperature 1 moves from
one class to the next *smoothly*, through a sizable "twilight zone" where several classes have
significant probability (a sigmoid across the boundary); a model trained at a high temperature
switches almost like a step function, its probabilities near one-hot right up to the boundary.
The paper shows this in pictures and words only; the two numbers below are **this project's**
measures of it (not the paper's), on a ``(H, W, K)`` grid of softmax outputs ``p``:

* twilight = fraction of grid points whose top probability is below ``c`` (default 0.9):
  ``1/(HW) sum_g 1[max_k p_gk < c]``. The paper's twilight zone as an area share; it also grows
  with the *length* of the boundaries, so it compares models with similar decision regions.
* hardness = mean, over the grid points that touch the boundary, of the top-2 probability margin
  ``p_(1) - p_(2)``. A grid point touches the boundary when one of its 4 neighbours has another
  argmax. Step-like boundaries give margins near 1 right beside the boundary; sigmoid-like ones
  give margins near 0 there. Averaging over boundary points only makes it independent of how long
  the boundaries are. It depends on the grid spacing (a boundary point lies within one cell of the
  boundary), so compare models on the same grid, as the decision-map probe does.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["TWILIGHT_CONFIDENCE", "boundary_hardness", "boundary_points", "twilight_fraction"]

#: Top probability below which a grid point is in the twilight zone: "significant probability of
#: being in either class" (paper 004, 5.1.1) read as at least 10% left for other classes.
TWILIGHT_CONFIDENCE = 0.9


def twilight_fraction(probs: Tensor, confidence: float = TWILIGHT_CONFIDENCE) -> Tensor:
    """Share of grid points whose top probability is below ``confidence``.

    ``twilight = 1/G sum_g 1[max_k p_gk < c]``; lower means harder boundaries.

    Args:
        probs: ``(..., K)`` probabilities, any number of grid dimensions.
        confidence: The threshold ``c`` in ``(0, 1]``.

    Returns:
        Scalar tensor in ``[0, 1]``.

    Example:
        >>> p = torch.tensor([[[1.0, 0.0], [0.6, 0.4]], [[0.5, 0.5], [0.0, 1.0]]])
        >>> twilight_fraction(p)
        tensor(0.5000)
    """
    top = probs.amax(-1)  # (...)
    return (top < confidence).float().mean()


def boundary_points(probs: Tensor) -> Tensor:
    """Grid points with a 4-neighbour (up, down, left, right) of a different argmax class.

    Args:
        probs: ``(H, W, K)`` probabilities (or logits: only the argmax is used).

    Returns:
        ``(H, W)`` bool; both points of every differing neighbour pair are marked.

    Example:
        >>> p = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])  # one row, 3 columns
        >>> boundary_points(p).tolist()
        [[False, True, True]]
    """
    label = probs.argmax(-1)  # (H, W)
    mark = torch.zeros_like(label, dtype=torch.bool)  # (H, W)
    across = label[:, 1:] != label[:, :-1]  # (H, W-1), left vs right neighbour
    mark[:, 1:] |= across
    mark[:, :-1] |= across
    down = label[1:, :] != label[:-1, :]  # (H-1, W), upper vs lower neighbour
    mark[1:, :] |= down
    mark[:-1, :] |= down
    return mark


def boundary_hardness(probs: Tensor) -> Tensor:
    """Mean top-2 probability margin ``p_(1) - p_(2)`` over the grid points touching a boundary.

    1 for a step function, near 0 for a smooth transition; NaN when the grid holds a single
    predicted class (no boundary to measure).

    Args:
        probs: ``(H, W, K)`` probabilities, ``K >= 2``.

    Returns:
        Scalar tensor in ``[0, 1]``, or NaN.

    Example:
        >>> step = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]])
        >>> boundary_hardness(step)
        tensor(1.)
        >>> smooth = torch.tensor([[[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9]]])
        >>> boundary_hardness(smooth)  # margins 0.2 and 0.4 at the two middle points
        tensor(0.3000)
    """
    top2 = probs.topk(2, dim=-1).values  # (H, W, 2)
    margin = top2[..., 0] - top2[..., 1]  # (H, W)
    mark = boundary_points(probs)  # (H, W)
    if not mark.any():
        return torch.tensor(float("nan"))
    return margin[mark].mean()
