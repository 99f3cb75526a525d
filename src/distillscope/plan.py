"""The resolved plan of an experiment: every network, how it is made, and its identity.

The config is resolved here once, going down, in two steps:

- :func:`resolve_plan` turns a validated config into a :class:`Plan`: per network a
  :class:`MemberPlan` (its effective seed, training settings, data, teacher-cache mode, role,
  group, loss) and the run's own settings. It is pure (no data read, no network built), light
  and picklable: a grid resolves each cell's plan once and hands it to the process that runs
  the cell.
- :func:`build_members` builds every network from a plan and binds every student's loss on a
  sample batch (the start-up dry run), giving each its :class:`Member`.

Nothing below reads the raw config again: the run reads its plan, and keeps of the config
only its record (:attr:`Plan.record`: what ``config.yaml``, ``identity.json`` and
``results.json`` hold). :func:`run_identity` and :func:`teacher_identity` say what a run and a
stored teacher are made from (:mod:`distillscope.identity`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distillscope.config import (
    DataConfig,
    ExperimentConfig,
    ModelSpec,
    TrackingConfig,
    TrainConfig,
    dump_config,
)
from distillscope.data.base import DistillDataset
from distillscope.distill import CombinedLoss, build_loss
from distillscope.distill.base import bind_seed
from distillscope.errors import ConfigError, ModelError
from distillscope.files import file_digest
from distillscope.identity import (
    LOCATION_KEYS,
    NOT_RESULT_TRAIN_KEYS,
    TEACHER_PASSES_VERSION,
    without_locations,
)
from distillscope.models import create_model
from distillscope.models.hf import checkpoint_digest
from distillscope.plugins import code_digests
from distillscope.probes.base import Roles
from distillscope.registry import MODELS, accepted_params
from distillscope.splits import Splits, load_data
from distillscope.teacher_store import STORE_VERSION
from distillscope.train.bind import bind_loss, sample_batch
from distillscope.train.checkpoint import load_model_weights
from distillscope.train.layout import channels_last
from distillscope.train.seeding import seed_everything

__all__ = [
    "Member",
    "MemberPlan",
    "Plan",
    "build_members",
    "build_model",
    "identical_members",
    "load_plan_splits",
    "model_key",
    "peer_seed",
    "plan_notes",
    "resolve_plan",
    "roles_of",
    "training_line",
    "training_units",
    "unit_label",
    "plan_code",
    "run_identity",
    "teacher_identity",
    "with_data_root",
]


@dataclass(frozen=True, kw_only=True)
class MemberPlan:
    """One network of the experiment as the config resolves it (no data, no torch module).

    Attributes:
        name: Its key in ``teachers`` or ``students``.
        role: ``teacher``, ``independent`` or ``student``.
        spec: Its architecture.
        train: Its training settings (the top level's with its own overrides).
        loss: Its loss as ``{term: params}``.
        seed: Its seed: batch order, loss binding, and (but for later group peers) initial
            weights; its own ``seed``, else the run's.
        init_seed: The seed its initial weights are drawn with: ``seed``, except for a group's
            members after the first, which start apart (:func:`peer_seed`).
        cache_mode: Its teacher-cache mode (its own ``teacher_cache``, else the run's).
        teacher: The teacher it learns from or is compared with (students).
        checkpoint: A file its weights are loaded from instead of training (teachers).
        group: The group it trains with (DML peers).
        data: Its own training data, resolved over the top-level ``data`` (``None``: the
            top-level data).
        recipe: Teachers: everything in the config that determines its weights (its whole spec,
            so a new field enters by itself, with what it takes from the run resolved: training,
            data without its folder, seed); the config part of :func:`teacher_identity`.
    """

    name: str
    role: str  # teacher | independent | student
    spec: ModelSpec
    train: TrainConfig
    loss: dict[str, dict[str, Any]]
    seed: int
    init_seed: int
    cache_mode: str
    teacher: str | None = None
    checkpoint: str | None = None
    group: str | None = None
    data: DataConfig | None = None
    recipe: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class Plan:
    """An experiment's config resolved: what it runs, before any data is read or network built.

    Light and picklable. The run reads its settings from here, never from the config.

    Attributes:
        members: Every network, teachers first, in the config's order.
        record: The validated config as plain data (``--data-root`` written in): what the run's
            ``config.yaml``, ``identity.json`` and ``results.json`` record.
        name: The run's name.
        output_dir: Parent folder of its run directory.
        seed: The run's seed (set before the data is read; the probes' seed).
        device: The configured device (``auto``, ``cpu``, ...).
        threads: Torch's CPU threads (``None``: torch's default, recorded when the run starts).
        data: The top-level data: the held-out split, and the training split of members
            without their own.
        teacher_store: The teacher store's folder, as configured.
        teacher_cache_mb: The teacher caches' memory budget.
        teacher_cache_disk: Whether caches over the budget go to disk.
        teacher_precision: ``fp32``, ``bf16`` or ``auto`` for the teachers' passes.
        progress: Show progress bars.
        probes: Probe name -> its parameters.
        probe_defaults: ``batch_size`` / ``max_samples`` of every probe.
        plugins: The plugin modules the config names (:mod:`distillscope.plugins`): imported
            again by the process that runs the plan.
        tracking: The trackers fed with the metrics lines (:mod:`distillscope.tracking`).
    """

    members: dict[str, MemberPlan]
    record: dict[str, Any]
    name: str
    output_dir: str
    seed: int
    device: str
    threads: int | None
    data: DataConfig
    teacher_store: str | None
    teacher_cache_mb: float
    teacher_cache_disk: bool
    teacher_precision: str
    progress: bool
    probes: dict[str, dict[str, Any]]
    probe_defaults: dict[str, Any]
    plugins: tuple[str, ...] = ()
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def with_threads(self, threads: int) -> Plan:
        """This plan run on ``threads`` torch threads, recorded (numbers depend on it)."""
        return replace(self, threads=threads, record={**self.record, "threads": threads})


def resolve_plan(cfg: ExperimentConfig) -> Plan:
    """Resolve a validated config into its :class:`Plan`: pure, no data read, nothing built.

    Every fallback of the config is taken here, once: a member's seed (its own, else the
    run's), training settings (the top level's with its overrides), data (its own over the top
    level's) and teacher-cache mode; group peers after the first start from
    :func:`peer_seed`.
    """
    members: dict[str, MemberPlan] = {}
    for name, t in cfg.teachers.items():
        seed = cfg.seed if t.seed is None else t.seed
        train = cfg.train_for(t.train)
        data = cfg.data_for(t.data)
        recipe = t.model_dump(mode="json")
        recipe["train"] = train.model_dump(mode="json", exclude=set(NOT_RESULT_TRAIN_KEYS))
        recipe["data"] = {
            k: v for k, v in data.model_dump(mode="json").items() if k not in LOCATION_KEYS
        }
        recipe["seed"] = seed
        members[name] = MemberPlan(
            name=name,
            role="teacher",
            spec=t.model,
            train=train,
            loss=t.loss,
            seed=seed,
            init_seed=seed,
            cache_mode=cfg.teacher_cache,
            checkpoint=t.checkpoint,
            data=None if t.data is None else data,
            recipe=recipe,
        )
    seen_groups: set[str] = set()
    for name, s in cfg.students.items():
        seed = cfg.seed if s.seed is None else s.seed
        members[name] = MemberPlan(
            name=name,
            role=s.role or "student",
            spec=s.model or cfg.student,
            train=cfg.train_for(s.train),
            loss=s.loss_spec(),
            seed=seed,
            init_seed=peer_seed(cfg.seed, name) if s.group in seen_groups else seed,
            cache_mode=s.teacher_cache or cfg.teacher_cache,
            teacher=s.teacher,
            group=s.group,
            data=None if s.data is None else cfg.data_for(s.data),
        )
        if s.group is not None:
            seen_groups.add(s.group)
    return Plan(
        members=members,
        record=dump_config(cfg),
        name=cfg.name,
        output_dir=cfg.output_dir,
        seed=cfg.seed,
        device=cfg.device,
        threads=cfg.threads,
        data=cfg.data,
        teacher_store=cfg.teacher_store,
        teacher_cache_mb=cfg.teacher_cache_mb,
        teacher_cache_disk=cfg.teacher_cache_disk,
        teacher_precision=cfg.teacher_precision,
        progress=cfg.progress,
        probes=cfg.probes,
        probe_defaults=cfg.probe_defaults.model_dump(),
        plugins=tuple(cfg.plugins),
        tracking=cfg.tracking,
    )


def _planned(key: str) -> Any:
    return property(lambda self: getattr(self.plan, key), doc=f"Its plan's ``{key}``.")


@dataclass
class Member:
    """One network of the experiment, built: its plan, its model and (students) its bound loss,
    then what running it gave. The plan's fields read through (``member.seed``)."""

    plan: MemberPlan
    model: nn.Module
    bound_loss: CombinedLoss | None = None  # a student's loss, bound at start-up
    reused: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)

    name = _planned("name")
    role = _planned("role")
    spec = _planned("spec")
    train = _planned("train")
    loss = _planned("loss")
    seed = _planned("seed")
    cache_mode = _planned("cache_mode")
    teacher = _planned("teacher")
    checkpoint = _planned("checkpoint")
    group = _planned("group")
    data = _planned("data")


def build_model(spec: ModelSpec, data: DistillDataset) -> nn.Module:
    """Create ``spec`` with ``num_classes`` and input size (text: the vocabulary size and the
    sentence length) taken from the data."""
    info = data.info
    params = dict(spec.params)
    params.setdefault("num_classes", info.num_classes)
    # adapters ("torchvision:x") take in_channels, on text data ("hf:x") the vocabulary and
    # sentence length; zoo models say what they accept
    if ":" in spec.name:
        factory_params = {"vocab_size", "seq_len"} if info.is_text else {"in_channels"}
    else:
        factory_params = accepted_params(MODELS.get(spec.name))
    shape = info.input_shape

    def offer(key: str, value: Any) -> None:
        if factory_params is None or key in factory_params:
            params.setdefault(key, value)

    if info.is_text:
        if factory_params is not None and "vocab_size" not in factory_params:
            raise ConfigError(
                f"model {spec.name!r} does not read token ids, and {info.name!r} is text data; "
                "use a text model (hf:bert)"
            )
        offer("vocab_size", len(info.vocab))
        offer("seq_len", shape[0])
        return create_model(spec.name, **params)
    if len(shape) == 3:
        offer("in_channels", shape[0])
        offer("input_size", shape[-1])
        # models that read pixels (B-cos's [x, 1 - x] encoding) undo the data's normalisation
        if info.mean is not None and info.std is not None and factory_params is not None:
            offer("input_mean", tuple(info.mean))
            offer("input_std", tuple(info.std))
    offer("in_features", math.prod(shape))
    return create_model(spec.name, **params)


def teacher_identity(member: MemberPlan, splits: Splits, rt: dict[str, Any]) -> dict[str, Any]:
    """Everything that determines a teacher's trained weights; its digest keys the store.

    The teacher's recipe (:attr:`MemberPlan.recipe`: its whole spec with what it takes from the
    run resolved), the fingerprints of the data it trains and is validated on (every byte
    loaded: the same config pointed at other files gets another key, the same files moved the
    same key), and the runtime (torch version, thread count, device type). A teacher whose
    model, loss or dataset comes from a plugin also has that code's digest (``plugins``:
    :func:`~distillscope.plugins.code_digests`), so an edited plugin never reuses it.
    """
    assert member.recipe is not None, f"{member.name} is not a teacher"
    used = [("model", member.spec.name), ("dataset", member.recipe["data"]["name"])]
    code = code_digests([*used, *(("loss", term) for term in member.loss)])
    return {
        "store_version": STORE_VERSION,
        "teacher": member.recipe,
        "data": {
            "train": splits.train_of(member.name).fingerprint(),
            "test": splits.test.fingerprint(),
        },
        "runtime": rt,
        **({"model_files": d} if (d := checkpoint_digest(member.spec.name)) else {}),
        **({"plugins": code} if code else {}),
    }


def run_identity(plan: Plan, splits: Splits, rt: dict[str, Any]) -> dict[str, Any]:
    """What a run computes from: its whole config (its plan's record, but :data:`~distillscope.
    identity.NOT_RESULT_KEYS` and data folders), every split's fingerprint and the runtime
    (:mod:`distillscope.identity`). Recorded in ``identity.json``, ``results.json`` and each
    checkpoint; resume and grid re-runs refuse a run whose identity differs. Plugin code the
    run names or uses enters under ``plugins`` (:func:`plan_code`); the bytes of a teacher's
    ``checkpoint`` file under ``checkpoint_files`` (an edited file under the same name is not the
    teacher the run was made with); a run whose teachers' passes may run in bf16 has
    ``teacher_passes`` (:data:`~distillscope.identity.TEACHER_PASSES_VERSION`)."""
    identity = {
        "config": without_locations(plan.record),
        "data": splits.fingerprints(),
        "runtime": rt,
    }
    files = {n: d for n, m in plan.members.items() if (d := checkpoint_digest(m.spec.name))}
    if files:  # checkpoint folders named by models (hf:<dir>): their bytes, not only their path
        identity["model_files"] = files
    paths = {n: Path(m.checkpoint).expanduser() for n, m in plan.members.items() if m.checkpoint}
    loaded = {n: file_digest(path) for n, path in paths.items() if path.is_file()}
    if loaded:  # teachers loaded from a file (teacher.checkpoint): its bytes, not only its path
        identity["checkpoint_files"] = loaded
    code = plan_code(plan)
    if code:  # plugins: their source, not their names
        identity["plugins"] = code
    if plan.teacher_precision != "fp32":  # what bf16 teacher passes compute (fold, ...)
        identity["teacher_passes"] = TEACHER_PASSES_VERSION
    return identity


def plan_code(plan: Plan) -> dict[str, str]:
    """The source digests of the plugins ``plan`` names and of the code behind every model,
    loss, dataset and probe it uses that is not distillscope's own
    (:func:`~distillscope.plugins.code_digests`); empty when there is none."""
    used = [("dataset", plan.data.name), *(("probe", name) for name in plan.probes)]
    for m in plan.members.values():
        used += [("model", m.spec.name), *(("loss", term) for term in m.loss)]
        if m.data is not None:
            used.append(("dataset", m.data.name))
    return code_digests(used, plan.plugins)


def load_plan_splits(plan: Plan) -> Splits:
    """The data the plan trains and probes on: the top-level splits and members' own."""
    own = [
        (f"{'teachers' if m.role == 'teacher' else 'students'}.{m.name}.data", m.name, m.data)
        for m in plan.members.values()
        if m.data is not None
    ]
    return load_data(plan.data, own)


def build_members(plan: Plan, splits: Splits) -> dict[str, Member]:
    """Build every network and bind every student's loss: the start-up dry run.

    Bad model parameters, a wrong feature path or a loss that cannot apply to its
    teacher/student pair fail here, in seconds, before anything is written or trained. Each
    student's loss is bound (:func:`~distillscope.train.bind.bind_loss`) on a sample batch
    through its model, its (not yet trained) teacher and its group's other members, whose shapes
    are all binding reads;
    binding is deterministic, so a resumed run binds again and loads the saved state over it.
    """
    members: dict[str, Member] = {}
    for name, m in plan.members.items():
        seed_everything(m.init_seed)
        try:
            model = build_model(m.spec, splits.train)
        except (ConfigError, ModelError) as exc:  # a value the model's own code rejects
            raise type(exc)(_keyed(str(exc), model_key(plan, m), m.spec.params)) from None
        members[name] = Member(m, model)
        if m.checkpoint is not None:
            if not Path(m.checkpoint).is_file():
                raise ConfigError(
                    f"config key 'teachers.{name}.checkpoint': file {m.checkpoint!r} not found; "
                    "give an existing .safetensors file or remove the key to train the teacher"
                )
            load_model_weights(m.checkpoint, members[name].model)  # corrupt -> CheckpointError
        if m.train.channels_last == "on" and m.checkpoint is None:  # its trial pass, now
            _check_channels_last(members[name], splits.train_of(name))
    for member in members.values():
        m = member.plan
        if m.role == "teacher":
            continue
        loss = build_loss(m.loss)
        teacher = members[m.teacher].model if m.teacher and loss.needs_teacher else None
        data = splits.train_of(m.name)
        peers = [
            other.model
            for other in members.values()
            if m.group is not None and other.plan.group == m.group and other is not member
        ]
        bind_loss(loss, member.model, teacher, data, device="cpu", seed=m.seed, name=m.name,
                  peers=peers)  # fmt: skip
        member.bound_loss = loss
    return members


def _check_channels_last(member: Member, data: DistillDataset) -> None:
    """``train.channels_last: on``: the trial pass the trainer will make, on the CPU."""
    sample = sample_batch(data, "cpu", 2).inputs  # (2, ...)
    try:
        with channels_last(member.model, sample, torch.device("cpu"), "on"):
            pass
    except ConfigError as exc:
        raise ConfigError(f"{member.plan.role} {member.plan.name!r}: {exc}") from None


def model_key(plan: Plan, member: MemberPlan) -> str:
    """The config key of ``member``'s architecture: ``teachers.<name>.model``,
    ``students.<name>.model`` when the student has its own, else the top-level ``student``."""
    if member.role == "teacher":
        return f"teachers.{member.name}.model"
    own = (plan.record.get("students") or {}).get(member.name) or {}
    return f"students.{member.name}.model" if own.get("model") else "student"


def _keyed(message: str, key: str, params: dict[str, Any]) -> str:
    """``message`` prefixed with the config key it is about: the parameter's own key when the
    message names exactly one of ``params`` (``resnet_cifar depth must be 6n+2``), else the
    model's section. A message that names a config key already is returned as it is.

    Example:
        >>> _keyed("resnet_cifar depth must be 6n+2, got 7", "student", {"depth": 7, "width": 8})
        "config key 'student.params.depth': resnet_cifar depth must be 6n+2, got 7"
        >>> _keyed("bad input size", "student", {"depth": 7})
        "config key 'student': bad input size"
    """
    if "config key" in message:
        return message
    named = [p for p in params if re.search(rf"\b{re.escape(str(p))}\b", message)]
    where = f"{key}.params.{named[0]}" if len(named) == 1 else key
    return f"config key '{where}': {message}"


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


def identical_members(members: dict[str, Member]) -> list[tuple[str, str, int]]:
    """``(first, second, seed)`` for networks of the run that will come out identical.

    Two members with the same architecture, loss, teacher, data, training settings and
    (resolved) seed train to the same weights (training is deterministic), e.g. a "second
    independent seed" whose ``seed`` equals the run's: a sanity pair that compares a network
    with itself; or a foreign teacher with an independent student's recipe and seed. The
    teacher counts only for a loss that reads one. Group peers start apart
    (:func:`peer_seed`) and loaded checkpoints are skipped.

    Example:
        >>> def member(name, seed):
        ...     plan = MemberPlan(name=name, role="independent", spec=ModelSpec(name="mlp"),
        ...                       train=TrainConfig(), loss={"ce": {}}, seed=seed,
        ...                       init_seed=seed, cache_mode="auto")
        ...     return Member(plan, nn.Identity())
        >>> identical_members({"a": member("a", 1), "b": member("b", 1)})
        [('a', 'b', 1)]
        >>> identical_members({"a": member("a", 1), "b": member("b", 0)})
        []
    """
    seen: dict[str, str] = {}
    twins: list[tuple[str, str, int]] = []
    for m in members.values():
        if m.group is not None or m.checkpoint is not None:
            continue
        data = m.data.model_dump() if m.data is not None else None
        taught = m.bound_loss is not None and m.bound_loss.needs_teacher
        teacher = [m.teacher, m.cache_mode] if taught else None  # a teacher, trained on labels
        key = json.dumps([m.spec.model_dump(), m.loss, teacher, m.train.model_dump(), data,
                          m.seed], sort_keys=True, default=str)  # fmt: skip
        if key in seen:
            twins.append((seen[key], m.name, m.seed))
        else:
            seen[key] = m.name
    return twins


def plan_notes(members: dict[str, Member], splits: Splits) -> list[str]:
    """Lines to say before training: members on their own data, and networks that will come
    out identical (:func:`identical_members`)."""
    notes = [
        f"{name}: trains on its own data, {data.info.name}: {len(data)} images"
        for name, data in splits.member_train.items()
    ]
    for first, second, seed in identical_members(members):
        kind = "teachers" if members[second].role == "teacher" else "students"
        notes.append(
            f"warning: {first} and {second} will be identical networks (same recipe and "
            f"seed {seed}); give one another seed ({kind}.{second}.seed) if they should differ"
        )
    return notes


def training_units(members: dict[str, Member]) -> list[list[Member]]:
    """The students in training order: each alone, or its group's members together (DML)."""
    units: dict[str, list[Member]] = {}
    for m in members.values():
        if m.role != "teacher":
            units.setdefault(m.group or m.name, []).append(m)
    return list(units.values())


def unit_label(peers: list[Member]) -> str:
    """How messages name a training unit: ``"group dml"`` or ``"student kd"``."""
    first = peers[0]
    return f"group {first.group}" if first.group else f"{first.role} {first.name}"


def training_line(peers: list[Member]) -> str:
    """What is about to be trained, one line (``"student kd: training resnet8 with kd ..."``)."""
    first = peers[0]
    if first.group:
        what = f"{', '.join(m.name for m in peers)} together"
    else:
        what = f"{first.spec.name} with {', '.join(first.loss)}"
    return f"{unit_label(peers)}: training {what} for {first.train.epochs} epochs"


def roles_of(members: dict[str, Member]) -> Roles:
    return Roles(
        teachers=[m.name for m in members.values() if m.role == "teacher"],
        independent=[m.name for m in members.values() if m.role == "independent"],
        students=[m.name for m in members.values() if m.role == "student"],
        teacher_of={m.name: m.teacher for m in members.values() if m.teacher},
        temperature={m.name: float(m.train.temperature) for m in members.values()},
    )


def with_data_root(cfg: ExperimentConfig, data_root: str | None) -> ExperimentConfig:
    """``cfg`` with ``--data-root`` written into every data section that names a folder (the
    top level and members' own ``root``), so ``config.yaml`` says where the data was read and
    a re-run or resume of it reads the same place. Only folders change: nothing is validated
    again."""
    if not data_root:
        return cfg
    root = str(Path(data_root).expanduser().absolute())  # re-runs from another folder

    def moved(spec: Any) -> Any:
        if spec.data is None or not spec.data.root:
            return spec
        return spec.model_copy(update={"data": spec.data.model_copy(update={"root": root})})

    return cfg.model_copy(
        update={
            "data": cfg.data.model_copy(update={"root": root}),
            "teachers": {name: moved(t) for name, t in cfg.teachers.items()},
            "students": {name: moved(s) for name, s in cfg.students.items()},
        }
    )
