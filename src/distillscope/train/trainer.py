"""One training loop for teachers, independent students, distilled students and groups.

:class:`Trainer` trains a *group of one or more* networks, each with its own loss, in one loop:
a single network is a group of one; DML peers are a group of several, trained on the same
batches with one optimizer (a parameter group each). Per step: the batch to the device, the
:class:`~distillscope.train.step.Step` (every member's forward, the teacher's outputs from the
cache or the frozen teacher, explanations, views, peers, the loss dicts), one finiteness check
of the total, backward, adaptive gradient clipping (``agc_clip``), optimizer step, scheduler
step. Loss parts and correct predictions are summed as detached tensors on the device and read
once per epoch, so the loop adds no host-device syncs to a bare PyTorch loop (the progress bar
reads the running loss every few steps, only when shown).

Data-parallel (``torchrun``; :mod:`distillscope.train.distributed`): every rank runs this loop
on its share of each global batch of ``cfg.batch_size``, its networks through DDP, its mean loss
weighted by its share of the batch so that the averaged gradients are the global batch's; a
loss's own parameters are averaged by one all-reduce, the epoch's sums are added over the ranks
once per epoch, and rank 0 alone writes checkpoints (with every rank's generators) and metrics.

The loss of every member is a :class:`~distillscope.distill.base.LossTerm` (a
:class:`~distillscope.distill.combine.CombinedLoss` is one); the trainer asks it what it needs
and never probes it. ``benchmarks/epoch_time.py`` measures the loop against a bare PyTorch loop.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, nullcontext
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from tqdm import tqdm

from distillscope.checks import check_module_key
from distillscope.config_train import TrainConfig
from distillscope.contracts import Batch
from distillscope.data.base import DistillDataset, iter_batches, num_batches, share_weight
from distillscope.distill.base import LossTerm
from distillscope.errors import CheckpointError, ConfigError, NonFiniteLoss, TrainingError, quoted
from distillscope.identity import NOT_RESULT_TRAIN_KEYS
from distillscope.messages import say
from distillscope.models.taps import FeatureTap
from distillscope.train.bind import bind_loss
from distillscope.train.checkpoint import (
    TrainState,
    load_state_strict,
    load_train_state,
    save_model,
    save_train_state,
    stable,
    volatile,
    with_volatile,
)
from distillscope.train.compiled import check_compile, compiled
from distillscope.train.distributed import (
    SINGLE,
    World,
    average_gradients,
    broadcast_state,
    check_data_parallel,
    current_world,
    gather_rng_state,
    rank_rng_state,
    rank_seed,
    sum_across,
    wrap,
)
from distillscope.train.evaluate import evaluate
from distillscope.train.optim import adaptive_clip_grad_, build_optimizer, build_scheduler
from distillscope.train.precision import autocast, check_precision
from distillscope.train.seeding import (
    deterministic_mode,
    epoch_generator,
    resolve_device,
    seed_everything,
    set_rng_state,
)
from distillscope.train.stage import (
    MetricsListener,
    StageBatches,
    StageResume,
    StageRunner,
    append_metrics,
)
from distillscope.train.step import Step, StepResult
from distillscope.train.teacher_cache import TeacherCache

#: File names inside ``checkpoint_dir``.
LAST_CHECKPOINT = "last.safetensors"
FINAL_WEIGHTS = "final.safetensors"
#: Normalisation layers whose training statistics are a batch's (per rank under DDP).
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
#: The progress bar reads the running loss (one sync) once per this many steps.
POSTFIX_EVERY = 10


class Trainer:
    """Trains a network (or a group of networks) with its loss, optionally against a frozen
    teacher or a teacher cache.

    Args:
        model: The network to train (``forward(x)`` returns logits ``(B, K)``), or a mapping of
            member name -> network for a group trained together (mutual learning).
        loss: Its :class:`~distillscope.distill.base.LossTerm` (a
            :class:`~distillscope.distill.combine.CombinedLoss` is one), or a mapping with the
            same names as ``model``; trainable parameters of a loss are optimised with its
            network's.
        cfg: Training settings (shared by a group's members).
        teacher: Frozen teacher, run in eval mode under ``torch.no_grad`` when a loss needs it
            and no cache is given. (Not ``inference_mode``: its tensors could not be saved for
            the student's backward pass, e.g. as the target of a KL divergence.)
        teacher_cache: Precomputed teacher outputs; used instead of ``teacher`` in the loop.
        device: ``"auto"``, ``"cpu"``, ``"cuda[:i]"`` or ``"mps"``.
        checkpoint_dir: Where ``last.safetensors`` (every epoch) and, for one network,
            ``final.safetensors`` go.
        metrics_path: A JSON-lines file; one line per member per epoch is appended.
        on_metrics: Called with the metrics lines (epochs and stage epochs) as they are
            appended, e.g. the run's trackers (:mod:`distillscope.tracking`).
        name: The network's name (one network) or the group's, written into metrics and
            checkpoints.
        progress: Show a tqdm bar per epoch on stderr.
        seed: Seeds the global generators at a fresh start and every epoch's batch order.
        student_tap: Records the student features the loss reads (one network; by default
            the trainer taps what the bound loss reads).
        teacher_tap: Records the live teacher's features the loss reads.
        channels_last: Allow the channels-last layout as ``cfg.channels_last`` says (the
            default; :mod:`distillscope.train.layout`); ``False`` keeps the default layout
            throughout, as ``channels_last: off`` does.
        identity: A digest recorded in every checkpoint; a resume under another is refused
            (the experiment passes its run's, :mod:`distillscope.identity`).
        teacher_precision: The live teacher's no-grad passes: ``fp32`` or ``bf16`` (autocast,
            outputs handed on in fp32; :func:`~distillscope.train.precision.
            choose_teacher_precision` picks it for ``teacher_precision: auto``).

    Example:
        >>> from distillscope.data.base import DatasetInfo, TensorDataset
        >>> from distillscope.distill import build_loss
        >>> data = TensorDataset(torch.randn(32, 4), torch.randint(0, 3, (32,)),
        ...                      DatasetInfo("toy", 3, (4,), ["a", "b", "c"]))
        >>> trainer = Trainer(nn.Linear(4, 3), build_loss({"ce": {}}),
        ...                   TrainConfig(epochs=2, batch_size=8), progress=False)
        >>> history = trainer.fit(data, val=data)
        >>> [row["epoch"] for row in history], sorted(history[0])[:4]
        ([1, 2], ['ce/ce', 'ce/loss', 'epoch', 'loss'])
    """

    def __init__(
        self,
        model: nn.Module | Mapping[str, nn.Module],
        loss: LossTerm | Mapping[str, LossTerm],
        cfg: TrainConfig,
        *,
        teacher: nn.Module | None = None,
        teacher_cache: TeacherCache | None = None,
        device: str | torch.device = "cpu",
        checkpoint_dir: str | Path | None = None,
        metrics_path: str | Path | None = None,
        on_metrics: MetricsListener | None = None,
        name: str = "model",
        progress: bool = True,
        seed: int = 0,
        student_tap: FeatureTap | None = None,
        teacher_tap: FeatureTap | None = None,
        channels_last: bool = True,
        identity: str | None = None,
        teacher_precision: str = "fp32",
    ) -> None:
        self.single = isinstance(model, nn.Module)
        #: The live teacher's no-grad passes (``fp32`` or ``bf16``; precision.py).
        self.teacher_precision = teacher_precision
        models = {name: model} if isinstance(model, nn.Module) else dict(model)
        losses = {name: loss} if isinstance(loss, nn.Module) else dict(loss)
        if not models or set(models) != set(losses):
            raise ConfigError(
                f"{name!r}: every network needs its loss; got networks {sorted(models)} and "
                f"losses {sorted(losses)}"
            )
        for member, term in losses.items():
            if not isinstance(term, LossTerm):
                raise TypeError(
                    f"{member!r}: the loss is a {type(term).__name__}, not a LossTerm; build it "
                    "with distillscope.create_loss / build_loss or subclass LossTerm"
                )
        self.members = [check_module_key(m, f"models[{m!r}]") for m in models]
        self.models = nn.ModuleDict(models)
        self.losses = nn.ModuleDict({m: losses[m] for m in self.members})
        self.cfg = cfg
        self.teacher = teacher
        self.teacher_cache = teacher_cache
        self.device = resolve_device(device)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.metrics_path = Path(metrics_path) if metrics_path is not None else None
        self.on_metrics = on_metrics
        self.name = name
        self.progress = progress
        self.seed = seed
        self.identity = identity
        self._data_print: str | None = None
        self.student_tap = student_tap
        self.teacher_tap = teacher_tap
        self.needs_teacher = any(term.needs_teacher for term in losses.values())
        self.allow_channels_last = channels_last
        self.step: Step | None = None
        #: The ranks training together (:mod:`distillscope.train.distributed`; set by fit).
        self.world: World = SINGLE
        self.histories: dict[str, list[dict[str, Any]]] = {m: [] for m in self.members}

    # ------------------------------------------------------- one network's view
    @property
    def model(self) -> nn.Module:
        """The network (of a group: the first member)."""
        return self.models[self.members[0]]

    @property
    def loss(self) -> LossTerm:
        """The network's loss (of a group: the first member's)."""
        return self.losses[self.members[0]]  # type: ignore[return-value]

    @property
    def history(self) -> list[dict[str, Any]]:
        """The per-epoch history (of a group: the first member's)."""
        return self.histories[self.members[0]]

    @property
    def _shown(self) -> bool:
        """Whether progress bars show (rank 0 only in a data-parallel run)."""
        return self.progress and self.world.main

    @property
    def channels_last(self) -> bool:
        """Whether the network trained channels-last (set by :meth:`fit`)."""
        return self.step is not None and self.step.channels_last[self.members[0]]

    @property
    def teacher_channels_last(self) -> bool:
        """Whether the live teacher ran channels-last (set by :meth:`fit`)."""
        return self.step is not None and self.step.teacher_channels_last

    # ------------------------------------------------------------------ public
    def fit(
        self, train: DistillDataset, val: DistillDataset | None = None, resume: bool = False
    ) -> Any:
        """Train for ``cfg.epochs`` epochs and return the per-epoch history.

        Args:
            train: Training split; shuffled every epoch from ``(seed, epoch)`` alone.
            val: Optional validation split, evaluated at T=1 after every epoch.
            resume: Continue from ``checkpoint_dir/last.safetensors`` if it exists (a missing
                file starts afresh); a finished run only loads its weights and returns.

        Returns:
            One network: its list of per-epoch records. A group: member -> that list.

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
        self.world = current_world()
        check_data_parallel(self.world, dict(self.losses), self.cfg.batch_size, len(train))
        self._check_setup(resume)
        if self.checkpoint_dir is not None:  # recorded in checkpoints, compared on resume
            self._data_print = train.fingerprint()
        self.models.to(self.device)
        self.losses.to(self.device)
        self._bind(train)
        state = self._read_state(steps) if resume else None
        teacher_mode = self.teacher.training if self.teacher is not None else False
        if self.teacher is not None:
            self.teacher.to(self.device).eval()
        try:
            with ExitStack() as stack:
                taps = {self.members[0]: self.student_tap} if self.single else {}
                self.step = Step(self.models, self.losses, self.cfg.temperature,  # type: ignore[arg-type]
                                 teacher=self.teacher, teacher_cache=self.teacher_cache,
                                 student_taps=taps, teacher_tap=self.teacher_tap,
                                 teacher_precision=self.teacher_precision)  # fmt: skip
                self.step.tap(stack)
                stack.enter_context(
                    deterministic_mode(True) if self.cfg.deterministic else nullcontext()
                )
                layout = self.cfg.channels_last if self.allow_channels_last else "off"
                self.step.choose_layouts(stack, train, self.device, layout, self.cfg.precision)
                self._fit(train, val, steps, state)
        finally:
            if self.step is not None:  # the DDP and compile wrappers go (hooks with them)
                self.step.runners = dict(self.step.models)
            if self.teacher is not None:
                self.teacher.train(teacher_mode)
        return self.history if self.single else self.histories

    # ----------------------------------------------------------------- set-up
    def _loss(self, member: str) -> LossTerm:
        return self.losses[member]  # type: ignore[return-value]

    def _student_contexts(self) -> ExitStack:
        """Every member's :meth:`LossTerm.student_context`, for one step's forward half.

        Left before ``backward``: e2KD with ``bcos_student: explanation`` runs the B-cos
        student's forward pass and its ``W(x)`` in explanation mode, and the backward after the
        mode is left differentiates through the dynamic factors, as the authors' code does
        (:func:`~distillscope.models.bcos_layers.dynamic_product`).
        """
        stack = ExitStack()
        for m in self.members:
            stack.enter_context(self._loss(m).student_context(self.models[m]))
        return stack

    def _bind(self, train: DistillDataset) -> None:
        """Bind each member's loss on a sample batch (before a resumed state is loaded over it),
        then check that the teacher cache covers the training set and the features read."""
        cache = self.teacher_cache
        for m in self.members:
            loss = self._loss(m)
            if loss.bound:
                continue
            views = "views" in loss.needs  # views run the teacher live
            bind_loss(
                loss,
                self.models[m],
                self.teacher.to(self.device) if self.teacher is not None else None,
                train,
                device=self.device,
                seed=self.seed,
                name=m,
                teacher_outputs=None if cache is None or views else cache.outputs,
                peers=[self.models[q] for q in self.members if q != m],
            )
            loss.to(self.device)
        if cache is not None:
            paths = [p for m in self.members for p in self._loss(m).teacher_paths()]
            cache.check(train, list(dict.fromkeys(paths)) if self.needs_teacher else ())
            if cache.device != self.device and cache.folder is None:  # a disk cache serves rows
                self.teacher_cache = cache.to(self.device)

    def _check_setup(self, resume: bool) -> None:
        check_precision(self.cfg.precision, torch.device(self.device))
        check_compile(self.cfg.compile, torch.device(self.device))
        if resume and self.checkpoint_dir is None:
            raise ConfigError("resume=True needs a checkpoint_dir to resume from; pass one")
        if self.needs_teacher and self.teacher is None and self.teacher_cache is None:
            raise ConfigError(
                f"{self.name!r}: the loss {type(self.loss).__name__} needs a teacher; pass "
                "teacher= or teacher_cache= to the Trainer"
            )

    def _read_state(self, steps: int) -> TrainState | None:
        assert self.checkpoint_dir is not None
        path = self.checkpoint_dir / LAST_CHECKPOINT
        if not path.exists():
            return None
        state = load_train_state(path)
        group = {} if self.single else {"peers": self.members}
        check_same_settings(
            path,
            state,
            self.cfg,
            seed=self.seed,
            steps_per_epoch=steps,
            **group,
            data=self._data_print,
            identity=self.identity,
        )
        return state

    def _state_modules(self) -> tuple[nn.Module, nn.Module]:
        """The modules whose state a checkpoint holds (one network: its own, unprefixed)."""
        if self.single:
            return self.model, self.loss
        return self.models, self.losses

    def _named_trainable(
        self, state: TrainState | None
    ) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Member -> ``(name, param)`` to optimise; on resume exactly the saved names (a term's
        ``prepare`` may have frozen some), others frozen."""
        named: dict[str, dict[str, nn.Parameter]] = {}
        for m in self.members:
            prefix = "" if self.single else f"{m}/"
            own = {f"{prefix}model.{n}": p for n, p in self.models[m].named_parameters()}
            own.update({f"{prefix}loss.{n}": p for n, p in self.losses[m].named_parameters()})
            named[m] = own
        if state is None or "params" not in state.meta:
            return {m: [(n, p) for n, p in own.items() if p.requires_grad]
                    for m, own in named.items()}  # fmt: skip
        wanted = state.meta["params"]
        every = {n: p for own in named.values() for n, p in own.items()}
        missing = [n for n in wanted if n not in every]
        if missing:
            raise CheckpointError(
                f"{self.checkpoint_dir}/{LAST_CHECKPOINT} optimises {missing[0]!r}, which this "
                "model and loss lack; pass the same architecture and loss or delete it"
            )
        chosen = set(wanted)
        for n, p in every.items():
            if n not in chosen:
                p.requires_grad_(False)  # frozen in the saved run (e.g. by a term's prepare)
        return {m: [(n, own[n]) for n in wanted if n in own] for m, own in named.items()}

    # ------------------------------------------------------------------- loop
    def _fit(
        self,
        train: DistillDataset,
        val: DistillDataset | None,
        steps: int,
        state: TrainState | None,
    ) -> None:
        cfg = self.cfg
        stage_state = None
        if state is not None and "stage" in state.meta:  # killed in a stage before training
            stage_state, state = state, None
            self._load_states(stage_state)
        if state is None:
            seed_everything(self.seed)
            self.histories = {m: [] for m in self.members}
            prepared = False
        else:
            self._load_states(state)
            saved = state.meta["history"]
            saved = {self.members[0]: saved} if self.single else saved
            times = state.volatile.get("history", {})  # wall times, kept beside the file
            self.histories = {m: with_volatile(saved[m], times.get(m, [])) for m in self.members}
            prepared = bool(state.meta.get("prepared", False))
        start = len(self.history)
        if start >= cfg.epochs:
            self._sync_metrics()
            self._save_final()
            return
        if not prepared:
            self._prepare(train, steps, stage_state)
        named = self._named_trainable(state)
        if self.single:
            optimizer = build_optimizer([p for _, p in named[self.members[0]]], cfg)
        else:
            optimizer = build_optimizer([{"params": [p for _, p in named[m]]}
                                         for m in self.members], cfg)  # fmt: skip
        scheduler = build_scheduler(optimizer, cfg, steps)
        if state is not None:
            self._restore(state, optimizer, scheduler)
            self._sync_metrics()
        names = [n for m in self.members for n, _ in named[m]]
        if self.world.parallel:
            self._go_parallel(fresh=state is None)
        self._compile()
        for epoch in range(start, cfg.epochs):
            records = self._train_epoch(train, epoch, steps, optimizer, scheduler)
            for m, record in records.items():
                if val is not None:
                    result = evaluate(self.models[m], val, cfg.batch_size, self.device,
                                      cfg.max_batches, world=self.world,
                                      workers=cfg.loader_workers)  # fmt: skip
                    record["val_acc"], record["val_loss"] = result["acc"], result["loss"]
                self.histories[m].append(record)
            self._checkpoint(optimizer, scheduler, names, steps)
            self._append_metrics(list(records.values()))
        self._save_final()

    def _compile(self) -> None:
        """Each trained network's runner through ``torch.compile`` when ``cfg.compile`` asks
        (:mod:`distillscope.train.compiled`); the networks themselves stay as they are."""
        step = self.step
        assert step is not None
        for m in self.members:
            if any(p.requires_grad for p in self.models[m].parameters()):
                step.runners[m] = compiled(step.runners[m], self.cfg.compile)

    def _go_parallel(self, fresh: bool) -> None:
        """Rank 0's networks and loss states on every rank, each trained network run through
        DDP by the step, and at a fresh start the generators of the ranks after 0 apart (their
        dropout and augmentation draws; rank 0 keeps the run's)."""
        world, step = self.world, self.step
        assert step is not None
        for m in self.members:
            broadcast_state(self.losses[m], world)
            if any(p.requires_grad for p in self.models[m].parameters()):
                step.runners[m] = wrap(self.models[m], self.device)  # broadcasts rank 0's
            else:
                broadcast_state(self.models[m], world)
        if fresh and not world.main:
            seed_everything(rank_seed(self.seed, world.rank))
        normed = [m for m in self.members
                  if any(isinstance(x, BATCH_NORMS) for x in self.models[m].modules())]  # fmt: skip
        if normed and world.main:
            share = self.cfg.batch_size // world.size
            say(
                f"warning: {', '.join(normed)}: batch norm normalises over each rank's share of "
                f"a batch ({share} items), not over the global batch of {self.cfg.batch_size}, "
                "so results differ from one process's"
            )

    def _prepare(self, train: DistillDataset, steps: int, stage_state: TrainState | None) -> None:
        """Every member's preparation through a :class:`StageRunner` (its loss's stages and
        ``prepare``), continued from ``stage_state`` when a stage was killed."""
        resume, history, first = None, [], 0
        if stage_state is not None:
            position = stage_state.meta["stage"]
            if position.get("member") not in self.members:
                raise CheckpointError(
                    f"{self.checkpoint_dir}/{LAST_CHECKPOINT} stopped in a stage of "
                    f"{position.get('member')!r}, which is not trained here; pass the same "
                    "networks or delete it"
                )
            resume = StageResume(
                position["member"], int(position["index"]), position["key"],
                int(position["epochs_done"]), stage_state.optimizer, stage_state.rng_tensors,
                stage_state.rng_meta,
            )  # fmt: skip
            history = list(stage_state.meta.get("stage_history", []))
            first = self.members.index(resume.member)
            self._sync_stage_metrics(history)

        def save(optimizer: Optimizer, position: dict[str, Any], done: list[Any]) -> None:
            self._stage_checkpoint(optimizer, position, done, steps)

        for i, m in enumerate(self.members):
            runner = StageRunner(
                m,
                progress=self._shown,
                metrics_path=self.metrics_path if self.world.main else None,
                on_metrics=self.on_metrics if self.world.main else None,
                save=save if self.checkpoint_dir is not None else None,
                resume=resume if i == first else None,
                skip_all=resume is not None and i < first,
                history=history,
            )
            batches = StageBatches(train, self.cfg.batch_size, self.device, self.seed, steps)
            runner.prepare(self._loss(m), self.models[m], self.teacher, batches)
            history = runner.history

    def _train_epoch(
        self,
        train: DistillDataset,
        epoch: int,
        steps: int,
        optimizer: Optimizer,
        scheduler: LRScheduler,
    ) -> dict[str, dict[str, Any]]:
        device, cfg, step, members = self.device, self.cfg, self.step, self.members
        trained = [p for group in optimizer.param_groups for p in group["params"]]  # AGC's
        assert step is not None
        self.models.train()
        self.losses.train()
        lr = float(optimizer.param_groups[0]["lr"])
        generator = epoch_generator(self.seed, epoch)
        world = self.world
        shard = (world.rank, world.size)
        pin = device.type == "cuda"  # page-locked batches, copied while the GPU computes
        every = iter_batches(train, cfg.batch_size, True, generator, shard=shard,
                             workers=cfg.loader_workers, pin_memory=pin)  # fmt: skip
        batches = islice(every, steps)
        owned = self._owned(trained)  # their gradients averaged here, not by DDP
        keys: dict[str, list[str]] = {}
        key_sets: dict[str, set[str]] = {}
        sums: dict[str, Tensor] = {}  # member -> (P,) once the parts are known
        correct = {m: torch.zeros((), dtype=torch.long, device=device) for m in members}
        seen = done = 0
        start = time.perf_counter()
        bar = tqdm(
            total=steps,
            desc=f"{self.name} {epoch + 1}/{cfg.epochs}",
            file=sys.stderr,
            disable=not self._shown,
            leave=False,
            dynamic_ncols=True,
        )
        scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
        with bar:
            for b, batch in enumerate(batches):
                batch = batch.to(device, non_blocking=pin)
                with self._student_contexts(), autocast(cfg.precision, device):
                    result = step(batch)  # contexts left before the backward (e2KD on B-cos)
                parts = result.parts
                if not keys:
                    keys = {m: self._check_first_step(m, result) for m in members}
                    key_sets = {m: set(keys[m]) for m in members}
                    sums = {m: torch.zeros(len(keys[m]), device=device) for m in members}
                else:
                    for m in members:
                        if parts[m].keys() != key_sets[m]:
                            raise TrainingError(
                                f"the loss of {m!r} returned parts {sorted(parts[m])} at epoch "
                                f"{epoch + 1}, batch {b + 1} but {keys[m]} before; return the "
                                "same parts every step"
                            )
                if self.single:
                    total = parts[members[0]]["loss"]
                else:
                    total = torch.stack([parts[m]["loss"] for m in members]).sum()  # ()
                real, share = self._share(b, len(train), len(batch))
                objective = total
                check = total
                if world.parallel:  # this rank's share of the global batch's mean loss
                    objective = total * share
                    check = sum_across(objective.detach().float(), world)  # every rank stops
                if not math.isfinite(check.item()):  # the step's one sync, cheaper than a kernel
                    raise self._non_finite(result, batch, epoch, b, steps)
                optimizer.zero_grad(set_to_none=True)
                if scaler is None:
                    objective.backward()
                    average_gradients(owned, world)
                else:  # fp16: gradients scaled up in the backward, unscaled before the step
                    scaler.scale(objective).backward()
                    average_gradients(owned, world)
                    scaler.unscale_(optimizer)
                if cfg.agc_clip is not None:
                    adaptive_clip_grad_(trained, cfg.agc_clip)
                if scaler is None:
                    optimizer.step()
                else:
                    scaler.step(optimizer)
                    scaler.update()
                scheduler.step()
                for m in members:
                    values = torch.stack([parts[m][k].detach() for k in keys[m]])  # (P,)
                    if world.parallel:  # summed over the ranks: the global batch's means
                        values = values * (share / world.size)
                    sums[m] += values.to(sums[m].dtype)
                    hits = result.logits[m].detach().argmax(1) == batch.targets  # (B,)
                    correct[m] += hits[:real].sum()
                seen += real
                done = b + 1
                bar.update()
                if self._shown and done % POSTFIX_EVERY == 0:
                    running = sum(sums[m][0].item() for m in members) / done
                    bar.set_postfix(loss=f"{running:.4f}", refresh=False)
            elapsed = time.perf_counter() - start
            if world.parallel:
                for m in members:
                    sum_across(sums[m], world)
                    sum_across(correct[m], world)
                seen = int(sum_across(torch.tensor(seen, device=device), world).item())
            records: dict[str, dict[str, Any]] = {}
            for m in members:
                means = (sums[m] / max(done, 1)).tolist()
                record: dict[str, Any] = {"model": m, "epoch": epoch + 1, "lr": lr}
                record.update(zip(keys[m], means))
                record.update({"train_acc": correct[m].item() / max(seen, 1), "time": elapsed})
                records[m] = record
            first = records[members[0]]
            bar.set_postfix(loss=f"{first['loss']:.4f}", acc=f"{first['train_acc']:.3f}")
        return records

    def _share(self, b: int, n: int, items: int) -> tuple[int, float]:
        """This rank's real items in batch ``b`` (its ``items`` less a stand-in) and the weight
        of its mean loss (:func:`~distillscope.data.base.share_weight`); one process:
        ``(items, 1.0)``."""
        world = self.world
        if not world.parallel:
            return items, 1.0
        size = min(self.cfg.batch_size, n - b * self.cfg.batch_size)  # the global batch's
        real = len(range(world.rank, size, world.size))  # 0: a stand-in item
        return real, share_weight(size, world.rank, world.size)

    def _owned(self, trained: list[Tensor]) -> list[Tensor]:
        """The trained parameters DDP does not average: a loss's own (regressors,
        embeddings); none in one process."""
        if not self.world.parallel or self.step is None:
            return []
        runners = self.step.runners
        wrapped = {id(p) for m in self.members if runners[m] is not self.models[m]
                   for p in self.models[m].parameters()}  # fmt: skip
        return [p for p in trained if id(p) not in wrapped]

    def _check_first_step(self, member: str, result: StepResult) -> list[str]:
        """Validate a member's first loss dict and features; its part keys, ``"loss"`` first."""
        parts, loss = result.parts[member], self._loss(member)
        if "loss" not in parts:
            raise TrainingError(
                f"the loss {type(loss).__name__} returned {sorted(parts)} without a "
                "'loss' key; a loss must return {'loss': total, ...}"
            )
        for key, value in parts.items():
            if not isinstance(value, Tensor) or value.numel() != 1:
                raise TrainingError(f"loss part {key!r} is not a scalar tensor; return 0-d tensors")
        wanted = (
            ("student", result.student[member], loss.student_paths()),
            ("teacher", result.teacher[member], loss.teacher_paths()),
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
        self, result: StepResult, batch: Batch, epoch: int, b: int, steps: int
    ) -> NonFiniteLoss:
        """The one-line error for a non-finite loss (built only when it happens)."""
        bad_members = [m for m in self.members
                       if not math.isfinite(result.parts[m]["loss"].item())]  # fmt: skip
        member = (bad_members or self.members)[0]
        parts, logits = result.parts[member], result.logits[member]
        bad = [
            f"{k}={v.item() if v.numel() == 1 else 'non-finite'}"
            for k, v in parts.items()
            if isinstance(v, Tensor) and not bool(torch.isfinite(v).all())
        ]
        causes = []
        if not bool(torch.isfinite(batch.inputs).all()):
            causes.append("the inputs contain NaN/inf")
        if not bool(torch.isfinite(logits).all()):
            causes.append(f"{member!r}'s logits are non-finite (its weights diverged)")
        cause = f" ({'; '.join(causes)})" if causes else ""
        indices = batch.index[:5].tolist()
        more = ", ..." if len(batch) > 5 else ""
        where = repr(member) if self.single else f"{member!r} (group {self.name!r})"
        return NonFiniteLoss(
            f"non-finite loss in {where} at epoch {epoch + 1}, step "
            f"{epoch * steps + b + 1} (batch {b + 1} of {steps}, dataset indices "
            f"{str(indices)[1:-1]}{more}): {', '.join(bad)}{cause}; lower train.lr or "
            "check the data and the loss term",
            member=member,
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
        set_rng_state(*rank_rng_state(state.rng_tensors, state.rng_meta, self.world.rank))

    def _load_states(self, state: TrainState) -> None:
        path = f"{self.checkpoint_dir}/{LAST_CHECKPOINT}"
        model_state, loss_state = self._state_modules()
        load_state_strict(model_state, state.model, path)
        load_state_strict(loss_state, state.loss, path)

    def _checkpoint(
        self, optimizer: Optimizer, scheduler: LRScheduler, names: list[str], steps: int
    ) -> None:
        meta = {"prepared": True, "params": names}
        self._save_state(optimizer.state_dict(), scheduler.state_dict(), meta, steps)

    def _stage_checkpoint(
        self,
        optimizer: Optimizer,
        position: dict[str, Any],
        history: list[dict[str, Any]],
        steps: int,
    ) -> None:
        """The checkpoint after a stage epoch: the stage's optimiser and position, no training
        yet (``prepared`` false, no main optimiser)."""
        meta = {"prepared": False, "stage": position, "stage_history": history}
        self._save_state(optimizer.state_dict(), {}, meta, steps)

    def _save_state(
        self,
        optimizer: dict[str, Any],
        scheduler: dict[str, Any],
        extra: dict[str, Any],
        steps: int,
    ) -> None:
        if self.checkpoint_dir is None:
            return
        rng_tensors, rng_meta = gather_rng_state(self.world)  # every rank's generators
        if not self.world.main:
            return
        meta: dict[str, Any] = {
            "name": self.name,
            "epochs_done": len(self.history),
            "history": (
                stable(self.history)
                if self.single
                else {m: stable(rows) for m, rows in self.histories.items()}
            ),
            "config": self.cfg.model_dump(mode="json"),
            "seed": self.seed,
            "steps_per_epoch": steps,
            "data": self._data_print,
            "identity": self.identity,
            **extra,
        }
        if not self.single:
            meta["peers"] = self.members
        model_state, loss_state = self._state_modules()
        state = TrainState(
            model=dict(model_state.state_dict()),
            loss=dict(loss_state.state_dict()),
            optimizer=optimizer,
            scheduler=scheduler,
            rng_tensors=rng_tensors,
            rng_meta=rng_meta,
            meta=meta,
            volatile={"history": {m: volatile(rows) for m, rows in self.histories.items()}},
        )
        save_train_state(self.checkpoint_dir / LAST_CHECKPOINT, state)

    def _save_final(self) -> None:
        if self.checkpoint_dir is None or not self.single or not self.world.main:
            return
        meta = {
            "name": self.name,
            "epochs": len(self.history),
            "train_temperature": self.cfg.temperature,
            "final": stable(self.history[-1:])[0] if self.history else {},
        }
        save_model(self.checkpoint_dir / FINAL_WEIGHTS, self.model, meta)

    def _append_metrics(self, records: list[dict[str, Any]]) -> None:
        if not self.world.main:  # rank 0 writes the lines and feeds the trackers
            return
        if self.metrics_path is not None:
            append_metrics(self.metrics_path, records)
        if self.on_metrics is not None and records:
            self.on_metrics(records)

    def _sync_stage_metrics(self, history: list[dict[str, Any]]) -> None:
        """On resume in a stage, append stage epochs the killed run checkpointed but did not
        log."""
        if self.metrics_path is None:
            return
        logged = logged_stage_epochs(self.metrics_path)
        self._append_metrics(
            [r for r in history if (r["model"], r["stage"], r["epoch"]) not in logged]
        )

    def _sync_metrics(self) -> None:
        """On resume, append history epochs the killed run checkpointed but did not log."""
        if self.metrics_path is None:
            return
        for m in self.members:
            logged = logged_epochs(self.metrics_path, m)
            self._append_metrics([r for r in self.histories[m] if r["epoch"] not in logged])


def check_same_settings(path: Path, state: TrainState, cfg: TrainConfig, **extra: Any) -> None:
    """Raise :class:`ConfigError` unless ``state`` was saved with ``cfg`` and ``extra`` (seed,
    steps per epoch, the training data's fingerprint ``data``, the run's ``identity``, ...),
    which a bit-identical resume needs; ``cfg``'s keys that change no result
    (:data:`~distillscope.identity.NOT_RESULT_TRAIN_KEYS`: the loader's workers) may differ."""
    now = {**cfg.model_dump(mode="json", exclude=set(NOT_RESULT_TRAIN_KEYS)), **extra}
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


def logged_stage_epochs(path: Path) -> set[tuple[str, str, int]]:
    """``(model, stage, epoch)`` of the stage lines already in the metrics file."""
    logged: set[tuple[str, str, int]] = set()
    for row in _rows(path):
        if "stage" in row:
            logged.add((row.get("model"), row.get("stage"), row.get("epoch")))
    return logged


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of a metrics file (lines cut by a kill skipped)."""
    if not path.exists():
        return
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            yield row


def logged_epochs(path: Path, name: str) -> set[int]:
    """Epochs of model ``name`` already in the metrics file (lines cut by a kill and stage
    lines skipped)."""
    return {r.get("epoch") for r in _rows(path) if r.get("model") == name and "stage" not in r}
