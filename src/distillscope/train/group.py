"""Several networks trained together in one loop: the peers of mutual learning (DML).

Per step every peer runs forward on the same batch; each peer's loss receives its own outputs,
the teacher's (when its loss reads a teacher) and the other peers' detached outputs
(``peers=``); the peers' losses are summed and one backward pass reaches every peer (their
graphs are disjoint, so each peer's gradient is that of its own loss); then one optimizer step.
The optimizer holds each peer's parameters in a parameter group of its own; SGD and Adam keep
their state per parameter, so this is the same as one optimizer per peer with the same settings.

The whole group is checkpointed in one atomic file after every epoch: peers learn from each
other, so they must resume from the same step, which separate files cannot promise after a
kill between two writes. Metrics get one row per peer and epoch, as for single networks.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from distillscope.config_train import TrainConfig
from distillscope.contracts import Batch, Outputs
from distillscope.data.base import DistillDataset, iter_batches, num_batches
from distillscope.errors import CheckpointError, ConfigError, TrainingError
from distillscope.models.forward import forward_outputs
from distillscope.train.bind import bind_loss
from distillscope.train.checkpoint import (
    TrainState,
    load_state_strict,
    load_train_state,
    save_train_state,
)
from distillscope.train.evaluate import evaluate
from distillscope.train.optim import build_optimizer, build_scheduler
from distillscope.train.seeding import (
    epoch_generator,
    get_rng_state,
    resolve_device,
    seed_everything,
    set_rng_state,
)
from distillscope.train.teacher_cache import TeacherCache
from distillscope.train.trainer import (
    LAST_CHECKPOINT,
    append_metrics,
    check_same_settings,
    logged_epochs,
)


class GroupTrainer:
    """Trains a group of peers together (DML), each with its own loss.

    Args:
        models: Peer name -> network (at least two).
        losses: Peer name -> its loss (a ``CombinedLoss``; terms needing ``peers`` get them).
        cfg: Training settings shared by the group.
        teacher: Frozen teacher, for peer losses that read one (run once per step).
        teacher_cache: Precomputed teacher outputs, used instead of ``teacher``.
        device: ``"auto"``, ``"cpu"``, ``"cuda[:i]"`` or ``"mps"``.
        checkpoint_dir: Where the group's ``last.safetensors`` goes.
        metrics_path: JSON-lines file; one line per peer and epoch is appended.
        name: The group's name, for messages.
        progress: Show a tqdm bar per epoch.
        seed: Seeds the global generators at a fresh start and every epoch's batch order.

    Raises:
        ConfigError: Fewer than two peers, mismatched names, or a loss reading features
            (not supported in groups yet).
    """

    def __init__(
        self,
        models: Mapping[str, nn.Module],
        losses: Mapping[str, nn.Module],
        cfg: TrainConfig,
        *,
        teacher: nn.Module | None = None,
        teacher_cache: TeacherCache | None = None,
        device: str | torch.device = "cpu",
        checkpoint_dir: str | Path | None = None,
        metrics_path: str | Path | None = None,
        name: str = "group",
        progress: bool = True,
        seed: int = 0,
        identity: str | None = None,
    ) -> None:
        if len(models) < 2 or set(models) != set(losses):
            raise ConfigError(
                f"group {name!r} needs two or more peers, each with a loss; got models "
                f"{sorted(models)} and losses {sorted(losses)}"
            )
        for peer, loss in losses.items():
            reads = set(getattr(loss, "needs", ())) & {"features", "explanation", "views"}
            if reads or getattr(loss, "student_paths", list)():
                what = ", ".join(sorted(reads)) or "features"
                raise ConfigError(
                    f"group {name!r}: {peer!r}'s loss reads {what}, which groups do not "
                    "support yet; use logit terms (dml, kd, ce) in a group"
                )
        self.models = nn.ModuleDict(dict(models))
        self.losses = nn.ModuleDict(dict(losses))
        self.peers = list(models)
        self.cfg = cfg
        self.teacher = teacher
        self.teacher_cache = teacher_cache
        self.device = resolve_device(device)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.metrics_path = Path(metrics_path) if metrics_path is not None else None
        self.name = name
        self.progress = progress
        self.seed = seed
        self.identity = identity
        self._data_print: str | None = None
        self.needs_teacher = any(getattr(x, "needs_teacher", False) for x in losses.values())
        self.history: dict[str, list[dict[str, Any]]] = {p: [] for p in self.peers}

    # ------------------------------------------------------------------ public
    def fit(
        self, train: DistillDataset, val: DistillDataset | None = None, resume: bool = False
    ) -> dict[str, list[dict[str, Any]]]:
        """Train every peer for ``cfg.epochs`` epochs; return each peer's per-epoch history."""
        cfg = self.cfg
        steps = min(num_batches(train, cfg.batch_size), cfg.max_batches or 1 << 62)
        if steps == 0:
            raise ConfigError(f"the training set of group {self.name!r} is empty")
        if self.needs_teacher and self.teacher is None and self.teacher_cache is None:
            raise ConfigError(f"group {self.name!r}: a peer's loss needs a teacher; pass one")
        if resume and self.checkpoint_dir is None:
            raise ConfigError("resume=True needs a checkpoint_dir to resume from; pass one")
        if self.teacher_cache is not None:
            self.teacher_cache.check(train)
            self.teacher_cache = self.teacher_cache.to(self.device)
        self.models.to(self.device)
        self.losses.to(self.device)
        if self.teacher is not None:
            self.teacher.to(self.device).eval()
        self._bind(train)
        if self.checkpoint_dir is not None:  # recorded in checkpoints, compared on resume
            self._data_print = train.fingerprint()
        state = self._read_state(steps) if resume else None
        if state is None:
            seed_everything(self.seed)
        else:
            path = self._path()
            load_state_strict(self.models, state.model, path)
            load_state_strict(self.losses, state.loss, path)
            self.history = {p: list(state.meta["history"][p]) for p in self.peers}
        start = len(self.history[self.peers[0]])
        if start >= cfg.epochs:
            return self.history
        groups = [
            {"params": [*self.models[p].parameters(), *self.losses[p].parameters()]}
            for p in self.peers
        ]
        groups = [{"params": [t for t in g["params"] if t.requires_grad]} for g in groups]
        optimizer = build_optimizer(groups, cfg)
        scheduler = build_scheduler(optimizer, cfg, steps)
        if state is not None:
            try:
                optimizer.load_state_dict(state.optimizer)
                scheduler.load_state_dict(state.scheduler)
            except (ValueError, KeyError, TypeError) as exc:
                raise CheckpointError(
                    f"{self._path()} does not match group {self.name!r} ({exc}); resume with "
                    "the same peers and settings or delete it"
                ) from exc
            set_rng_state(state.rng_tensors, state.rng_meta)
            self._sync_metrics()
        for epoch in range(start, cfg.epochs):
            records = self._train_epoch(train, epoch, steps, optimizer, scheduler)
            for peer, record in records.items():
                if val is not None:
                    result = evaluate(
                        self.models[peer], val, cfg.batch_size, self.device, cfg.max_batches
                    )
                    record["val_acc"], record["val_loss"] = result["acc"], result["loss"]
                self.history[peer].append(record)
            self._checkpoint(optimizer, scheduler, steps)
            if self.metrics_path is not None:
                append_metrics(self.metrics_path, list(records.values()))
        return self.history

    # ------------------------------------------------------------------ steps
    def _bind(self, train: DistillDataset) -> None:
        cache = self.teacher_cache
        for peer in self.peers:
            loss = self.losses[peer]
            if getattr(loss, "bound", False):
                continue
            bind_loss(
                loss,
                self.models[peer],
                self.teacher,  # with a cache, only shown to the loss (attach), not run
                train,
                device=self.device,
                seed=self.seed,
                name=peer,
                teacher_outputs=cache.outputs if cache is not None else None,
            )
            loss.to(self.device)

    def _train_epoch(
        self,
        train: DistillDataset,
        epoch: int,
        steps: int,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
    ) -> dict[str, dict[str, Any]]:
        cfg, device, t = self.cfg, self.device, self.cfg.temperature
        self.models.train()
        self.losses.train()
        lr = float(optimizer.param_groups[0]["lr"])
        batches = islice(
            iter_batches(train, cfg.batch_size, True, epoch_generator(self.seed, epoch)), steps
        )
        keys: dict[str, list[str]] = {}
        sums: dict[str, Tensor] = {}
        correct = torch.zeros(len(self.peers), dtype=torch.long, device=device)  # (P,)
        seen = done = 0
        start = time.perf_counter()
        bar = tqdm(total=steps, desc=f"{self.name} {epoch + 1}/{cfg.epochs}", file=sys.stderr,
                   disable=not self.progress, leave=False, dynamic_ncols=True)  # fmt: skip
        with bar:
            for b, batch in enumerate(batches):
                batch = batch.to(device)
                raw = {p: forward_outputs(self.models[p], batch.inputs) for p in self.peers}
                outs = {p: Outputs(o.logits / t if t != 1.0 else o.logits, {}, t)
                        for p, o in raw.items()}  # fmt: skip
                teacher = self._teacher_outputs(batch)
                parts = {p: self._peer_loss(p, outs, teacher, batch) for p in self.peers}
                if not keys:
                    keys = {p: ["loss", *(k for k in v if k != "loss")] for p, v in parts.items()}
                    sums = {p: torch.zeros(len(keys[p]), device=device) for p in self.peers}
                total = torch.stack([parts[p]["loss"] for p in self.peers]).sum()  # ()
                if not math.isfinite(total.item()):
                    bad = [p for p in self.peers if not math.isfinite(parts[p]["loss"].item())]
                    raise TrainingError(
                        f"non-finite loss in group {self.name!r} at epoch {epoch + 1}, batch "
                        f"{b + 1} of {steps}: peer {bad[0]!r}; lower train.lr or check the data"
                    )
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
                scheduler.step()
                for i, p in enumerate(self.peers):
                    sums[p] += torch.stack([parts[p][k].detach() for k in keys[p]]).float()
                    correct[i] += (raw[p].logits.detach().argmax(1) == batch.targets).sum()
                seen += len(batch)
                done = b + 1
                bar.update()
        elapsed = time.perf_counter() - start
        accuracy = (correct.double() / max(seen, 1)).tolist()
        records = {}
        for i, p in enumerate(self.peers):
            means = (sums[p] / max(done, 1)).tolist()
            record: dict[str, Any] = {"model": p, "epoch": epoch + 1, "lr": lr}
            record.update(zip(keys[p], means))
            record.update({"train_acc": accuracy[i], "time": elapsed})
            records[p] = record
        return records

    def _peer_loss(
        self, peer: str, outs: dict[str, Outputs], teacher: Outputs | None, batch: Batch
    ) -> dict[str, Tensor]:
        loss = self.losses[peer]
        if getattr(loss, "needs_peers", False):
            others = [outs[q].detach() for q in self.peers if q != peer]
            return loss(outs[peer], teacher, batch, peers=others)
        return loss(outs[peer], teacher, batch)

    def _teacher_outputs(self, batch: Batch) -> Outputs | None:
        if not self.needs_teacher:
            return None
        if self.teacher_cache is not None:
            return self.teacher_cache.outputs(batch)
        assert self.teacher is not None
        with torch.no_grad():
            return forward_outputs(self.teacher, batch.inputs)

    # -------------------------------------------------------- state and files
    def _path(self) -> Path:
        assert self.checkpoint_dir is not None
        return self.checkpoint_dir / LAST_CHECKPOINT

    def _read_state(self, steps: int) -> TrainState | None:
        path = self._path()
        if not path.exists():
            return None
        state = load_train_state(path)
        check_same_settings(
            path,
            state,
            self.cfg,
            seed=self.seed,
            steps_per_epoch=steps,
            peers=self.peers,
            data=self._data_print,
            identity=self.identity,
        )
        return state

    def _checkpoint(
        self,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        steps: int,
    ) -> None:
        if self.checkpoint_dir is None:
            return
        rng_tensors, rng_meta = get_rng_state()
        meta = {
            "name": self.name,
            "peers": self.peers,
            "epochs_done": len(self.history[self.peers[0]]),
            "history": self.history,
            "prepared": True,
            "config": self.cfg.model_dump(mode="json"),
            "seed": self.seed,
            "steps_per_epoch": steps,
            "data": self._data_print,
            "identity": self.identity,
        }
        state = TrainState(
            model=dict(self.models.state_dict()),
            loss=dict(self.losses.state_dict()),
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            rng_tensors=rng_tensors,
            rng_meta=rng_meta,
            meta=meta,
        )
        save_train_state(self._path(), state)

    def _sync_metrics(self) -> None:
        """On resume, append epochs the killed run checkpointed but did not log."""
        if self.metrics_path is None:
            return
        for peer in self.peers:
            logged = logged_epochs(self.metrics_path, peer)
            missing = [r for r in self.history[peer] if r["epoch"] not in logged]
            append_metrics(self.metrics_path, missing)
