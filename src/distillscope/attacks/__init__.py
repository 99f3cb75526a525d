"""Adversarial attacks on batches (FGSM, PGD, DeepFool); strong and pixel-space wrappers."""

from distillscope.attacks.deepfool import DEEPFOOL_OVERSHOOT, DEEPFOOL_STEPS, deepfool
from distillscope.attacks.gradient import IMAGE_EPS, PGD_STEP_FRACTION, PGD_STEPS, fgsm, pgd
from distillscope.attacks.temperature import PixelSpaceModel, TemperatureScaled, to_pixels

__all__ = [
    "DEEPFOOL_OVERSHOOT",
    "DEEPFOOL_STEPS",
    "IMAGE_EPS",
    "PGD_STEPS",
    "PGD_STEP_FRACTION",
    "PixelSpaceModel",
    "TemperatureScaled",
    "deepfool",
    "fgsm",
    "pgd",
    "to_pixels",
]
