"""Explanations: differentiable GradCAM, Guided Grad-CAM and batched attribution methods."""

from distillscope.explain.attribution import CAM_METHODS, IG_STEPS, METHODS, attribute
from distillscope.explain.gradcam import find_layer, gradcam
from distillscope.explain.guided import guided_backprop, guided_gradcam

__all__ = [
    "CAM_METHODS",
    "IG_STEPS",
    "METHODS",
    "attribute",
    "find_layer",
    "gradcam",
    "guided_backprop",
    "guided_gradcam",
]
