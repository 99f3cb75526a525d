"""One training loop for teachers, independent students and distilled students.

Per step: batch to the device, student forward, the student's logits divided by the training
temperature (paper 004, section 4.1; inference stays at T=1), the teacher's outputs from the
cache or from the frozen teacher, the loss dict, one finiteness check of the total, backward,
optimizer step, scheduler step. Loss parts and correct predictions are summed as detached
tensors on the device and read once per epoch, so the loop adds no host-device syncs to a bare
PyTorch loop (the progress bar reads the running loss every few steps, only when shown).

On the CPU, convolutional image models train in channels-last layout (see
:mod:`distillscope.train.layout`: about 1.3x faster for a CIFAR ResNet) unless the loss reads
features or the model cannot run in that layout; the model leaves :meth:`Trainer.fit` in the
default layout. ``benchmarks/epoch_time.py`` measures the loop against a bare PyTorch loop.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, nullcontext
from dataclasses import replace
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from tqdm import tqdm

from distillscope.config_train import TrainConfig
from distillscope.contracts import Batch, Outputs, Views
from distillscope.data.base import DistillDataset, iter_batches, num_batches
from distillscope.errors import CheckpointError, ConfigError, TrainingError, quoted
from distillscope.models.forward import forward_outputs
from distillscope.models.taps import FeatureTap
from distillscope.train.bind import bind_loss
from distillscope.train.checkpoint import (
    TrainState,
    load_state_strict,
    load_train_state,
    save_model,
    save_train_state,
)
from distillscope.train.evaluate import evaluate
from distillscope.train.layout import channels_last, to_layout
from distillscope.train.optim import build_optimizer, build_scheduler
from distillscope.train.seeding import (
    deterministic_mode,
    epoch_generator,
    get_rng_state,
    resolve_device,
    seed_everything,
    set_rng_state,
)
from distillscope.train.teacher_cache import TeacherCache

#: File names inside ``checkpoint_dir``.
LAST_CHECKPOINT = "last.safetensors"
FINAL_WEIGHTS = "final.safetensors"
#: The progress bar reads the running loss (one sync) once per this many steps.
POSTFIX_EVERY = 10


class Trainer:
    """Trains ``model`` with ``loss``, optionally against a frozen teacher or a teacher cache.

    Args:
        model: The network to train; ``forward(x)`` returns logits ``(B, K)``.
        loss: A :class:`~distillscope.distill.base.LossTerm` or anything with its interface
            (``CombinedLoss``); its trainable parameters are optimised with the model's.
        cfg: Training settings.
        teacher: Frozen teacher, run in eval mode under ``torch.no_grad`` when the loss needs
            it and no cache is given. (Not ``inference_mode``: its tensors could not be saved
            for the student's backward pass, e.g. as the target of a KL divergence.)
        teacher_cache: Precomputed teacher outputs; used instead of ``teacher`` in the loop.
        device: ``"auto"``, ``"cpu"``, ``"cuda[:i]"`` or ``"mps"``.
        checkpoint_dir: Where ``last.safetensors`` (every epoch) and ``final.safetensors`` go.
        metrics_path: A JSON-lines file; one line per epoch is appended.
        name: Model name written into metrics and checkpoints.
        progress: Show a tqdm bar per epoch on stderr.
        seed: Seeds the global generators at a fresh start and every epoch's batch order.
        student_tap: Records the student features the loss reads (``loss.student_paths()``).
        teacher_tap: Records the live teacher's features the loss reads.
        channels_last: Allow the channels-last layout on the CPU (the default); it is used only
            for convolutional image models whose loss reads no features, after a trial forward
            pass in that layout succeeds. ``False`` keeps the default layout throughout.

    Example:
        >>> import torch.nn.functional as F
        >>> from distillscope.data.base import DatasetInfo, TensorDataset
        >>> class CE(nn.Module):
        ...     def forward(self, student, teacher, batch):
        ...         loss = F.cross_entropy(student.logits, batch.targets)
        ...         return {"loss": loss, "ce/ce": loss}
        >>> data = TensorDataset(torch.randn(32, 4), torch.randint(0, 3, (32,)),
        ...                      DatasetInfo("toy", 3, (4,), ["a", "b", "c"]))
        >>> trainer = Trainer(nn.Linear(4, 3), CE(), TrainConfig(epochs=2, batch_size=8),
        ...                   progress=False)
        >>> history = trainer.fit(data, val=data)
        >>> [row["epoch"] for row in history], sorted(history[0])[:4]
        ([1, 2], ['ce/ce', 'epoch', 'loss', 'lr'])
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        cfg: TrainConfig,
        *,
        teacher: nn.Module | None = None,
        teacher_cache: TeacherCache | None = None,
        device: str | torch.device = "cpu",
        checkpoint_dir: str | Path | None = None,
        metrics_path: str | Path | None = None,
        name: str = "model",
        progress: bool = True,
        seed: int = 0,
        identity: str | None = None,
        student_tap: FeatureTap | None = None,
        teacher_tap: FeatureTap | None = None,
        channels_last: bool = True,
    ) -> None:
        self.device = resolve_device(device)
        self.model = model
        self.loss = loss
        self.cfg = cfg
        self.teacher = teacher
        self.teacher_cache = teacher_cache
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.metrics_path = Path(metrics_path) if metrics_path is not None else None
        self.name = name
        self.progress = progress
        self.seed = seed
        self.identity = identity
        self._data_print: str | None = None
        self.student_tap = student_tap
        self.teacher_tap = teacher_tap
        self.needs_teacher = bool(getattr(loss, "needs_teacher", False))
        self.makes_views = "views" in getattr(loss, "needs", ())
        self.allow_channels_last = channels_last
        self.channels_last = False  # whether the student runs channels-last (set by fit)
        self.teacher_channels_last = False
        self.history: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ public
    def fit(
        self, train: DistillDataset, val: DistillDataset | None = None, resume: bool = False
    ) -> list[dict[str, Any]]:
        """Train for ``cfg.epochs`` epochs and return the per-epoch history.

        Args:
            train: Training split; shuffled every epoch from ``(seed, epoch)`` alone.
            val: Optional validation split, evaluated at T=1 after every epoch.
            resume: Continue from ``checkpoint_dir/last.safetensors`` if it exists (a missing
                file starts afresh); a finished run only loads its weights and returns.

        Raises:
            ConfigError: Missing teacher, taps or cache coverage, or a resume under a
                different configuration.
            CheckpointError: The checkpoint cannot be read or does not match.
            TrainingError: A non-finite loss.
        """
        steps = num_batches(train, self.cfg.batch_size)
        steps = min(steps, self.cfg.max_batches or steps)
        if steps == 0:
            raise ConfigError(f"the training set of {self.name!r} is empty; check the dataset")
        self._check_setup(train, resume)
        if self.checkpoint_dir is not None:  # recorded in checkpoints, compared on resume
            self._data_print = train.fingerprint()
        state = self._read_state(steps) if resume else None
        self.model.to(self.device)
        self.loss.to(self.device)
        if not getattr(self.loss, "bound", False):
            self._bind(train)
            if self.teacher_cache is not None and self.needs_teacher:  # paths known only now
                self.teacher_cache.check(train, getattr(self.loss, "teacher_paths", list)())
        teacher_mode = self.teacher.training if self.teacher is not None else False
        if self.teacher is not None:
            self.teacher.to(self.device).eval()
        try:
            with ExitStack() as stack:
                self._own_taps(stack)
                context = getattr(self.loss, "student_context", None)  # e2KD on B-cos
                stack.enter_context(context(self.model) if context else nullcontext())
                stack.enter_context(
                    deterministic_mode(True) if self.cfg.deterministic else nullcontext()
                )
                self._enter_layouts(stack, train)
                return self._fit(train, val, steps, state)
        finally:
            if self.teacher is not None:
                self.teacher.train(teacher_mode)

    # ----------------------------------------------------------------- set-up
    def _own_taps(self, stack: ExitStack) -> None:
        """Tap what the bound loss reads when the caller gave no tap (removed after ``fit``).

        A term may learn its paths from the models at bind (e2KD's ``cam_layer``), after a
        caller built its taps from the unbound loss.
        """
        paths = list(getattr(self.loss, "student_paths", list)())
        if paths and self.student_tap is None:
            self.student_tap = stack.enter_context(FeatureTap(self.model, paths))
            stack.callback(setattr, self, "student_tap", None)
        paths = list(getattr(self.loss, "teacher_paths", list)())
        live = self.teacher is not None and self.needs_teacher
        live = live and (self.teacher_cache is None or self.makes_views)  # views run live
        if paths and live and self.teacher_tap is None:
            assert self.teacher is not None
            self.teacher_tap = stack.enter_context(FeatureTap(self.teacher, paths))
            stack.callback(setattr, self, "teacher_tap", None)

    def _bind(self, train: DistillDataset) -> None:
        """Bind the loss on a sample batch (before a resumed state is loaded over it)."""
        teacher = self.teacher.to(self.device) if self.teacher is not None else None
        cache = self.teacher_cache
        cached = None if cache is None or self.makes_views else cache.outputs  # views run live
        bind_loss(
            self.loss,
            self.model,
            teacher,  # with a cache, only shown to the loss (attach), not run
            train,
            device=self.device,
            seed=self.seed,
            name=self.name,
            teacher_outputs=cached,
        )
        self.loss.to(self.device)

    def _enter_layouts(self, stack: ExitStack, train: DistillDataset) -> None:
        """Channels-last for the student (and the live teacher) where allowed and safe."""
        self.channels_last = self.teacher_channels_last = False
        if not self.allow_channels_last:
            return
        sample = _sample_inputs(train).to(self.device)  # (1, ...)
        if not getattr(self.loss, "student_paths", list)():
            self.channels_last = stack.enter_context(channels_last(self.model, sample, self.device))
        live = self.teacher is not None and self.needs_teacher and self.teacher_cache is None
        if live and not getattr(self.loss, "teacher_paths", list)():
            assert self.teacher is not None
            self.teacher_channels_last = stack.enter_context(
                channels_last(self.teacher, sample, self.device)
            )

    def _check_setup(self, train: DistillDataset, resume: bool) -> None:
        loss_name = type(self.loss).__name__
        teacher_paths = list(getattr(self.loss, "teacher_paths", list)())
        if resume and self.checkpoint_dir is None:
            raise ConfigError("resume=True needs a checkpoint_dir to resume from; pass one")
        if self.needs_teacher and self.teacher is None and self.teacher_cache is None:
            raise ConfigError(
                f"{self.name!r}: the loss {loss_name} needs a teacher; pass teacher= or "
                "teacher_cache= to the Trainer"
            )
        if self.teacher_cache is not None:
            self.teacher_cache.check(train, teacher_paths if self.needs_teacher else ())
            if self.teacher_cache.device != self.device:
                self.teacher_cache = self.teacher_cache.to(self.device)

    def _read_state(self, steps: int) -> TrainState | None:
        assert self.checkpoint_dir is not None
        path = self.checkpoint_dir / LAST_CHECKPOINT
        if not path.exists():
            return None
        state = load_train_state(path)
        check_same_settings(
            path,
            state,
            self.cfg,
            seed=self.seed,
            steps_per_epoch=steps,
            data=self._data_print,
            identity=self.identity,
        )
        return state

    def _named_trainable(self, state: TrainState | None) -> list[tuple[str, nn.Parameter]]:
        """``(name, param)`` to optimise; on resume exactly the saved names, others frozen."""
        named = {f"model.{n}": p for n, p in self.model.named_parameters()}
        named.update({f"loss.{n}": p for n, p in self.loss.named_parameters()})
        if state is None:
            return [(n, p) for n, p in named.items() if p.requires_grad]
        wanted = state.meta.get("params", [])
        missing = [n for n in wanted if n not in named]
        if missing:
            raise CheckpointError(
                f"{self.checkpoint_dir}/{LAST_CHECKPOINT} optimises {missing[0]!r}, which this "
                "model and loss lack; pass the same architecture and loss or delete it"
            )
        chosen = set(wanted)
        for n, p in named.items():
            if n not in chosen:
                p.requires_grad_(False)  # frozen in the saved run (e.g. by a term's prepare)
        return [(n, named[n]) for n in wanted]

    # ------------------------------------------------------------------- loop
    def _fit(
        self,
        train: DistillDataset,
        val: DistillDataset | None,
        steps: int,
        state: TrainState | None,
    ) -> list[dict[str, Any]]:
        cfg = self.cfg
        if state is None:
            seed_everything(self.seed)
            self.history = []
            prepared = False
        else:
            path = f"{self.checkpoint_dir}/{LAST_CHECKPOINT}"
            load_state_strict(self.model, state.model, path)
            load_state_strict(self.loss, state.loss, path)
            self.history = list(state.meta["history"])
            prepared = bool(state.meta.get("prepared", False))
        start = len(self.history)
        if start >= cfg.epochs:
            self._sync_metrics()
            self._save_final()
            return self.history
        if not prepared:
            prepare = getattr(self.loss, "prepare", None)
            if prepare is not None:
                batches = _PrepareBatches(train, cfg.batch_size, self, steps)
                prepare(self.model, self.teacher, batches)
        named = self._named_trainable(state)
        optimizer = build_optimizer([p for _, p in named], cfg)
        scheduler = build_scheduler(optimizer, cfg, steps)
        if state is not None:
            self._restore(state, optimizer, scheduler)
            self._sync_metrics()
        for epoch in range(start, cfg.epochs):
            record = self._train_epoch(train, epoch, steps, optimizer, scheduler)
            if val is not None:
                result = evaluate(self.model, val, cfg.batch_size, self.device, cfg.max_batches)
                record["val_acc"], record["val_loss"] = result["acc"], result["loss"]
            self.history.append(record)
            self._checkpoint(optimizer, scheduler, [n for n, _ in named], steps)
            self._append_metrics([record])
        self._save_final()
        return self.history

    def _train_epoch(
        self,
        train: DistillDataset,
        epoch: int,
        steps: int,
        optimizer: Optimizer,
        scheduler: LRScheduler,
    ) -> dict[str, Any]:
        model, loss, device, cfg = self.model, self.loss, self.device, self.cfg
        model.train()
        loss.train()
        temperature = cfg.temperature
        lr = float(optimizer.param_groups[0]["lr"])
        generator = epoch_generator(self.seed, epoch)
        batches = islice(iter_batches(train, cfg.batch_size, True, generator), steps)
        keys: list[str] = []
        key_set: set[str] = set()
        sums = torch.zeros(0, device=device)  # (P,) once the parts are known
        correct = torch.zeros((), dtype=torch.long, device=device)
        seen = done = 0
        start = time.perf_counter()
        bar = tqdm(
            total=steps,
            desc=f"{self.name} {epoch + 1}/{cfg.epochs}",
            file=sys.stderr,
            disable=not self.progress,
            leave=False,
            dynamic_ncols=True,
        )
        with bar:
            for b, batch in enumerate(batches):
                batch = batch.to(device)
                if self.makes_views:
                    student, teacher, views = self._with_views(batch, temperature)
                    parts = loss(student, teacher, batch, views=views)
                else:
                    out = forward_outputs(
                        model, to_layout(batch.inputs, self.channels_last), self.student_tap
                    )
                    student = _scaled(out, temperature)
                    teacher = self._teacher_outputs(batch)
                    parts = loss(student, teacher, batch)
                logits = student.raw_logits  # (B, K) at T = 1
                if not keys:
                    keys = self._check_first_step(parts, student, teacher)
                    key_set = set(keys)
                    sums = torch.zeros(len(keys), device=device)  # (P,)
                elif parts.keys() != key_set:
                    raise TrainingError(
                        f"the loss returned parts {sorted(parts)} at epoch {epoch + 1}, batch "
                        f"{b + 1} but {keys} before; return the same parts every step"
                    )
                total = parts["loss"]
                if not math.isfinite(total.item()):  # the step's one sync, cheaper than a kernel
                    raise self._non_finite(parts, logits, batch, epoch, b, steps)
                optimizer.zero_grad(set_to_none=True)
                total.backward()
                optimizer.step()
                scheduler.step()
                sums += torch.stack([parts[k].detach() for k in keys]).to(sums.dtype)  # (P,)
                correct += (logits.detach().argmax(1) == batch.targets).sum()
                seen += len(batch)
                done = b + 1
                bar.update()
                if self.progress and done % POSTFIX_EVERY == 0:
                    bar.set_postfix(loss=f"{sums[0].item() / done:.4f}", refresh=False)
            means = (sums / max(done, 1)).tolist()
            accuracy = correct.item() / max(seen, 1)
            elapsed = time.perf_counter() - start
            bar.set_postfix(loss=f"{means[0]:.4f}", acc=f"{accuracy:.3f}")
        record: dict[str, Any] = {"model": self.name, "epoch": epoch + 1, "lr": lr}
        record.update(zip(keys, means))
        record.update({"train_acc": accuracy, "time": elapsed})
        return record

    def _with_views(
        self, batch: Batch, temperature: float
    ) -> tuple[Outputs, Outputs | None, Views]:
        """The student (and teacher) on the batch and its views, one pass each (SSKD).

        The student sees the batch and the views in one forward, as the SSKD authors' code
        does, so its BatchNorm statistics cover both.
        """
        n = len(batch)
        extra = self.loss.make_views(batch.inputs)  # (V * B, ...)
        both = torch.cat([batch.inputs, extra])  # ((1 + V) B, ...)
        out = forward_outputs(self.model, to_layout(both, self.channels_last), self.student_tap)
        student, student_views = _scaled(out, temperature).split(n)
        if not self.needs_teacher:
            return student, None, Views(student_views)
        assert self.teacher is not None
        layout = self.teacher_channels_last
        with torch.no_grad():
            if self.teacher_cache is None:  # one pass over both
                teacher, teacher_views = forward_outputs(
                    self.teacher, to_layout(both, layout), self.teacher_tap
                ).split(n)
            else:  # the cache holds the batch; the views run live
                teacher = self.teacher_cache.outputs(batch)
                x = to_layout(extra, layout)
                teacher_views = forward_outputs(self.teacher, x, self.teacher_tap)
        return student, teacher, Views(student_views, teacher_views)

    def _teacher_outputs(self, batch: Batch) -> Outputs | None:
        if not self.needs_teacher:
            return None
        if self.teacher_cache is not None:
            return self.teacher_cache.outputs(batch)
        assert self.teacher is not None
        x = to_layout(batch.inputs, self.teacher_channels_last)
        if "explanation" in getattr(self.loss, "needs", ()):  # e2KD: a gradient of the teacher
            with torch.enable_grad():
                explained = self.loss.explain_teacher(self.teacher, x).detach()
            if self.teacher_tap is None:
                return explained
            with torch.no_grad():  # other terms' teacher features: a plain pass
                out = forward_outputs(self.teacher, x, self.teacher_tap)
            return replace(out, explanation=explained.explanation)
        with torch.no_grad():
            return forward_outputs(self.teacher, x, self.teacher_tap)

    def _check_first_step(
        self, parts: dict[str, Tensor], student: Outputs, teacher: Outputs | None
    ) -> list[str]:
        """Validate the first step's loss dict and features; the part keys, ``"loss"`` first."""
        if "loss" not in parts:
            raise TrainingError(
                f"the loss {type(self.loss).__name__} returned {sorted(parts)} without a "
                "'loss' key; a loss must return {'loss': total, ...}"
            )
        for key, value in parts.items():
            if not isinstance(value, Tensor) or value.numel() != 1:
                raise TrainingError(f"loss part {key!r} is not a scalar tensor; return 0-d tensors")
        wanted = (
            ("student", student, getattr(self.loss, "student_paths", list)()),
            ("teacher", teacher, getattr(self.loss, "teacher_paths", list)()),
        )
        for role, outputs, paths in wanted:
            missing = [p for p in paths if outputs is not None and p not in outputs.features]
            if missing:
                raise ConfigError(
                    f"the loss reads {role} feature {missing[0]!r} but the {role} tap recorded "
                    f"only {sorted(outputs.features) if outputs else []}; tap "
                    f"{list(paths)} on the {role}"
                )
        return ["loss", *(k for k in parts if k != "loss")]

    def _non_finite(
        self,
        parts: dict[str, Tensor],
        logits: Tensor,
        batch: Batch,
        epoch: int,
        b: int,
        steps: int,
    ) -> TrainingError:
        """The one-line error for a non-finite loss (built only when it happens)."""
        bad = [
            f"{k}={v.item() if v.numel() == 1 else 'non-finite'}"
            for k, v in parts.items()
            if isinstance(v, Tensor) and not bool(torch.isfinite(v).all())
        ]
        causes = []
        if not bool(torch.isfinite(batch.inputs).all()):
            causes.append("the inputs contain NaN/inf")
        if not bool(torch.isfinite(logits).all()):
            causes.append(f"{self.name!r}'s logits are non-finite (its weights diverged)")
        cause = f" ({'; '.join(causes)})" if causes else ""
        indices = batch.index[:5].tolist()
        more = ", ..." if len(batch) > 5 else ""
        return TrainingError(
            f"non-finite loss in {self.name!r} at epoch {epoch + 1}, step "
            f"{epoch * steps + b + 1} (batch {b + 1} of {steps}, dataset indices "
            f"{str(indices)[1:-1]}{more}): {', '.join(bad)}{cause}; lower train.lr or "
            "check the data and the loss term"
        )

    # -------------------------------------------------------- state and files
    def _restore(self, state: TrainState, optimizer: Optimizer, scheduler: LRScheduler) -> None:
        path = f"{self.checkpoint_dir}/{LAST_CHECKPOINT}"
        try:
            optimizer.load_state_dict(state.optimizer)
            scheduler.load_state_dict(state.scheduler)
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(
                f"{path} does not match the optimizer ({' '.join(str(exc).split())}); "
                "resume with the same model, loss and config or delete it"
            ) from exc
        set_rng_state(state.rng_tensors, state.rng_meta)

    def _checkpoint(
        self, optimizer: Optimizer, scheduler: LRScheduler, names: list[str], steps: int
    ) -> None:
        if self.checkpoint_dir is None:
            return
        rng_tensors, rng_meta = get_rng_state()
        meta = {
            "name": self.name,
            "epochs_done": len(self.history),
            "history": self.history,
            "prepared": True,
            "config": self.cfg.model_dump(mode="json"),
            "seed": self.seed,
            "steps_per_epoch": steps,
            "data": self._data_print,
            "identity": self.identity,
            "params": names,
        }
        state = TrainState(
            model=dict(self.model.state_dict()),
            loss=dict(self.loss.state_dict()),
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            rng_tensors=rng_tensors,
            rng_meta=rng_meta,
            meta=meta,
        )
        save_train_state(self.checkpoint_dir / LAST_CHECKPOINT, state)

    def _save_final(self) -> None:
        if self.checkpoint_dir is None:
            return
        meta = {
            "name": self.name,
            "epochs": len(self.history),
            "train_temperature": self.cfg.temperature,
            "final": self.history[-1] if self.history else {},
        }
        save_model(self.checkpoint_dir / FINAL_WEIGHTS, self.model, meta)

    def _append_metrics(self, records: list[dict[str, Any]]) -> None:
        if self.metrics_path is not None:
            append_metrics(self.metrics_path, records)

    def _sync_metrics(self) -> None:
        """On resume, append history epochs the killed run checkpointed but did not log."""
        if self.metrics_path is None:
            return
        logged = logged_epochs(self.metrics_path, self.name)
        self._append_metrics([r for r in self.history if r["epoch"] not in logged])


def check_same_settings(path: Path, state: TrainState, cfg: TrainConfig, **extra: Any) -> None:
    """Raise :class:`ConfigError` unless ``state`` was saved with ``cfg`` and ``extra`` (seed,
    steps per epoch, the training data's fingerprint ``data``, the run's ``identity``, ...),
    which a bit-identical resume needs."""
    now = {**cfg.model_dump(mode="json"), **extra}
    saved = {**state.meta.get("config", {}), **{k: state.meta.get(k) for k in extra}}
    for key, value in now.items():
        if saved.get(key) == value:
            continue
        fix = f"resume with the same settings or delete {path} to start over"
        if key == "data":
            raise ConfigError(
                f"{path} was trained on other data (fingerprint {quoted(saved.get(key))}, this "
                f"training set {quoted(value)}); resume on the data it started with (the same "
                f"--data-root) or delete {path} to start over"
            )
        if key == "identity":
            raise ConfigError(
                f"{path} was written by a run of another config, data or runtime (identity "
                f"{quoted(saved.get(key))}, this run {quoted(value)}); {fix}"
            )
        raise ConfigError(
            f"{path} was written with {key}={quoted(saved.get(key))} but this run has "
            f"{key}={quoted(value)}; {fix}"
        )


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


def logged_epochs(path: Path, name: str) -> set[int]:
    """Epochs of model ``name`` already in the metrics file (lines cut by a kill skipped)."""
    logged: set[int] = set()
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and row.get("model") == name:
                logged.add(row.get("epoch"))
    return logged


class _PrepareBatches:
    """Re-iterable training batches on the device, for a loss term's ``prepare`` stage.

    Each pass draws its own order from ``(seed, pass)``, so ``prepare`` is reproducible.
    """

    def __init__(self, dataset: DistillDataset, batch_size: int, trainer: Trainer, limit: int):
        self.dataset = dataset
        self.batch_size = batch_size
        self.device = trainer.device
        self.seed = trainer.seed
        self.limit = limit
        self.passes = 0

    def __iter__(self) -> Iterator[Batch]:
        generator = epoch_generator(self.seed, self.passes, stream=1)
        self.passes += 1
        batches = iter_batches(self.dataset, self.batch_size, True, generator)
        for batch in islice(batches, self.limit):
            yield batch.to(self.device)


def _sample_inputs(train: DistillDataset) -> Tensor:
    """The first training input as a batch of one, drawn without touching the global RNGs."""
    with torch.random.fork_rng(devices=[]):  # __getitem__ may augment at random
        x = train[0][0]
    return torch.as_tensor(x).unsqueeze(0)  # (1, ...)


def _ends_with_newline(path: Path) -> bool:
    """True for a missing or empty file too (nothing to terminate)."""
    if not path.exists() or path.stat().st_size == 0:
        return True
    with open(path, "rb") as f:
        f.seek(-1, 2)
        return f.read(1) == b"\n"


def _scaled(out: Outputs, temperature: float) -> Outputs:
    """The student's outputs with its logits divided by its training temperature."""
    if temperature == 1.0:
        return Outputs(out.logits, out.features, 1.0)
    return Outputs(out.logits / temperature, out.features, temperature)
