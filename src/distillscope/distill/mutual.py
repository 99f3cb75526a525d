"""Mutual learning: several networks trained together, each learning from the others.

``dml`` is Deep Mutual Learning (Zhang, Xiang, Hospedales & Lu 2018, "Deep Mutual Learning").
A group of peers (students sharing ``group:`` in the config) trains in one loop
(:class:`~distillscope.train.trainer.Trainer` given several networks); each peer's loss
receives the other peers' detached outputs as ``peers``.
"""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from distillscope.checks import check_range
from distillscope.contracts import Batch, Outputs
from distillscope.distill.base import LossTerm
from distillscope.errors import TrainingError
from distillscope.functional.logit import mutual_learning_kl
from distillscope.registry import register_loss


@register_loss("dml")
class DeepMutualLearning(LossTerm):
    """Deep mutual learning (Zhang et al. 2018, eq. 10 for K networks).

    ``L_k = CE(z_k, y) + 1 / (K - 1) * sum_{l != k} T^2 KL(p_l || p_k)``,
    ``p = softmax(z / T)``

    The peers' distributions ``p_l`` are detached: each network is updated with the others as
    fixed targets. The paper (Algorithm 1) updates the peers one after the other, recomputing the
    predictions after each update; we update all peers from the same forward pass, as most
    public implementations do, which saves ``K - 1`` extra forward passes per step. The paper
    uses ``T = 1``; at other temperatures the ``T^2`` factor keeps the gradient scale (Hinton
    et al.), and is 1 at ``T = 1``. The maths is
    :func:`~distillscope.functional.logit.mutual_learning_kl` (which says why it is not a loop
    over ``kd_loss``).

    Args:
        temperature: ``T > 0`` of the mimicry term (paper: 1).

    Parts:
        ``dml/ce``: cross-entropy with the labels.
        ``dml/kl``: the mean ``T^2 KL`` to the other peers.
    """

    needs: ClassVar[set[str]] = {"logits", "peers"}

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = check_range("dml.temperature", temperature, 0.0, low_open=True)

    def forward(
        self,
        student: Outputs,
        teacher: Outputs | None,
        batch: Batch,
        peers: list[Outputs] | None = None,
    ) -> dict[str, Tensor]:
        if not peers:
            raise TrainingError(
                "loss term 'dml' needs the other peers' outputs; put two or more students with "
                "dml in one group (students.<name>.group: <group name>)"
            )
        peer_logits = [p.logits.detach() for p in peers]  # fixed targets
        kl = mutual_learning_kl(student.logits, peer_logits, self.temperature)  # ()
        ce = F.cross_entropy(student.logits, batch.targets)  # ()
        return {"loss": ce + kl, "dml/ce": ce, "dml/kl": kl}

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"
