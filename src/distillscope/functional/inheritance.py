"""Pure tensor functions behind inheritance and exploration distillation (IE-KD).

Huang et al. 2021 ("Revisiting Knowledge Distillation: An Inheritance and Exploration
Framework", paper 002), section 3.2: the student's feature map is split by channels into an
inheritance part and an exploration part; each is embedded by its own encoder into the teacher's
factor space, and the inheritance factor is pulled towards the teacher's factor (eq. 2) while the
exploration factor is pushed away from it (eq. 3).

Everything here takes tensors and returns tensors: no modules, no state. The loss terms
(:mod:`distillscope.distill.inheritance`) own the encoders and call these functions on their
outputs. A factor ``(B, ...)`` is flattened per sample and L2-normalised
(:func:`~distillscope.functional.feature_transfer.factor`) before any distance is taken.
"""

from __future__ import annotations

from torch import Tensor

from distillscope.functional.feature_transfer import factor

__all__ = ["IE_DISTANCES", "ie_distance", "ie_exploration", "batch_linear_cka", "split_channels"]

#: The distances of the inheritance and exploration losses (paper 002, Table 6a).
IE_DISTANCES = ("l1", "l2", "cosine", "cka")

_EPS = 1e-12


def split_channels(x: Tensor, inh_index: Tensor, exp_index: Tensor) -> tuple[Tensor, Tensor]:
    """The inheritance and exploration parts of a feature map, by channel indices.

    Args:
        x: ``(B, C, H, W)`` the student's feature map.
        inh_index: ``(C_inh,)`` channel indices of the inheritance part (long).
        exp_index: ``(C_exp,)`` channel indices of the exploration part (long).

    Returns:
        ``(B, C_inh, H, W)`` and ``(B, C_exp, H, W)``.

    Example:
        >>> import torch
        >>> x = torch.arange(4.0).view(1, 4, 1, 1)
        >>> a, b = split_channels(x, torch.tensor([3, 0]), torch.tensor([1, 2]))
        >>> a.flatten().tolist(), b.flatten().tolist()
        ([3.0, 0.0], [1.0, 2.0])
    """
    return x.index_select(1, inh_index), x.index_select(1, exp_index)


def batch_linear_cka(x: Tensor, y: Tensor) -> Tensor:
    """Linear centred kernel alignment between two batches of vectors, differentiable: the
    training distance of ``ie_*`` with ``distance: cka`` (to measure representations, use
    :func:`distillscope.functional.cka.linear_cka`, float64 and not differentiable).

    Kornblith et al. 2019 ("Similarity of Neural Network Representations Revisited"), eq. 2 with
    linear kernels: ``K = X X^T``, ``L = Y Y^T`` (``B x B``), centred as ``H K H`` with
    ``H = I - 1/B``, and ``CKA = <HKH, HLH>_F / (||HKH||_F ||HLH||_F)``. The sample-space form
    (``B x B`` Gram matrices) is used since a flattened factor has more dimensions than a batch
    has samples. A batch whose centred Gram matrix is zero (one sample) gives 0.

    Args:
        x: ``(B, D)``.
        y: ``(B, E)``.

    Returns:
        Scalar in ``[0, 1]``.

    Example:
        >>> import torch
        >>> x = torch.randn(6, 3)
        >>> round(batch_linear_cka(x, 2 * x).item(), 5)
        1.0
    """
    gx, gy = _centred(x @ x.T), _centred(y @ y.T)  # (B, B) each
    return (gx * gy).sum() / (gx.norm() * gy.norm()).clamp_min(_EPS)  # ()


def _centred(gram: Tensor) -> Tensor:
    """``H G H`` with ``H = I - 1/B``: rows and columns of ``gram`` ``(B, B)`` centred."""
    return gram - gram.mean(0, keepdim=True) - gram.mean(1, keepdim=True) + gram.mean()


def ie_distance(a: Tensor, b: Tensor, distance: str = "l1") -> Tensor:
    """The inheritance loss: a distance between two factors (paper 002, eq. 2).

    With ``F = flatten(x) / ||flatten(x)||_2`` per sample (:func:`factor`):

    - ``l1`` (eq. 2): ``mean |F_a - F_b|`` over every element (batch and factor), as the
      authors' code (``NormLoss(p=1)``);
    - ``l2``: ``sqrt(mean (F_a - F_b)^2)``, the authors' ``NormLoss(p=2)``;
    - ``cosine``: ``mean_b (1 - cos(F_a, F_b))``;
    - ``cka``: ``1 - batch_linear_cka(F_a, F_b)`` (:func:`batch_linear_cka`, over the batch).

    Args:
        a: ``(B, ...)`` a factor (the inheritance encoder's output).
        b: ``(B, ...)`` the teacher's factor, same number of elements per sample.
        distance: One of :data:`IE_DISTANCES`.

    Returns:
        Scalar ``>= 0``.

    Example:
        >>> import torch
        >>> c = torch.rand(2, 3, 4, 4)
        >>> round(ie_distance(c, 3 * c).item(), 6)  # factors are normalised
        0.0
    """
    fa, fb = factor(a), factor(b)  # (B, D) each, unit rows
    if fa.shape != fb.shape:
        raise ValueError(f"factors {tuple(a.shape)} and {tuple(b.shape)} differ in size")
    if distance == "l1":
        return (fa - fb).abs().mean()  # ()
    if distance == "l2":
        return (fa - fb).pow(2).mean().clamp_min(_EPS).sqrt()  # ()
    if distance == "cosine":
        return (1.0 - (fa * fb).sum(1)).mean()  # ()
    if distance == "cka":
        return 1.0 - batch_linear_cka(fa, fb)  # ()
    raise ValueError(f"unknown distance {distance!r}; use one of {', '.join(IE_DISTANCES)}")


def ie_exploration(a: Tensor, b: Tensor, distance: str = "l1") -> Tensor:
    """The exploration loss (paper 002, eq. 3), minimised to push a factor away from another.

    ``-ie_distance(a, b)`` for ``l1`` (eq. 3), ``l2`` and ``cka``; for ``cosine`` the
    orthogonality measure ``mean_b |cos(F_a, F_b)|`` (section 3.2, and the authors' code,
    ``CosLoss(negative=True)``), since ``-(1 - cos)`` would pull the factor towards ``-F_b``,
    which the paper rules out as still correlated with the teacher.

    Args:
        a: ``(B, ...)`` a factor (the exploration encoder's output).
        b: ``(B, ...)`` the teacher's factor.
        distance: One of :data:`IE_DISTANCES`.

    Returns:
        Scalar, ``<= 0`` except for ``cosine`` (in ``[0, 1]``).

    Example:
        >>> import torch
        >>> a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
        >>> ie_exploration(a, b).item(), ie_exploration(a, b, "cosine").item()
        (-1.0, 0.0)
    """
    if distance == "cosine":
        fa, fb = factor(a), factor(b)  # (B, D) each
        return (fa * fb).sum(1).abs().mean()  # ()
    return -ie_distance(a, b, distance)  # ()
