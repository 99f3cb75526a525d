"""Scores of explanation maps: localisation against object masks, shift behaviour, votes.

Pure tensor functions behind the ``localisation``, ``explanation_shift`` and ``cam_similarity``
probes (papers 001 and 003). Maps are ``(B, H, W)``, one per image; masks ``(B, H, W)`` bool.

* Energy-based pointing game (EPG; Wang et al. 2020, Score-CAM, section 4.3; paper 001, 4.3
  "Distill on VOC"): the share of the positive attribution energy that falls inside the mask,

      EPG(E, M) = sum_{p in M} max(E_p, 0) / sum_p max(E_p, 0).

* IoU of the thresholded map with the mask (paper 001, 4.3; the rule of the model-guidance code
  of Rao et al. 2023, whose teachers paper 001 distils): ``P = max(E, 0)`` is min-max scaled to
  ``[0, 1]`` per map, the pixels with a scaled value ``> threshold`` (0.5) form the predicted
  region ``B``, and ``IoU = |B and M| / |B or M|``.
* Shift cosine (paper 001, Fig. 5 and footnote 2): the cosine of the explanation of an image
  with that of the image shifted diagonally by ``s`` pixels, over the intersecting area.
* Closer votes (paper 003, 4.1): per image, whether a reference map is more similar (cosine)
  to one map than to another.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distillscope.errors import TrainingError
from distillscope.functional.similarity import flat_cosine

__all__ = [
    "IOU_THRESHOLD",
    "closer_votes",
    "energy_pointing_game",
    "explanation_loss",
    "mask_share",
    "relevant_region",
    "region_iou",
    "shift_cosine",
    "shift_diagonal",
]

#: Scaled-attribution threshold of the IoU region: 0.5, the value of Rao et al.'s code.
IOU_THRESHOLD = 0.5


def _check_pair(maps: Tensor, masks: Tensor) -> None:
    if maps.dim() != 3 or maps.shape != masks.shape:
        raise ValueError(
            f"maps and masks must both be (B, H, W), got {tuple(maps.shape)} and "
            f"{tuple(masks.shape)}"
        )


def energy_pointing_game(maps: Tensor, masks: Tensor) -> Tensor:
    """EPG: the share of positive attribution energy inside each mask.

    ``EPG = sum_{p in M} max(E_p, 0) / sum_p max(E_p, 0)``, in float64. A map with no positive
    energy scores 0 (as Rao et al.'s code counts it; their code calls a total below 1e-7 zero,
    here only an exact zero is, so tiny but well-formed maps keep their score).

    Args:
        maps: ``(B, H, W)`` explanations.
        masks: ``(B, H, W)`` bool object masks.

    Returns:
        ``(B,)`` float64 scores in ``[0, 1]``.

    Example:
        >>> maps = torch.tensor([[[1.0, 3.0], [-2.0, 0.0]]])
        >>> masks = torch.tensor([[[True, False], [True, True]]])
        >>> energy_pointing_game(maps, masks)
        tensor([0.2500], dtype=torch.float64)
    """
    _check_pair(maps, masks)
    energy = maps.detach().clamp(min=0).flatten(1).double()  # (B, HW)
    inside = (energy * masks.flatten(1)).sum(1)  # (B,)
    total = energy.sum(1)  # (B,)
    return torch.where(total > 0, inside / total.clamp(min=torch.finfo(total.dtype).tiny), 0.0)


def relevant_region(maps: Tensor, threshold: float = IOU_THRESHOLD) -> Tensor:
    """The pixels whose min-max scaled positive attribution exceeds ``threshold``.

    ``P = max(E, 0)``; ``S = (P - min P) / (max P - min P)``; region ``= S > threshold``. A map
    whose positive part is constant and non-zero selects every pixel; a map with no positive
    value selects none (Rao et al.'s rules, with exact instead of 1e-7 comparisons).

    Args:
        maps: ``(B, H, W)`` explanations.
        threshold: Threshold on the scaled map, in ``[0, 1)``.

    Returns:
        ``(B, H, W)`` bool.

    Example:
        >>> relevant_region(torch.tensor([[[0.0, 0.4], [0.6, 1.0]]])).tolist()
        [[[False, False], [True, True]]]
    """
    pos = maps.detach().clamp(min=0).double()  # (B, H, W)
    low = pos.amin(dim=(1, 2), keepdim=True)  # (B, 1, 1)
    high = pos.amax(dim=(1, 2), keepdim=True)  # (B, 1, 1)
    spread = high - low  # (B, 1, 1)
    scaled = (pos - low) / spread.masked_fill(spread == 0, 1.0)  # (B, H, W) in [0, 1]
    scaled = torch.where((spread == 0) & (high > 0), 1.0, scaled)  # constant positive map
    return scaled > threshold


def region_iou(maps: Tensor, masks: Tensor, threshold: float = IOU_THRESHOLD) -> Tensor:
    """IoU of each map's :func:`relevant_region` with its mask; an empty union scores 0.

    Args:
        maps: ``(B, H, W)`` explanations.
        masks: ``(B, H, W)`` bool object masks.
        threshold: Threshold on the min-max scaled positive map.

    Returns:
        ``(B,)`` float64 scores in ``[0, 1]``.

    Example:
        >>> maps = torch.tensor([[[0.0, 0.4], [0.6, 1.0]]])
        >>> masks = torch.tensor([[[False, True], [False, True]]])
        >>> region_iou(maps, masks)  # region {(1,0), (1,1)}, mask {(0,1), (1,1)}
        tensor([0.3333], dtype=torch.float64)
    """
    _check_pair(maps, masks)
    region = relevant_region(maps, threshold).flatten(1)  # (B, HW)
    mask = masks.flatten(1).bool()  # (B, HW)
    inter = (region & mask).sum(1).double()  # (B,)
    union = (region | mask).sum(1).double()  # (B,)
    return torch.where(union > 0, inter / union.clamp(min=1.0), 0.0)


def mask_share(masks: Tensor) -> Tensor:
    """The share of pixels inside each mask: the EPG of a uniform map (chance level).

    Example:
        >>> mask_share(torch.tensor([[[True, False], [False, False]]]))
        tensor([0.2500], dtype=torch.float64)
    """
    return masks.flatten(1).double().mean(1)


def shift_diagonal(images: Tensor, shift: int, fill: Tensor | None = None) -> Tensor:
    """Images moved ``shift`` pixels down and to the right (paper 001, Fig. 5: "↘").

    The output keeps the input's size: ``out[..., i, j] = x[..., i - s, j - s]`` for
    ``i, j >= s``; the last ``s`` rows and columns of the input drop out, and the first ``s``
    rows and columns of the output are filled with ``fill`` (one value per channel, in
    model-input space) or, when ``fill`` is ``None``, with copies of the input's first row and
    column (edge replication).

    Args:
        images: ``(B, C, H, W)`` images.
        shift: ``s``, with ``0 <= s < min(H, W)``.
        fill: ``(C,)`` fill values, or ``None`` for edge replication.

    Returns:
        ``(B, C, H, W)`` shifted images.

    Example:
        >>> x = torch.arange(9.0).view(1, 1, 3, 3)
        >>> shift_diagonal(x, 1)[0, 0].tolist()
        [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [3.0, 3.0, 4.0]]
        >>> shift_diagonal(x, 1, fill=torch.tensor([-1.0]))[0, 0].tolist()
        [[-1.0, -1.0, -1.0], [-1.0, 0.0, 1.0], [-1.0, 3.0, 4.0]]
    """
    h, w = images.shape[-2:]
    if not 0 <= shift < min(h, w):
        raise ValueError(f"shift must be in [0, {min(h, w)}) for {h}x{w} images, got {shift}")
    if shift == 0:
        return images
    if fill is None:
        padded = F.pad(images, (shift, 0, shift, 0), mode="replicate")  # (B, C, H+s, W+s)
        return padded[..., :h, :w]  # (B, C, H, W)
    out = fill.to(images).view(1, -1, 1, 1).expand_as(images).clone()  # (B, C, H, W)
    out[..., shift:, shift:] = images[..., : h - shift, : w - shift]
    return out


def shift_cosine(original: Tensor, shifted: Tensor, shift: int) -> Tensor:
    """Cosine of two explanations over the area the image and its shifted copy share.

    ``original`` explains ``x``, ``shifted`` explains :func:`shift_diagonal` ``(x, s)``; the
    second is moved back by ``s`` and both are cut to the shared ``(H - s) x (W - s)`` area:
    ``cos(E(x)[:H-s, :W-s], E(shift(x))[s:, s:])`` (see
    :func:`~distillscope.functional.similarity.flat_cosine`: maps rescaled first, a zero map
    scores 0).

    Args:
        original: ``(B, H, W)`` explanations of the original images.
        shifted: ``(B, H, W)`` explanations of the shifted images.
        shift: ``s``, as given to :func:`shift_diagonal`.

    Returns:
        ``(B,)`` cosines in ``[-1, 1]``.

    Example:
        >>> e = torch.rand(2, 5, 5)
        >>> moved = shift_diagonal(e[:, None], 2)[:, 0]  # an explanation that moves with x
        >>> torch.allclose(shift_cosine(e, moved, 2), torch.ones(2))
        True
    """
    h, w = original.shape[-2:]
    if original.shape != shifted.shape or not 0 <= shift < min(h, w):
        raise ValueError(
            f"need two equal (B, H, W) maps and 0 <= shift < min(H, W), got "
            f"{tuple(original.shape)}, {tuple(shifted.shape)} and shift {shift}"
        )
    return flat_cosine(original[:, : h - shift, : w - shift], shifted[:, shift:, shift:])


def closer_votes(reference: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Per image, 1 if ``reference`` is closer (cosine) to ``a`` than to ``b``, 0 if farther.

    Paper 003, 4.1: the teacher's Grad-CAM is "more similar (using cosine similarity) to the
    distilled student's CAM than to the independent student's". An exact tie counts 1/2 (ours:
    the paper does not say; this keeps two identical models at the 50% chance level).

    Args:
        reference: ``(B, ...)`` maps of the reference model (the teacher).
        a: ``(B, ...)`` maps of the first candidate (the distilled student).
        b: ``(B, ...)`` maps of the second candidate (the independent student).

    Returns:
        ``(B,)`` float64 votes in ``{0, 0.5, 1}``.

    Example:
        >>> t = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
        >>> closer_votes(t, torch.tensor([[1.0, 0.1], [1.0, 0.0], [1.0, 0.0]]),
        ...              torch.tensor([[0.0, 1.0], [0.0, 2.0], [0.0, 1.0]]))
        tensor([1.0000, 0.0000, 0.5000], dtype=torch.float64)
    """
    cos_a = flat_cosine(reference, a).double()  # (B,)
    cos_b = flat_cosine(reference, b).double()  # (B,)
    return (cos_a > cos_b).double() + 0.5 * (cos_a == cos_b).double()


def explanation_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """``mean_b (1 - cos(flat(E_S[b]), flat(E_T[b])))`` (paper 001, eq. 3).

    Args:
        student: ``(B, ...)`` student explanations.
        teacher: ``(B, ...)`` teacher explanations of the same shape.

    Example:
        >>> e = torch.rand(3, 4, 4)
        >>> round(explanation_loss(e, 2 * e).item(), 6)  # the cosine ignores scale
        0.0
    """
    if student.shape != teacher.shape:
        raise TrainingError(
            f"student explanations {tuple(student.shape)} and teacher explanations "
            f"{tuple(teacher.shape)} differ in shape; explain inputs of the same size"
        )
    b = student.shape[0]
    cos = F.cosine_similarity(student.reshape(b, -1), teacher.reshape(b, -1), dim=1)  # (B,)
    return (1.0 - cos).mean()
