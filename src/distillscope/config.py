"""The YAML schema, validated by pydantic, with dotted command-line overrides.

A config names a dataset, one or more teachers, the students (one per method) and the probes.
Unknown keys, wrong types and unknown registry names are rejected at load time with one line naming
the key, the value and the valid choices (:class:`~distillscope.errors.ConfigError`).

Floor 1, the config schema (see ``docs/design-notes.md``, "Floors"): this module imports only
:mod:`~distillscope.config_train`, :mod:`~distillscope.config_tracking`,
:mod:`~distillscope.config_tree` and :mod:`~distillscope.errors`. What needs the registries
(names, parameters, losses and probes built once) is checked by :mod:`distillscope.validate`,
which :func:`load_config_dict` calls through the one marked import inside it.

Example:
    >>> cfg = load_config_dict({"students": {"kd": {"temperature": 8}}}, ["train.epochs=2"])
    >>> cfg.train.epochs, cfg.students["kd"].loss_spec()
    (2, {'kd': {'temperature': 8}})
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from distillscope.config_tracking import TrackingConfig
from distillscope.config_train import Strict, TrainConfig
from distillscope.config_tree import merge_teacher, override_path, schema_at
from distillscope.errors import ConfigError, quoted

__all__ = [
    "DataConfig",
    "ExperimentConfig",
    "MemberData",
    "ModelSpec",
    "ProbeDefaults",
    "StudentSpec",
    "TeacherSpec",
    "TrackingConfig",
    "TrainConfig",
    "apply_overrides",
    "config_hash",
    "load_config",
    "load_config_dict",
    "read_config_file",
    "resolve_config",
]


class DataConfig(Strict):
    """Which dataset, where, and which subsets.

    Attributes:
        name: Registered dataset name (``distillscope list datasets``).
        root: Folder holding the data (else the dataset's own search order).
        params: Extra dataset parameters (e.g. ``augment: true``).
        train_per_class: Keep k training images per class (few-shot regimes).
        train_fraction: Keep a stratified fraction of the training split.
        test_per_class: Keep k held-out images per class (probes and validation).
        test_fraction: Keep a stratified fraction of the held-out split.
        train_groups: Group composition of the training split: group index -> share of that
            group's training items kept (0 drops the group, 1 keeps it whole; groups not named
            are kept whole), applied after the subset rule, stratified by class within each
            group. For datasets with groups (``spurious-fashion``, ``multi-domain``): a teacher
            trained on a skewed composition (paper 003 6.2), students on one domain (6.1).
        seed: Seed of the subset choice.
    """

    name: str = "fashion-mnist"
    root: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    train_per_class: int | None = Field(None, ge=1)
    train_fraction: float | None = Field(None, gt=0, le=1)
    train_groups: dict[int, Annotated[float, Field(ge=0, le=1)]] | None = None
    test_per_class: int | None = Field(None, ge=1)
    test_fraction: float | None = Field(None, gt=0, le=1)
    seed: int = 0


class MemberData(Strict):
    """The training data of one network, when it is not the top-level ``data``.

    Only the training split changes: every model is still validated and probed on the
    top-level held-out split. Keys left out are taken from the top-level ``data``; a
    different ``name`` starts from that dataset's defaults (no ``params`` or subset keys are
    carried over to another dataset); a subset key replaces the top level's subset rule
    (``train_per_class: 50`` under a top-level ``train_fraction`` takes 50 per class of the
    whole split). Uses: a teacher trained on the full data and students
    distilled on ``train_per_class`` images (few-shot, paper 001 4.1), students distilled on
    unrelated images (paper 001 4.3), a teacher trained on other group proportions (paper 001
    4.2, paper 003 6.2).

    Attributes:
        name: Another registered dataset to train on (default: the top-level ``data.name``).
        root: Its folder (default: the top-level ``data.root``).
        params: Its dataset parameters (default: the top level's, for the same dataset).
        train_per_class: Keep k training images per class (replaces the top level's subset rule).
        train_fraction: Keep a stratified fraction of the training split (replaces the top
            level's subset rule).
        train_groups: Its group composition (see ``data.train_groups``).
        seed: Seed of its subset choice (default: the top-level ``data.seed``).
    """

    name: str | None = None
    root: str | None = None
    params: dict[str, Any] | None = None
    train_per_class: int | None = Field(None, ge=1)
    train_fraction: float | None = Field(None, gt=0, le=1)
    train_groups: dict[int, Annotated[float, Field(ge=0, le=1)]] | None = None
    seed: int | None = None

    def over(self, base: DataConfig) -> DataConfig:
        """``base`` with this override applied (see the class docstring)."""
        same = self.name is None or self.name == base.name
        merged = base.model_dump() if same else {"name": self.name, "root": base.root}
        merged["seed"] = base.seed
        given = self.model_dump(exclude_none=True)
        if "train_per_class" in given or "train_fraction" in given:  # one subset rule replaces
            merged["train_per_class"] = merged["train_fraction"] = None  # the other
        merged.update(given)
        return DataConfig(**merged)


class ModelSpec(Strict):
    """A registered model and its parameters (``num_classes`` and input size come from the data).

    Attributes:
        name: Registered model name (``distillscope list models``), or ``torchvision:<name>``,
            ``timm:<name>``, ``hf:<preset or folder>``.
        params: The model's parameters (``distillscope list models NAME --params``), e.g.
            ``{depth: 20}``.
    """

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class TeacherSpec(Strict):
    """A teacher: trained here (and cached by its config key) or loaded from a checkpoint.

    Attributes:
        model: Architecture.
        train: Overrides of the top-level ``train`` settings for this teacher.
        checkpoint: A ``.safetensors`` file to load instead of training.
        loss: Loss terms used to train it (default plain cross-entropy).
        data: Its own training data (see :class:`MemberData`); default the top-level ``data``.
        seed: Its own seed (initial weights, batch order); default the run's ``seed``. Another
            seed gives an independent network of the same recipe (a foreign-seed control).
    """

    model: ModelSpec
    train: dict[str, Any] = Field(default_factory=dict)
    checkpoint: str | None = None
    loss: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"ce": {}})
    data: MemberData | None = None
    seed: int | None = Field(None, ge=0)


class StudentSpec(Strict):
    """One student: its loss, optional own architecture, teacher and training overrides.

    Any key not listed below is a parameter of the loss when ``loss`` is a single name, so
    ``students.kd.temperature=8`` sets the KD temperature.

    Attributes:
        loss: A registered loss name (default: the student's key) or a mapping
            ``{term: {weight: w, **params}}`` combining several terms.
        model: Architecture (default: the top-level ``student``).
        teacher: Name of the teacher it learns from or is compared with.
        role: ``independent`` (no teacher, the baseline) or ``student``; default ``independent`` for
            the key ``independent``, else ``student``.
        train: Overrides of the top-level ``train`` settings.
        group: Name of a group of students trained together in one loop (mutual learning:
            every member's ``dml`` term learns from the others); two or more students, with
            the same training settings.
        data: Its own training (distillation) data (see :class:`MemberData`); default the
            top-level ``data``.
        seed: Its own seed (initial weights, batch order, loss binding); default the run's
            ``seed``. Two independent students of two seeds are paper 003's sanity pair.
        teacher_cache: Its own teacher-cache mode (``auto``, ``frozen``, ``off``); default the
            run's. Lets one run compare a live teacher with frozen outputs / explanations.
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    loss: str | dict[str, dict[str, Any]] | None = None
    model: ModelSpec | None = None
    teacher: str | None = None
    role: Literal["independent", "student"] | None = None
    train: dict[str, Any] = Field(default_factory=dict)
    group: str | None = None
    data: MemberData | None = None
    seed: int | None = Field(None, ge=0)
    teacher_cache: Literal["auto", "frozen", "off"] | None = None
    _key: str = PrivateAttr("")

    def loss_spec(self) -> dict[str, dict[str, Any]]:
        """The loss as ``{term: params}`` (weights included under ``weight``)."""
        extra = dict(self.model_extra or {})
        if isinstance(self.loss, dict):
            if extra:
                raise ConfigError(
                    f"students.{self._key}: unknown key {next(iter(extra))!r}; with a loss "
                    "mapping, put term parameters under loss.<term>"
                )
            return {k: dict(v) for k, v in self.loss.items()}
        return {self.loss or self._key: extra}


class ProbeDefaults(Strict):
    """Knobs shared by every probe unless the probe sets its own.

    Attributes:
        batch_size: Batch size of every probe's forward passes.
        max_samples: Held-out samples each probe audits (the first ones of a seeded
            permutation).
    """

    batch_size: int = Field(256, ge=1)
    max_samples: int = Field(1000, ge=1)


def _default_students() -> dict[str, StudentSpec]:
    return {
        "independent": StudentSpec(loss="ce"),
        "kd": StudentSpec(loss="kd"),
        "ls": StudentSpec(loss="label_smoothing"),
    }


class ExperimentConfig(Strict):
    """A whole experiment: data, teachers, students, probes.

    Attributes:
        name: Run name (prefix of the run directory).
        seed: Global seed (weights init, batch order, probes).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        threads: CPU threads of torch (``None``: torch's default). Tiny models (the 2-D toy
            study) run fastest on one thread.
        output_dir: Parent folder of run directories.
        data: The dataset.
        train: Default training settings of every network.
        teacher: The teacher (shorthand for ``teachers: {teacher: ...}``).
        teachers: Several named teachers (e.g. paper 004's flavours; with neither ``teacher``
            nor ``teachers``, one ``resnet8`` named ``teacher``).
        student: Default student architecture.
        students: Students by name.
        probes: Probe name -> its parameters.
        probe_defaults: ``batch_size`` / ``max_samples`` of every probe.
        teacher_cache: ``auto`` computes teacher outputs once per image when the training data
            has no random augmentation (else once per step); ``frozen`` caches them even with
            augmentation (the teacher then sees the un-augmented image: "fixed teaching");
            ``off`` runs the teacher every step. ``true`` / ``false`` mean ``auto`` / ``off``.
        teacher_cache_mb: Memory budget of the teacher caches held at once (logits and the
            features the losses read, over the whole training set), estimated before a cache is
            built; older caches are dropped to make room, and a cache that would not fit alone
            goes to disk (``teacher_cache_disk``) or, without it, is not built: the teacher then
            runs live (one line says so).
        teacher_cache_disk: A cache over ``teacher_cache_mb`` is written once to disk as
            memory-mapped files (``$DISTILLSCOPE_CACHE/teacher-caches``, keyed by the teacher's
            weights, the data, the features and explanations read; reused by later runs) and
            every epoch reads its rows from there, instead of running the teacher live;
            ``false``: live, as before this option existed.
        teacher_precision: The frozen teacher's passes for its students (its cache, its live
            forward): ``fp32`` (default); ``bf16`` on a copy with its batch norms folded into
            their convolutions, as one oneDNN graph on the CPU when its students read only its
            output, else under autocast, outputs kept in fp32; ``auto``: bf16 when it
            gives the fp32 top-1 on at least 99.9% of 512 training items and moves no logit by
            more than 0.05, else fp32 (one line says which; recorded in results.json).
            Explanations (e2KD) stay fp32.
        teacher_store: Folder of trained teachers reused across runs (default:
            ``$DISTILLSCOPE_CACHE/teachers`` or ``~/.cache/distillscope/teachers``).
        progress: Show progress bars.
        plugins: Modules (importable names, or paths of ``.py`` files relative to the working
            directory) imported before the config is checked, so the models, losses, probes
            and datasets they register can be named here (``docs/extending.md``). Their
            source, not their names, enters the run's identity.
        tracking: Optional TensorBoard / MLflow loggers fed with every ``metrics.jsonl`` line
            (:class:`~distillscope.config_tracking.TrackingConfig`); off by default, not part
            of the run's identity.
    """

    name: str = "run"
    seed: int = 0
    device: str = "auto"
    threads: int | None = Field(None, ge=1)
    output_dir: str = "runs"
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    teacher: TeacherSpec | None = None
    teachers: dict[str, TeacherSpec] = Field(default_factory=dict)
    student: ModelSpec = Field(default_factory=lambda: ModelSpec(name="mnist_cnn"))
    students: dict[str, StudentSpec] = Field(default_factory=_default_students)
    probes: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"accuracy": {}, "agreement": {}}
    )
    probe_defaults: ProbeDefaults = Field(default_factory=ProbeDefaults)
    teacher_cache: Literal["auto", "frozen", "off"] = "auto"
    teacher_cache_mb: float = Field(2048.0, gt=0)
    teacher_cache_disk: bool = True
    teacher_precision: Literal["fp32", "bf16", "auto"] = "fp32"
    teacher_store: str | None = None
    progress: bool = True
    plugins: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @field_validator("teacher_cache", mode="before")
    @classmethod
    def _cache_flag(cls, v: Any) -> Any:
        return {True: "auto", False: "off"}.get(v, v) if isinstance(v, bool) else v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v in ("auto", "cpu", "cuda", "mps") or v.startswith("cuda:"):
            return v
        raise ValueError("valid choices: auto, cpu, cuda, cuda:N, mps")

    @model_validator(mode="before")
    @classmethod
    def _merge_teacher(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        try:
            return merge_teacher(raw)
        except ConfigError as exc:  # a ValueError is what pydantic reports with its location
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _roles(self) -> ExperimentConfig:
        if not self.teachers:
            object.__setattr__(
                self, "teachers", {"teacher": TeacherSpec(model=ModelSpec(name="resnet8"))}
            )
        first = next(iter(self.teachers))
        for key, spec in self.students.items():
            spec._key = key
            if spec.role is None:
                spec.role = "independent" if key == "independent" else "student"
            if spec.teacher is None:
                spec.teacher = first
            if spec.teacher not in self.teachers:
                raise ValueError(
                    f"students.{key}.teacher {spec.teacher!r} is not a teacher; "
                    f"valid choices: {', '.join(self.teachers)}"
                )
        clash = set(self.teachers) & set(self.students)
        if clash:
            raise ValueError(f"name {sorted(clash)[0]!r} is used by a teacher and a student")
        return self

    def data_for(self, override: MemberData | None) -> DataConfig:
        """The training data of a member with data ``override`` (``None``: the top level)."""
        return self.data if override is None else override.over(self.data)

    def train_for(self, overrides: dict[str, Any]) -> TrainConfig:
        """The top-level training settings with ``overrides`` applied."""
        return TrainConfig(**{**self.train.model_dump(), **overrides})


# --------------------------------------------------------------------------- loading


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a mapping with a repeated key is an error (not last-wins)."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict:
    loader.flatten_mapping(node)  # resolve `<<: *anchor` merges first
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise ConfigError(
                f"key {key!r} appears twice in one mapping (lines {seen[key] + 1} and "
                f"{key_node.start_mark.line + 1}); keep one"
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML ``text`` safely: no duplicate keys, no tags that build Python objects.

    Raises:
        ConfigError: One line naming ``source``, the line and the problem.

    Example:
        >>> parse_yaml("a: 1\\nb: [2, 3]", "x.yaml")
        {'a': 1, 'b': [2, 3]}
        >>> parse_yaml("a: 1\\na: 2", "x.yaml")
        Traceback (most recent call last):
        ...
        distillscope.errors.ConfigError: x.yaml: key 'a' appears twice in one mapping (lines 1 \
and 2); keep one
    """
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except yaml.constructor.ConstructorError as exc:
        line = getattr(exc.problem_mark, "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        tag = " ".join(str(exc.problem or "").split())
        raise ConfigError(
            f"{source}{where}: YAML tags are not allowed ({tag}); write plain values "
            "(numbers, strings, lists, mappings)"
        ) from None
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        where = f" at line {line + 1}" if line is not None else ""
        raise ConfigError(f"{source} is not valid YAML{where}; fix the syntax") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``"a.b=c"`` into (``["a", "b"]``, YAML-parsed ``c``)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key.path=value")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".")]
    if not all(parts):
        raise ConfigError(f"override {text!r} has an empty key part; use e.g. train.epochs=2")
    try:
        value = yaml.load(raw, Loader=_StrictLoader) if raw.strip() else None  # noqa: S506
    except ConfigError as exc:
        raise ConfigError(f"override {text!r}: {exc}") from None
    except yaml.constructor.ConstructorError:
        raise ConfigError(
            f"override {text!r}: YAML tags are not allowed; write a plain value"
        ) from None
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply dotted ``key.path=value`` overrides to a raw config mapping (a copy is returned)."""
    out = json.loads(json.dumps(raw))
    for text in overrides:
        parts, value = parse_override(text)
        parts = override_path(out, parts)  # teacher.x and teachers.teacher.x alike
        node = out
        for i, p in enumerate(parts[:-1]):
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"override {text!r}: {where} is a value, not a section")
            node = nxt
        node[parts[-1]] = value
    return out


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """Valid keys of the config model at ``loc`` (for 'unknown key' messages).

    ``loc`` may pass through mappings of named models (``teachers.<name>.model``).
    """
    return sorted(getattr(schema_at(ExperimentConfig, loc, named=True), "model_fields", {}))


def _format_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = tuple(err.get("loc", ()))
    key = ".".join(str(p) for p in loc) or "config"
    if err["type"] == "extra_forbidden":
        parent = loc[:-1]
        valid = _fields_at(parent)
        hint = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        return f"unknown config key {key!r}{suggestion}; valid keys: {', '.join(valid)}"
    msg = err["msg"].removeprefix("Value error, ")
    if not loc:  # a check of the whole config: its message names the keys
        return msg
    value = err.get("input")
    shown = "" if isinstance(value, dict) else f" (got {quoted(value)})"
    return f"config key {key!r}: {msg}{shown}"


def load_config_dict(
    raw: dict[str, Any] | None, overrides: list[str] | None = None, *, names: bool = True
) -> ExperimentConfig:
    """Validate a raw mapping (plus overrides) into an :class:`ExperimentConfig`.

    Registry names (dataset, models, losses, probes) and their parameters are checked too, by
    :func:`distillscope.validate.validate_names`, unless ``names`` is false (then call it before
    using the config).
    """
    raw = apply_overrides(raw or {}, overrides or [])
    try:
        cfg = ExperimentConfig(**raw)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc)) from None
    except TypeError as exc:
        raise ConfigError(f"config: {exc}") from None
    if names:
        # The one call of this module to a floor above it (the registries): imported here, when
        # a config is loaded, so that importing the schema imports no family of the package.
        from distillscope.validate import validate_names

        validate_names(cfg)
    return cfg


def read_config_file(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """Read a YAML file (a config, or another YAML mapping named ``what`` in messages) into a
    raw mapping (not yet validated); one-line :class:`ConfigError` when it cannot."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} {str(p)!r} not found; pass an existing YAML file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{what} {str(p)!r} cannot be read ({exc}); pass a readable UTF-8 YAML file"
        ) from None
    raw = parse_yaml(text, f"{what} {str(p)!r}") or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {str(p)!r} must hold a mapping of keys at the top level")
    return raw


def resolve_config(
    config: ExperimentConfig | str | Path | dict[str, Any] | None,
    overrides: list[str] | None = None,
) -> ExperimentConfig:
    """A validated config from a config object, a raw mapping or a YAML path (``None``: the
    schema's defaults), with dotted ``overrides`` applied."""
    if isinstance(config, ExperimentConfig):
        return load_config_dict(dump_config(config), overrides) if overrides else config
    if isinstance(config, dict):
        return load_config_dict(config, overrides)
    return load_config(config, overrides)


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML file, apply overrides and validate."""
    raw = read_config_file(path) if path is not None else {}
    return load_config_dict(raw, overrides)


def dump_config(cfg: ExperimentConfig) -> dict[str, Any]:
    """The resolved config as plain data (what ``config.yaml`` in a run holds)."""
    return cfg.model_dump(mode="json", exclude={"teacher"})


def config_hash(data: Any, length: int = 16) -> str:
    """A stable hex key of JSON-able ``data`` (teacher store keys)."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]
