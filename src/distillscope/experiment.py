"""One experiment, end to end: data -> teachers -> students -> probes -> results -> report.

Data moves forward only. Teachers are trained once and stored by a key of everything that
determines their weights (architecture, training settings, loss, data, seed), so a later run that
asks for the same teacher reuses it. Students are trained by the same
:class:`~distillscope.train.trainer.Trainer`; probes read the trained models and the held-out split;
the report reads ``results.json`` only.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distillscope.config import (
    DataConfig,
    ExperimentConfig,
    ModelSpec,
    dump_config,
    load_config,
    load_config_dict,
)
from distillscope.data.base import DistillDataset
from distillscope.distill import CombinedLoss, build_loss
from distillscope.distill.base import bind_seed
from distillscope.errors import CheckpointError, ConfigError, DataError, RunInterrupted, quoted
from distillscope.files import clean_stale_temporaries, read_jsonl
from distillscope.identity import (
    LOCATION_KEYS,
    digest,
    first_difference,
    runtime,
    without_locations,
)
from distillscope.messages import say
from distillscope.models import create_model
from distillscope.models.forward import count_parameters
from distillscope.probes import create_probe
from distillscope.probes.base import ProbeData, Roles, with_directions
from distillscope.registry import MODELS, accepted_params
from distillscope.results import build_results
from distillscope.rundir import RunDir
from distillscope.splits import Splits, load_splits
from distillscope.teacher_store import (
    STORE_VERSION,
    TeacherStore,
    check_writable_dir,
    default_store_root,
)
from distillscope.train.bind import bind_loss
from distillscope.train.checkpoint import load_model_weights, save_model
from distillscope.train.evaluate import chance_warning
from distillscope.train.seeding import resolve_device, seed_everything
from distillscope.train.teacher_cache import (
    TeacherCache,
    cache_allowed,
    cache_bytes,
    unmoved_features,
)
from distillscope.train.trainer import Trainer

log = logging.getLogger(__name__)


@dataclass
class Member:
    """One network of the experiment and how it is made."""

    name: str
    role: str  # teacher | independent | student
    spec: ModelSpec
    model: nn.Module
    train: Any
    loss: dict[str, dict[str, Any]]
    teacher: str | None = None
    checkpoint: str | None = None
    reused: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    bound_loss: CombinedLoss | None = None  # a student's loss, bound at start-up
    group: str | None = None  # students trained together (DML)
    data: DataConfig | None = None  # its own training data (None: the top-level data)
    seed: int | None = None  # its initial weights, batch order, binding (None: the run's)
    cache_mode: str | None = None  # its teacher_cache mode (None: the run's)


def build_model(spec: ModelSpec, data: DistillDataset) -> nn.Module:
    """Create ``spec`` with ``num_classes`` and input size taken from the data."""
    info = data.info
    params = dict(spec.params)
    params.setdefault("num_classes", info.num_classes)
    # adapters ("torchvision:x") take in_channels; zoo models say what they accept
    factory_params = {"in_channels"} if ":" in spec.name else accepted_params(MODELS.get(spec.name))
    shape = info.input_shape

    def offer(key: str, value: Any) -> None:
        if factory_params is None or key in factory_params:
            params.setdefault(key, value)

    if len(shape) == 3:
        offer("in_channels", shape[0])
        offer("input_size", shape[-1])
        # models that read pixels (B-cos's [x, 1 - x] encoding) undo the data's normalisation
        if info.mean is not None and info.std is not None and factory_params is not None:
            offer("input_mean", tuple(info.mean))
            offer("input_std", tuple(info.std))
    offer("in_features", math.prod(shape))
    return create_model(spec.name, **params)


def teacher_identity(
    cfg: ExperimentConfig, name: str, splits: Splits, rt: dict[str, Any]
) -> dict[str, Any]:
    """Everything that determines teacher ``name``'s trained weights; its digest keys the store.

    Built from the teacher's whole spec (every field, so a new field enters the key by itself)
    with what it takes from the run resolved (training settings, data without its folder,
    seed), the fingerprints of the data it trains and is validated on (every byte loaded: the
    same config pointed at other files gets another key, the same files moved the same key),
    and the runtime (torch version, thread count, device type).
    """
    spec = cfg.teachers[name]
    plan = spec.model_dump(mode="json")
    plan["train"] = cfg.train_for(spec.train).model_dump(mode="json")
    data = cfg.data_for(spec.data).model_dump(mode="json")
    plan["data"] = {k: v for k, v in data.items() if k not in LOCATION_KEYS}
    plan["seed"] = cfg.seed if spec.seed is None else spec.seed
    return {
        "store_version": STORE_VERSION,
        "teacher": plan,
        "data": {"train": splits.train_of(name).fingerprint(), "test": splits.test.fingerprint()},
        "runtime": rt,
    }


def run_identity(cfg: ExperimentConfig, splits: Splits, rt: dict[str, Any]) -> dict[str, Any]:
    """What a run computes from: its whole config (but :data:`~distillscope.identity.
    NOT_RESULT_KEYS` and data folders), every split's fingerprint and the runtime
    (:mod:`distillscope.identity`). Recorded in ``identity.json``, ``results.json`` and each
    checkpoint; resume and grid re-runs refuse a run whose identity differs."""
    return {
        "config": without_locations(dump_config(cfg)),
        "data": splits.fingerprints(),
        "runtime": rt,
    }


def plan_members(cfg: ExperimentConfig, splits: Splits) -> dict[str, Member]:
    """Build every network and bind every student's loss: the start-up dry run.

    Bad model parameters, a wrong feature path or a loss that cannot apply to its
    teacher/student pair fail here, in seconds, before anything is written or trained. Each
    student's loss is bound (:func:`~distillscope.train.bind.bind_loss`) on a sample batch
    through its model and its (not yet trained) teacher, whose shapes are all binding reads;
    binding is deterministic, so a resumed run binds again and loads the saved state over it.
    """
    members: dict[str, Member] = {}
    for name, t in cfg.teachers.items():
        seed = cfg.seed if t.seed is None else t.seed
        seed_everything(seed)
        members[name] = Member(
            name=name,
            role="teacher",
            spec=t.model,
            model=build_model(t.model, splits.train),
            train=cfg.train_for(t.train),
            loss=t.loss,
            checkpoint=t.checkpoint,
            data=None if t.data is None else cfg.data_for(t.data),
            seed=seed,
        )
        if t.checkpoint is not None:
            if not Path(t.checkpoint).is_file():
                raise ConfigError(
                    f"config key 'teachers.{name}.checkpoint': file {t.checkpoint!r} not found; "
                    "give an existing .safetensors file or remove the key to train the teacher"
                )
            load_model_weights(t.checkpoint, members[name].model)  # corrupt -> CheckpointError
    seen_groups: set[str] = set()
    for name, s in cfg.students.items():
        spec = s.model or cfg.student
        seed = cfg.seed if s.seed is None else s.seed
        seed = peer_seed(cfg.seed, name) if s.group in seen_groups else seed
        seed_everything(seed)
        if s.group is not None:
            seen_groups.add(s.group)
        members[name] = Member(
            name=name,
            role=s.role or "student",
            spec=spec,
            model=build_model(spec, splits.train),
            train=cfg.train_for(s.train),
            loss=s.loss_spec(),
            teacher=s.teacher,
            group=s.group,
            data=None if s.data is None else cfg.data_for(s.data),
            seed=cfg.seed if s.seed is None else s.seed,
            cache_mode=s.teacher_cache,
        )
    for m in members.values():
        if m.role == "teacher":
            continue
        loss = build_loss(m.loss)
        teacher = members[m.teacher].model if m.teacher and loss.needs_teacher else None
        data = splits.train_of(m.name)
        seed = cfg.seed if m.seed is None else m.seed
        bind_loss(loss, m.model, teacher, data, device="cpu", seed=seed, name=m.name)
        m.bound_loss = loss
    return members


def _cache_size(cache: TeacherCache) -> int:
    tensors = [cache.logits, *cache.features.values()]
    return sum(t.numel() * t.element_size() for t in tensors)


def peer_seed(seed: int, name: str) -> int:
    """Initial-weights seed of a group member after the first (mutual learning needs peers that
    start apart: identical peers agree from the first step and never teach each other). Every
    other student, and the first member of a group, starts from the run's seed, so students of one
    architecture begin with the same weights.

    Example:
        >>> peer_seed(0, "dml_b") == peer_seed(0, "dml_b") != peer_seed(0, "dml_c")
        True
    """
    return bind_seed(seed, f"peer:{name}") % (2**32)


#: History fields that differ between identical runs (wall times); kept out of model files so
#: identical runs write byte-identical files.
VOLATILE_FIELDS = ("time",)


def stable(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``history`` without :data:`VOLATILE_FIELDS`."""
    return [{k: v for k, v in row.items() if k not in VOLATILE_FIELDS} for row in history]


def identical_members(members: dict[str, Member], run_seed: int) -> list[tuple[str, str, int]]:
    """``(first, second, seed)`` for networks of the run that will come out identical.

    Two members with the same architecture, loss, teacher, data, training settings and
    effective seed train to the same weights (training is deterministic), e.g. a "second
    independent seed" whose ``seed`` equals the run's: a sanity pair that compares a network
    with itself; or a foreign teacher with an independent student's recipe and seed. The
    teacher counts only for a loss that reads one. Group peers start apart
    (:func:`peer_seed`) and loaded checkpoints are skipped.

    Example:
        >>> spec = ModelSpec(name="mlp")
        >>> a = Member("a", "independent", spec, nn.Identity(), {}, {"ce": {}}, seed=1)
        >>> b = Member("b", "independent", spec, nn.Identity(), {}, {"ce": {}})
        >>> identical_members({"a": a, "b": b}, run_seed=1)
        [('a', 'b', 1)]
        >>> identical_members({"a": a, "b": b}, run_seed=0)
        []
    """
    seen: dict[str, str] = {}
    twins: list[tuple[str, str, int]] = []
    for m in members.values():
        if m.group is not None or m.checkpoint is not None:
            continue
        seed = run_seed if m.seed is None else m.seed
        train = m.train.model_dump() if hasattr(m.train, "model_dump") else m.train
        data = m.data.model_dump() if m.data is not None else None
        taught = m.bound_loss is not None and m.bound_loss.needs_teacher
        teacher = [m.teacher, m.cache_mode] if taught else None  # a teacher, trained on labels
        key = json.dumps([m.spec.model_dump(), m.loss, teacher, train, data, seed],
                         sort_keys=True, default=str)  # fmt: skip
        if key in seen:
            twins.append((seen[key], m.name, seed))
        else:
            seen[key] = m.name
    return twins


def roles_of(members: dict[str, Member]) -> Roles:
    return Roles(
        teachers=[m.name for m in members.values() if m.role == "teacher"],
        independent=[m.name for m in members.values() if m.role == "independent"],
        students=[m.name for m in members.values() if m.role == "student"],
        teacher_of={m.name: m.teacher for m in members.values() if m.teacher},
        temperature={m.name: float(m.train.temperature) for m in members.values()},
    )


class Experiment:
    """Runs one config into a :class:`RunDir`.

    Args:
        cfg: The validated config.
        data_root: Overrides ``data.root``.
        retrain_teacher: Train teachers even when the store has them.
        run_dir: Resume into this existing run directory instead of creating one.
        run_at: Start a new run in exactly this directory (grid cells) instead of a timestamped one.
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        *,
        data_root: str | None = None,
        retrain_teacher: bool = False,
        run_dir: RunDir | None = None,
        config_file: str | None = None,
        run_at: str | Path | None = None,
        device_changed: bool = False,
    ) -> None:
        self.cfg = with_data_root(cfg, data_root)  # config.yaml records where the data was
        self.retrain_teacher = retrain_teacher
        self.resume = run_dir is not None
        self.run_dir = run_dir
        self.config_file = config_file
        self.run_at = run_at
        self.device_changed = device_changed
        self.device = resolve_device(cfg.device)

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
        if self.cfg.threads is not None:
            torch.set_num_threads(self.cfg.threads)
        else:  # the thread count changes numbers: config.yaml records the one that ran
            self.cfg = self.cfg.model_copy(update={"threads": torch.get_num_threads()})
        cfg = self.cfg
        seed_everything(cfg.seed)
        splits = load_splits(cfg)
        members = plan_members(cfg, splits)
        self.runtime = runtime(self.device, cfg.threads)
        if self.resume:
            self._keep_device_of_run()
        self.identity = run_identity(cfg, splits, self.runtime)
        self.digest = digest(self.identity)
        if self.resume:
            self._check_same_identity()
        self.store = TeacherStore(default_store_root(cfg.teacher_store))
        self._check_store(members, splits)
        if self.run_dir is None:
            at = self.run_at
            if at:
                check_writable_dir(Path(at).parent, "grid folder", "pass a writable --output-dir")
                self.run_dir = RunDir.create_at(at)
            else:
                check_writable_dir(
                    Path(cfg.output_dir), "output_dir", "pass --output-dir naming a writable folder"
                )
                self.run_dir = RunDir.create(cfg.output_dir, cfg.name)
            self.run_dir.write_identity({"digest": self.digest, "identity": self.identity})
            self.run_dir.write_config(dump_config(cfg))
        else:
            for stale in clean_stale_temporaries(self.run_dir.path):
                log.info("removed %s (left by a kill during a write)", stale)
        rd = self.run_dir
        try:
            return self._run(members, splits, start)
        except KeyboardInterrupt:
            raise RunInterrupted(str(rd.path)) from None
        except DataError as exc:
            raise DataError(
                f"{exc}; the run so far is in {rd.path}: continue it with "
                f"`distillscope run --resume {rd.path}`"
            ) from None

    def _keep_device_of_run(self) -> None:
        """On ``--resume --device X``, compare identities as made (the user chose to move)."""
        assert self.run_dir is not None
        saved = self.run_dir.read_identity() or {}
        before = ((saved.get("identity") or {}).get("runtime") or {}).get("device")
        if self.device_changed and before and before != self.runtime["device"]:
            say(f"resuming a run made on {before} on {self.runtime['device']}, as asked")
            self.runtime = {**self.runtime, "device": before}

    def _check_same_identity(self) -> None:
        """Refuse to resume a run whose config, data or runtime changed since it started."""
        rd = self.run_dir
        assert rd is not None
        saved = rd.read_identity()
        if saved is None or not isinstance(saved.get("identity"), dict):
            raise ConfigError(
                f"{rd.path} has no readable identity.json (made by an older distillscope, or "
                "damaged), so what it was made from cannot be checked; start a new run from "
                f"its config: `distillscope run {rd.config}`"
            )
        diff = first_difference(saved["identity"], self.identity)
        if diff is None:
            return
        where, before, now = diff
        raise ConfigError(
            f"cannot resume {rd.path}: {where} was {quoted(before)} when it started and is "
            f"{quoted(now)} now; {_resume_fix(where)}"
        )

    def _check_store(self, members: dict[str, Member], splits: Splits) -> None:
        """Fail now if a teacher will be trained and the store cannot take it."""
        for m in members.values():
            if m.role != "teacher" or m.checkpoint is not None:
                continue
            if self.resume and self.run_dir is not None and self.run_dir.model(m.name).is_file():
                continue
            key = digest(teacher_identity(self.cfg, m.name, splits, self.runtime), 16)
            entry = self.store.entry(m.spec.name, key)
            if self.retrain_teacher or not (entry / "model.safetensors").is_file():
                self.store.check_writable()
                return

    def _run(self, members: dict[str, Member], splits: Splits, start: float) -> RunDir:
        cfg = self.cfg
        rd = self.run_dir
        assert rd is not None
        say(f"run directory {rd}")
        say(
            f"data {cfg.data.name}: {len(splits.train)} train / {len(splits.test)} held-out, "
            f"device {self.device}"
        )
        for name, data in splits.member_train.items():
            say(f"{name}: trains on its own data, {data.info.name}: {len(data)} images")
        for first, second, seed in identical_members(members, cfg.seed):
            kind = "teachers" if members[second].role == "teacher" else "students"
            say(
                f"warning: {first} and {second} will be identical networks (same recipe and "
                f"seed {seed}); give one another seed ({kind}.{second}.seed) if they should differ"
            )
        for m in members.values():
            m.model.to(self.device)
        caches: dict[str, TeacherCache] = {}
        for m in members.values():
            if m.role == "teacher":
                self._teacher(m, splits)
        for m in members.values():
            if m.role != "teacher" and m.group is None:
                self._student(m, members, splits, caches)
            elif m.group is not None and not m.history:
                self._group(m.group, members, splits, caches)
        results = self._probes(members, splits)
        payload = self._payload(members, splits, results, time.time() - start)
        rd.write_results(payload)
        from distillscope.report import render_report

        render_report(rd.path)
        say(f"report {rd.report}")
        return rd

    # ------------------------------------------------------------------ teachers
    def _teacher(self, m: Member, splits: Splits) -> None:
        rd = self.run_dir
        assert rd is not None
        out = rd.model(m.name)
        if m.checkpoint is not None:  # weights were loaded (and checked) by plan_members
            say(f"teacher {m.name}: loaded {m.checkpoint}")
            save_model(out, m.model, {"name": m.name, "source": "checkpoint"})
            return
        if self.resume and out.is_file():
            meta = self._load_own(out, m)
            m.reused = bool(meta.get("reused", False))
            m.history = list(meta.get("history") or self._history_from_metrics(m.name))
            return
        train = splits.train_of(m.name)
        identity = teacher_identity(self.cfg, m.name, splits, self.runtime)
        key = digest(identity, 16)
        store = self.store
        entry = store.entry(m.spec.name, key)
        fingerprint = identity["data"]["train"]
        if not self.retrain_teacher:
            history, why = store.load(entry, m.model, key)
            if history is not None:
                m.history, m.reused = history, True
                say(
                    f"teacher {m.name}: reusing stored teacher {entry} (same teacher config, "
                    f"training data fingerprint {fingerprint[:16]} over {len(train)} images, "
                    f"torch {self.runtime['torch']} on {self.runtime['threads']} threads; "
                    "checksum verified)"
                )
            elif why != "not stored":
                say(f"teacher {m.name}: stored teacher {entry} is unusable ({why}); retraining")
        if not m.reused:
            say(f"teacher {m.name}: training {m.spec.name} for {m.train.epochs} epochs")
            m.history = self._fit(m, None, None, splits)
            matches = {
                "model": m.spec.model_dump(mode="json"),
                "data": train.info.name,
                "n_train": len(train),
                "fingerprint": fingerprint,
                "seed": m.seed,
            }
            try:
                store.save(entry, m.model, {"key": key, "matches": matches, "identity": identity},
                           m.history)  # fmt: skip
            except OSError as exc:  # checked up front; a full disk or a race can still fail
                say(f"teacher {m.name}: could not store it ({exc.strerror}); the run goes on")
        save_model(
            out,
            m.model,
            {
                "name": m.name,
                "key": key,
                "reused": m.reused,
                "history": stable(m.history),
                "identity": self.digest,
            },
        )

    def _load_own(self, path: Path, m: Member) -> dict[str, Any]:
        """Load a model file this run wrote before it was killed, checking it is this run's."""
        meta = load_model_weights(path, m.model)
        if meta.get("identity") != self.digest:
            raise CheckpointError(
                f"{path} was not written by this run (identity {quoted(meta.get('identity'))}, "
                f"this run {self.digest}); delete it to train {m.name} again"
            )
        return meta

    # ------------------------------------------------------------------ students
    def _student(
        self, m: Member, members: dict[str, Member], splits: Splits, caches: dict[str, TeacherCache]
    ) -> None:
        rd = self.run_dir
        assert rd is not None
        out = rd.model(m.name)
        if self.resume and out.is_file():
            self._load_own(out, m)
            m.history = self._history_from_metrics(m.name)
            say(f"{m.role} {m.name}: already trained, loaded")
            return
        loss = m.bound_loss if m.bound_loss is not None else build_loss(m.loss)
        loss = loss.to(self.device)
        teacher = members[m.teacher] if m.teacher and loss.needs_teacher else None
        cache = self._cache(m, teacher, [loss], splits, caches) if teacher is not None else None
        terms = ", ".join(m.loss)
        say(f"{m.role} {m.name}: training {m.spec.name} with {terms} for {m.train.epochs} epochs")
        m.history = self._fit(m, teacher.model if teacher else None, cache, splits, loss=loss)
        save_model(out, m.model, {"name": m.name, "identity": self.digest})

    def _group(
        self,
        group: str,
        members: dict[str, Member],
        splits: Splits,
        caches: dict[str, TeacherCache],
    ) -> None:
        """Train the students of ``group`` together in one loop (DML peers)."""
        rd = self.run_dir
        assert rd is not None
        peers = [m for m in members.values() if m.group == group]
        if self.resume and all(rd.model(m.name).is_file() for m in peers):
            for m in peers:
                self._load_own(rd.model(m.name), m)
                m.history = self._history_from_metrics(m.name)
            say(f"group {group}: already trained, loaded")
            return
        losses = {m.name: (m.bound_loss or build_loss(m.loss)).to(self.device) for m in peers}
        first = peers[0]
        teacher = None
        if first.teacher and any(loss.needs_teacher for loss in losses.values()):
            teacher = members[first.teacher]
        cache = None
        if teacher is not None:
            cache = self._cache(first, teacher, list(losses.values()), splits, caches)
        names = ", ".join(m.name for m in peers)
        say(f"group {group}: training {names} together for {first.train.epochs} epochs")
        seed_everything(self.cfg.seed)
        trainer = Trainer(
            {m.name: m.model for m in peers},
            losses,
            first.train,
            teacher=teacher.model if teacher is not None else None,
            teacher_cache=cache,
            device=self.device,
            checkpoint_dir=rd.checkpoints(group),
            metrics_path=rd.metrics,
            name=group,
            progress=self.cfg.progress,
            seed=self.cfg.seed,
            identity=self.digest,
        )
        history = trainer.fit(splits.train_of(first.name), splits.test, resume=self.resume)
        for m in peers:
            m.history = history[m.name]
            self._check_not_chance(m.name, m.history, splits)
            save_model(
                rd.model(m.name), m.model, {"name": m.name, "group": group, "identity": self.digest}
            )

    def _cache(
        self,
        m: Member,
        teacher: Member,
        losses: list[CombinedLoss],
        splits: Splits,
        caches: dict[str, TeacherCache],
    ) -> TeacherCache | None:
        """The teacher's cache for ``m`` and the ``losses`` trained with it (a group's peers),
        built once per teacher and feature set, or ``None``.

        ``None`` when caching is off, when augmentation makes cached outputs differ from live
        ones (``teacher_cache: auto``), or when the logits and features would exceed
        ``teacher_cache_mb`` (one line says so; the teacher then runs live). Caches kept for
        other students count against the same budget: the oldest are dropped to make room.
        """
        mode = m.cache_mode or self.cfg.teacher_cache
        train = splits.train_of(m.name)
        if mode == "off" or not cache_allowed(train, frozen=mode == "frozen"):
            return None
        paths = list(dict.fromkeys(p for loss in losses for p in loss.teacher_paths()))
        terms = {k: t for loss in losses for k, t in loss.terms.items()}
        explainers = [loss for loss in losses if "explanation" in loss.needs]
        explaining = sorted({repr(t) for t in terms.values() if "explanation" in t.needs})
        if len(explaining) > 1:  # peers explaining the teacher in other ways: run it live
            return None
        # data is shared by object; explanations differ by the term's settings
        key = "|".join([teacher.name, str(id(train)), *sorted(paths), *explaining])
        if key in caches:
            return caches[key]
        n = len(train)
        explain = explainers[0].explain_teacher if explainers else None
        need = cache_bytes(teacher.model, train, paths, explain)
        budget = self.cfg.teacher_cache_mb * 2**20
        if need > budget:
            say(
                f"{m.name}: not caching teacher {teacher.name} (logits and features "
                f"{', '.join(paths) or '-'} on {n} images need {need / 2**20:.0f} MB, over "
                f"teacher_cache_mb={self.cfg.teacher_cache_mb:g}); the teacher runs live"
            )
            return None
        held = {k: _cache_size(c) for k, c in caches.items()}
        while held and sum(held.values()) + need > budget:  # the oldest caches go first
            oldest = next(iter(held))
            del caches[oldest], held[oldest]
        what = f"outputs and features {', '.join(paths)}" if paths else "outputs"
        what += " and explanations" if explain is not None else ""
        say(f"caching teacher {teacher.name} {what} on {n} images ({need / 2**20:.0f} MB)")
        caches[key] = TeacherCache.build(
            teacher.model,
            train,  # the cache reads un-augmented inputs itself
            batch_size=512,
            device=self.device,
            feature_paths=paths,
            progress=self.cfg.progress,
            explain=explain,
        )
        unmoved = unmoved_features(caches[key])
        if unmoved:
            readers = [n for n, t in terms.items() if set(t.teacher_paths()) & set(unmoved)]
            say(
                f"warning: {m.name}: teacher_cache frozen under augmentation: the teacher "
                f"features {', '.join(unmoved)} read by {', '.join(readers) or 'the loss'} are not "
                "spatial maps, so they stay those of the un-augmented image (as the logits); "
                "use teacher_cache: auto to run the teacher live on each augmented view"
            )
        return caches[key]

    def _fit(
        self,
        m: Member,
        teacher: nn.Module | None,
        cache: TeacherCache | None,
        splits: Splits,
        loss: nn.Module | None = None,
    ) -> list[dict[str, Any]]:
        rd = self.run_dir
        assert rd is not None
        loss = loss if loss is not None else build_loss(m.loss).to(self.device)
        seed = self.cfg.seed if m.seed is None else m.seed
        seed_everything(seed)
        trainer = Trainer(
            m.model,
            loss,
            m.train,
            teacher=teacher,
            teacher_cache=cache,
            device=self.device,
            checkpoint_dir=rd.checkpoints(m.name),
            metrics_path=rd.metrics,
            name=m.name,
            progress=self.cfg.progress,
            seed=seed,
            identity=self.digest,
        )
        history = trainer.fit(splits.train_of(m.name), splits.test, resume=self.resume)
        self._check_not_chance(m.name, history, splits)
        return history

    @staticmethod
    def _check_not_chance(name: str, history: list[dict[str, Any]], splits: Splits) -> None:
        """Say so (one line) when a model ends at chance accuracy: a diverged run."""
        warning = chance_warning(name, history, splits.test.info.num_classes)
        if warning:
            say(f"warning: {warning}")

    def _history_from_metrics(self, name: str) -> list[dict[str, Any]]:
        """The per-epoch rows of ``name`` in ``metrics.jsonl`` (lines cut by a kill skipped)."""
        rd = self.run_dir
        assert rd is not None
        if not rd.metrics.is_file():
            return []
        rows = read_jsonl(rd.metrics)
        by_epoch = {
            r["epoch"]: r
            for r in rows
            if r.get("model") == name and isinstance(r.get("epoch"), int)
        }
        return [by_epoch[e] for e in sorted(by_epoch)]

    # ------------------------------------------------------------------ probes
    def _probes(self, members: dict[str, Member], splits: Splits) -> dict[str, Any]:
        models = {name: m.model.eval() for name, m in members.items()}
        roles = roles_of(members)
        data = ProbeData(splits.test, splits.test.info, device=str(self.device))
        out: dict[str, Any] = {}
        defaults = self.cfg.probe_defaults.model_dump()
        for name, params in self.cfg.probes.items():
            t0 = time.time()
            probe = create_probe(name, **{**defaults, **(params or {})})
            probe.progress = self.cfg.progress
            say(f"probe {name}")
            seed_everything(self.cfg.seed)
            result = with_directions(probe, probe.run(models, data, roles))
            out[name] = result.to_dict()
            say(f"probe {name}: done in {time.time() - t0:.1f}s")
        return out

    def _payload(
        self, members: dict[str, Member], splits: Splits, probes: dict[str, Any], duration: float
    ) -> dict[str, Any]:
        return build_results(
            config=dump_config(self.cfg),
            members=members.values(),
            parameters={m.name: count_parameters(m.model) for m in members.values()},
            splits=splits,
            probes=probes,
            duration=duration,
            device=str(self.device),
            config_file=self.config_file,
            digest=self.digest,
            identity=self.identity,
        )


def with_data_root(cfg: ExperimentConfig, data_root: str | None) -> ExperimentConfig:
    """``cfg`` with ``--data-root`` written into every data section that names a folder (the
    top level and members' own ``root``), so ``config.yaml`` says where the data was read and
    a re-run or resume of it reads the same place."""
    if not data_root:
        return cfg
    data_root = str(Path(data_root).expanduser().absolute())  # re-runs from another folder
    raw = dump_config(cfg)
    raw["data"]["root"] = data_root
    for section in ("teachers", "students"):
        for spec in raw[section].values():
            if spec.get("data") and spec["data"].get("root"):
                spec["data"]["root"] = data_root
    return load_config_dict(raw)


def _resume_fix(where: str) -> str:
    """How to fix a resume refused for a difference at ``where`` (an identity path)."""
    if where.startswith("data."):
        return (
            "the data changed: resume on the data the run started with (--data-root naming "
            "its folder), or start a new run"
        )
    if where.startswith("config."):
        return (
            "config.yaml was edited after the run started: undo the edit to resume, or start a "
            "new run from the edited config"
        )
    return (
        "resume with the torch version, thread count and device it started with, or start a new run"
    )


def run_experiment(
    config: ExperimentConfig | str | Path | dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    *,
    data_root: str | None = None,
    retrain_teacher: bool = False,
    run_at: str | Path | None = None,
) -> RunDir:
    """Run an experiment and return its :class:`RunDir` (public API).

    Args:
        config: A validated config, a YAML path, a raw mapping, or ``None`` for the quickstart.
        overrides: Dotted ``key.path=value`` overrides.
        data_root: Folder holding the dataset (overrides ``data.root``).
        retrain_teacher: Train teachers even when a stored one matches.
        run_at: Write the run into exactly this (new or empty) directory instead of
            ``<output_dir>/<name>-<timestamp>`` (how a grid places its cells).
    """
    from distillscope.config import load_config_dict

    config_file = None
    if isinstance(config, ExperimentConfig):
        if overrides:
            config = load_config_dict(dump_config(config), overrides)
        cfg = config
    elif isinstance(config, dict):
        cfg = load_config_dict(config, overrides)
    else:
        config_file = str(config) if config is not None else None
        cfg = load_config(config, overrides)
    return Experiment(
        cfg,
        data_root=data_root,
        retrain_teacher=retrain_teacher,
        config_file=config_file,
        run_at=run_at,
    ).run()


def resume_experiment(
    run_dir: str | Path,
    *,
    data_root: str | None = None,
    device: str | None = None,
    progress: bool | None = None,
) -> RunDir:
    """Continue a killed run from its saved config and checkpoints.

    Args:
        run_dir: The run directory printed by ``distillscope run``.
        data_root: Folder holding the dataset, if it moved.
        device: Continue on this device instead of the saved one (results may differ in the
            last bits between devices).
        progress: Show progress bars (default: as saved).
    """
    rd = RunDir(Path(run_dir))
    if not rd.config.is_file():
        raise ConfigError(
            f"{str(rd.path)!r} is not a run directory (no config.yaml); pass the directory "
            "printed by `distillscope run`"
        )
    overrides = []
    if device is not None:
        overrides.append(f"device={device}")
        say(f"resuming on device {device} (saved config: see {rd.config})")
    if progress is not None:
        overrides.append(f"progress={str(progress).lower()}")
    cfg = load_config(rd.config, overrides)
    return Experiment(cfg, data_root=data_root, run_dir=rd, device_changed=device is not None).run()


__all__ = ["Experiment", "RunDir", "resume_experiment", "run_experiment"]
