"""Explanation-enhanced knowledge distillation: the student matches the teacher's explanations.

Paper 001 (Parchami-Araghi et al., "Good Teachers Explain", ECCV 2024), eqs. 1-3:

    L_KD  = tau^2 KL(sigma(z_T / tau) || sigma(z_S / tau))                      (eq. 1)
    L_exp = 1 - cos(E(T, x, y_T), E(S, x, y_T)),  y_T = argmax z_T              (eq. 3)
    L     = L_KD + lambda L_exp                                                 (eq. 2)

``E(M, x, c)`` is GradCAM for standard models: the gradient of ``z_c`` w.r.t. the last conv
block's output ``A``, channel weights ``w = mean_ij dz_c / dA``, map ``ReLU(sum_k w_k A_k)``
resized bilinearly to the input; the cosine is over the flattened maps of each image, averaged
over the batch. The student's map keeps its graph (double backpropagation), the teacher's is
detached. Both maps come from the forward passes that also give the logits, so the student's
BatchNorm statistics move once per step, as in the authors' code.

For B-cos models (:mod:`distillscope.models.bcos`) ``E(M, x, c)`` is instead the dynamic
weight ``W(x)`` of logit ``c``: its gradient w.r.t. the encoded input ``[p, 1 - p]`` in
explanation mode, ``(B, 2C, H, W)``, compared over all its channels (paper 001 3.1; the
authors' code takes ``images.grad`` of the explained logit, ``create_graph=True``). The
dynamic factors are constants of that gradient but not of the training step's backward
(:func:`~distillscope.models.bcos_layers.dynamic_product`, after the authors'
``_DynamicMultiplication``): the gradient of ``1 - cos`` w.r.t. the parameters goes through
``W(x)``'s linear maps and through the factors' dependence on the parameters (double backward),
and the KD term's gradient is the ordinary one. The authors' code runs the student's one
forward pass in explanation mode and its backward after leaving it (``bcos_student:
explanation``); by default (ours, ``bcos_student: normal``) the student's training pass runs
normally and a second pass in explanation mode, with its batch-norm running statistics left as
they were, gives ``W(x)``. The two give the same gradient (tested); ours costs one more forward
pass. (Before this followed the authors' function, the factors were detached: the explanation
term lost their dependence on the parameters, and the authors' mode, its backward run in
explanation mode, trained the KD term with frozen factors: 0.28 accuracy against 0.75 at 50
Fashion-MNIST images per class, a measurement of that old behaviour only.)
"""

from __future__ import annotations

import weakref
from contextlib import AbstractContextManager, nullcontext
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillscope.checks import check_range
from distillscope.contracts import Batch, Outputs
from distillscope.distill.base import LossTerm
from distillscope.distill.feature_base import check_optional_path
from distillscope.distill.logit import require_teacher
from distillscope.errors import ConfigError, TrainingError
from distillscope.explain.gradcam import gradcam_from
from distillscope.functional.explanation_metrics import explanation_loss
from distillscope.functional.soft_targets import kd_loss
from distillscope.models.bcos_layers import explanation_mode, is_bcos
from distillscope.models.forward import forward_outputs, running_stats_kept
from distillscope.models.taps import FeatureTap, check_module_paths
from distillscope.registry import register_loss

#: The authors' default explanation coefficient (their sweep: 0, 0.2, 1, 5, 10).
E2KD_WEIGHT = 1.0
#: Softmax temperature; the authors sweep {1, 5} and keep the best on validation data.
E2KD_TEMPERATURE = 5.0
#: What explains the models: GradCAM, B-cos dynamic weights, or ``auto`` (B-cos when both
#: models are B-cos networks, else GradCAM).
EXPLANATIONS = ("auto", "gradcam", "bcos")
#: How a B-cos student trains under e2KD: ``normal`` (ours: the training pass in normal mode,
#: ``W(x)`` from a second pass in explanation mode) or ``explanation`` (the authors' code: one
#: pass in explanation mode, the backward after it); the same gradient either way.
BCOS_STUDENT_MODES = ("normal", "explanation")
#: Weight of the KD term against cross-entropy; 1 = no cross-entropy, as eq. 1 and the
#: authors' code (``gt_logit_loss_coef = 0``).
E2KD_ALPHA = 1.0


@register_loss("e2kd")
class ExplanationEnhancedKD(LossTerm):
    """e2KD (paper 001, eq. 2): ``alpha L_KD + (1 - alpha) CE + lambda (1 - cos(E_T, E_S))``.

    Explanations are GradCAM maps for the teacher's top-1 class ``y_T`` (see the module
    docstring), of each model's ``cam_layer`` unless ``student_layer`` / ``teacher_layer``
    name another 4-D activation; for two B-cos models, their dynamic weights ``W(x)``. With
    ``teacher_cache: frozen`` the teacher's maps are computed once per image and moved with
    each batch's augmentation (paper 001 3.3).

    Reference choices: the authors' code (GoodTeachersExplain) trains with ``alpha = 1`` (no
    cross-entropy), sweeps ``tau`` over {1, 5} and ``lambda`` over {0, 0.2, 1, 5, 10}; we
    default to ``tau = 5``, ``lambda = 1``. ``alpha < 1`` adds the label term of our ``kd``.

    Args:
        explanation_weight: ``lambda >= 0``, the explanation term's coefficient (``weight``
            is the whole term's weight in a combined loss, as for every term).
        temperature: ``tau > 0`` of the KD term.
        alpha: Weight of the KD term in ``[0, 1]``; ``1 - alpha`` weighs cross-entropy.
        student_layer: Student module path explained (default ``student.cam_layer``).
        teacher_layer: Teacher module path explained (default ``teacher.cam_layer``).
        explanation: ``auto`` (default: ``bcos`` when teacher and student are both B-cos
            models, else ``gradcam``), ``gradcam`` or ``bcos`` (both must be B-cos models; the
            layers are then their ``input_layer`` and cannot be set).
        bcos_student: With B-cos explanations, ``normal`` (default, ours: the student's
            training pass runs normally and a second forward pass in explanation mode,
            batch-norm running statistics untouched, gives its ``W(x)``) or ``explanation``
            (the authors' code: one pass in explanation mode, left before the backward); both
            give the same gradient, see the module docstring.

    Parts:
        ``e2kd/kd``: ``tau^2 KL``; ``e2kd/hard``: CE; ``e2kd/explanation``: ``1 - cos``
        (each unweighted).
    """

    needs: ClassVar[set[str]] = {"logits", "teacher", "features", "explanation"}

    def __init__(
        self,
        explanation_weight: float = E2KD_WEIGHT,
        temperature: float = E2KD_TEMPERATURE,
        alpha: float = E2KD_ALPHA,
        student_layer: str | None = None,
        teacher_layer: str | None = None,
        explanation: str = "auto",
        bcos_student: str = "normal",
    ) -> None:
        super().__init__()
        if explanation not in EXPLANATIONS:
            raise ConfigError(
                f"e2kd.explanation={explanation!r} is invalid; use one of {', '.join(EXPLANATIONS)}"
            )
        if explanation == "bcos" and (student_layer or teacher_layer):
            raise ConfigError(
                "e2kd with explanation: bcos explains the models' inputs; drop student_layer "
                "and teacher_layer"
            )
        if bcos_student not in BCOS_STUDENT_MODES:
            raise ConfigError(
                f"e2kd.bcos_student={bcos_student!r} is invalid; use one of "
                f"{', '.join(BCOS_STUDENT_MODES)}"
            )
        self.explanation = explanation
        self.bcos_student = bcos_student
        self._student: weakref.ref[nn.Module] | None = None  # the second pass's model
        self.explanation_weight = check_range("e2kd.explanation_weight", explanation_weight, 0.0)
        self.temperature = check_range("e2kd.temperature", temperature, 0.0, low_open=True)
        self.alpha = check_range("e2kd.alpha", alpha, 0.0, 1.0)
        self.student_layer = check_optional_path("e2kd.student_layer", student_layer)
        self.teacher_layer = check_optional_path("e2kd.teacher_layer", teacher_layer)

    def attach(self, student: nn.Module, teacher: nn.Module | None) -> None:
        both = is_bcos(student) and teacher is not None and is_bcos(teacher)
        if self.explanation == "auto":
            layers_given = self.student_layer or self.teacher_layer
            self.explanation = "bcos" if both and not layers_given else "gradcam"
        if self.explanation == "bcos":
            for role, model in (("student", student), ("teacher", teacher)):
                if model is not None and not is_bcos(model):
                    raise ConfigError(
                        f"e2kd.explanation=bcos but the {role} ({type(model).__name__}) is not a "
                        "B-cos model; use bcos_* models for both or explanation: gradcam"
                    )
            self.student_layer = student.input_layer
            self._student = weakref.ref(student)  # not a submodule: no parameters of its own
            if teacher is not None:
                self.teacher_layer = teacher.input_layer
            return
        self.student_layer = _layer("student", student, self.student_layer)
        if teacher is not None:
            self.teacher_layer = _layer("teacher", teacher, self.teacher_layer)

    @property
    def _one_pass(self) -> bool:
        """Whether the student's explanation comes from its training pass (not a second one)."""
        return self.explanation != "bcos" or self.bcos_student == "explanation"

    def student_context(self, student: nn.Module) -> AbstractContextManager[object]:
        """With ``bcos_student: explanation`` the B-cos student's forward pass and loss run in
        explanation mode (the authors' code; the trainer leaves it before the backward);
        otherwise it runs as it is."""
        bcos_mode = self.explanation == "bcos" and self.bcos_student == "explanation"
        return explanation_mode(student) if bcos_mode else nullcontext()

    def student_paths(self) -> list[str]:
        return [self.student_layer] if self.student_layer and self._one_pass else []

    def explain_teacher(self, teacher: nn.Module, inputs: Tensor) -> Outputs:
        """The teacher's logits and explanation (GradCAM map or B-cos ``W(x)``) of its top-1
        class, detached."""
        if not self.teacher_layer:
            raise ConfigError("e2kd explains the teacher's cam_layer; bind the loss first")
        x = inputs.detach().requires_grad_(True)  # a graph even when the teacher is frozen
        bcos = self.explanation == "bcos"
        # the gradient is taken inside explanation mode: its dynamic factors are constants
        with (
            FeatureTap(teacher, [self.teacher_layer]) as tap,
            explanation_mode(teacher) if bcos else nullcontext(),
        ):
            out = forward_outputs(teacher, x, tap)
            top1 = out.logits.argmax(1)  # (B,)
            acts = out.features[self.teacher_layer]  # (B, C, h, w)
            if bcos:
                chosen = out.logits.gather(1, top1[:, None]).sum()
                explained = torch.autograd.grad(chosen, acts)[0]  # (B, 2C, H, W) = W(x)
            else:
                explained = gradcam_from(out.logits, acts, top1, x.shape[-2:])  # (B, H, W)
        return Outputs(out.logits.detach(), {}, explanation=explained.detach())

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        teacher = require_teacher(self.name, teacher)
        if teacher.explanation is None:
            raise TrainingError(
                "e2kd got the teacher's outputs without its explanation; run it through the "
                "Trainer (live teacher or teacher cache), which asks the loss to explain it"
            )
        t_logits = teacher.logits.detach()  # (B, K)
        top1 = t_logits.argmax(1)  # (B,)
        # the class choice and the map use the student's raw logits, at its own T = 1
        if not self._one_pass:  # W(x) from a second pass in explanation mode
            cam = self._student_weights(batch.inputs, top1)  # (B, 2C, H, W)
        elif self.explanation == "bcos":  # W(x): the pass ran in explanation mode (student_context)
            acts = student.features[self.student_layer]  # (B, 2C, H, W)
            chosen = student.raw_logits.gather(1, top1[:, None]).sum()
            cam = torch.autograd.grad(chosen, acts, create_graph=True)[0]  # (B, 2C, H, W)
        else:
            acts = student.features[self.student_layer]  # (B, C, h, w)
            cam = gradcam_from(
                student.raw_logits, acts, top1, batch.inputs.shape[-2:], create_graph=True
            )  # (B, H, W)
        exp = explanation_loss(cam, teacher.explanation.to(cam.dtype))
        soft = kd_loss(student.logits, t_logits, self.temperature)  # ()
        hard = F.cross_entropy(student.logits, batch.targets)  # ()
        total = self.alpha * soft + (1.0 - self.alpha) * hard + self.explanation_weight * exp
        return {"loss": total, "e2kd/kd": soft, "e2kd/hard": hard, "e2kd/explanation": exp}

    def _student_weights(self, inputs: Tensor, top1: Tensor) -> Tensor:
        """The attached B-cos student's ``W(x)`` rows of ``top1``, with their graph, from one
        more forward pass in explanation mode (its running statistics restored after it)."""
        student = self._student() if self._student is not None else None
        if student is None:
            raise TrainingError("e2kd lost its B-cos student; bind the loss to the student first")
        with running_stats_kept(student):
            return student.dynamic_weights(inputs, top1, create_graph=True)  # (B, 2C, H, W)

    def extra_repr(self) -> str:
        return (
            f"explanation_weight={self.explanation_weight}, temperature={self.temperature}, "
            f"alpha={self.alpha}, explanation={self.explanation!r}, "
            f"bcos_student={self.bcos_student!r}, "
            f"student_layer={self.student_layer!r}, teacher_layer={self.teacher_layer!r}"
        )


def _layer(role: str, model: nn.Module, path: str | None) -> str:
    """The explained layer of ``model``: ``path`` if given (checked), else its ``cam_layer``."""
    if path is None:
        path = getattr(model, "cam_layer", None)
        if not path:
            raise ConfigError(
                f"e2kd explains the {role} with GradCAM, but {type(model).__name__} has no "
                f"cam_layer (no convolutional map); pass e2kd.{role}_layer=<module path of a "
                "(B, C, h, w) activation>"
            )
    check_module_paths(model, [path])
    return path


__all__ = ["ExplanationEnhancedKD", "explanation_loss"]
