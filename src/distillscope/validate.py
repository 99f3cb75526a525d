"""Check a schema-valid config against the registries: names, parameters, losses and probes.

Floor 6, above every family whose registry it reads (see ``docs/design-notes.md``, "Floors"):
:mod:`distillscope.config` checks the shape of a config (keys, types, ranges) and imports
nothing above the schema; this module checks what needs the rest of the package: registry names
and their parameters, run, model and group names, and every loss and probe built once, so that a
bad value fails when the config is loaded, before anything runs.
:func:`~distillscope.config.load_config_dict` calls :func:`validate_names` (unless told not to).

The families (data, distill, models, probes) and installed plugins are imported by
:func:`import_registries` (defined in :mod:`distillscope.plugins`, re-exported here) and
:func:`_check_built` when a config is checked, not when this module is imported.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from distillscope.checks import check_module_key
from distillscope.config import ExperimentConfig
from distillscope.config_train import TrainConfig
from distillscope.errors import ConfigError, quoted
from distillscope.plugins import import_registries, load_plugins
from distillscope.registry import DATASETS, LOSSES, MODELS, PROBES, TEXT_DATASETS, check_params

__all__ = [
    "NAME_PATTERN",
    "RESERVED_NAMES",
    "check_model_name",
    "check_name",
    "import_registries",
    "used_entries",
    "validate_names",
]


def validate_names(cfg: ExperimentConfig) -> None:
    """Check every registry name and parameter the config uses, the names of its runs, models
    and groups, and build every loss and probe once; raise :class:`ConfigError` (one line).

    The config's ``plugins`` are imported first (:mod:`distillscope.plugins`), so the names
    they register are known here."""
    import_registries()
    load_plugins(cfg.plugins)

    def check(registry: Any, name: str, params: dict[str, Any], key: str) -> None:
        if name not in registry:
            raise ConfigError(
                f"config key {key!r}: unknown {registry.kind} {name!r}; valid choices: "
                f"{', '.join(registry.names())}"
            )
        if ":" in name:
            return
        what = f"{registry.kind} {name!r}"
        if registry in (MODELS, DATASETS):  # parameters under <key>.params: name each one's key
            params_key = key if key.endswith(".params") else f"{key}.params"
            check_params(registry.get(name), params, what, label=name, key=params_key)
            return
        try:
            check_params(registry.get(name), params, what, label=name)
        except ConfigError as exc:
            raise ConfigError(f"config key {key!r}: {exc}") from None

    if cfg.data.name not in DATASETS:
        raise ConfigError(
            f"config key 'data.name': unknown dataset {cfg.data.name!r}; valid choices: "
            f"{', '.join(DATASETS.names())}"
        )
    check(DATASETS, cfg.data.name, cfg.data.params, "data.params")
    for name, spec in cfg.teachers.items():
        check(MODELS, spec.model.name, spec.model.params, f"teachers.{name}.model")
        _check_train(cfg, spec.train, f"teachers.{name}.train")
        for term, params in spec.loss.items():
            check(LOSSES, term, _without_weight(params), f"teachers.{name}.loss.{term}")
    check(MODELS, cfg.student.name, cfg.student.params, "student")
    for name, spec in cfg.students.items():
        if spec.model is not None:
            check(MODELS, spec.model.name, spec.model.params, f"students.{name}.model")
        _check_train(cfg, spec.train, f"students.{name}.train")
        for term, params in spec.loss_spec().items():
            check(LOSSES, term, _without_weight(params), f"students.{name}.loss.{term}")
    for name, params in cfg.probes.items():
        check(PROBES, name, params or {}, f"probes.{name}")
    _check_names(cfg)
    _check_built(cfg)


def used_entries(cfg: ExperimentConfig) -> list[tuple[str, str]]:
    """``(kind, name)`` of every registry entry ``cfg`` names: datasets, models, loss terms and
    probes (what :func:`~distillscope.plugins.code_digests` looks the code up for).

    Example:
        >>> from distillscope.config import load_config_dict
        >>> cfg = load_config_dict({"students": {"kd": {}}, "probes": {"accuracy": {}}},
        ...                        names=False)
        >>> used_entries(cfg)  # doctest: +NORMALIZE_WHITESPACE
        [('dataset', 'fashion-mnist'), ('loss', 'ce'), ('loss', 'kd'), ('model', 'mnist_cnn'),
         ('model', 'resnet8'), ('probe', 'accuracy')]
    """
    used = {("dataset", cfg.data.name), ("model", cfg.student.name)}
    used |= {("probe", name) for name in cfg.probes}
    for spec in cfg.teachers.values():
        used |= {("model", spec.model.name), *(("loss", term) for term in spec.loss)}
        if spec.data is not None and spec.data.name is not None:
            used.add(("dataset", spec.data.name))
    for spec in cfg.students.values():
        used |= {("loss", term) for term in spec.loss_spec()}
        if spec.model is not None:
            used.add(("model", spec.model.name))
        if spec.data is not None and spec.data.name is not None:
            used.add(("dataset", spec.data.name))
    return sorted(used)


#: Names of runs, teachers and students become file and folder names: letters, digits, ``_``,
#: ``-`` and ``.``, not starting with ``.`` or ``-``, at most 100 characters.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
#: Keys that probe results use beside model names (series x axes, decision-map points).
RESERVED_NAMES = frozenset({"x", "points"})


def check_name(name: object, key: str) -> str:
    """Return ``name`` if it is a safe run or model name, else raise :class:`ConfigError`.

    Example:
        >>> check_name("kd_T4.run-1", "students")
        'kd_T4.run-1'
        >>> check_name("../x", "name")
        Traceback (most recent call last):
        ...
        distillscope.errors.ConfigError: config key 'name': '../x' is not a valid name; use 1-100 \
letters, digits, '_', '-' or '.', not starting with '.' or '-'
    """
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"config key {key!r}: {quoted(name)} is not a valid name; use 1-100 letters, digits, "
            "'_', '-' or '.', not starting with '.' or '-'"
        )
    if name in RESERVED_NAMES:
        raise ConfigError(
            f"config key {key!r}: {name!r} is reserved in probe results "
            f"({', '.join(sorted(RESERVED_NAMES))}); choose another name"
        )
    return name


def check_model_name(name: object, key: str) -> str:
    """A run name (:func:`check_name`) that can also key a network inside torch: no ``.`` and
    not an attribute of :class:`torch.nn.Module` (``half``, ``train``, ``to``, ...).

    Example:
        >>> check_model_name("half", "students.half")
        Traceback (most recent call last):
        ...
        distillscope.errors.ConfigError: config key 'students.half': 'half' is the name of a ...
    """
    return check_module_key(check_name(name, key), key)


def _check_names(cfg: ExperimentConfig) -> None:
    check_name(cfg.name, "name")
    for name in cfg.teachers:
        check_model_name(name, f"teachers.{name}")
    for name in cfg.students:
        check_model_name(name, f"students.{name}")
    _check_groups(cfg)


def _check_groups(cfg: ExperimentConfig) -> None:
    """Groups: a safe name that is no model's, two or more members, one training setting."""
    groups: dict[str, list[str]] = {}
    for name, spec in cfg.students.items():
        if spec.group is not None:
            groups.setdefault(check_name(spec.group, f"students.{name}.group"), []).append(name)
    for group, members in groups.items():
        key = f"students.{members[0]}.group"
        if group in cfg.students or group in cfg.teachers:
            raise ConfigError(
                f"config key {key!r}: group {group!r} has the name of a model; name it otherwise"
            )
        if len(members) < 2:
            raise ConfigError(
                f"config key {key!r}: group {group!r} has one member ({members[0]}); a group "
                "trains two or more students together"
            )
        settings = {json.dumps(cfg.train_for(cfg.students[m].train).model_dump(mode="json"),
                               sort_keys=True) for m in members}  # fmt: skip
        teachers = {cfg.students[m].teacher for m in members}
        if len(teachers) > 1:
            raise ConfigError(
                f"config key {key!r}: the members of group {group!r} have different teachers "
                f"({', '.join(sorted(str(t) for t in teachers))}); a group shares one teacher"
            )
        if len(settings) > 1:
            raise ConfigError(
                f"config key {key!r}: the members of group {group!r} ({', '.join(members)}) "
                "have different training settings; a group trains in one loop, give them the same"
            )
        if len({cfg.students[m].teacher_cache for m in members}) > 1:
            raise ConfigError(
                f"config key {key!r}: the members of group {group!r} have different "
                "teacher_cache modes; a group shares one teacher cache, give them the same"
            )
        seeded = [m for m in members if cfg.students[m].seed is not None]
        if seeded:
            raise ConfigError(
                f"config key 'students.{seeded[0]}.seed': members of group {group!r} get seeds "
                "of their own from the run's seed; remove the key"
            )
        datas = {json.dumps(cfg.data_for(cfg.students[m].data).model_dump(mode="json"),
                            sort_keys=True) for m in members}  # fmt: skip
        if len(datas) > 1:
            raise ConfigError(
                f"config key {key!r}: the members of group {group!r} ({', '.join(members)}) "
                "have different data; a group trains on one set of batches, give them the same"
            )
    for name, spec in cfg.students.items():
        terms = spec.loss_spec()
        if spec.group is None and "dml" in terms:
            raise ConfigError(
                f"config key 'students.{name}.loss': dml learns from peers; put {name!r} and "
                "at least one other dml student in a group (students.<name>.group: <group>)"
            )


def _check_built(cfg: ExperimentConfig) -> None:
    """Build every loss and probe once, so bad values fail at load, before anything runs."""
    from distillscope.distill import build_loss
    from distillscope.probes import create_probe

    for name, spec in cfg.teachers.items():
        key = f"teachers.{name}.loss"
        loss = _built(lambda spec=spec: build_loss(spec.loss), key)
        if spec.checkpoint is None and loss.needs_teacher:
            terms = ", ".join(n for n, t in loss.terms.items() if t.needs_teacher)
            raise ConfigError(
                f"config key {key!r}: {terms} needs a teacher, but teachers are trained without "
                "one; use e.g. ce or label_smoothing"
            )
    for name, spec in cfg.students.items():
        key = f"students.{name}.loss"
        _built(lambda spec=spec: build_loss(spec.loss_spec()), key)
    defaults = cfg.probe_defaults.model_dump()
    roles = {**dict.fromkeys(cfg.teachers, "teacher"),
             **{n: str(s.role) for n, s in cfg.students.items()}}  # fmt: skip
    text = sorted(_text_data(cfg))
    for name, params in cfg.probes.items():
        probe = _built(
            lambda name=name, params=params: create_probe(name, **{**defaults, **(params or {})}),
            f"probes.{name}",
        )
        if text and not probe.text:
            usable = ", ".join(n for n in PROBES.list() if PROBES.get(n).text)
            raise ConfigError(
                f"config key 'probes.{name}': {name} does not apply to text data "
                f"({', '.join(text)}); remove it (probes for text: {usable})"
            )
        for param, named in probe.models_named().items():
            _check_named(f"probes.{name}.{param}", named, probe.model_params[param], roles)


def _text_data(cfg: ExperimentConfig) -> set[str]:
    """The text datasets among the run's data (top level and members' own)."""
    names = {cfg.data.name}
    for spec in [*cfg.teachers.values(), *cfg.students.values()]:
        data = getattr(spec, "data", None)
        if data is not None and getattr(data, "name", None):
            names.add(data.name)
    return names & TEXT_DATASETS


def _check_named(key: str, named: list[str], spec: Any, roles: dict[str, str]) -> None:
    """Raise :class:`ConfigError` unless every model in ``named`` is a model of the run with
    a role ``spec`` (a :class:`~distillscope.probes.base.ModelParam`) allows."""
    for model in named:
        if model not in roles:
            raise ConfigError(
                f"config key {key!r}: it names model {quoted(model)}, which is not a model "
                f"of the run; use one of {', '.join(roles)}"
            )
        role = roles[model]
        if spec.roles is not None and role not in spec.roles:
            what = {"student": "distilled student", "independent": "independent model"}
            raise ConfigError(
                f"config key {key!r}: {model!r} is a {what.get(role, role)} (role {role!r}); "
                f"{spec.why or 'name a model of role ' + ' or '.join(spec.roles)}"
            )


def _built(make: Any, key: str) -> Any:
    try:
        return make()
    except ConfigError as exc:
        text = str(exc)
        raise ConfigError(text if "config key" in text else f"config key {key!r}: {text}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config key {key!r}: {' '.join(str(exc).split())}") from None


def _without_weight(params: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in (params or {}).items() if k != "weight"}


def _check_train(cfg: ExperimentConfig, overrides: dict[str, Any], key: str) -> None:
    try:
        cfg.train_for(overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        sub = ".".join(str(p) for p in err.get("loc", ()))
        if err["type"] == "extra_forbidden":
            valid = sorted(TrainConfig.model_fields)
            raise ConfigError(
                f"unknown config key '{key}.{sub}'; valid keys: {', '.join(valid)}"
            ) from None
        raise ConfigError(
            f"config key '{key}.{sub}': {err['msg']} (got {quoted(err.get('input'))})"
        ) from None
