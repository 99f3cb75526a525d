"""Pure tensor functions on feature maps behind ReviewKD and CAT-KD.

``hcl_loss`` is the hierarchical context loss of ReviewKD (Chen, Liu, Zhao & Jia 2021,
"Distilling Knowledge via Knowledge Review", section 3.3); ``class_activation_maps`` are the
CAMs of Zhou et al. 2016 ("Learning Deep Features for Discriminative Localization") that CAT-KD
(Guo, Yan, Li & Lin 2023, "Class Attention Transfer Based Knowledge Distillation") transfers
with ``cat_loss``. Maps are ``(B, C, H, W)``; nothing here holds state or touches a model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["HCL_LEVELS", "cat_loss", "class_activation_maps", "hcl_loss"]

#: ReviewKD's pyramid (section 3.3 and both reference implementations): the full map, then
#: average pools to 4x4, 2x2 and 1x1, each level weighted half as much as the one before.
HCL_LEVELS = (4, 2, 1)


def hcl_loss(
    student: Sequence[Tensor], teacher: Sequence[Tensor], levels: Sequence[int] = HCL_LEVELS
) -> Tensor:
    """ReviewKD's hierarchical context loss, summed over stage pairs.

    For each pair ``(s, t)`` of equally shaped maps:
    ``HCL = (MSE(s, t) + sum_j 2^-j MSE(P_lj(s), P_lj(t))) / (1 + sum_j 2^-j)``, where ``P_l``
    is adaptive average pooling to ``l x l`` and ``j = 1, 2, ...`` counts only the levels ``l``
    smaller than the map (a 7x7 map uses 4, 2 and 1; a 1x1 map none). MSE averages over every
    element. The reference implementations test ``l`` against the map's height only (their maps
    are square); we test it against the smaller side, which is the same on square maps.

    Args:
        student: ``(B, C_i, H_i, W_i)`` maps, one per stage.
        teacher: Maps of the same shapes (the caller detaches them).
        levels: Pooled sizes, finest first.

    Returns:
        ``()`` the sum over stages.

    Example:
        >>> import torch
        >>> s = torch.zeros(1, 1, 2, 2)
        >>> t = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]]]])
        >>> float(hcl_loss([s], [t]))  # full map 1, 1x1 pool 1 (weight 1/2): (1 + 0.5) / 1.5
        1.0
    """
    if len(student) != len(teacher) or not student:
        raise ValueError(f"hcl_loss needs equally many maps, got {len(student)} and {len(teacher)}")
    total: Tensor | None = None
    for s, t in zip(student, teacher):
        side = min(s.shape[-2:])
        loss = F.mse_loss(s, t)  # ()
        weight, norm = 1.0, 1.0
        for level in levels:
            if level >= side:
                continue
            weight /= 2.0
            pooled_s = F.adaptive_avg_pool2d(s, level)  # (B, C, l, l)
            pooled_t = F.adaptive_avg_pool2d(t, level)  # (B, C, l, l)
            loss = loss + weight * F.mse_loss(pooled_s, pooled_t)  # ()
            norm += weight
        total = loss / norm if total is None else total + loss / norm
    assert total is not None
    return total


def class_activation_maps(features: Tensor, weight: Tensor) -> Tensor:
    """CAMs ``M_k = sum_c w_kc A_c`` of a final feature map under a linear classifier.

    The classifier's bias is left out, as in Zhou et al.'s definition (it shifts every position
    of a class's map by the same amount).

    Args:
        features: ``(B, C, H, W)`` the map the classifier pools.
        weight: ``(K, C)`` the classifier's weight.

    Returns:
        ``(B, K, H, W)`` one map per class.

    Example:
        >>> import torch
        >>> a = torch.ones(1, 2, 3, 3)
        >>> class_activation_maps(a, torch.tensor([[1.0, 2.0]])).shape
        torch.Size([1, 1, 3, 3])
    """
    return torch.einsum("bchw,kc->bkhw", features, weight)  # (B, K, H, W)


def cat_loss(
    student_cams: Tensor, teacher_cams: Tensor, resolution: int = 2, normalize: bool = True
) -> Tensor:
    """CAT-KD's class attention transfer loss between two sets of CAMs.

    ``L = MSE(N(P_r(M_s)), N(P_r(M_t)))``: ``P_r`` average-pools every class's map to
    ``r x r``, ``N`` (with ``normalize``) divides each pooled map by its L2 norm (``eps = 1e-12``
    as :func:`torch.nn.functional.normalize`), and MSE averages over batch, classes and
    positions, as the authors' code does (the paper writes a sum over positions averaged over
    classes, a factor ``r^2`` away: absorbed in the weight).

    Args:
        student_cams: ``(B, K, H_s, W_s)``.
        teacher_cams: ``(B, K, H_t, W_t)`` (sizes may differ: both are pooled to ``r x r``).
        resolution: ``r``.
        normalize: L2-normalise each pooled map.

    Returns:
        ``()`` the loss.

    Example:
        >>> import torch
        >>> m = torch.rand(2, 3, 4, 4)
        >>> float(cat_loss(m, 5 * m)) < 1e-12  # normalised: the scale does not matter
        True
    """
    s = F.adaptive_avg_pool2d(student_cams, resolution)  # (B, K, r, r)
    t = F.adaptive_avg_pool2d(teacher_cams, resolution)  # (B, K, r, r)
    if normalize:
        s = F.normalize(s, dim=(2, 3))  # (B, K, r, r)
        t = F.normalize(t, dim=(2, 3))  # (B, K, r, r)
    return F.mse_loss(s, t)  # ()
