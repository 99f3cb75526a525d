"""Adversarial attacks on batches (FGSM, PGD, I-FGSM, PGD-L2, CW-L2, DeepFool); strong and
pixel-space wrappers."""

from distillscope.attacks.carlini import cw_l2
from distillscope.attacks.deepfool import DEEPFOOL_OVERSHOOT, DEEPFOOL_STEPS, deepfool
from distillscope.attacks.gradient import (
    IMAGE_EPS,
    PGD_STEP_FRACTION,
    PGD_STEPS,
    fgsm,
    fgsm_sweep,
    pgd,
)
from distillscope.attacks.l2 import IFGSM_STEPS, ifgsm, l2_norms, pgd_l2
from distillscope.attacks.temperature import PixelSpaceModel, TemperatureScaled, to_pixels

__all__ = [
    "DEEPFOOL_OVERSHOOT",
    "DEEPFOOL_STEPS",
    "IFGSM_STEPS",
    "IMAGE_EPS",
    "PGD_STEPS",
    "PGD_STEP_FRACTION",
    "PixelSpaceModel",
    "TemperatureScaled",
    "cw_l2",
    "deepfool",
    "fgsm",
    "fgsm_sweep",
    "ifgsm",
    "l2_norms",
    "pgd",
    "pgd_l2",
    "to_pixels",
]
