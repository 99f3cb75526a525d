"""Contrastive representation distillation (CRD; Tian, Krishnan & Isola 2020).

The CRD method of papers 000 and 003: the student's embedding of an image is pulled towards the
teacher's embedding of the same image and pushed from the teacher's embeddings of images of other
classes, kept in a memory bank over the whole training set (indexed by ``Batch.index``), with a
noise-contrastive estimate of the softmax over the bank.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from distillscope.checks import check_int, check_range
from distillscope.contracts import Batch, Outputs
from distillscope.distill.base import BindContext
from distillscope.distill.feature_base import SingleLayerTerm
from distillscope.distill.relation import Embed
from distillscope.errors import ConfigError, TrainingError
from distillscope.functional.relation import (
    CRD_SAMPLERS,
    contrast_draws,
    contrast_scores,
    memory_update,
    nce_loss,
)
from distillscope.registry import register_loss

__all__ = ["ContrastiveRepresentation", "nce_loss"]


@register_loss("crd")
class ContrastiveRepresentation(SingleLayerTerm):
    """Contrastive representation distillation (Tian et al. 2020; papers 000 and 003).

    Both features (``student_layer``, ``teacher_layer``; the pooled penultimate ones in the
    paper, by default the last of each model's ``feature_layers``) are embedded (linear to
    ``dim`` + L2 normalisation; heads built at bind and trained with the student). Two memory
    banks of ``N x dim`` (``N`` = the training set's size, known at
    bind) hold a running embedding of every image, one per network. For each sample of a batch,
    ``sampler`` picks a positive row and ``K`` negative rows (:func:`contrast_draws`); by default
    (``"exact"``) the positive is the sample's own row and the negatives are ``K`` distinct items
    of the other classes (with repeats only when the other classes hold fewer than ``K``). The
    student's embedding is scored against the teacher bank's rows and vice versa,
    ``s = exp(<v, m> / tau) / Z``, with ``Z`` estimated once from the first training batch as
    ``N * mean(exp(<v, m> / tau))``; ``L = NCE(student side) + NCE(teacher side)``
    (:func:`nce_loss`, noise ``1 / N``). After each training step the banks' rows of the batch
    move towards the new embeddings with momentum ``m`` and are renormalised.

    The default follows RepDistiller's CIFAR-100 training (``train_student.py`` with its default
    ``--mode exact``, whose ``CIFAR100InstanceSample`` draws the negatives from the other classes;
    its memory's uniform draw is used only when no indices are given, which its training never
    does). ``sampler: relax`` is its other mode (the positive is a random item of the sample's
    class); ``sampler: uniform`` is ours, what distillscope did before: ``K`` rows uniformly
    from all ``N`` with replacement, the sample's class and the sample itself included (on 10
    balanced classes about one negative in ten is of the sample's own class). Constants as the
    paper and RepDistiller: ``K = 16384`` negatives (ours: fewer when the training set is
    smaller, ``min(K, N - 1)``), ``tau = 0.07``, ``m = 0.5``, ``dim = 128``, banks initialised
    uniformly in ``+-1 / sqrt(dim / 3)``; RepDistiller weighs CRD 0.8 beside CE. The class of
    every training item comes at bind (``BindContext.train_targets``). Draws come from the global
    torch generator, whose state the trainer saves with each checkpoint, so a resumed run draws
    the same ones. The banks and ``Z`` are buffers saved with the student's checkpoint; the banks
    are updated in training mode only.

    The step's largest tensors are the bank rows it scores, ``B (1 + K) dim`` floats per side
    (268 MB for ``B = 128``, ``K = 4096``, ``dim = 128``). They are gathered into a workspace
    kept between steps (one per side, not saved with the state), which gives the same values as
    a fresh gather but spares the CPU the page faults of newly allocated memory, most of a fresh
    gather's time (``benchmarks/reference_speed.py``). So two training-mode forward passes
    cannot share one backward: the first pass's backward then fails (its rows were overwritten)
    rather than read the second's. In eval mode the rows are gathered afresh, and switching to
    it frees the workspace; copies and pickles of the term leave it behind.

    Args:
        dim: Embedding size (128).
        negatives: ``K`` (16384).
        temperature: ``tau > 0`` (0.07).
        momentum: Bank momentum ``m`` in ``[0, 1)`` (0.5).
        sampler: ``"exact"`` (RepDistiller's default), ``"relax"`` (its other mode) or
            ``"uniform"`` (ours); see above.

    Parts: ``crd/student`` (NCE of the student's embedding against the teacher bank),
    ``crd/teacher`` (the teacher's against the student bank).
    """

    default_layers: ClassVar[str | None] = "last"

    def __init__(
        self,
        student_layer: str | None = None,
        teacher_layer: str | None = None,
        dim: int = 128,
        negatives: int = 16384,
        temperature: float = 0.07,
        momentum: float = 0.5,
        sampler: str = "exact",
    ) -> None:
        super().__init__(student_layer, teacher_layer)
        self.dim = check_int("crd.dim", dim)
        self.negatives = check_int("crd.negatives", negatives)
        self.temperature = check_range("crd.temperature", temperature, 0.0, low_open=True)
        self.momentum = check_range("crd.momentum", momentum, 0.0, 1.0, high_open=True)
        if sampler not in CRD_SAMPLERS:
            raise ConfigError(
                f"crd.sampler={sampler!r} is invalid; use one of {', '.join(CRD_SAMPLERS)}"
            )
        self.sampler = sampler
        self.embed_s: Embed | None = None
        self.embed_t: Embed | None = None
        self.k = 0
        self._rows: dict[str, Tensor] = {}  # side -> (B (1+K), dim) workspace, see above

    def bind(self, ctx: BindContext) -> None:
        teacher = self.bind_teacher(ctx)
        if ctx.num_train < 2:
            raise ConfigError("crd needs a training set of two or more items for its memory bank")
        s = ctx.student_outputs.features[self.student_layer]
        t = teacher.features[self.teacher_layer]
        device = s.device
        self.embed_s = Embed(s.reshape(s.shape[0], -1).shape[1], self.dim).to(device)
        self.embed_t = Embed(t.reshape(t.shape[0], -1).shape[1], self.dim).to(device)
        self.k = min(self.negatives, ctx.num_train - 1)
        if self.sampler != "uniform":
            self._bind_labels(ctx)
        bound = 1.0 / math.sqrt(self.dim / 3)
        for side in ("student", "teacher"):
            bank = torch.rand(ctx.num_train, self.dim, device=device) * 2 * bound - bound
            self.register_buffer(f"bank_{side}", bank)  # (N, dim)
            self.register_buffer(f"z_{side}", torch.full((), -1.0, device=device))

    def data_parallel_issue(self) -> str | None:
        """Each rank would update its own memory banks from its share of the batches."""
        return (
            "keeps memory banks of every training item updated from each batch, which the "
            "ranks would each update from their own share"
        )

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        if self.embed_s is None or self.embed_t is None:
            raise TrainingError("crd was not bound; bind the loss (Trainer.fit does) first")
        s, t = self.pair(student, teacher)
        v_s, v_t = self.embed_s(s), self.embed_t(t)  # (B, dim) each
        bank_s: Tensor = self.bank_student  # type: ignore[assignment]
        bank_t: Tensor = self.bank_teacher  # type: ignore[assignment]
        n, index = bank_s.shape[0], batch.index.to(bank_s.device)
        if int(index.max()) >= n:
            raise TrainingError(
                f"crd's memory bank holds {n} items but the batch has index {int(index.max())}; "
                "train on the data the loss was bound to"
            )
        labels: Tensor | None = getattr(self, "labels", None)
        draws = contrast_draws(index, n, self.k, self.sampler, labels)  # (B, 1+K)
        score_s = self._scores(bank_t, draws, v_s, "z_student", n)  # (B, 1+K)
        score_t = self._scores(bank_s, draws, v_t, "z_teacher", n)  # (B, 1+K)
        loss_s, loss_t = nce_loss(score_s, n), nce_loss(score_t, n)
        if self.training:
            self._update(bank_s, index, v_s)
            self._update(bank_t, index, v_t)
        return {"loss": loss_s + loss_t, "crd/student": loss_s, "crd/teacher": loss_t}

    def _bind_labels(self, ctx: BindContext) -> None:
        labels = ctx.train_targets
        if labels is None or labels.shape != (ctx.num_train,):
            raise ConfigError(
                f"crd's {self.sampler!r} sampler draws negatives from the other classes and needs "
                "the class of every training item; bind it through the trainer, or use "
                "sampler: uniform"
            )
        labels = labels.to(ctx.student_outputs.logits.device, torch.long)
        if bool((labels == labels[0]).all()):
            raise ConfigError(
                f"crd's {self.sampler!r} sampler draws negatives from the other classes, but the "
                "training set holds one class; use sampler: uniform"
            )
        # rebuilt at every bind (a resumed run binds again), so not saved in checkpoints
        self.register_buffer("labels", labels, persistent=False)  # (N,)

    def _scores(self, bank: Tensor, draws: Tensor, v: Tensor, z_name: str, n: int) -> Tensor:
        rows = self._gather(bank, draws, z_name)  # (B, 1+K, dim), bank[draws]
        scores = contrast_scores(rows, v, self.temperature)  # (B, 1+K)
        z: Tensor = getattr(self, z_name)
        if float(z) < 0:  # the first training batch fixes the normalising constant
            estimate = scores.detach().mean() * n
            if self.training:
                z.fill_(float(estimate))
            return scores / estimate
        return scores / z

    def _gather(self, bank: Tensor, draws: Tensor, side: str) -> Tensor:
        """``bank[draws]`` ``(B, 1+K, dim)``, in training copied into ``side``'s workspace (see
        the class docstring).

        An in-place copy moves the workspace's version counter, so a graph that saved the
        previous rows refuses its backward instead of reading these.
        """
        shape = (draws.numel(), bank.shape[1])
        if not self.training:
            return bank.index_select(0, draws.reshape(-1)).view(*draws.shape, shape[1])
        rows = self._rows.get(side)
        inference = torch.is_inference_mode_enabled()
        if (
            rows is None
            or rows.shape != shape
            or rows.dtype != bank.dtype
            or rows.device != bank.device
            or rows.is_inference() != inference
        ):
            rows = self._rows[side] = torch.empty(shape, dtype=bank.dtype, device=bank.device)
        torch.index_select(bank, 0, draws.reshape(-1), out=rows)  # (B (1+K), dim)
        return rows.view(*draws.shape, shape[1])  # (B, 1+K, dim)

    def train(self, mode: bool = True) -> ContrastiveRepresentation:
        if not mode:
            self._rows.clear()  # eval mode frees the workspace (class docstring)
        return super().train(mode)

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        state["_rows"] = {}  # copies and pickles leave the workspace behind
        return state

    def _update(self, bank: Tensor, index: Tensor, v: Tensor) -> None:
        with torch.no_grad():
            bank[index] = memory_update(bank[index], v.detach(), self.momentum)  # (B, dim)

    def extra_repr(self) -> str:
        k = self.k or self.negatives
        return f"{super().extra_repr()}, dim={self.dim}, negatives={k}, sampler={self.sampler}"
