"""Adversarial attacks on batches (FGSM, PGD); wrappers for strong and pixel-space attacks."""

from distillscope.attacks.gradient import IMAGE_EPS, PGD_STEP_FRACTION, PGD_STEPS, fgsm, pgd
from distillscope.attacks.temperature import PixelSpaceModel, TemperatureScaled, to_pixels

__all__ = [
    "IMAGE_EPS",
    "PGD_STEPS",
    "PGD_STEP_FRACTION",
    "PixelSpaceModel",
    "TemperatureScaled",
    "fgsm",
    "pgd",
    "to_pixels",
]
