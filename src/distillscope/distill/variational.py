"""Variational information distillation (VID): the student's features predict the teacher's
under a Gaussian with a learned per-channel variance, maximising a lower bound on their mutual
information (Ahn, Hu, Damianou, Lawrence & Dai 2019, CVPR)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from distillscope.checks import check_range
from distillscope.contracts import Batch, Outputs
from distillscope.distill.base import BindContext, LossTerm
from distillscope.distill.feature_pairs import (
    MAPS_OR_VECTORS,
    check_layer_pairs,
    features,
    pair_shapes,
)
from distillscope.distill.logit import require_teacher
from distillscope.errors import TrainingError
from distillscope.functional.feature import match_spatial, vid_nll
from distillscope.registry import register_loss

# RepDistiller's and mdistiller's VID: the variance starts at 5 and is floored at 1e-5.
VID_INIT_VAR = 5.0
VID_EPS = 1e-5


def vid_regressor(channels_in: int, channels_out: int, map_kind: bool) -> nn.Sequential:
    """``mu(s)``: three 1x1 convolutions (linear layers for vectors) with ReLUs, no biases.

    The paper's "1x1 convolutional layers" (section 4.1) in RepDistiller's form: hidden width
    equal to the teacher's channels.
    """

    def layer(c_in: int, c_out: int) -> nn.Module:
        if map_kind:
            return nn.Conv2d(c_in, c_out, 1, bias=False)
        return nn.Linear(c_in, c_out, bias=False)

    c_s, c_t = channels_in, channels_out
    return nn.Sequential(layer(c_s, c_t), nn.ReLU(), layer(c_t, c_t), nn.ReLU(), layer(c_t, c_t))


@register_loss("vid")
class VariationalInformationDistillation(LossTerm):
    """VID (Ahn et al. 2019, "Variational Information Distillation for Knowledge Transfer").

    ``L = sum_i mean_{b,c,h,w} 1/2 [(t_i - mu_i(s_i))^2 / sigma_ic^2 + log sigma_ic^2]``,
    ``sigma_ic^2 = softplus(alpha_ic) + eps``

    over layer pairs ``i``: the negative log-likelihood of the teacher's feature under a
    Gaussian whose mean a regressor ``mu_i`` predicts from the student's feature and whose
    variance is a learned constant per channel (paper, eqs. 2 and 4). The paper sums over
    channels and positions; RepDistiller and mdistiller average over every element and drop
    the constant ``1/2 log 2 pi``: we follow them (their weight is 1). ``mu_i`` (three 1x1
    convolutions, :func:`vid_regressor`) and ``alpha_i`` are built at bind from the shapes and
    trained with the student; ``alpha`` starts where ``sigma^2 = init_var``. Where the maps
    differ in size the larger is average-pooled to the smaller (RepDistiller). Vector pairs
    ``(D,)`` get linear layers, as the paper does for fully connected layers.

    Args:
        student_layers: Student module paths (RepDistiller: the residual stages' outputs).
        teacher_layers: Teacher module paths, one per student path.
        init_var: The variance every channel starts with; RepDistiller's 5.
        eps: Floor of the variance; RepDistiller's 1e-5.

    Parts:
        ``vid/<student layer>``: each pair's NLL (they sum to ``loss``).

    Raises:
        ConfigError: At bind, a pair that is not two maps or two vectors.
    """

    name: ClassVar[str] = "vid"
    needs: ClassVar[set[str]] = {"features", "teacher"}

    def __init__(
        self,
        student_layers: list[str],
        teacher_layers: list[str],
        init_var: float = VID_INIT_VAR,
        eps: float = VID_EPS,
    ) -> None:
        super().__init__()
        self.student_layers, self.teacher_layers = check_layer_pairs(
            "vid", student_layers, teacher_layers
        )
        self.eps = check_range("vid.eps", eps, 0.0, low_open=True)
        self.init_var = check_range("vid.init_var", init_var, self.eps, low_open=True)
        self.regressors: nn.ModuleList | None = None
        self.log_scales: nn.ParameterList | None = None

    def student_paths(self) -> list[str]:
        return list(self.student_layers)

    def teacher_paths(self) -> list[str]:
        return list(self.teacher_layers)

    def bind(self, ctx: BindContext) -> None:
        regressors, log_scales = [], []
        # softplus(alpha) + eps = init_var  <=>  alpha = log(exp(init_var - eps) - 1)
        alpha = math.log(math.expm1(self.init_var - self.eps))
        for s_path, t_path in zip(self.student_layers, self.teacher_layers):
            s, t = pair_shapes(self.name, ctx, s_path, t_path, MAPS_OR_VECTORS)
            regressors.append(vid_regressor(s[0], t[0], map_kind=len(s) == 3))
            log_scales.append(nn.Parameter(torch.full((t[0],), alpha)))
        device = ctx.student_outputs.features[self.student_layers[0]].device
        self.regressors = nn.ModuleList(regressors).to(device)
        self.log_scales = nn.ParameterList(log_scales).to(device)

    def variances(self) -> list[Tensor]:
        """``sigma^2`` per pair, ``(C_t,)`` each."""
        _, log_scales = self._bound()
        return [nn.functional.softplus(a) + self.eps for a in log_scales]

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        teacher = require_teacher(self.name, teacher)
        regressors, log_scales = self._bound()
        s_feats = features(student, self.student_layers)
        t_feats = features(teacher, self.teacher_layers, detach=True)
        parts = []
        for regressor, alpha, s, t in zip(regressors, log_scales, s_feats, t_feats):
            s, t = match_spatial(s, t)
            parts.append(vid_nll(regressor(s.contiguous()), t, alpha, self.eps))  # ()
        out = {f"vid/{p}": v for p, v in zip(self.student_layers, parts)}
        return {"loss": torch.stack(parts).sum(), **out}

    def _bound(self) -> tuple[nn.ModuleList, nn.ParameterList]:
        if self.regressors is None or self.log_scales is None:
            raise TrainingError("vid was not bound; bind the loss (Trainer.fit does) first")
        return self.regressors, self.log_scales

    def extra_repr(self) -> str:
        return (
            f"student_layers={self.student_layers}, teacher_layers={self.teacher_layers}, "
            f"init_var={self.init_var:g}, eps={self.eps:g}"
        )
