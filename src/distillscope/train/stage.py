"""The stage runner: every training stage a loss term declares runs through one loop.

A term declares its stages (:class:`~distillscope.distill.base.Stage`: what trains, its loss of
a batch, its optimiser, its epochs; :meth:`~distillscope.distill.base.LossTerm.stages`) and the
:class:`StageRunner` runs them, before the student's own training, with what the Trainer's loop
has: a progress bar on stderr, a one-line :class:`~distillscope.errors.TrainingError` on a
non-finite loss naming the stage and the step, one metrics line per stage epoch
(``{"model": <member>, "stage": "<term>/<stage>", "epoch": e, "loss": mean}``) and, through the
Trainer's ``save`` callback, a checkpoint after every stage epoch.

Resume. A stage checkpoint records its position: the member, the stage's index in the member's
preparation, its ``"<term>/<stage>"`` key and the stage epochs done, with the stage's optimiser,
the global generators and every network and loss state. A resumed run replays the preparation
in order: stages before the position are skipped (their result is in the restored states; their
passes over the data are counted, so later passes draw the same batches), each term's
``prepare`` runs again (it reads the trained teacher or freezes parameters, which the restored
state does not record), and the stage at the position restores its optimiser and the
generators and continues from its next epoch. Stages after it run as in a fresh run.

This module sits on the ``train`` floor: it writes checkpoints and metrics and restores the
generators (``train.checkpoint``, ``train.seeding``), which ``distill`` may not import; the terms
only declare their stages.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from tqdm import tqdm

from distillscope.contracts import Batch
from distillscope.data.base import DistillDataset, iter_batches, num_batches
from distillscope.distill.base import LossTerm, Stage
from distillscope.errors import CheckpointError, NonFiniteLoss
from distillscope.train.seeding import epoch_generator, set_rng_state

#: ``save(optimizer, position, history)``: write a checkpoint after a stage epoch.
SaveStage = Callable[[Optimizer, dict[str, Any], list[dict[str, Any]]], None]
#: ``listener(lines)``: told the metrics lines just appended (the run's trackers).
MetricsListener = Callable[[list[dict[str, Any]]], None]


class StageBatches:
    """Re-iterable training batches on the device, for a loss term's preparation.

    Pass ``p`` (counted from 0 per member) draws its order from ``(seed, p)`` alone, so a
    stage's batches are reproducible and a resumed stage can draw the passes it has left.
    """

    def __init__(
        self, dataset: DistillDataset, batch_size: int, device: torch.device, seed: int, limit: int
    ) -> None:
        self.dataset = dataset
        self.batch_size = batch_size
        self.device = device
        self.seed = seed
        self.limit = limit
        self.passes = 0

    def __len__(self) -> int:
        return min(self.limit, num_batches(self.dataset, self.batch_size))

    def __iter__(self) -> Iterator[Batch]:
        generator = epoch_generator(self.seed, self.passes, stream=1)
        self.passes += 1
        batches = iter_batches(self.dataset, self.batch_size, True, generator)
        for batch in islice(batches, self.limit):
            yield batch.to(self.device)


@dataclass
class StageResume:
    """Where a stage checkpoint left the preparation (read from its ``meta["stage"]``)."""

    member: str
    index: int
    key: str
    epochs_done: int
    optimizer: dict[str, Any]
    rng_tensors: dict[str, Tensor] = field(default_factory=dict)
    rng_meta: dict[str, Any] = field(default_factory=dict)


class StageRunner:
    """Runs one member's preparation: its loss's stages, each through :meth:`run`.

    Args:
        member: The network's name (in metrics lines, errors and checkpoints).
        progress: Show a tqdm bar per stage epoch on stderr.
        metrics_path: A JSON-lines file; one line per stage epoch is appended.
        on_metrics: Called with each stage epoch's metrics line as it is appended.
        save: Called after every stage epoch to write a checkpoint (``None``: none).
        resume: The position of a stage checkpoint of this member; ``skip_all``: the position
            is in a later member (this member's stages all finished before the kill).
        history: Stage metrics lines so far (of earlier members, or read from a checkpoint);
            every new one is appended and handed to ``save``.

    Example:
        >>> import torch.nn.functional as F
        >>> from contextlib import nullcontext
        >>> from functools import partial
        >>> net = nn.Linear(2, 1)
        >>> x = torch.randn(8, 2)
        >>> batches = [Batch(x, torch.zeros(8, dtype=torch.long), torch.arange(8))]
        >>> stage = Stage("fit", 3, list(net.parameters()), partial(torch.optim.SGD, lr=0.1),
        ...               lambda: nullcontext(lambda b: F.mse_loss(net(b.inputs), b.inputs[:, :1])))
        >>> runner = StageRunner("net", progress=False)
        >>> runner.run(0, "toy/fit", stage, batches)
        >>> [(row["stage"], row["epoch"]) for row in runner.history]
        [('toy/fit', 1), ('toy/fit', 2), ('toy/fit', 3)]
    """

    def __init__(
        self,
        member: str,
        *,
        progress: bool = True,
        metrics_path: Path | None = None,
        on_metrics: MetricsListener | None = None,
        save: SaveStage | None = None,
        resume: StageResume | None = None,
        skip_all: bool = False,
        history: list[dict[str, Any]] | None = None,
    ) -> None:
        self.member = member
        self.progress = progress
        self.metrics_path = metrics_path
        self.on_metrics = on_metrics
        self.save = save
        self.resume = resume
        self.skip_all = skip_all
        self.history: list[dict[str, Any]] = list(history or [])

    def prepare(
        self,
        loss: LossTerm,
        student: nn.Module,
        teacher: nn.Module | None,
        batches: Iterable[Batch],
    ) -> None:
        """Run ``loss``'s preparation (:meth:`LossTerm.preparation`): its stages through
        :meth:`run`, its ``prepare`` in between, in order.

        Raises:
            CheckpointError: A resumed position that this preparation never reaches (another
                loss or other stage settings than the checkpoint's).
        """
        reached = False
        for index, (key, stage) in enumerate(loss.preparation(student, teacher, batches)):
            name = f"{key}/{stage.name}"
            if self.resume is not None and index == self.resume.index:
                if name != self.resume.key:
                    raise CheckpointError(
                        f"the checkpoint stopped in stage {self.resume.key!r} of "
                        f"{self.member!r} but its stage {index + 1} is {name!r} here; resume "
                        "with the same loss or delete the checkpoint"
                    )
                reached = True
            self.run(index, name, stage, batches)
        if self.resume is not None and not reached:
            raise CheckpointError(
                f"the checkpoint stopped in stage {self.resume.key!r} of {self.member!r}, which "
                "this loss does not have; resume with the same loss or delete the checkpoint"
            )

    def run(self, index: int, name: str, stage: Stage, batches: Iterable[Batch]) -> None:
        """Run ``stage`` (the ``index``-th of the member's preparation, logged as ``name``)."""
        resume = self.resume
        if self.skip_all or (resume is not None and index < resume.index):
            self._skip_passes(batches, stage.epochs)  # finished before the kill
            return
        optimizer = stage.optimizer(stage.params)
        start = 0
        if resume is not None and index == resume.index:
            start = resume.epochs_done
            try:
                optimizer.load_state_dict(resume.optimizer)
            except (ValueError, KeyError, TypeError) as exc:
                raise CheckpointError(
                    f"the checkpoint of stage {name!r} does not match its optimiser "
                    f"({' '.join(str(exc).split())}); resume with the same loss or delete it"
                ) from exc
            set_rng_state(resume.rng_tensors, resume.rng_meta)
            self._skip_passes(batches, start)
        modes = [(m, m.training) for m in (*stage.train, *stage.eval)]
        for module in stage.train:
            module.train()
        for module in stage.eval:
            module.eval()
        try:
            with stage.open() as loss_of:
                for epoch in range(start, stage.epochs):
                    mean = self._epoch(name, stage, epoch, loss_of, optimizer, batches)
                    record = {"model": self.member, "stage": name, "epoch": epoch + 1,
                              "loss": mean}  # fmt: skip
                    self.history.append(record)
                    if self.save is not None:
                        position = {"member": self.member, "index": index, "key": name,
                                    "epochs_done": epoch + 1}  # fmt: skip
                        self.save(optimizer, position, self.history)
                    if self.metrics_path is not None:
                        append_metrics(self.metrics_path, [record])
                    if self.on_metrics is not None:
                        self.on_metrics([record])
        finally:
            for module, mode in modes:
                module.train(mode)

    def _epoch(
        self,
        name: str,
        stage: Stage,
        epoch: int,
        loss_of: Callable[[Batch], Tensor],
        optimizer: Optimizer,
        batches: Iterable[Batch],
    ) -> float:
        """One pass over ``batches``; the mean loss."""
        total = 0.0
        done = 0
        size = len(batches) if hasattr(batches, "__len__") else None
        bar = tqdm(total=size, desc=f"{self.member} {name} {epoch + 1}/{stage.epochs}",
                   file=sys.stderr, disable=not self.progress, leave=False,
                   dynamic_ncols=True)  # fmt: skip
        with bar:
            for b, batch in enumerate(batches):
                loss = loss_of(batch)
                value = loss.item()
                if not math.isfinite(value):
                    step = f"step {epoch * size + b + 1}, " if size is not None else ""
                    raise NonFiniteLoss(
                        f"non-finite loss {value} in stage {name!r} of {self.member!r} at stage "
                        f"epoch {epoch + 1}, {step}batch {b + 1}; lower the stage's learning "
                        "rate or check the data and the loss term",
                        member=self.member,
                        stage=name,
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += value
                done += 1
                bar.update()
            bar.set_postfix(loss=f"{total / max(done, 1):.4f}")
        return total / max(done, 1)

    @staticmethod
    def _skip_passes(batches: Iterable[Batch], passes: int) -> None:
        """Count ``passes`` passes over re-iterable ``batches`` as drawn (without drawing)."""
        if isinstance(batches, StageBatches):
            batches.passes += passes


def prepare_loss(
    loss: LossTerm,
    student: nn.Module,
    teacher: nn.Module | None,
    batches: Iterable[Batch],
    *,
    member: str = "model",
    progress: bool = False,
) -> None:
    """Run ``loss``'s whole preparation (stages and ``prepare``) outside a Trainer: no
    checkpoints, no metrics file. ``batches`` must be re-iterable (a list, a
    :class:`StageBatches`)."""
    StageRunner(member, progress=progress).prepare(loss, student, teacher, batches)


def append_metrics(path: Path, records: list[dict[str, Any]]) -> None:
    """Append one JSON line per record to ``path`` (after a line a kill cut short, if any)."""
    if not records:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(r) + "\n" for r in records)
    if not _ends_with_newline(path):
        lines = "\n" + lines  # a previous run was killed mid-line
    with open(path, "a", encoding="utf-8") as f:
        f.write(lines)


def _ends_with_newline(path: Path) -> bool:
    """True for a missing or empty file too (nothing to terminate)."""
    if not path.exists() or path.stat().st_size == 0:
        return True
    with open(path, "rb") as f:
        f.seek(-1, 2)
        return f.read(1) == b"\n"
