"""Similarity of two models' explanations (attribution adherence), per sample or per batch.

Paper 004 (Trustworthy Distillation?), section 4.2: the faithfulness of a student's attributions
to its teacher's is "the normalized (to [0, 1]) Hadamard product sum (effectively a kind of
cosine-similarity)" between the two attribution maps. Per sample (:func:`flat_cosine`), for the
maps ``a, b`` of one input:

    cos(a, b) = sum_j a_j b_j / (||a||_2 ||b||_2),

in ``[0, 1]`` for non-negative maps (absolute saliency, ReLU-ed GradCAM) and in ``[-1, 1]`` for
signed ones (Integrated Gradients, Guided Grad-CAM). The authors' published code takes it over a
whole batch of 100 images flattened into one vector (:func:`batch_cosine`), then averages over
batches:

    cos_G = sum_{i in G} <a_i, b_i> / sqrt(sum_{i in G} ||a_i||^2 * sum_{i in G} ||b_i||^2),

which weighs each image by the size of its maps, unlike the mean of per-image cosines.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["batch_cosine", "cosine_parts", "flat_cosine", "pooled_cosine"]


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


def cosine_parts(a: Tensor, b: Tensor) -> Tensor:
    """Per-sample sums a pooled cosine is made of: ``<a_i, b_i>``, ``||a_i||^2``, ``||b_i||^2``.

    Computed in float64, so that the squares of tiny attributions do not underflow.

    Args:
        a: ``(B, ...)`` maps of the first model.
        b: ``(B, ...)`` maps of the second model, same number of elements per sample.

    Returns:
        ``(B, 3)`` float64.

    Example:
        >>> cosine_parts(torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 0.0]]))
        tensor([[3., 5., 9.]], dtype=torch.float64)
    """
    a = a.flatten(1).double()  # (B, D)
    b = b.flatten(1).double()  # (B, D)
    if a.shape != b.shape:
        raise ValueError(f"maps differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    return torch.stack([(a * b).sum(1), a.square().sum(1), b.square().sum(1)], 1)  # (B, 3)


def pooled_cosine(parts: Tensor) -> Tensor:
    """Cosine of samples flattened together, from their :func:`cosine_parts`.

    ``sum <a_i, b_i> / sqrt(sum ||a_i||^2 * sum ||b_i||^2)`` over the first dimension; 0 when
    either side is zero everywhere (as :func:`flat_cosine`).

    Args:
        parts: ``(N, 3)`` parts of the pooled samples.

    Returns:
        Scalar float64 tensor in ``[-1, 1]``.

    Example:
        >>> pooled_cosine(torch.tensor([[3.0, 5.0, 9.0], [0.0, 0.0, 16.0]]))
        tensor(0.2683)
    """
    dot, sq_a, sq_b = parts.sum(0).unbind()
    denom = (sq_a * sq_b).sqrt()
    return torch.where(denom > 0, dot / denom.clamp_min(torch.finfo(denom.dtype).tiny), 0.0)


def batch_cosine(a: Tensor, b: Tensor, group_size: int | None = None) -> Tensor:
    """Cosine of each group of ``group_size`` consecutive samples, flattened into one vector.

    Paper 004's adherence as its authors computed it: one cosine per batch of 100 images,
    ``cos_G`` in the module docstring; average the result over groups to get their number.

    Args:
        a: ``(B, ...)`` maps of the first model (the teacher).
        b: ``(B, ...)`` maps of the second model, same number of elements per sample.
        group_size: Samples per group; None = the whole batch is one group. The last group is
            shorter when ``B`` is not a multiple of it.

    Returns:
        ``(G,)`` float64 cosines, ``G = ceil(B / group_size)``.

    Example:
        >>> a = torch.tensor([[1.0, 0.0], [0.0, 10.0]])
        >>> b = torch.tensor([[1.0, 0.0], [10.0, 0.0]])
        >>> batch_cosine(a, b)  # the large second pair dominates; per image: mean(1, 0) = 0.5
        tensor([0.0099], dtype=torch.float64)
    """
    parts = cosine_parts(a, b)  # (B, 3)
    size = len(parts) if group_size is None else group_size
    if size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    return torch.stack([pooled_cosine(chunk) for chunk in parts.split(size)])  # (G,)
