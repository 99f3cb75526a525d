"""Pure tensor functions behind the losses over pairs of feature maps: AT, NST, VID and AB.

Each loss compares ``student[i]`` with ``teacher[i]``, maps ``(B, C, H, W)`` of the same ``H x W``
(:func:`same_size` pools the larger to the smaller, as RepDistiller does); channel counts may
differ. Reductions and constants follow RepDistiller (Tian et al. 2020) where the papers leave
them open. No modules, no state, no I/O: VID's mean network and AB's connectors are applied by
the loss terms, which pass their outputs here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ab_loss",
    "attention_map",
    "attention_transfer_loss",
    "boundary_loss",
    "nst_loss",
    "polynomial_mmd",
    "same_size",
    "vid_nll",
]


def _check_pairs(name: str, student: Sequence[Tensor], teacher: Sequence[Tensor]) -> None:
    if len(student) != len(teacher) or not student:
        raise ValueError(f"{name} needs equally many maps, got {len(student)} and {len(teacher)}")


def same_size(s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Average-pool the larger of two maps ``(B, C, H, W)`` to the smaller one's ``H x W``.

    "Larger" is by area (``H * W``); RepDistiller's rule for its feature-map losses. Unlike
    :func:`~distillscope.functional.feature_transfer.match_spatial` (OFD's, per axis), a map that is
    taller but narrower than the other is resized to the other's size, as these losses always
    did.

    Args:
        s: ``(B, C_s, H_s, W_s)``.
        t: ``(B, C_t, H_t, W_t)``.

    Returns:
        ``(s, t)``, one of them pooled.

    Example:
        >>> s, t = same_size(torch.ones(2, 3, 8, 8), torch.ones(2, 5, 4, 4))
        >>> tuple(s.shape), tuple(t.shape)
        ((2, 3, 4, 4), (2, 5, 4, 4))
    """
    hs, ht = s.shape[-2:], t.shape[-2:]
    if hs == ht:
        return s, t
    if hs[0] * hs[1] > ht[0] * ht[1]:
        return F.adaptive_avg_pool2d(s, tuple(ht)), t
    return s, F.adaptive_avg_pool2d(t, tuple(hs))


def attention_map(f: Tensor, p: float = 2.0) -> Tensor:
    """Spatial attention ``Q = mean_c |A_c|^p``, flattened and L2-normalised per sample.

    Zagoruyko & Komodakis 2017 (attention transfer), eq. 1-2 with the mean over channels of
    the authors' code.

    Args:
        f: ``(B, C, H, W)`` feature map ``A``.
        p: Power of the activations.

    Returns:
        ``(B, H*W)`` unit-norm rows.

    Example:
        >>> attention_map(torch.ones(1, 2, 2, 2))
        tensor([[0.5000, 0.5000, 0.5000, 0.5000]])
    """
    return F.normalize(f.abs().pow(p).mean(1).reshape(f.shape[0], -1), dim=1)


def attention_transfer_loss(
    student: Sequence[Tensor], teacher: Sequence[Tensor], p: float = 2.0
) -> Tensor:
    """Attention transfer (Zagoruyko & Komodakis 2017, eq. 2): ``sum_pairs mean((Q_s - Q_t)^2)``.

    ``Q`` is :func:`attention_map`. The paper writes ``beta / 2 * sum_j ||Q_s - Q_t||_p``; the
    authors' code and RepDistiller take the mean squared difference per pair, summed over pairs
    (RepDistiller weighs the term 1000).

    Args:
        student: ``(B, C_i, H_i, W_i)`` student maps, one per pair.
        teacher: Teacher maps of the same ``B, H_i, W_i`` (detached by the caller).
        p: Power of the activations.

    Returns:
        Scalar ``>= 0``, the sum over pairs.

    Example:
        >>> a = torch.rand(2, 3, 4, 4)
        >>> attention_transfer_loss([a], [2 * a]).item()  # Q is normalised
        0.0
    """
    _check_pairs("attention_transfer_loss", student, teacher)
    losses = [
        (attention_map(s, p) - attention_map(t, p)).pow(2).mean() for s, t in zip(student, teacher)
    ]  # each ()
    return torch.stack(losses).sum()  # ()


def polynomial_mmd(s: Tensor, t: Tensor) -> Tensor:
    """Squared MMD with the kernel ``k(x, y) = (x . y)^2`` between the channels of two maps.

    Huang & Wang 2017 (neuron selectivity transfer), eq. 6 with ``d = 2``, ``c = 0``: each
    channel's ``H*W`` activations are L2-normalised and the channels of a sample are the samples
    of its distribution. ``mean k(t, t') + mean k(s, s') - 2 mean k(s, t)``, averaged over the
    batch.

    Args:
        s: ``(B, C_s, H, W)`` student map.
        t: ``(B, C_t, H, W)`` teacher map.

    Returns:
        Scalar.

    Example:
        >>> a = torch.rand(2, 3, 4, 4)
        >>> abs(polynomial_mmd(a, 3 * a).item()) < 1e-6
        True
    """
    s = F.normalize(s.flatten(2), dim=2)  # (B, C_s, HW)
    t = F.normalize(t.flatten(2), dim=2)  # (B, C_t, HW)

    def k(a: Tensor, b: Tensor) -> Tensor:
        return torch.bmm(a, b.transpose(1, 2)).pow(2).mean()  # ()

    return k(t, t) + k(s, s) - 2 * k(s, t)


def nst_loss(student: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
    """Neuron selectivity transfer: ``sum_pairs MMD^2(F_s, F_t)`` (:func:`polynomial_mmd`).

    Huang & Wang 2017, as RepDistiller (the paper's ``beta / 2`` is left to the weight).

    Args:
        student: ``(B, C_i, H_i, W_i)`` student maps, one per pair.
        teacher: Teacher maps of the same ``B, H_i, W_i``.

    Returns:
        Scalar, the sum over pairs.

    Example:
        >>> a = torch.rand(2, 3, 4, 4)
        >>> abs(nst_loss([a, a], [a, a]).item()) < 1e-6
        True
    """
    _check_pairs("nst_loss", student, teacher)
    return torch.stack([polynomial_mmd(s, t) for s, t in zip(student, teacher)]).sum()


def vid_nll(teacher: Tensor, mean: Tensor, log_scale: Tensor, eps: float) -> Tensor:
    """VID's Gaussian negative log-likelihood of one layer pair, without its constant.

    Ahn, Hu, Damianou, Lawrence & Dai 2019, eq. 2-6: ``q(t | s) = N(mu(s), sigma^2)`` with a
    variance per teacher channel ``sigma_c^2 = softplus(a_c) + eps``;
    ``mean_{b, c, h, w} 0.5 (log sigma_c^2 + (t - mu(s))^2 / sigma_c^2)``.

    Args:
        teacher: ``(B, C_t, H, W)`` teacher map ``t``.
        mean: ``(B, C_t, H, W)`` the predicted mean ``mu(s)``.
        log_scale: ``(C_t,)`` the variance parameters ``a``.
        eps: Floor of the variance (RepDistiller: ``1e-5``).

    Returns:
        Scalar.

    Example:
        >>> t = torch.zeros(1, 2, 3, 3)
        >>> a = torch.log(torch.expm1(torch.ones(2)))  # softplus(a) = 1
        >>> vid_nll(t, t, a, eps=0.0).item()  # log 1 and no error
        0.0
    """
    var = (F.softplus(log_scale) + eps).view(1, -1, 1, 1)  # (1, C_t, 1, 1)
    nll = 0.5 * ((teacher - mean) ** 2 / var + torch.log(var))  # (B, C_t, H, W)
    return nll.mean()  # ()


def boundary_loss(s: Tensor, t: Tensor, margin: float) -> Tensor:
    """``sum (s + mu)^2 [s > -mu, t <= 0] + (s - mu)^2 [s <= mu, t > 0]`` (Heo et al. 2019).

    The alternative L2 of activation-boundary distillation (Heo, Lee, Yun & Choi 2019, AAAI):
    the student learns on which side of zero each teacher neuron is, with a margin ``mu``.

    Args:
        s: ``(B, C, H, W)`` student map after its connector.
        t: Teacher map of the same shape.
        margin: ``mu > 0``.

    Returns:
        Scalar ``>= 0``, summed over every element.

    Example:
        >>> boundary_loss(torch.tensor([0.0, 2.0]), torch.tensor([1.0, -1.0]), 1.0).item()
        10.0
    """
    off = ((s > -margin) & (t <= 0)).to(s.dtype)
    on = ((s <= margin) & (t > 0)).to(s.dtype)
    return ((s + margin) ** 2 * off + (s - margin) ** 2 * on).sum()


def ab_loss(student: Sequence[Tensor], teacher: Sequence[Tensor], margin: float) -> Tensor:
    """Activation boundaries over ``n`` layer pairs, RepDistiller's ``ABLoss``.

    ``L = sum_i 2^(i - n + 1) * l_i / B * 3 / 1000`` with ``l_i`` the :func:`boundary_loss` of
    pair ``i`` (the last pair weighs 1, each earlier one half as much).

    Args:
        student: ``(B, C_i, H_i, W_i)`` student maps after their connectors, one per pair.
        teacher: Teacher maps of the same shapes.
        margin: ``mu > 0``.

    Returns:
        Scalar ``>= 0``.

    Example:
        >>> s, t = torch.zeros(1, 1, 1, 2), torch.ones(1, 1, 1, 2)
        >>> round(ab_loss([s], [t], 1.0).item(), 6)  # 2 * (0 - 1)^2 * 3 / 1000
        0.006
    """
    _check_pairs("ab_loss", student, teacher)
    n = len(student)
    losses = [
        2.0 ** (i - n + 1) * boundary_loss(s, t, margin) / s.shape[0]
        for i, (s, t) in enumerate(zip(student, teacher))
    ]  # each ()
    return torch.stack(losses).sum() * 3.0 / 1000.0  # RepDistiller's scaling
