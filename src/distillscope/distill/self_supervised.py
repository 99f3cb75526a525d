"""SSKD: knowledge distillation meets self-supervision (Xu, Liu, Li & Loy, ECCV 2020).

Paper 000 B.4.4 lists it among the methods whose students it audits. Every image ``x`` comes
with three rotated copies (90, 180, 270 degrees); the student and the teacher see the batch
and its copies in one pass. A projection head ``h`` (Linear-ReLU-Linear on the penultimate
feature ``f``) turns features into representations ``r = h(f)``; the self-supervision task is
to tell which original each rotated copy comes from:

    S[j, i] = cos(r(x~_j), r(x_i))                     (3B, B): copy j against original i

With ``KL_T(p, q) = T^2 KL(softmax(p / T) || softmax(q / T))`` (batch mean),

    L = w_ce CE(z_S(x), y) + w_kd KL_Tkd(z_T(x), z_S(x))
        + w_tf KL_Ttf(z_T(x~), z_S(x~))[kept_tf] + w_ss KL_Tss(S_T, S_S)[kept_ss]

The rotated copies' terms keep the copies the teacher gets right and the first ``ratio`` of
the ones it gets wrong, ranked by how far down the teacher's ranking the right answer sits
(true class for ``tf``, own original for ``ss``): the paper's "error level ranking".

The teacher's head is trained first (the stage ``sskd/head``, :meth:`SelfSupervisedKD.stages`,
run by the trainer's stage runner), the teacher frozen, with cross-entropy on ``S_T`` (no
temperature), then frozen (:meth:`SelfSupervisedKD.prepare`); the student's head trains with
the student.

Reference choices follow the authors' code (xuguodong03/SSKD): weights 0.1 / 0.9 / 2.7 / 10,
temperatures 4 / 4 / 0.5, ratios 1.0 / 0.75, the head on the flattened penultimate feature,
one student forward over the batch and its copies. Ours: the teacher head trains for
``head_epochs`` (default 2) passes at ``head_lr`` 0.05 with SGD (momentum 0.9, weight decay
5e-4) instead of their 60 epochs with a step schedule, to fit a CPU budget.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillscope.checks import check_int, check_range
from distillscope.contracts import Batch, Outputs, Views
from distillscope.distill.base import BindContext, Stage
from distillscope.distill.feature_base import SingleLayerTerm
from distillscope.distill.logit import require_teacher
from distillscope.errors import ConfigError, TrainingError
from distillscope.functional.relation import kept_by_error_level, view_similarity
from distillscope.functional.soft_targets import kd_loss
from distillscope.models.forward import forward_outputs
from distillscope.models.taps import FeatureTap
from distillscope.registry import register_loss

#: Rotations of the copies, as ``k`` of ``torch.rot90`` (90, 180, 270 degrees).
ROTATIONS = (1, 2, 3)


def rotated_views(inputs: Tensor) -> Tensor:
    """``(3B, C, H, W)``: the batch rotated by 90, 180 and 270 degrees, view-major.

    Example:
        >>> x = torch.arange(4.0).view(1, 1, 2, 2)
        >>> rotated_views(x)[:, 0].tolist()
        [[[1.0, 3.0], [0.0, 2.0]], [[3.0, 2.0], [1.0, 0.0]], [[2.0, 0.0], [3.0, 1.0]]]
    """
    return torch.cat([torch.rot90(inputs, k, dims=(2, 3)) for k in ROTATIONS])


def _kl_rows(student: Tensor, teacher: Tensor, temperature: float, rows: Tensor) -> Tensor:
    """``T^2 KL`` over ``rows`` (0 when none is kept)."""
    if rows.numel() == 0:
        return student.sum() * 0.0
    return kd_loss(student[rows], teacher[rows], temperature)


def _head(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))


@register_loss("sskd")
class SelfSupervisedKD(SingleLayerTerm):
    """SSKD (Xu et al. 2020; paper 000 B.4.4); see the module docstring for the formula.

    Args:
        ce_weight, kd_weight, tf_weight, ss_weight: ``w_ce``, ``w_kd``, ``w_tf``, ``w_ss``.
        kd_temperature, tf_temperature, ss_temperature: ``T_kd``, ``T_tf``, ``T_ss``.
        tf_ratio, ss_ratio: Share in ``[0, 1]`` of the wrongly ranked copies kept.
        student_layer: Student path of the penultimate feature (default: the last of
            ``model.feature_layers``).
        teacher_layer: The same for the teacher.
        head_epochs: Passes over the training set that train the teacher's head.
        head_lr: Its learning rate.

    Parts:
        ``sskd/ce``, ``sskd/kd``, ``sskd/tf``, ``sskd/ss`` (unweighted), ``sskd/ss_acc``
        (share of copies the student's head matches to their original; not in the loss).
    """

    needs: ClassVar[set[str]] = {"logits", "teacher", "features", "views"}
    default_layers: ClassVar[str | None] = "last"

    def __init__(
        self,
        ce_weight: float = 0.1,
        kd_weight: float = 0.9,
        tf_weight: float = 2.7,
        ss_weight: float = 10.0,
        kd_temperature: float = 4.0,
        tf_temperature: float = 4.0,
        ss_temperature: float = 0.5,
        tf_ratio: float = 1.0,
        ss_ratio: float = 0.75,
        student_layer: str | None = None,
        teacher_layer: str | None = None,
        head_epochs: int = 2,
        head_lr: float = 0.05,
    ) -> None:
        super().__init__(student_layer, teacher_layer)
        self.weights = {
            name: check_range(f"sskd.{name}_weight", value, 0.0)
            for name, value in (
                ("ce", ce_weight), ("kd", kd_weight), ("tf", tf_weight), ("ss", ss_weight)
            )
        }  # fmt: skip
        given = (("kd", kd_temperature), ("tf", tf_temperature), ("ss", ss_temperature))
        self.temperatures = {
            name: check_range(f"sskd.{name}_temperature", value, 0.0, low_open=True)
            for name, value in given
        }
        self.tf_ratio = check_range("sskd.tf_ratio", tf_ratio, 0.0, 1.0)
        self.ss_ratio = check_range("sskd.ss_ratio", ss_ratio, 0.0, 1.0)
        self.head_epochs = check_int("sskd.head_epochs", head_epochs, minimum=0)
        self.head_lr = check_range("sskd.head_lr", head_lr, 0.0, low_open=True)
        self.student_head: nn.Module | None = None
        self.teacher_head: nn.Module | None = None

    # ------------------------------------------------------------------ set-up
    def make_views(self, inputs: Tensor) -> Tensor:
        if inputs.dim() != 4 or inputs.shape[-1] != inputs.shape[-2]:
            raise ConfigError(
                f"sskd rotates images by 90 degrees; inputs {tuple(inputs.shape[1:])} are not "
                "square images (C, H, H); use image data with H == W"
            )
        return rotated_views(inputs)

    def bind(self, ctx: BindContext) -> None:
        self.make_views(ctx.batch.inputs)  # refuses non-square or non-image inputs
        teacher = self.bind_teacher(ctx)
        s_dim = ctx.student_outputs.features[self.student_layer].flatten(1).shape[1]
        t_dim = teacher.features[self.teacher_layer].flatten(1).shape[1]
        self.student_head = _head(s_dim)
        self.teacher_head = _head(t_dim)

    def stages(self, student: nn.Module, teacher: nn.Module | None) -> list[Stage]:
        """The teacher head's stage (``head_epochs > 0``): the head learns the rotation task on
        the frozen teacher's features, SGD at ``head_lr`` (momentum 0.9, weight decay 5e-4)."""
        head, teacher, layer = self._teacher_parts(teacher)
        if self.head_epochs == 0:
            return []

        @contextmanager
        def rotation_task() -> Iterator[Callable[[Batch], Tensor]]:
            with FeatureTap(teacher, [layer], detach=True) as tap:

                def loss_of(batch: Batch) -> Tensor:
                    x = batch.inputs
                    with torch.no_grad():
                        out = forward_outputs(teacher, torch.cat([x, rotated_views(x)]), tap)
                    rep = head(out.features[layer].flatten(1))  # (4B, d)
                    n = len(batch)
                    simi = view_similarity(rep[n:], rep[:n])  # (3B, B)
                    target = torch.arange(n, device=x.device).repeat(len(ROTATIONS))
                    return F.cross_entropy(simi, target)

                yield loss_of

        return [
            Stage(
                "head",
                self.head_epochs,
                list(head.parameters()),
                partial(torch.optim.SGD, lr=self.head_lr, momentum=0.9, weight_decay=5e-4),
                rotation_task,
                train=(head,),
                eval=(teacher,),
            )
        ]

    def prepare(
        self, student: nn.Module, teacher: nn.Module | None, batches: Iterable[Batch]
    ) -> None:
        """Freeze the teacher's head (trained by its stage, :meth:`stages`)."""
        head, _, _ = self._teacher_parts(teacher)
        head.requires_grad_(False)
        head.eval()

    def _teacher_parts(self, teacher: nn.Module | None) -> tuple[nn.Module, nn.Module, str]:
        head = self.teacher_head
        if teacher is None or head is None or self.teacher_layers is None:
            raise TrainingError("sskd's teacher head is trained on the teacher; bind it first")
        return head, teacher, self.teacher_layer

    # ------------------------------------------------------------------ loss
    def data_parallel_issue(self) -> str | None:
        """Contrasts each view with every other item of the batch."""
        return (
            "contrasts each item's views with the other items of the batch, and a "
            "data-parallel rank sees only its share of the batch"
        )

    def forward(
        self, student: Outputs, teacher: Outputs | None, batch: Batch, views: Views | None = None
    ) -> dict[str, Tensor]:
        teacher = require_teacher(self.name, teacher)
        if views is None or views.teacher is None:
            raise TrainingError(
                "sskd got no rotated views; train it with the Trainer (not in a group), which "
                "runs the student and the teacher on the views"
            )
        assert self.student_head is not None and self.teacher_head is not None
        n, t = len(batch), self.temperatures
        copies = len(ROTATIONS)
        t_nor, t_aug = teacher.logits.detach(), views.teacher.logits.detach()  # (B, K), (3B, K)
        ce = F.cross_entropy(student.logits, batch.targets)
        kd = kd_loss(student.logits, t_nor, t["kd"])
        aug_target = batch.targets.repeat(copies)  # (3B,) view-major, as the views
        kept_tf = kept_by_error_level(t_aug, aug_target, self.tf_ratio)
        tf = _kl_rows(views.student.logits, t_aug, t["tf"], kept_tf)
        s_rep = self.student_head(_both(student, views.student, self.student_layer))  # (4B, d)
        with torch.no_grad():
            t_rep = self.teacher_head(_both(teacher, views.teacher, self.teacher_layer))
        s_simi = view_similarity(s_rep[n:], s_rep[:n])  # (3B, B)
        t_simi = view_similarity(t_rep[n:], t_rep[:n]).detach()  # (3B, B)
        own = torch.arange(n, device=s_simi.device).repeat(copies)  # (3B,)
        kept_ss = kept_by_error_level(t_simi, own, self.ss_ratio)
        ss = _kl_rows(s_simi, t_simi, t["ss"], kept_ss)
        w = self.weights
        total = w["ce"] * ce + w["kd"] * kd + w["tf"] * tf + w["ss"] * ss
        ss_acc = (s_simi.detach().argmax(1) == own).float().mean()
        return {"loss": total, "sskd/ce": ce, "sskd/kd": kd, "sskd/tf": tf, "sskd/ss": ss,
                "sskd/ss_acc": ss_acc}  # fmt: skip

    def extra_repr(self) -> str:
        return (
            f"weights={self.weights}, temperatures={self.temperatures}, "
            f"ratios=({self.tf_ratio}, {self.ss_ratio}), layers={self.named()!r}"
        )


def _both(batch_out: Outputs, view_out: Outputs, path: str) -> Tensor:
    """``(4B, d)``: the flattened feature at ``path`` of the batch, then of its views."""
    return torch.cat([batch_out.features[path].flatten(1), view_out.features[path].flatten(1)])


__all__ = ["SelfSupervisedKD", "kept_by_error_level", "rotated_views", "view_similarity"]
