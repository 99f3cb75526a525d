"""Pure tensor functions behind the losses and probes: no I/O, no models.

Example:
    >>> import torch
    >>> from distillscope import functional as F
    >>> z = torch.tensor([[2.0, 0.0, 0.0]])
    >>> round(float(F.kd_loss(z, z, temperature=4.0)), 6)
    0.0
"""

from distillscope.functional.agreement import kl_divergence, top1_match, topk_correct
from distillscope.functional.boundary import (
    TWILIGHT_CONFIDENCE,
    boundary_hardness,
    boundary_points,
    twilight_fraction,
)
from distillscope.functional.distill import (
    PSEUDO_SOFT_TEMPERATURE,
    PSEUDO_SOFT_VARIANCE,
    cross_entropy_to_uniform,
    indexed_normal,
    kd_loss,
    label_smoothing_targets,
    pseudo_soft_targets,
    soft_cross_entropy,
    soft_labels,
)
from distillscope.functional.entropy import category_mask, entropy, softmax_entropy
from distillscope.functional.explanation_metrics import (
    IOU_THRESHOLD,
    closer_votes,
    energy_pointing_game,
    mask_share,
    region_iou,
    relevant_region,
    shift_cosine,
    shift_diagonal,
)
from distillscope.functional.feature_maps import (
    HCL_LEVELS,
    cat_loss,
    class_activation_maps,
    hcl_loss,
)
from distillscope.functional.similarity import (
    batch_cosine,
    cosine_parts,
    flat_cosine,
    pooled_cosine,
)
from distillscope.functional.views import (
    colour_jitter,
    colourise,
    crop_params,
    jitter_params,
    luminance,
    resized_crop,
    shift_images,
    shift_params,
)

__all__ = [
    "HCL_LEVELS",
    "IOU_THRESHOLD",
    "PSEUDO_SOFT_TEMPERATURE",
    "PSEUDO_SOFT_VARIANCE",
    "TWILIGHT_CONFIDENCE",
    "batch_cosine",
    "boundary_hardness",
    "boundary_points",
    "cat_loss",
    "category_mask",
    "class_activation_maps",
    "closer_votes",
    "colour_jitter",
    "colourise",
    "cosine_parts",
    "crop_params",
    "cross_entropy_to_uniform",
    "energy_pointing_game",
    "entropy",
    "flat_cosine",
    "hcl_loss",
    "indexed_normal",
    "jitter_params",
    "kd_loss",
    "kl_divergence",
    "label_smoothing_targets",
    "luminance",
    "mask_share",
    "pooled_cosine",
    "pseudo_soft_targets",
    "region_iou",
    "relevant_region",
    "resized_crop",
    "shift_cosine",
    "shift_diagonal",
    "shift_images",
    "shift_params",
    "soft_cross_entropy",
    "soft_labels",
    "softmax_entropy",
    "top1_match",
    "topk_correct",
    "twilight_fraction",
]
