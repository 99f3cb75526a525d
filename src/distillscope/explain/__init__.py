"""Explanations: differentiable GradCAM, Guided Grad-CAM, batched attribution methods and one
(B, H, W) map per image for any model (``explanation_maps``)."""

from distillscope.explain.attribution import CAM_METHODS, IG_STEPS, METHODS, attribute
from distillscope.explain.gradcam import find_layer, gradcam
from distillscope.explain.guided import guided_backprop, guided_gradcam
from distillscope.explain.maps import MAP_METHODS, explanation_maps

__all__ = [
    "CAM_METHODS",
    "IG_STEPS",
    "MAP_METHODS",
    "METHODS",
    "attribute",
    "explanation_maps",
    "find_layer",
    "gradcam",
    "guided_backprop",
    "guided_gradcam",
]
