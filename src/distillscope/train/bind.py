"""Bind a loss to its networks on one sample batch, before anything trains.

:func:`bind_loss` is the start-up dry run (``docs/architecture.md``): it taps the
feature paths the loss asks for (a wrong path fails here, naming the valid ones), runs a small
sample batch through the student and the teacher in eval mode, lets every term build its owned
modules from the shapes it sees (:meth:`~distillscope.distill.base.LossTerm.bind`, under a seed
of its own), and runs the loss once on a throw-away copy, so a pair the loss cannot apply to
fails in seconds with one line instead of after the teachers have trained. Binding is
deterministic: a resumed run binds again and then loads the saved loss state over it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from distillscope.contracts import Batch, Outputs, Views
from distillscope.data.base import DistillDataset
from distillscope.distill.base import BindContext, LossTerm, rng_devices
from distillscope.errors import ConfigError, UserError
from distillscope.models.forward import forward_outputs
from distillscope.models.taps import FeatureTap

#: Items in the sample batch a loss is bound on.
BIND_SAMPLES = 8


def sample_batch(
    dataset: DistillDataset, device: str | torch.device, n: int = BIND_SAMPLES
) -> Batch:
    """The first ``n`` items of ``dataset`` as a batch on ``device``, global RNGs untouched.

    Example:
        >>> from distillscope.data.base import DatasetInfo, TensorDataset
        >>> data = TensorDataset(torch.randn(20, 3), torch.zeros(20),
        ...                      DatasetInfo("toy", 2, (3,), ["a", "b"]))
        >>> sample_batch(data, "cpu").index.tolist()
        [0, 1, 2, 3, 4, 5, 6, 7]
    """
    n = min(n, len(dataset))
    if n == 0:
        raise ConfigError("cannot bind a loss on an empty training set; check the dataset")
    with torch.random.fork_rng(devices=[]):  # __getitem__ may augment at random
        items = [dataset[i] for i in range(n)]
    inputs = torch.stack([torch.as_tensor(x) for x, _, _ in items])  # (n, ...)
    targets = torch.as_tensor([int(y) for _, y, _ in items], dtype=torch.long)  # (n,)
    return Batch(inputs, targets, torch.arange(n)).to(device)


def run_outputs(model: nn.Module, batch: Batch, paths: list[str], grad: bool = False) -> Outputs:
    """``batch`` through ``model`` in eval mode, with ``paths`` tapped.

    Under ``no_grad`` and detached, unless ``grad``: then the logits and features keep their
    graph (a loss that explains the student differentiates through them). The model's
    train/eval mode is restored; BatchNorm statistics are not touched.
    """
    was_training = model.training
    model.eval()
    try:
        with ExitStack() as stack:
            tap = stack.enter_context(FeatureTap(model, paths, detach=not grad)) if paths else None
            if grad:
                return forward_outputs(model, batch.inputs, tap)
            with torch.no_grad():
                return forward_outputs(model, batch.inputs, tap).detach()
    finally:
        model.train(was_training)


def explained_outputs(loss: LossTerm, teacher: nn.Module, inputs: Tensor) -> Outputs:
    """The teacher's outputs with its explanation (``loss.explain_teacher``), eval mode.

    The teacher's train/eval mode is restored; gradients flow only to the explained
    activations, never into the teacher's parameters' ``.grad``.
    """
    was_training = teacher.training
    teacher.eval()
    try:
        with torch.enable_grad():
            return loss.explain_teacher(teacher, inputs).detach()
    finally:
        teacher.train(was_training)


def bind_loss(
    loss: LossTerm,
    student: nn.Module,
    teacher: nn.Module | None,
    train: DistillDataset,
    *,
    device: str | torch.device,
    seed: int = 0,
    name: str = "student",
    teacher_outputs: Callable[[Batch], Outputs] | None = None,
    peers: Sequence[nn.Module] = (),
) -> None:
    """Bind ``loss`` (a :class:`~distillscope.distill.base.LossTerm`; a combination is one).

    Args:
        loss: The student's loss; its owned modules are built on its current device.
        student: The student network (on ``device``).
        teacher: The teacher network (on ``device``), or ``None`` when the loss reads no teacher
            or only a cache is at hand (then pass ``teacher_outputs``). Given with
            ``teacher_outputs``, it is only shown to the loss (``attach``: e2KD picks B-cos
            explanations when both networks are B-cos) and not run.
        train: The training set (its size sizes memory banks, its targets go to the loss as
            ``train_targets``; its first items are the sample).
        device: Where the sample batch goes.
        seed: The run's seed; each term binds under a seed made from it and the term's key.
        name: The member's name, for messages.
        teacher_outputs: Gives the teacher's outputs for a batch (a teacher cache); used
            instead of running ``teacher``.
        peers: The other networks of the member's group (on ``device``), run on the sample
            with the loss's :meth:`~distillscope.distill.base.LossTerm.peer_paths` for a loss
            that learns from peers.

    Raises:
        ModelError: A feature path names no module of the network.
        ConfigError: The loss cannot apply to this pair (a term refuses it, or the loss fails
            on the sample batch); the message names the member and the term.
    """
    batch = sample_batch(train, device)
    explains = "explanation" in loss.needs
    try:
        loss.attach(student, teacher)
    except UserError as exc:
        raise type(exc)(f"{name!r}: {exc}") from None
    try:
        paths = loss.student_paths()
        role = "student"
        with loss.student_context(student):  # as the student will train
            student_out = run_outputs(student, batch, paths, grad=explains)
        teacher_out = None
        live = teacher is not None and teacher_outputs is None  # a cache wins over running it
        if loss.needs_teacher and live:
            assert teacher is not None
            paths = loss.teacher_paths()
            role = "teacher"
            teacher_out = run_outputs(teacher, batch, paths)
            if explains:
                explained = explained_outputs(loss, teacher, batch.inputs)
                teacher_out = replace(teacher_out, explanation=explained.explanation)
        peer_out = None
        if loss.needs_peers and peers:
            paths, role = loss.peer_paths(), "peer"
            peer_out = [run_outputs(peer, batch, paths) for peer in peers]
    except UserError as exc:
        raise type(exc)(f"{name!r} (its {role}'s layers {paths}): {exc}") from None
    if loss.needs_teacher and teacher_out is None:
        if teacher_outputs is not None:
            teacher_out = teacher_outputs(batch)
        else:
            raise ConfigError(f"{name!r}: its loss needs a teacher; give it one (teacher: <name>)")
    try:
        targets: Tensor | None = train.targets_tensor()  # (N,)
    except NotImplementedError:  # a dataset that cannot list its targets; CRD's sampler refuses
        targets = None
    ctx = BindContext(
        student=student,
        teacher=teacher,
        batch=batch,
        student_outputs=student_out,
        teacher_outputs=teacher_out,
        num_train=len(train),
        num_classes=int(student_out.logits.shape[1]),
        train_targets=targets,
        peer_outputs=peer_out,
    )
    try:
        loss.bind_seeded(ctx, seed)
    except UserError as exc:
        raise type(exc)(f"{name!r}: {exc}") from None
    with loss.student_context(student):  # the loss runs in it while training (a B-cos W(x))
        _dry_run(loss, ctx, name, grad=explains)


def _dry_run(loss: LossTerm, ctx: BindContext, name: str, grad: bool = False) -> None:
    """Run a copy of the bound loss once on the sample; a failure is the pair's, told in a line.

    With ``grad`` (a loss that differentiates the student's explanation) autograd stays on.
    """
    trial = copy.deepcopy(loss)
    try:
        with (
            torch.random.fork_rng(devices=rng_devices(ctx.batch.inputs)),
            torch.set_grad_enabled(grad),
        ):
            extra: dict[str, Any] = {}
            if loss.needs_peers:  # bound outside a group: the student stands in
                extra["peers"] = ctx.peer_outputs or [ctx.student_outputs]
            if "views" in loss.needs:
                extra["views"] = _views(trial, ctx)
            parts = trial(ctx.student_outputs, ctx.teacher_outputs, ctx.batch, **extra)
    except UserError as exc:
        raise type(exc)(f"{name!r}: {exc}") from None
    except (RuntimeError, ValueError, IndexError, KeyError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise ConfigError(
            f"{name!r}: its loss cannot run on this teacher/student pair ({type(exc).__name__}: "
            f"{detail}); check the loss's layer paths and that the method applies to these models"
        ) from None
    if "loss" not in parts:
        raise ConfigError(f"{name!r}: its loss returned {sorted(parts)} without 'loss'")


def _views(loss: LossTerm, ctx: BindContext) -> Views:
    """The sample's views through the student and the teacher (eval mode, no gradients)."""
    inputs = loss.make_views(ctx.batch.inputs)  # (V * B, ...)
    n = inputs.shape[0]
    views = Batch(inputs, ctx.batch.targets.repeat(n // len(ctx.batch)), torch.arange(n))
    student = run_outputs(ctx.student, views, list(loss.student_paths()))
    teacher = None
    if ctx.teacher is not None and loss.needs_teacher:
        teacher = run_outputs(ctx.teacher, views, list(loss.teacher_paths()))
    return Views(student, teacher)
