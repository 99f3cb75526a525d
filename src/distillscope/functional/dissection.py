"""Network dissection's maths as tensor operations (Bau et al. 2017, "Network Dissection:
Quantifying Interpretability of Deep Visual Representations"; paper 000, section 3.1 and
Algorithm 1).

A unit ``u`` of a layer is a detector of a concept (label) ``l`` when the region where it fires,
``M_u = {p : up(A_u(x))_p > T_u}``, overlaps the concept's annotation ``L_l`` well over a probe
set:

    IoU(u, l) = I / (sum_{x in X_c} |M_u(x)| + sum_x |L_l(x)| - I),  I = sum_x |M_u(x) & L_l(x)|

``T_u`` is the top-``q`` quantile of the unit's activations over every spatial position of every
probe image, at the feature map's own resolution (:class:`TopQuantiles`); ``up`` is bilinear
upsampling to the annotation's resolution. We follow the reference implementation,
NetDissect-Lite (``CSAILVision/NetDissect-Lite``, ``feature_operation.py``), in each detail:

- the map is upsampled first and then compared with ``> T_u`` (strict), as ``tally_job``;
- label 0 is "no label" and never counted;
- an image-level label (scene, texture) covers every annotation pixel of its image;
- each label belongs to one category, its *primary* one (where it covers most of the probe
  images), and a unit's activated pixels enter the category's denominator ``sum_{x in X_c}``
  only on images where they touch a label of that category (``tally_cat > 0`` in the
  reference: a pixel label of the category under the activated pixels, or an image-level label
  of the category in the image). ``images: annotated`` is our option: every image annotated
  for the category counts, touched or not;
- a unit's concept is its best IoU over all labels (per category first, as the reference's
  ``pciou``), and it is a detector when that IoU is ``>= threshold`` (the reference's report
  uses ``>=`` 0.04; paper 000 uses 0.05).

The threshold here is the exact ``1 - q`` quantile with linear interpolation (numpy's default);
the reference estimates the same quantile with a streaming sketch read out at 1,000 points
(``vecquantile``). We keep, per unit, the largest values that quantile can depend on, so
memory is ``units x (q x positions)``, not ``units x positions``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "IMAGE_RULES",
    "Tally",
    "TopQuantiles",
    "best_concepts",
    "count_detectors",
    "tally_batch",
    "unit_iou",
]

#: Which images of a category add a unit's activated pixels to the IoU's denominator:
#: ``touched`` (NetDissect-Lite) or ``annotated`` (ours).
IMAGE_RULES = ("touched", "annotated")

_EPS = 1e-10  # the reference's guard in the IoU's denominator
#: Upsampled activation values held at once by :func:`tally_batch` (32 MB of float64).
CHUNK = 4_000_000


class TopQuantiles:
    """Exact per-unit top-``q`` thresholds over a stream of activation maps.

    ``T_u(q)`` is the ``1 - q`` quantile of unit ``u``'s ``n = positions`` values with linear
    interpolation: with ``h = (n - 1)(1 - q)``, ``T = v_(floor h) + (h - floor h)(v_(ceil h) -
    v_(floor h))`` over the ascending order ``v``. Both order statistics lie among the
    ``floor((n - 1) q) + 2`` largest values, which is all that is kept (for the largest ``q``).

    Args:
        units: Number of units (channels).
        positions: Values per unit over the whole stream (images x height x width).
        quantiles: The ``q`` of the thresholds, each in ``(0, 1)``.

    Example:
        >>> tq = TopQuantiles(1, 100, [0.05])
        >>> tq.update(torch.arange(100.0).view(1, 1, 10, 10))
        >>> tq.thresholds().tolist()
        [[94.05]]
    """

    def __init__(self, units: int, positions: int, quantiles: Sequence[float]) -> None:
        if positions < 2:
            raise ValueError(f"a quantile needs at least 2 values per unit, got {positions}")
        self.units, self.positions = units, positions
        self.quantiles = [float(q) for q in quantiles]
        self.keep = min(positions, int(math.floor((positions - 1) * max(self.quantiles))) + 2)
        self.top = torch.empty(units, 0, dtype=torch.float64)
        self.seen = 0

    def update(self, acts: Tensor) -> None:
        """Take ``acts`` ``(B, U, h, w)`` into the stream."""
        values = acts.detach().to(torch.float64).transpose(0, 1).reshape(self.units, -1)
        merged = torch.cat([self.top, values.to(self.top.device)], dim=1)  # (U, k + B*h*w)
        self.top = merged.topk(min(self.keep, merged.shape[1]), dim=1).values  # descending
        self.seen += values.shape[1]

    def thresholds(self) -> Tensor:
        """``(Q, U)`` float64 thresholds, one row per quantile."""
        if self.seen != self.positions:
            raise ValueError(f"saw {self.seen} values per unit, expected {self.positions}")
        rows = []
        for q in self.quantiles:
            h = (self.positions - 1) * (1.0 - q)  # ascending index
            lo, frac = math.floor(h), h - math.floor(h)
            hi = min(lo + 1, self.positions - 1)
            # descending index of ascending index i: n - 1 - i
            v_lo = self.top[:, self.positions - 1 - lo]
            v_hi = self.top[:, self.positions - 1 - hi]
            rows.append(v_lo + frac * (v_hi - v_lo))
        return torch.stack(rows)  # (Q, U)


@dataclass
class Tally:
    """Counts over a probe set, per quantile ``Q``, unit ``U``, label ``L``, category ``C``.

    Attributes:
        both: ``(Q, U, L)`` activated pixels carrying the label, ``sum |M_u & L_l|``.
        units: ``(Q, U)`` activated pixels, ``sum |M_u|``.
        units_cat: ``(Q, U, C)`` activated pixels on the images that count for the category.
        labels: ``(L,)`` pixels carrying the label, ``sum |L_l|``.
    """

    both: Tensor
    units: Tensor
    units_cat: Tensor
    labels: Tensor

    @classmethod
    def zeros(cls, quantiles: int, units: int, labels: int, categories: int) -> Tally:
        f64 = torch.float64
        return cls(
            torch.zeros(quantiles, units, labels, dtype=f64),
            torch.zeros(quantiles, units, dtype=f64),
            torch.zeros(quantiles, units, categories, dtype=f64),
            torch.zeros(labels, dtype=f64),
        )


def tally_batch(
    tally: Tally,
    acts: Tensor,
    thresholds: Tensor,
    pixels: Tensor,
    scalars: Tensor,
    label_category: Tensor,
    images: str = "touched",
    annotated: Tensor | None = None,
    chunk: int = CHUNK,
) -> None:
    """Add one batch to ``tally`` (in place).

    Args:
        tally: The running counts (:meth:`Tally.zeros`).
        acts: ``(B, U, h, w)`` the layer's activations.
        thresholds: ``(Q, U)`` the units' thresholds (:meth:`TopQuantiles.thresholds`).
        pixels: ``(B, D, S, S)`` pixel labels (full label ids, 0 = none), ``D`` layers.
        scalars: ``(B, E)`` image-level label ids, 0 = padding.
        label_category: ``(L,)`` each label's primary category (label 0: any value, unused).
        images: ``touched`` (NetDissect-Lite) or ``annotated`` (ours), see the module docstring.
        annotated: ``(B, C)`` bool, the images annotated for each category; needed for
            ``images: annotated``.
        chunk: At most this many upsampled values are held at once (units are taken in groups).
    """
    if images not in IMAGE_RULES:
        raise ValueError(f"unknown images rule {images!r}; use one of {', '.join(IMAGE_RULES)}")
    if images == "annotated" and annotated is None:
        raise ValueError("images='annotated' needs the images' annotated categories")
    n_units, n_cat = tally.units.shape[1], tally.units_cat.shape[2]
    b, d, s = pixels.shape[0], pixels.shape[1], pixels.shape[-1]
    flat = pixels.reshape(b, d, s * s).long()  # (B, D, S²)
    labelled = (flat > 0).to(torch.float64)  # (B, D, S²)
    ids = flat.clamp_min(0)
    cat_of = label_category.long().clamp_min(0)[ids]  # (B, D, S²) primary categories
    onehots = F.one_hot(cat_of, n_cat).to(torch.float64) * labelled.unsqueeze(-1)  # (B,D,S²,C)
    tally.labels.index_add_(0, ids.reshape(-1), labelled.reshape(-1))
    present = [(i, int(scalars[i, e])) for i, e in torch.nonzero(scalars.long() > 0).tolist()]
    scalar_images = torch.tensor([i for i, _ in present], dtype=torch.long)  # (P,)
    scalar_labels = torch.tensor([lab for _, lab in present], dtype=torch.long)  # (P,)
    scalar_cats = label_category.long()[scalar_labels]  # (P,)
    # an image-level label covers the whole image
    tally.labels.index_add_(0, scalar_labels, torch.full((len(present),), float(s * s),
                                                         dtype=torch.float64))  # fmt: skip
    tally.labels[0] = 0.0  # label 0 is "no label"
    group = max(1, chunk // max(1, b * s * s))
    for u0 in range(0, n_units, group):
        u1 = min(n_units, u0 + group)
        up = F.interpolate(acts[:, u0:u1].detach().to(torch.float64), size=(s, s),
                           mode="bilinear", align_corners=False).flatten(2)  # fmt: skip
        for q in range(thresholds.shape[0]):
            source = (up > thresholds[q, u0:u1].view(1, -1, 1)).to(torch.float64)  # (B, Uc, S²)
            counts = source.sum(2)  # (B, Uc)
            tally.units[q, u0:u1] += counts.sum(0)
            both = tally.both[q, u0:u1]  # (Uc, L), a view
            by_unit = source.transpose(0, 1).reshape(u1 - u0, b * s * s)  # (Uc, B*S²)
            touched = torch.zeros(b, u1 - u0, n_cat, dtype=torch.float64)
            for layer in range(d):
                both.index_add_(
                    1, ids[:, layer].reshape(-1), by_unit * labelled[:, layer].reshape(1, -1)
                )
                touched += torch.einsum("bup,bpc->buc", source, onehots[:, layer])
            if present:  # image-level labels: every activated pixel of the image carries them
                both.index_add_(1, scalar_labels, counts[scalar_images].T)
                touched[scalar_images, :, scalar_cats] += 1.0
            both[:, 0] = 0.0
            if images == "touched":
                hit = (touched > 0).to(torch.float64)  # (B, Uc, C)
            else:
                assert annotated is not None
                hit = annotated.to(torch.float64).unsqueeze(1)  # (B, 1, C)
            tally.units_cat[q, u0:u1] += (counts.unsqueeze(-1) * hit).sum(0)


def unit_iou(tally: Tally, label_category: Tensor) -> Tensor:
    """``(Q, U, L)`` IoU of every unit with every label, the denominator's activated pixels
    taken from the label's primary category (label 0 scores 0)."""
    cat = label_category.long().clamp_min(0)  # (L,)
    units_cat = tally.units_cat[:, :, cat]  # (Q, U, L)
    iou = tally.both / (units_cat + tally.labels - tally.both + _EPS)
    iou[:, :, 0] = 0.0
    return iou


def best_concepts(iou: Tensor, label_category: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Each unit's best label: ``(score, label, category)``, each ``(Q, U)``.

    As the reference, the best label is first chosen within each category (labels whose primary
    category it is), then the best category; ties go to the lower index.
    """
    n_cat = int(label_category.max().item()) + 1
    cat = label_category.long()
    scores, labels = [], []
    for c in range(n_cat):
        masked = iou * (cat == c).to(iou.dtype).view(1, 1, -1)  # (Q, U, L)
        score, label = masked.max(dim=2)
        scores.append(score)
        labels.append(label)
    per_cat = torch.stack(scores, -1)  # (Q, U, C)
    score, category = per_cat.max(dim=-1)  # (Q, U)
    label = torch.stack(labels, -1).gather(-1, category.unsqueeze(-1)).squeeze(-1)
    return score, label, category


def count_detectors(
    score: Tensor, label: Tensor, category: Tensor, threshold: float, categories: int
) -> dict[str, Tensor]:
    """Detectors at an IoU threshold (``score >= threshold``), each ``(Q, ...)``.

    Returns:
        ``total`` ``(Q,)`` detector units, ``unique`` ``(Q,)`` distinct labels among them, and
        ``per_category`` ``(Q, C)`` detectors by their best category.
    """
    is_det = score >= threshold  # (Q, U)
    total = is_det.sum(1)
    per_category = torch.stack(
        [(is_det & (category == c)).sum(1) for c in range(categories)], dim=1
    )
    unique = torch.tensor([len(set(label[q][is_det[q]].tolist())) for q in range(score.shape[0])])
    return {"total": total, "unique": unique, "per_category": per_category}
