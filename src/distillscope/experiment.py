"""One experiment, end to end: data -> teachers -> students -> probes -> results -> report.

Data moves forward only. The config is resolved once into a plan (:mod:`distillscope.plan`),
and the run reads the plan, never the config again. Teachers are trained once and stored by
their identity (everything that determines their weights:
:func:`~distillscope.plan.teacher_identity`), so a later run that asks for the same teacher
reuses it; students, alone or in groups, are trained by the one
:class:`~distillscope.train.trainer.Trainer`; probes read the trained models and the held-out
split; the report reads ``results.json`` only.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distillscope.config import ExperimentConfig, load_config, resolve_config
from distillscope.config_files import QUICKSTART, find_config
from distillscope.data.base import DistillDataset
from distillscope.distill import CombinedLoss, build_loss
from distillscope.errors import DataError, NonFiniteLoss, RunInterrupted, TrainingError
from distillscope.files import clean_stale_temporaries
from distillscope.identity import digest, runtime
from distillscope.messages import say
from distillscope.models.forward import count_parameters
from distillscope.plan import (
    Member,
    Plan,
    build_members,
    load_plan_splits,
    plan_notes,
    resolve_plan,
    roles_of,
    run_identity,
    teacher_identity,
    training_line,
    training_units,
    unit_label,
    with_data_root,
)
from distillscope.plugins import import_registries, load_plugins
from distillscope.probes.base import ProbeData
from distillscope.probes.run import check_probes, run_probes
from distillscope.results import build_results
from distillscope.rundir import RunDir
from distillscope.splits import Splits
from distillscope.teacher_store import TeacherStore, default_store_root
from distillscope.tracking import RunLabel, Trackers, check_tracking, open_trackers
from distillscope.train.cache_pool import CachePool
from distillscope.train.checkpoint import load_own_model, save_model, stable
from distillscope.train.distributed import (
    barrier,
    check_data_parallel,
    from_main,
    process_group,
    rank_device,
    world_from_env,
)
from distillscope.train.evaluate import chance_warning
from distillscope.train.onednn import bf16_runner
from distillscope.train.precision import (
    CHECK_ITEMS,
    TeacherPrecision,
    choose_teacher_precision,
    passes_said,
)
from distillscope.train.seeding import resolve_device, seed_everything
from distillscope.train.trainer import Trainer

log = logging.getLogger(__name__)


class Experiment:
    """Runs one config, or its resolved plan, into a :class:`RunDir`.

    Args:
        cfg: The validated config (resolved here into its plan).
        plan: Its plan, already resolved (:func:`~distillscope.plan.resolve_plan`, with any
            ``--data-root`` written in), instead of ``cfg``: used as it is (a grid cell).
        data_root: Overrides ``data.root`` (and is written into the saved config); with ``cfg``.
        retrain_teacher: Train teachers even when the store has them.
        run_dir: Resume into this existing run directory instead of creating one.
        config_file: The YAML file the config came from (recorded).
        run_at: Start a new run in exactly this directory (grid cells) instead of a timestamped one.
        device_changed: On resume, the user moved the run to another device on purpose.
        tracking_label: The run's name and axis values in the trackers (a grid cell's);
            default: the run directory's name.
    """

    def __init__(
        self,
        cfg: ExperimentConfig | None = None,
        *,
        plan: Plan | None = None,
        data_root: str | None = None,
        retrain_teacher: bool = False,
        run_dir: RunDir | None = None,
        config_file: str | None = None,
        run_at: str | Path | None = None,
        device_changed: bool = False,
        tracking_label: RunLabel | None = None,
    ) -> None:
        if (cfg is None) == (plan is None) or (plan is not None and data_root):
            raise TypeError("Experiment takes a config (and a data root) or a resolved plan")
        if plan is None:  # config.yaml records where the data was
            plan = resolve_plan(with_data_root(cfg, data_root))
        self.plan = plan
        self.retrain_teacher = retrain_teacher
        self.resume = run_dir is not None
        self.run_dir = run_dir
        self.config_file = config_file
        self.run_at = run_at
        self.device_changed = device_changed
        self.device = resolve_device(plan.device)
        self.tracking_label = tracking_label
        #: The trackers fed with every metrics line (open while the run runs).
        self.trackers = Trackers()

    def run(self) -> RunDir:
        """Validate everything, then create the run directory and run; return it.

        Every check that can fail on user input (config, data, models, losses, probes, output
        folder and teacher store writable, and on resume that nothing it was made from has
        changed) runs before the first byte is written.

        Raises:
            UserError: Bad input (nothing written when found before the run starts).
            RunInterrupted: Ctrl-C during the run (carries the run directory to resume).
        """
        start = time.time()
        self.world = world_from_env()  # torchrun / srun: one of several data-parallel ranks
        self.device = rank_device(self.device, self.world)
        with process_group(self.world, self.device):
            return self._start(start)

    def _start(self, start: float) -> RunDir:
        world = self.world
        import_registries()  # installed plugins, and the config's: a grid cell's process too
        load_plugins(self.plan.plugins)
        if self.plan.threads is not None:
            torch.set_num_threads(self.plan.threads)
        else:  # the thread count changes numbers: config.yaml records the one that ran
            self.plan = self.plan.with_threads(torch.get_num_threads())
        plan = self.plan
        seed_everything(plan.seed)
        splits = load_plan_splits(plan)
        members = build_members(plan, splits)
        check_probes(plan.probes, plan.probe_defaults, {n: m.model for n, m in members.items()},
                     roles_of(members))  # fmt: skip
        self.runtime = runtime(self.device, plan.threads)
        if world.parallel:  # the ranks' sums round otherwise: part of what made the numbers
            self.runtime["ranks"] = world.size
            self._check_parallel(members, splits)
        if self.run_dir is not None:
            self.runtime = self.run_dir.resumed_runtime(self.runtime, self.device_changed)
        self.identity = run_identity(plan, splits, self.runtime)
        self.digest = digest(self.identity)
        if self.run_dir is not None:
            self.run_dir.check_identity(self.identity)
        self.store = TeacherStore(default_store_root(plan.teacher_store))
        self._check_store(members, splits)
        check_tracking(plan.tracking, plan.name)
        if self.run_dir is None:
            record = {"digest": self.digest, "identity": self.identity}
            self.run_dir = from_main(world, lambda: RunDir.start(
                plan.output_dir, plan.name, self.run_at, record, plan.record))  # fmt: skip
        elif world.main:
            for stale in clean_stale_temporaries(self.run_dir.path):
                log.info("removed %s (left by a kill during a write)", stale)
        rd = self.run_dir
        try:
            return self._run(members, splits, start)
        except KeyboardInterrupt:
            self.trackers.close("KILLED")
            raise RunInterrupted(str(rd.path)) from None
        except DataError as exc:
            raise DataError(
                f"{exc}; the run so far is in {rd.path}: continue it with "
                f"`distillscope run --resume {rd.path}`"
            ) from None
        except TrainingError as exc:
            stopped = f"{exc}; {self._after_stop(exc)}"
            if isinstance(exc, NonFiniteLoss):
                raise NonFiniteLoss(stopped, member=exc.member, stage=exc.stage) from None
            raise TrainingError(stopped) from None
        finally:
            self.trackers.close("FAILED")  # a run that raised (closed already when finished)

    def _after_stop(self, exc: TrainingError) -> str:
        """What to do after training stopped: the run directory, and for a non-finite loss
        the lower learning rate to run again with (``--resume`` continues a run with its saved
        settings by design, so it would stop at the same step again: ``docs/reuse.md``)."""
        rd = self.run_dir
        assert rd is not None
        where = f"the run so far is in {rd.path}"
        if not isinstance(exc, NonFiniteLoss):
            return where
        if exc.stage is not None:
            lower = "a lower learning rate for that stage (a parameter of its loss)"
            grid = f"run the grid (or config) again with {lower}"
            single = f"run `distillscope run {rd.config}` again with {lower}"
        else:
            member = self.plan.members[exc.member]
            group = member.group
            peers = [m for m in self.plan.members.values() if group and m.group == group]
            root = "teachers" if member.role == "teacher" else "students"
            lower = " ".join(
                f"{root}.{m.name}.train.lr={m.train.lr / 2:g}" for m in peers or [member]
            )
            grid = f"run the grid (or config) again with {lower}"
            single = f"run `distillscope run {rd.config} {lower}`"
        return (
            f"{where}; --resume would stop at the same step (it continues with the saved "
            f"settings): {grid if self.run_at is not None else single}, a new run (teachers "
            "already trained are reused from the store)"
        )

    def _open_trackers(self, rd: RunDir) -> None:
        """Open the trackers ``tracking`` chooses (each says where it writes)."""
        plan = self.plan
        label = self.tracking_label or RunLabel(rd.path.name)
        self.trackers = open_trackers(plan.tracking, rd.path, label, plan.record, plan.name,
                                      tags={"distillscope.digest": self.digest},
                                      resume=self.resume)  # fmt: skip
        for tracker in self.trackers.live:
            say(f"tracking: {tracker.name} writes to {tracker.where}")

    def _check_parallel(self, members: dict[str, Member], splits: Splits) -> None:
        """Refuse (one line, before anything is written) what cannot train data-parallel."""
        for m in members.values():
            if m.role == "teacher" and m.checkpoint is not None:
                continue
            loss = m.bound_loss or build_loss(m.loss)
            check_data_parallel(self.world, {m.name: loss}, m.train.batch_size,
                                len(splits.train_of(m.name)))  # fmt: skip

    def _check_store(self, members: dict[str, Member], splits: Splits) -> None:
        """Fail now if a teacher will be trained and the store cannot take it."""
        rt, rd = self.runtime, self.run_dir
        entries = [self.store.entry(m.spec.name, digest(teacher_identity(m.plan, splits, rt), 16))
                   for m in members.values() if m.role == "teacher" and m.checkpoint is None
                   and not (rd is not None and rd.model(m.name).is_file())]  # fmt: skip
        self.store.needs_room(entries, self.retrain_teacher)

    def _run(self, members: dict[str, Member], splits: Splits, start: float) -> RunDir:
        plan, rd = self.plan, self.run_dir
        assert rd is not None
        say(f"run directory {rd}")
        say(
            f"data {plan.data.name}: {len(splits.train)} train / {len(splits.test)} held-out, "
            f"device {self.device}"
        )
        for line in plan_notes(members, splits):
            say(line)
        main = self.world.main  # rank 0 writes; the other ranks train with it and read
        if main:  # trackers copy rank 0's metrics lines, as metrics.jsonl holds them
            self._open_trackers(rd)
        vocab = splits.train.info.vocab
        if vocab is not None and main:  # text: the word-level tokenizer the token ids came from
            from distillscope.data.text import save_tokenizer, word_tokenizer

            save_tokenizer(word_tokenizer(vocab), rd.path)
        for m in members.values():
            m.model.to(self.device)
        self.teacher_precisions: dict[str, TeacherPrecision] = {}
        self.teacher_runners: dict[str, nn.Module] = {}
        self.pool = CachePool(plan.teacher_cache_mb, self.device, plan.progress,
                              disk=plan.teacher_cache_disk)  # fmt: skip
        for m in members.values():
            if m.role == "teacher":
                self._teacher(m, splits)
                barrier(self.world)
        for peers in training_units(members):
            self._students(peers, members, splits)
            barrier(self.world)
        if not main:  # rank 0 probes and writes the results; the others wait for it
            barrier(self.world)
            return rd
        models = {name: m.model.eval() for name, m in members.items()}
        data = ProbeData(splits.test, splits.test.info, device=str(self.device))
        results = run_probes(plan.probes, plan.probe_defaults, models, data, roles_of(members),
                             plan.seed, plan.progress)  # fmt: skip
        record = build_results(
            config=plan.record,
            members=members.values(),
            parameters={m.name: count_parameters(m.model) for m in members.values()},
            splits=splits,
            probes=results,
            duration=time.time() - start,
            device=str(self.device),
            config_file=self.config_file,
            digest=self.digest,
            identity=self.identity,
        )
        if self.teacher_precisions:  # what each teacher's passes ran in, and what the check saw
            record["teacher_precision"] = {
                key.partition("|")[0]: asdict(chosen)
                for key, chosen in self.teacher_precisions.items()
            }
        rd.write_results(record)
        from distillscope.report import render_report

        render_report(rd.path)
        say(f"report {rd.report}")
        self.trackers.close("FINISHED", [rd.results, rd.report, rd.metrics])
        barrier(self.world)
        return rd

    # ------------------------------------------------------------------ teachers
    def _teacher(self, m: Member, splits: Splits) -> None:
        rd = self.run_dir
        assert rd is not None
        out = rd.model(m.name)
        if m.checkpoint is not None:  # weights were loaded (and checked) by build_members
            say(f"teacher {m.name}: loaded {m.checkpoint}")
            if self.world.main:
                save_model(out, m.model, {"name": m.name, "source": "checkpoint"})
            return
        if self.resume and out.is_file():
            meta = load_own_model(out, m.model, self.digest)
            m.reused = bool(meta.get("reused", False))
            m.history = list(meta.get("history") or rd.history(m.name))
            return
        train = splits.train_of(m.name)
        identity = teacher_identity(m.plan, splits, self.runtime)
        described = {"model": m.spec.model_dump(mode="json"), "data": train.info.name,
                     "n_train": len(train), "fingerprint": identity["data"]["train"],
                     "seed": m.seed}  # fmt: skip

        def fit() -> list[dict[str, Any]]:
            say(f"teacher {m.name}: training {m.spec.name} for {m.train.epochs} epochs")
            return self._fit([m], {m.name: build_loss(m.loss)}, None, None, splits)[m.name]

        key, m.history, m.reused = self.store.obtain(
            m.name, m.spec.name, identity, m.model, fit, retrain=self.retrain_teacher,
            described=described, keep=self.world.main,
        )  # fmt: skip
        meta = {"name": m.name, "key": key, "reused": m.reused, "history": stable(m.history)}
        if self.world.main:
            save_model(out, m.model, {**meta, "identity": self.digest})

    # ------------------------------------------------------------------ students
    def _students(self, peers: list[Member], members: dict[str, Member], splits: Splits) -> None:
        """Train one student, or a group's students together in one loop (DML peers)."""
        rd = self.run_dir
        assert rd is not None
        first, group = peers[0], peers[0].group
        if self.resume and all(rd.model(m.name).is_file() for m in peers):
            for m in peers:
                load_own_model(rd.model(m.name), m.model, self.digest)
                m.history = rd.history(m.name)
            say(f"{unit_label(peers)}: already trained, loaded")
            return
        losses = {m.name: (m.bound_loss or build_loss(m.loss)).to(self.device) for m in peers}
        teacher = None
        if first.teacher and any(loss.needs_teacher for loss in losses.values()):
            teacher = members[first.teacher]
        cache = None
        precision, runner = "fp32", None
        if teacher is not None:
            train = splits.train_of(first.name)
            explains = any("explanation" in loss.needs for loss in losses.values())
            precision, runner = self._teacher_passes(teacher, train, members, explains)
            cache = self.pool.get(first.name, first.cache_mode, teacher.name, runner, train,
                                  list(losses.values()), precision)  # fmt: skip
        say(training_line(peers))
        histories = self._fit(peers, losses, runner, cache, splits, precision)
        for m in peers:
            m.history = histories[m.name]
            meta = {"name": m.name, **({"group": group} if group else {}), "identity": self.digest}
            if self.world.main:
                save_model(rd.model(m.name), m.model, meta)

    def _teacher_passes(
        self, teacher: Member, train: DistillDataset, members: dict[str, Member], explains: bool
    ) -> tuple[str, nn.Module]:
        """The precision of ``teacher``'s passes on ``train`` (``teacher_precision``) and the
        network that runs them for a student whose loss ``explains`` the teacher or not.

        Checked once per teacher and data, said in one line and recorded for results.json. In
        bf16 the passes run on a copy with the batch norms folded into their convolutions
        (:mod:`distillscope.train.fold`), except for the modules the losses of all the
        teacher's students among ``members`` read, and except for a student that explains the
        teacher (e2KD: the unfolded teacher, whose explanations stay fp32). When those students
        read nothing but the teacher's output, the copy runs as one oneDNN graph on the CPU
        where it can (:mod:`distillscope.train.onednn`). The check runs that network."""
        key = f"{teacher.name}|{id(train)}"
        if key not in self.teacher_precisions:
            readers = [m.bound_loss or build_loss(m.loss)
                       for m in members.values() if m.teacher == teacher.name]  # fmt: skip
            keep = sorted({p for loss in readers for p in loss.teacher_modules()})
            n = min(CHECK_ITEMS, len(train))
            sample = torch.stack([torch.as_tensor(train[i][0]) for i in range(n)])
            runner, pairs, graph = teacher.model, 0, False
            if self.plan.teacher_precision != "fp32":
                runner, pairs, graph = bf16_runner(teacher.model, keep, sample.to(self.device))
            chosen = choose_teacher_precision(teacher.model, sample, self.device,
                                              self.plan.teacher_precision, runner, pairs,
                                              graph)  # fmt: skip
            self.teacher_precisions[key] = chosen
            self.teacher_runners[key] = runner if chosen.precision == "bf16" else teacher.model
            if chosen.requested != "fp32":
                say(f"teacher {teacher.name} runs in {chosen.precision} for its students "
                    f"({passes_said(chosen)})")  # fmt: skip
        runner = teacher.model if explains else self.teacher_runners[key]
        return self.teacher_precisions[key].precision, runner

    def _fit(
        self,
        peers: list[Member],
        losses: dict[str, CombinedLoss],
        teacher: nn.Module | None,
        cache: Any,
        splits: Splits,
        precision: str = "fp32",
    ) -> dict[str, list[dict[str, Any]]]:
        """Train ``peers`` (one network, or a group) with the one Trainer; member -> history."""
        rd = self.run_dir
        assert rd is not None
        first, group = peers[0], peers[0].group
        seed_everything(first.seed)
        single = group is None
        trainer = Trainer(
            first.model if single else {m.name: m.model for m in peers},
            losses[first.name] if single else losses,
            first.train,
            teacher=teacher,
            teacher_cache=cache,
            device=self.device,
            checkpoint_dir=rd.checkpoints(group or first.name),
            metrics_path=rd.metrics,
            on_metrics=self.trackers.log,
            name=group or first.name,
            progress=self.plan.progress,
            seed=first.seed,
            identity=self.digest,
            teacher_precision=precision,
        )
        history = trainer.fit(splits.train_of(first.name), splits.test, resume=self.resume)
        histories = {first.name: history} if single else history
        k = splits.test.info.num_classes
        for warning in filter(None, (chance_warning(m.name, histories[m.name], k) for m in peers)):
            say(f"warning: {warning}")  # a diverged run that a finite loss let through
        return histories


def run_experiment(
    config: ExperimentConfig | str | Path | dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    *,
    data_root: str | None = None,
    retrain_teacher: bool = False,
    run_at: str | Path | None = None,
    plan: Plan | None = None,
    tracking_label: RunLabel | None = None,
) -> RunDir:
    """Run an experiment and return its :class:`RunDir` (public API).

    Args:
        config: A validated config, a raw mapping, a YAML path, the name of a packaged config
            (``"quickstart"``, ``"methods/dkd"``: :func:`~distillscope.config_files.find_config`;
            a local file of that name wins), or ``None`` for the packaged quickstart.
        overrides: Dotted ``key.path=value`` overrides.
        data_root: Folder holding the dataset (overrides ``data.root``).
        retrain_teacher: Train teachers even when a stored one matches.
        run_at: Write the run into exactly this (new or empty) directory instead of
            ``<output_dir>/<name>-<timestamp>`` (how a grid places its cells).
        plan: Instead of ``config``, ``overrides`` and ``data_root``: the config already
            resolved (:func:`~distillscope.plan.resolve_plan`), run as it is, neither
            validated nor resolved again (how a grid runs its cells).
        tracking_label: The run's name and axis values in the trackers (a grid cell's);
            default: the run directory's name.
    """
    if plan is not None and (config is not None or overrides):
        raise TypeError("run_experiment: pass a config or its resolved plan, not both")
    if plan is None and config is None:
        config = QUICKSTART
    if isinstance(config, (str, Path)):
        config = find_config(config)
    cfg = None if plan is not None else resolve_config(config, overrides)
    config_file = str(config) if isinstance(config, (str, Path)) else None
    return Experiment(cfg, plan=plan, data_root=data_root, retrain_teacher=retrain_teacher,
                      config_file=config_file, run_at=run_at,
                      tracking_label=tracking_label).run()  # fmt: skip


def resume_experiment(
    run_dir: str | Path,
    *,
    data_root: str | None = None,
    device: str | None = None,
    progress: bool | None = None,
    tracking_label: RunLabel | None = None,
) -> RunDir:
    """Continue a killed run from its saved config and checkpoints.

    Args:
        run_dir: The run directory printed by ``distillscope run``.
        data_root: Folder holding the dataset, if it moved.
        device: Continue on this device instead of the saved one (results may differ in the
            last bits between devices).
        progress: Show progress bars (default: as saved).
        tracking_label: The run's name and axis values in the trackers (a grid cell's).
    """
    rd = RunDir.existing(run_dir)
    overrides = []
    if device is not None:
        overrides.append(f"device={device}")
        say(f"resuming on device {device} (saved config: see {rd.config})")
    if progress is not None:
        overrides.append(f"progress={str(progress).lower()}")
    cfg = load_config(rd.config, overrides)
    return Experiment(cfg, data_root=data_root, run_dir=rd, device_changed=device is not None,
                      tracking_label=tracking_label).run()  # fmt: skip


__all__ = ["Experiment", "RunDir", "resume_experiment", "run_experiment"]
