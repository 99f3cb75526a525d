"""Similarity of two models' explanations, sample by sample (attribution adherence).

Paper 004 (Trustworthy Distillation?), section 4.2: the faithfulness of a student's attributions
to its teacher's is "the normalized (to [0, 1]) Hadamard product sum (effectively a kind of
cosine-similarity)" between the two attribution maps. For maps ``a, b`` of one sample this is

    adherence(a, b) = sum_i a_i b_i / (||a||_2 ||b||_2) = cos(a, b),

which lies in ``[0, 1]`` for non-negative maps (absolute saliency, ReLU-ed GradCAM) and in
``[-1, 1]`` for signed maps (Integrated Gradients).
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["flat_cosine"]


def flat_cosine(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarity of two batches of maps, each flattened per sample.

    ``cos(a, b) = <a, b> / (||a|| ||b||)`` over all dimensions but the first. Each map is first
    divided by its largest absolute value (cosine is scale-free), so the tiny gradients of
    saturated, high-temperature models do not underflow. A map that is zero everywhere (GradCAM
    when every channel weight is negative) has similarity 0 with anything.

    Args:
        a: ``(B, ...)`` maps of the first model (the teacher).
        b: ``(B, ...)`` maps of the second model, same number of elements per sample as ``a``.

    Returns:
        ``(B,)`` similarities in ``[-1, 1]``.

    Example:
        >>> import torch
        >>> a = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]]])
        >>> b = torch.tensor([[[2.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [0.0, 0.0]]])
        >>> flat_cosine(a, b)
        tensor([1.0000, 0.7071])
    """
    a = a.flatten(1)  # (B, D)
    b = b.flatten(1)  # (B, D)
    if a.shape != b.shape:
        raise ValueError(f"maps differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    scale_a = a.abs().amax(1, keepdim=True)  # (B, 1)
    scale_b = b.abs().amax(1, keepdim=True)  # (B, 1)
    zero = (scale_a == 0) | (scale_b == 0)  # (B, 1)
    a = a / scale_a.masked_fill(zero, 1.0)  # (B, D), max |a_i| = 1
    b = b / scale_b.masked_fill(zero, 1.0)  # (B, D)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).masked_fill(zero[:, 0], 1.0)  # (B,)
    return cos.masked_fill(zero[:, 0], 0.0)  # (B,)
