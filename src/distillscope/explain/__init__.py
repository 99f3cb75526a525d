"""Explanations: differentiable GradCAM and batched attribution methods (captum wrappers)."""

from distillscope.explain.attribution import IG_STEPS, METHODS, attribute
from distillscope.explain.gradcam import find_layer, gradcam

__all__ = ["IG_STEPS", "METHODS", "attribute", "find_layer", "gradcam"]
