"""The resolved plan of an experiment: every network, how it is made, and its identity.

The config is resolved here once, going down: each network becomes a :class:`Member` with its
effective seed, training settings, data, teacher-cache mode, role and group, its model built
and its loss bound on a sample batch (the start-up dry run). Nothing below reads the raw config
again. :func:`run_identity` and :func:`teacher_identity` say what a run and a stored teacher are
made from (:mod:`distillscope.identity`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from distillscope.config import (
    DataConfig,
    ExperimentConfig,
    ModelSpec,
    dump_config,
)
from distillscope.data.base import DistillDataset
from distillscope.distill import CombinedLoss, build_loss
from distillscope.distill.base import bind_seed
from distillscope.errors import ConfigError
from distillscope.identity import LOCATION_KEYS, without_locations
from distillscope.models import create_model
from distillscope.probes.base import Roles
from distillscope.registry import MODELS, accepted_params
from distillscope.splits import Splits
from distillscope.teacher_store import STORE_VERSION
from distillscope.train.bind import bind_loss
from distillscope.train.checkpoint import load_model_weights
from distillscope.train.seeding import seed_everything

__all__ = [
    "Member",
    "build_model",
    "identical_members",
    "peer_seed",
    "plan_members",
    "plan_notes",
    "roles_of",
    "run_identity",
    "stable",
    "teacher_identity",
    "with_data_root",
]


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
    seed: int = 0  # its initial weights, batch order, binding (resolved: never the run's None)
    cache_mode: str = "auto"  # its teacher_cache mode (resolved)


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
            cache_mode=cfg.teacher_cache,
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
            cache_mode=s.teacher_cache or cfg.teacher_cache,
        )
    for m in members.values():
        if m.role == "teacher":
            continue
        loss = build_loss(m.loss)
        teacher = members[m.teacher].model if m.teacher and loss.needs_teacher else None
        data = splits.train_of(m.name)
        bind_loss(loss, m.model, teacher, data, device="cpu", seed=m.seed, name=m.name)
        m.bound_loss = loss
    return members


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


def identical_members(members: dict[str, Member]) -> list[tuple[str, str, int]]:
    """``(first, second, seed)`` for networks of the run that will come out identical.

    Two members with the same architecture, loss, teacher, data, training settings and
    (resolved) seed train to the same weights (training is deterministic), e.g. a "second
    independent seed" whose ``seed`` equals the run's: a sanity pair that compares a network
    with itself; or a foreign teacher with an independent student's recipe and seed. The
    teacher counts only for a loss that reads one. Group peers start apart
    (:func:`peer_seed`) and loaded checkpoints are skipped.

    Example:
        >>> from distillscope.config import TrainConfig
        >>> spec, train = ModelSpec(name="mlp"), TrainConfig()
        >>> a = Member("a", "independent", spec, nn.Identity(), train, {"ce": {}}, seed=1)
        >>> b = Member("b", "independent", spec, nn.Identity(), train, {"ce": {}}, seed=1)
        >>> identical_members({"a": a, "b": b})
        [('a', 'b', 1)]
        >>> b.seed = 0
        >>> identical_members({"a": a, "b": b})
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
