"""CAT-KD: the student matches the teacher's class activation maps.

``cat_kd`` is Guo, Yan, Li & Lin 2023, "Class Attention Transfer Based Knowledge
Distillation" (CVPR), one of the comparisons of e2KD (paper 001, tables 1-3 and section 2,
which calls it explanation-based KD with CAMs reduced to 2x2). A class's CAM is the final
feature map weighted by that class's row of the linear classifier (Zhou et al. 2016), so the
term reads each network's classifier weight besides the tapped map.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillscope.checks import check_int
from distillscope.contracts import Batch, Outputs
from distillscope.distill.base import BindContext
from distillscope.distill.feature_base import SingleLayerTerm, check_optional_path
from distillscope.errors import ConfigError, TrainingError
from distillscope.functional.feature_maps import cat_loss, class_activation_maps
from distillscope.models.taps import check_module_paths
from distillscope.registry import register_loss

# The authors' code (its defaults and every shipped config): CAMs pooled to 2x2 on CIFAR-100
# (4x4 on ImageNet); paper 001, section 2: "reduce the resolution of the CAMs to 2x2".
CAT_RESOLUTION = 2


class _Borrowed:
    """A module of a network that a term reads but does not own.

    Kept out of the term's ``state_dict`` and ``parameters`` (the network saves and optimises
    it), and shared, not copied, by ``copy.deepcopy`` (the bind's dry run copies the loss and
    must read the same network). Rebinding the term points it at another network.
    """

    __slots__ = ("module",)

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __deepcopy__(self, memo: dict[int, object]) -> _Borrowed:
        return self


@register_loss("cat_kd")
class ClassAttentionTransfer(SingleLayerTerm):
    """CAT-KD (Guo, Yan, Li & Lin 2023; a comparison in paper 001, tables 1-3).

    ``L = MSE(N(P_r(M_s)), N(P_r(M_t)))`` with ``M_k = sum_c w_kc A_c`` the class activation
    map of class ``k`` (``A``: the tapped final feature map, ``w``: the network's linear
    classifier weight, bias left out), ``P_r`` average pooling to ``r x r`` and ``N`` the L2
    normalisation of each pooled map
    (:func:`~distillscope.functional.feature_maps.cat_loss`). The teacher's CAMs are fixed
    targets; the student's loss reaches both its feature map and its classifier weight.
    Average pooling is linear, so the term pools ``A`` before applying ``w`` (the same maps,
    ``r^2 / HW`` of the work).

    Choices of the authors' implementation, followed: MSE averaged over batch, classes and
    positions; normalisation on (their default; their shipped CIFAR configs switch it off and
    use weights 0.7-15 per pair, their default weight with it on is 400); ``r = 2``. Their
    binarised-CAM and partial-class ablations are not included.

    How the classifier weights are read (the contract gives a term tapped outputs, not
    parameters): the teacher is frozen, so its weight is copied into a buffer of the term
    when it is trained (``prepare``; saved with the term's state, so a resumed run keeps it).
    The student's weight changes every step and the loss must reach it, so the term keeps a
    reference to the student's classifier module, taken at bind and again at ``prepare``. That
    reference is not part of the term's ``state_dict`` or ``parameters`` and is shared, not
    copied, by ``copy.deepcopy``.

    Args:
        student_layer: Student module path of the final feature map (``(C, H, W)``, the map the
            classifier pools; ``model.cam_layer`` of our models, ``layer3`` of the ResNets);
            default: the student's ``model.cam_layer``.
        teacher_layer: Teacher module path of its final feature map; default: the teacher's
            ``model.cam_layer``.
        resolution: ``r``, the pooled CAMs' side.
        normalize: L2-normalise every pooled CAM.
        student_classifier: Module path of the student's ``nn.Linear`` classifier; by default
            the last ``nn.Linear`` with one output per class.
        teacher_classifier: The same for the teacher.

    Parts:
        ``cat_kd/cat``: the loss (equal to ``loss``).
    """

    name: ClassVar[str] = "cat_kd"
    default_layers: ClassVar[str | None] = "cam"

    def __init__(
        self,
        student_layer: str | None = None,
        teacher_layer: str | None = None,
        resolution: int = CAT_RESOLUTION,
        normalize: bool = True,
        student_classifier: str | None = None,
        teacher_classifier: str | None = None,
    ) -> None:
        super().__init__(student_layer, teacher_layer)
        self.resolution = check_int("cat_kd.resolution", resolution)
        if not isinstance(normalize, bool):
            raise ConfigError(f"cat_kd.normalize={normalize!r} is invalid; use true or false")
        self.normalize = normalize
        self.student_classifier = check_optional_path(
            "cat_kd.student_classifier", student_classifier
        )
        self.teacher_classifier = check_optional_path(
            "cat_kd.teacher_classifier", teacher_classifier
        )
        self._student_head: _Borrowed | None = None
        self._student_head_path = ""
        self._teacher_head_path: str | None = None
        self._teacher_shape: tuple[int, ...] = ()
        self.teacher_weight: Tensor | None
        self.register_buffer("teacher_weight", None)  # (K, C_t) once bound

    def bind(self, ctx: BindContext) -> None:
        teacher = self.bind_teacher(ctx)
        s_shape = self._map_shape("student", self.student_layer, ctx.student_outputs)
        t_shape = self._map_shape("teacher", self.teacher_layer, teacher)
        k = int(ctx.student_outputs.logits.shape[1])
        s_path, s_head = _classifier("student", ctx.student, self.student_classifier, s_shape, k)
        self._student_head = _Borrowed(s_head)
        t_feature = teacher.features[self.teacher_layer]
        weight = torch.zeros(k, t_shape[0], dtype=t_feature.dtype, device=t_feature.device)
        if ctx.teacher is not None:  # untrained at start-up: prepare reads it again
            t_path, t_head = _classifier(
                "teacher", ctx.teacher, self.teacher_classifier, t_shape, k
            )
            weight = t_head.weight.detach().clone().to(weight)
            self._teacher_head_path = t_path
        self.teacher_weight = weight
        self._student_head_path = s_path
        self._teacher_shape = t_shape

    def prepare(
        self, student: nn.Module, teacher: nn.Module | None, batches: Iterable[Batch]
    ) -> None:
        """Read the trained teacher's classifier weight; point at the student to be trained."""
        if self.teacher_weight is None:
            raise TrainingError("cat_kd was not bound; bind the loss (Trainer.fit does) first")
        if teacher is None:
            raise TrainingError(
                "cat_kd reads the teacher's classifier weights; pass the teacher network "
                "(teacher=) along with its cache"
            )
        k = int(self.teacher_weight.shape[0])
        _, t_head = _classifier(
            "teacher", teacher, self._teacher_head_path or self.teacher_classifier,
            self._teacher_shape, k,
        )  # fmt: skip
        with torch.no_grad():
            self.teacher_weight.copy_(t_head.weight)
        head = check_module_paths(student, [self._student_head_path])[self._student_head_path]
        self._student_head = _Borrowed(head)

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        s_feature, t_feature = self.pair(student, teacher)
        if self._student_head is None or self.teacher_weight is None:
            raise TrainingError("cat_kd was not bound; bind the loss (Trainer.fit does) first")
        r = self.resolution
        s_map = F.adaptive_avg_pool2d(s_feature, r)  # (B, C_s, r, r)
        t_map = F.adaptive_avg_pool2d(t_feature, r)  # (B, C_t, r, r), detached
        s_cams = class_activation_maps(s_map, self._student_head.module.weight)  # (B, K, r, r)
        t_cams = class_activation_maps(t_map, self.teacher_weight)  # (B, K, r, r)
        loss = cat_loss(s_cams, t_cams, r, self.normalize)  # ()
        return {"loss": loss, "cat_kd/cat": loss}

    def _map_shape(self, role: str, path: str, outputs: Outputs) -> tuple[int, int, int]:
        shape = tuple(int(d) for d in outputs.features[path].shape[1:])
        if len(shape) != 3:
            kind = f"a vector {shape}" if len(shape) == 1 else f"a feature of shape {shape}"
            raise ConfigError(
                f"cat_kd: {role} layer {path!r} gives {kind}; CAT-KD needs the final feature "
                "map (C, H, W) that the classifier pools, e.g. model.cam_layer ('layer3')"
            )
        if min(shape[1:]) < self.resolution:
            raise ConfigError(
                f"cat_kd.resolution={self.resolution} exceeds the {role}'s map "
                f"{shape[1]}x{shape[2]} at {path!r}; use a resolution <= {min(shape[1:])}"
            )
        return shape  # type: ignore[return-value]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, resolution={self.resolution}, normalize={self.normalize}"


def _classifier(
    role: str, model: nn.Module, path: str | None, shape: tuple[int, ...], k: int
) -> tuple[str, nn.Linear]:
    """The ``(path, nn.Linear)`` classifier of ``model`` that maps ``C`` channels to ``k``."""
    if path is None:
        found = [
            (p, m) for p, m in model.named_modules() if isinstance(m, nn.Linear)
            and m.out_features == k
        ]  # fmt: skip
        if not found:
            raise ConfigError(
                f"cat_kd: the {role} ({type(model).__name__}) has no nn.Linear with {k} outputs; "
                f"CAT-KD needs a linear classifier on pooled features: name it with "
                f"cat_kd.{role}_classifier"
            )
        path, head = found[-1]
    else:
        head = check_module_paths(model, [path])[path]
    if not isinstance(head, nn.Linear):
        raise ConfigError(
            f"cat_kd.{role}_classifier={path!r} is a {type(head).__name__}, not an nn.Linear; "
            "name the linear classifier"
        )
    if head.in_features != shape[0] or head.out_features != k:
        raise ConfigError(
            f"cat_kd: the {role}'s classifier {path!r} maps {head.in_features} features to "
            f"{head.out_features} classes but its feature map has {shape[0]} channels and "
            f"there are {k} classes; tap the map the classifier pools (model.cam_layer)"
        )
    return path, head
