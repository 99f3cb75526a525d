"""Pure tensor functions behind the losses and probes: no I/O, no models.

Example:
    >>> import torch
    >>> from distillscope import functional as F
    >>> z = torch.tensor([[2.0, 0.0, 0.0]])
    >>> round(float(F.kd_loss(z, z, temperature=4.0)), 6)
    0.0
"""

from distillscope.functional.agreement import kl_divergence, top1_match, topk_correct
from distillscope.functional.attention import (
    ab_loss,
    attention_map,
    attention_transfer_loss,
    boundary_loss,
    nst_loss,
    polynomial_mmd,
    same_size,
    vid_nll,
)
from distillscope.functional.boundary import (
    TWILIGHT_CONFIDENCE,
    boundary_hardness,
    boundary_points,
    twilight_fraction,
)
from distillscope.functional.entropy import (
    category_mask,
    class_output_sums,
    entropy,
    pooled_category_entropy,
    softmax_entropy,
)
from distillscope.functional.explanation_metrics import (
    IOU_THRESHOLD,
    closer_votes,
    energy_pointing_game,
    explanation_loss,
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
from distillscope.functional.feature_transfer import (
    factor,
    factor_transfer_loss,
    match_spatial,
    ofd_loss,
    ofd_margin,
)
from distillscope.functional.logit import (
    bce_loss,
    binary_kl,
    dkd_parts,
    mutual_learning_kl,
    virtual_teacher_kl,
)
from distillscope.functional.relation import (
    contrast_draws,
    contrast_scores,
    correlation_congruence_loss,
    kept_by_error_level,
    memory_update,
    nce_loss,
    pairwise_distances,
    pkt_loss,
    rkd_parts,
    similarity_preserving_loss,
    view_similarity,
)
from distillscope.functional.similarity import (
    batch_cosine,
    cosine_parts,
    flat_cosine,
    pooled_cosine,
)
from distillscope.functional.soft_targets import (
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
    "ab_loss",
    "attention_map",
    "attention_transfer_loss",
    "batch_cosine",
    "bce_loss",
    "binary_kl",
    "boundary_hardness",
    "boundary_loss",
    "boundary_points",
    "cat_loss",
    "category_mask",
    "class_output_sums",
    "class_activation_maps",
    "closer_votes",
    "colour_jitter",
    "colourise",
    "contrast_draws",
    "contrast_scores",
    "correlation_congruence_loss",
    "cosine_parts",
    "crop_params",
    "cross_entropy_to_uniform",
    "dkd_parts",
    "energy_pointing_game",
    "entropy",
    "explanation_loss",
    "factor",
    "factor_transfer_loss",
    "flat_cosine",
    "hcl_loss",
    "indexed_normal",
    "jitter_params",
    "kd_loss",
    "kept_by_error_level",
    "kl_divergence",
    "label_smoothing_targets",
    "luminance",
    "mask_share",
    "match_spatial",
    "memory_update",
    "mutual_learning_kl",
    "nce_loss",
    "nst_loss",
    "ofd_loss",
    "ofd_margin",
    "pairwise_distances",
    "pkt_loss",
    "polynomial_mmd",
    "pooled_category_entropy",
    "pooled_cosine",
    "pseudo_soft_targets",
    "region_iou",
    "relevant_region",
    "resized_crop",
    "rkd_parts",
    "same_size",
    "shift_cosine",
    "shift_diagonal",
    "shift_images",
    "shift_params",
    "similarity_preserving_loss",
    "soft_cross_entropy",
    "soft_labels",
    "softmax_entropy",
    "top1_match",
    "topk_correct",
    "twilight_fraction",
    "vid_nll",
    "view_similarity",
    "virtual_teacher_kl",
]
