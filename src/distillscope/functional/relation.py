"""Pure tensor functions behind the relation-based and contrastive losses (SP, RKD, PKT, CC, CRD).

Each takes features flattened per sample, ``(B, D)`` (``D`` may differ between the student and
the teacher, as the relations are ``B x B``), and returns tensors: no modules, no state, no I/O.
Reductions and constants follow RepDistiller (Tian et al. 2020), the reference implementation
behind paper 000's and paper 002's comparison tables, where the papers leave them open.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "CRD_BANK_EPS",
    "CRD_SAMPLERS",
    "NCE_EPS",
    "PKT_EPS",
    "contrast_draws",
    "contrast_scores",
    "correlation_congruence_loss",
    "kept_by_error_level",
    "memory_update",
    "nce_loss",
    "pairwise_distances",
    "pkt_loss",
    "rkd_parts",
    "similarity_preserving_loss",
    "view_similarity",
]

#: PKT's guard in its log ratio (the authors' code and RepDistiller).
PKT_EPS = 1e-7
#: Guards CRD's NCE logs, as the reference implementation.
NCE_EPS = 1e-7
#: Smallest norm a CRD memory-bank row is divided by (that of ``F.normalize``).
CRD_BANK_EPS = 1e-12
#: How CRD picks the bank rows of each sample (:func:`contrast_draws`).
CRD_SAMPLERS = ("exact", "relax", "uniform")


def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)  # (B, D)


def similarity_preserving_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Similarity-preserving KD (Tung & Mori 2019, eq. 1-4).

    ``G = f f^T`` (``B x B``) over the flattened features, each row L2-normalised;
    ``L = ||G_t - G_s||_F^2 / B^2``.

    Args:
        student: ``(B, ...)`` student features.
        teacher: ``(B, ...)`` teacher features (detached by the caller).

    Returns:
        Scalar ``>= 0``.

    Example:
        >>> f = torch.randn(4, 3)
        >>> similarity_preserving_loss(f, 2 * f).item()  # the Gram rows are normalised
        0.0
    """
    s, t = _flat(student), _flat(teacher)  # (B, D_s), (B, D_t)
    g_s = F.normalize(s @ s.T, dim=1)  # (B, B)
    g_t = F.normalize(t @ t.T, dim=1)  # (B, B)
    return (g_t - g_s).pow(2).sum() / (s.shape[0] ** 2)  # ()


def pairwise_distances(e: Tensor, eps: float = 1e-12) -> Tensor:
    """``(B, B)`` Euclidean distances between the rows of ``e``, zero on the diagonal.

    Squared distances are clamped at ``eps`` before the square root (a finite gradient for
    identical rows), as RepDistiller's RKD does.

    Args:
        e: ``(B, D)`` rows.
        eps: Clamp of the squared distances.

    Returns:
        ``(B, B)`` distances.

    Example:
        >>> pairwise_distances(torch.tensor([[0.0, 0.0], [3.0, 4.0]]))
        tensor([[0., 5.],
                [5., 0.]])
    """
    sq = e.pow(2).sum(1)  # (B,)
    d2 = (sq.unsqueeze(0) + sq.unsqueeze(1) - 2 * e @ e.T).clamp_min(eps)  # (B, B)
    d = d2.sqrt()
    return d * (1 - torch.eye(e.shape[0], dtype=d.dtype, device=d.device))


def _normalised_distances(e: Tensor) -> Tensor:
    d = pairwise_distances(e)  # (B, B)
    mu = d[d > 0].mean()
    return d / mu


def _angles(e: Tensor) -> Tensor:
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)  # (B, B, D): e_j - e_i
    return torch.bmm(diff, diff.transpose(1, 2)).reshape(-1)  # (B^3,)


def rkd_parts(student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
    """Relational KD's distance-wise and angle-wise terms (Park, Kim, Lu & Cho 2019, eq. 4-7).

    Distance: ``psi_D(t_i, t_j) = ||t_i - t_j|| / mu`` with ``mu`` the mean distance over the
    pairs ``i != j``; ``L_D = huber(psi_D(s), psi_D(t))`` over all ``B x B`` entries.
    Angle: ``psi_A(t_i, t_j, t_k) = <e_ij, e_kj>`` with ``e_ij = (t_i - t_j) / ||t_i - t_j||``;
    ``L_A = huber(psi_A(s), psi_A(t))`` over all ``B^3`` triplets. Huber is PyTorch's smooth L1
    (``beta = 1``), as the authors' code and RepDistiller.

    One function for both terms: each feature is flattened once and read by both, so the
    gradients of the two terms meet in the same place (two flattenings would add them up in
    another order, which rounds differently).

    Args:
        student: ``(B, ...)`` student features.
        teacher: ``(B, ...)`` teacher features.

    Returns:
        ``(L_D, L_A)``, scalars ``>= 0``.

    Example:
        >>> f = torch.randn(4, 3)
        >>> [p.item() < 1e-6 for p in rkd_parts(f, 3 * f)]  # both ignore the scale
        [True, True]
    """
    s, t = _flat(student), _flat(teacher)  # (B, D_s), (B, D_t)
    distance = F.smooth_l1_loss(_normalised_distances(s), _normalised_distances(t))  # ()
    angle = F.smooth_l1_loss(_angles(s), _angles(t))  # ()
    return distance, angle


def _conditional(f: Tensor, eps: float) -> Tensor:
    f = f / (f.norm(dim=1, keepdim=True) + eps)  # (B, D)
    k = (f @ f.T + 1.0) / 2.0  # (B, B)
    return k / k.sum(dim=1, keepdim=True)


def pkt_loss(student: Tensor, teacher: Tensor, eps: float = PKT_EPS) -> Tensor:
    """Probabilistic knowledge transfer (Passalis & Tefas 2018), cosine-kernel form.

    Features are L2-normalised; ``K_ij = (cos(f_i, f_j) + 1) / 2``; each row is normalised to a
    conditional distribution ``p_{j|i} = K_ij / sum_j K_ij``;
    ``L = mean_ij p^t_{j|i} log((p^t_{j|i} + eps) / (p^s_{j|i} + eps))``: the mean over all
    ``B x B`` entries and ``eps = 1e-7`` of the authors' code and RepDistiller.

    Args:
        student: ``(B, ...)`` student features.
        teacher: ``(B, ...)`` teacher features.
        eps: Guard of the norms and of the log ratio.

    Returns:
        Scalar.

    Example:
        >>> f = torch.randn(4, 3)
        >>> pkt_loss(f, f).item()
        0.0
    """
    s, t = _flat(student), _flat(teacher)  # (B, D_s), (B, D_t)
    p_s, p_t = _conditional(s, eps), _conditional(t, eps)  # (B, B) each
    return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()  # ()


def correlation_congruence_loss(student_embedding: Tensor, teacher_embedding: Tensor) -> Tensor:
    """Correlation congruence (Peng et al. 2019) in RepDistiller's form.

    With ``d_i = |e^s_i - e^t_i|`` the embedding differences,
    ``L = mean_i sum_k d_ik d_(i+1)k`` over consecutive samples of the batch (RepDistiller's
    simplification of the paper's Taylor-approximated Gaussian kernel).

    Args:
        student_embedding: ``(B, d)`` the student's embeddings.
        teacher_embedding: ``(B, d)`` the teacher's embeddings.

    Returns:
        Scalar ``>= 0``.

    Example:
        >>> e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> correlation_congruence_loss(e, torch.zeros(3, 2)).item()  # (0 + 1) / 2
        0.5
    """
    delta = (student_embedding - teacher_embedding).abs()  # (B, d)
    return (delta[:-1] * delta[1:]).sum(1).mean()  # ()


def contrast_draws(
    index: Tensor, num_items: int, k: int, sampler: str = "exact", labels: Tensor | None = None
) -> Tensor:
    """The memory-bank rows CRD scores each sample against: its positive, then ``k`` negatives.

    Tian, Krishnan & Isola 2020 (CRD), as their CIFAR-100 training draws them (RepDistiller's
    ``CIFAR100InstanceSample``, with the ``mode`` its ``train_student.py`` passes, ``'exact'`` by
    default):

    * ``"exact"``: the positive is the sample's own row; the negatives are drawn uniformly from
      the items of the other classes, without replacement when there are ``k`` or more of them
      and with replacement otherwise.
    * ``"relax"``: as ``"exact"``, but the positive is an item of the sample's class drawn
      uniformly (the sample itself included).
    * ``"uniform"`` (ours, distillscope's sampler before it followed the reference): the
      sample's own row, then ``k`` rows drawn uniformly with replacement from all
      ``num_items`` (the sample's class and the sample itself included).

    Every draw comes from the global torch generator (saved with a checkpoint, so a resumed run
    draws the same rows). ``"exact"`` and ``"relax"`` draw a random permutation of the other
    classes' items per sample (``O(B N)`` per call: 10-15 ms for ``B = 128``, ``N = 6000``,
    ``k = 4096`` on one CPU thread, against 2-5 ms for ``"uniform"``).

    Args:
        index: ``(B,)`` the samples' rows (dataset indices), on the device to draw on.
        num_items: ``N``, the number of rows.
        k: Negatives per sample, ``k >= 1``.
        sampler: One of :data:`CRD_SAMPLERS`.
        labels: ``(N,)`` the class of every row, on ``index``'s device; needed by ``"exact"``
            and ``"relax"``.

    Returns:
        ``(B, 1 + k)`` long row indices, the positive in column 0.

    Raises:
        ValueError: An unknown sampler, no labels for ``"exact"`` / ``"relax"``, or a sample
            whose class holds every item (no negatives to draw).

    Example:
        >>> labels = torch.tensor([0, 0, 1, 1, 2])
        >>> draws = contrast_draws(torch.tensor([0, 2]), 5, k=3, labels=labels)
        >>> draws[:, 0].tolist()  # the positives: each sample's own row
        [0, 2]
        >>> bool((labels[draws[:, 1:]] != labels[draws[:, :1]]).all())  # other classes only
        True
    """
    if sampler not in CRD_SAMPLERS:
        raise ValueError(f"unknown CRD sampler {sampler!r}; use one of {', '.join(CRD_SAMPLERS)}")
    b = index.shape[0]
    if sampler == "uniform":
        draws = torch.randint(0, num_items, (b, k + 1), device=index.device)  # (B, 1+K)
        draws[:, 0] = index
        return draws
    if labels is None:
        raise ValueError(f"the {sampler!r} CRD sampler needs the label of every item")
    classes = labels[index]  # (B,)
    draws = torch.empty(b, k + 1, dtype=torch.long, device=index.device)  # (B, 1+K)
    draws[:, 0] = index
    for c in torch.unique(classes).tolist():  # in ascending order, rows too: reproducible
        pool = (labels != c).nonzero().squeeze(1)  # (M,) the other classes' items
        if len(pool) == 0:
            raise ValueError(f"class {c} holds every item: no other class to draw negatives from")
        own = (labels == c).nonzero().squeeze(1) if sampler == "relax" else None
        for row in (classes == c).nonzero().squeeze(1).tolist():
            if len(pool) >= k:  # k distinct items: the head of a random permutation
                picks = torch.randperm(len(pool), device=index.device)[:k]
            else:
                picks = torch.randint(0, len(pool), (k,), device=index.device)
            draws[row, 1:] = pool[picks]
            if own is not None:
                draws[row, 0] = own[torch.randint(0, len(own), (), device=index.device)]
    return draws


def contrast_scores(rows: Tensor, v: Tensor, temperature: float) -> Tensor:
    """CRD's unnormalised scores ``exp(<v_b, m_bj> / tau)`` of each embedding against its rows.

    Tian, Krishnan & Isola 2020 (CRD), eq. 19 before the division by ``Z``.

    Args:
        rows: ``(B, 1 + K, d)`` memory-bank rows (positive first) for each sample.
        v: ``(B, d)`` the embeddings scored.
        temperature: ``tau > 0``.

    Returns:
        ``(B, 1 + K)`` positive scores.

    Example:
        >>> contrast_scores(torch.zeros(2, 3, 4), torch.ones(2, 4), 0.07)
        tensor([[1., 1., 1.],
                [1., 1., 1.]])
    """
    return torch.exp(torch.bmm(rows, v.unsqueeze(2)).squeeze(2) / temperature)  # (B, 1+K)


def nce_loss(scores: Tensor, num_items: int) -> Tensor:
    """The NCE loss of one side of CRD: ``scores`` ``(B, 1 + K)``, the positive in column 0.

    With noise probability ``P_n = 1 / N`` (``N = num_items``):
    ``L = -(1/B) sum_b [log(s_b0 / (s_b0 + K P_n)) + sum_k log(K P_n / (s_bk + K P_n))]``
    (Tian et al. 2020, eq. 15-16, as RepDistiller's ``ContrastLoss``, with its ``eps = 1e-7``).

    Args:
        scores: ``(B, 1 + K)`` normalised scores.
        num_items: ``N``, the size of the memory bank.

    Returns:
        Scalar.

    Example:
        >>> round(nce_loss(torch.tensor([[1.0, 1.0]]), num_items=1).item(), 4)  # 2 log 2
        1.3863
    """
    k = scores.shape[1] - 1
    noise = k / num_items
    pos = scores[:, 0]  # (B,)
    neg = scores[:, 1:]  # (B, K)
    log_d1 = torch.log(pos / (pos + noise + NCE_EPS))  # (B,)
    log_d0 = torch.log(noise / (neg + noise + NCE_EPS))  # (B, K)
    return -(log_d1.sum() + log_d0.sum()) / scores.shape[0]


def memory_update(rows: Tensor, v: Tensor, momentum: float) -> Tensor:
    """CRD's memory-bank step: ``m <- normalise(momentum m + (1 - momentum) v)`` (Tian et al.).

    Args:
        rows: ``(B, d)`` the bank's rows of the batch.
        v: ``(B, d)`` the new embeddings (the caller detaches them).
        momentum: In ``[0, 1)``.

    Returns:
        ``(B, d)`` the new rows, L2-normalised (norms clamped at :data:`CRD_BANK_EPS`).

    Example:
        >>> memory_update(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), 0.5)
        tensor([[0.7071, 0.7071]])
    """
    moved = rows * momentum + v * (1 - momentum)  # (B, d)
    return moved / moved.norm(dim=1, keepdim=True).clamp_min(CRD_BANK_EPS)  # (B, d)


def view_similarity(views: Tensor, originals: Tensor) -> Tensor:
    """``(V B, B)`` cosine similarity of every view's representation ``(V B, D)`` to every
    original's ``(B, D)`` (SSKD's contrastive prediction, Xu et al. 2020).

    Example:
        >>> x = torch.eye(2)
        >>> view_similarity(x, x).tolist()
        [[1.0, 0.0], [0.0, 1.0]]
    """
    return F.cosine_similarity(views[:, :, None], originals.t()[None], dim=1)


def kept_by_error_level(scores: Tensor, truth: Tensor, ratio: float) -> Tensor:
    """Indices of the rows to distil: all rows whose ``truth`` is ranked first in ``scores``,
    and the ``int(ratio * wrong)`` wrong rows whose truth ranks highest (SSKD's error-level
    ranking, Xu et al. 2020), in ascending order.

    Example:
        >>> s = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
        >>> kept_by_error_level(s, torch.tensor([0, 0, 0]), ratio=0.0).tolist()
        [0, 2]
    """
    order = torch.argsort(scores, dim=1, descending=True, stable=True)  # (N, K)
    rank = (order == truth[:, None]).long().argmax(1)  # (N,) where the truth sits
    wrong = int((rank > 0).sum())
    keep = scores.shape[0] - wrong + int(wrong * ratio)
    return torch.sort(torch.argsort(rank, stable=True)[:keep]).values
