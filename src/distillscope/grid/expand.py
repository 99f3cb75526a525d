"""Expand a config's ``grid:`` section into cells: one plain config per combination of values.

A grid axis is either a **config path** (``seed``, ``students.kd.temperature``: the value is set
at that key) or a **variable** (any other name, e.g. ``T``: the value replaces every ``$T`` /
``${T}`` written in the config, so one axis can set many keys at once). The cells are the
cartesian product of the axes, in the order they are written. Every cell is validated as a
plain config before anything is written; errors name the axis or the cell on one line.

Example:
    >>> raw = {"name": "demo", "students": {"kd": {"loss": "kd", "temperature": "$T"}},
    ...        "grid": {"T": [1, 4], "seed": [0, 1]}}
    >>> grid = expand_grid(raw)
    >>> [c.id for c in grid.cells]
    ['T=1,seed=0', 'T=1,seed=1', 'T=4,seed=0', 'T=4,seed=1']
    >>> grid.cells[2].config.students["kd"].loss_spec(), grid.cells[2].config.seed
    ({'kd': {'temperature': 4}}, 0)
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from distillscope.config import (
    ExperimentConfig,
    apply_overrides,
    config_hash,
    dump_config,
    load_config_dict,
    parse_override,
    read_config_file,
)
from distillscope.config_tree import get_at, merge_teacher, normal_path, schema_at, set_at
from distillscope.errors import ConfigError
from distillscope.identity import digest
from distillscope.plugins import code_digests
from distillscope.validate import check_name, used_entries, validate_names

GRID_KEY = "grid"
#: Top-level key beside ``grid:`` (not an axis): how many cells to run without ``--yes``.
MAX_CELLS_KEY = "grid_max_cells"
#: A grid with more cells to run than this asks for ``--yes`` (or ``grid_max_cells``).
DEFAULT_MAX_CELLS = 100
SEED_KEY = "seed"
#: Keys that say where and how a run executes, not what it computes: they do not change the
#: grid's directory, and a cell run with other values of them is still the same cell.
RUN_ONLY_KEYS = ("output_dir", "progress", "threads", "device", "teacher_store", "tracking")
#: Keys that must be the same in every cell (the grid directory is named after them).
FIXED_KEYS = ("name", "output_dir")
MAX_ID = 100

_VAR = r"[A-Za-z_][A-Za-z0-9_]*"
_WHOLE = re.compile(rf"\$(?:\{{({_VAR})\}}|({_VAR}))")
_EMBEDDED = re.compile(r"\$\{([^}]*)\}")
_BARE = re.compile(rf"\$({_VAR})")
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]")
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Axis:
    """One grid axis.

    Attributes:
        key: The config path (``students.kd.temperature``) or the variable name (``T``).
        kind: ``path`` or ``variable``.
        labels: How each value is named in cell ids and reports.
        values: The values, in order.
        used_at: Config paths the axis sets (a variable: every place that writes ``$T``).
    """

    key: str
    kind: Literal["path", "variable"]
    labels: tuple[str, ...]
    values: tuple[Any, ...]
    used_at: tuple[str, ...]


@dataclass(frozen=True)
class Cell:
    """One combination of axis values and the plain config it gives.

    Attributes:
        id: Readable, path-safe id, e.g. ``T=10,seed=0`` (its folder under ``cells/``).
        labels: Axis key -> label of its value in this cell.
        params: Axis key -> the value itself.
        raw: The cell's config as plain data (no ``grid`` section).
        config: ``raw`` validated.
    """

    id: str
    labels: dict[str, str]
    params: dict[str, Any]
    raw: dict[str, Any]
    config: ExperimentConfig


@dataclass(frozen=True)
class Grid:
    """A config expanded into cells.

    Attributes:
        name: The config's ``name``.
        key: Short hash of the config without its ``grid`` section and run-only keys (and,
            when the cells use plugin code, that code's digests): cells of grids that share it
            (e.g. the same study with more seeds) share a directory.
        source: The whole config as given (overrides applied), ``grid`` included.
        axes: The axes, in the order written.
        cells: Every combination, the first axis varying slowest.
        seed_axis: The axis that sets the top-level ``seed`` (the one summaries average over),
            or ``None``.
        max_cells: Cells a run may start without being confirmed (the config's
            ``grid_max_cells``, else :data:`DEFAULT_MAX_CELLS`).
    """

    name: str
    key: str
    source: dict[str, Any]
    axes: tuple[Axis, ...]
    cells: tuple[Cell, ...]
    seed_axis: str | None
    max_cells: int = DEFAULT_MAX_CELLS

    def directory(self, output_dir: str | Path | None = None) -> Path:
        """``<output_dir>/<name>-grid-<key>``."""
        root = output_dir if output_dir is not None else self.source.get("output_dir", "runs")
        return Path(str(root)) / f"{self.name}-grid-{self.key}"


def is_grid_config(path: str | Path, overrides: list[str] | None = None) -> bool:
    """Whether the YAML file at ``path`` has a top-level ``grid:`` section, or an override
    adds one (``grid.seed=[0,1,2]`` turns any config into a grid over seeds)."""
    added = any(o.split("=", 1)[0].split(".", 1)[0] == GRID_KEY for o in overrides or [])
    return added or GRID_KEY in read_config_file(path)


def load_grid(config: str | Path | dict[str, Any], overrides: list[str] | None = None) -> Grid:
    """Read (a path) or take (a mapping) a config with a ``grid:`` section and expand it."""
    raw = read_config_file(config) if isinstance(config, (str, Path)) else config
    return expand_grid(raw, overrides)


def expand_grid(raw: dict[str, Any], overrides: list[str] | None = None) -> Grid:
    """Expand ``raw`` (a config mapping with a ``grid:`` section) into validated cells.

    Args:
        raw: The config as read from YAML.
        overrides: Dotted ``key.path=value`` overrides, applied before expansion (so they apply
            to every cell; ``grid.seed=[0,1]`` replaces an axis).

    Raises:
        ConfigError: A malformed axis, an unknown path, an undeclared or unused variable, two
            cells with the same id, or a cell that is not a valid config (one line).
    """
    source = _overridden(raw, overrides or [])
    spec = source.get(GRID_KEY)
    if not isinstance(spec, dict) or not spec:
        raise ConfigError(
            f"config key 'grid': expected a mapping of axes to lists of values (got {spec!r}); "
            "e.g. grid: {seed: [0, 1, 2]}"
        )
    max_cells = _max_cells(source.get(MAX_CELLS_KEY, DEFAULT_MAX_CELLS))
    written = merge_teacher({k: v for k, v in source.items() if k not in (GRID_KEY, MAX_CELLS_KEY)})
    # a path axis replaces what the config writes at its key, placeholders included
    replaced = [str(k) for k in spec if _is_path(str(k))]
    base = _without(written, [normal_path(k) for k in replaced])
    refs = _references(base)
    axes = tuple(_axis(str(key), values, refs) for key, values in spec.items())
    _check_unused(axes, base, written, replaced)
    _check_overlaps(axes)
    _check_references(axes, refs)
    first = _substitute(base, {a.key: a.values[0] for a in axes if a.kind == "variable"})
    resolved = _resolved_or_empty(first)
    for axis in axes:
        if axis.kind == "path":
            _check_path(axis.key, axis.used_at[0], first, resolved)
    name = str(base.get("name", "run"))
    if not _SAFE_NAME.fullmatch(name) or len(name) > MAX_ID:
        raise ConfigError(
            f"config key 'name': {name!r} cannot name a grid directory; use letters, digits, "
            f"'_', '-' and '.', not starting with '.' or '-', at most {MAX_ID} characters"
        )
    checked: set[str] = set()
    cells = tuple(_cell(base, axes, combo, name, checked) for combo in _combinations(axes))
    _check_unique(cells)
    _check_distinct(cells)
    stable = {k: v for k, v in base.items() if k not in RUN_ONLY_KEYS}
    code = _code(cells)
    if code:  # plugin code: an edited plugin gives a new grid, as an edited config does
        stable["plugin_code"] = code
    return Grid(
        name=name,
        key=config_hash(stable, 10),
        source=source,
        axes=axes,
        cells=cells,
        seed_axis=_seed_axis(axes),
        max_cells=max_cells,
    )


def _code(cells: tuple[Cell, ...]) -> dict[str, str]:
    """The source digests of the plugins the cells name and of the non-distillscope code
    behind every entry they use (:func:`~distillscope.plugins.code_digests`)."""
    used: set[tuple[str, str]] = set()
    plugins: dict[str, None] = {}
    for cell in cells:
        used.update(used_entries(cell.config))
        plugins.update(dict.fromkeys(cell.config.plugins))
    return code_digests(sorted(used), list(plugins))


def _max_cells(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"config key {MAX_CELLS_KEY!r}: expected a whole number of cells >= 1 (got "
            f"{value!r}); e.g. {MAX_CELLS_KEY}: 2000 runs up to 2000 cells without --yes"
        )
    return value


def _overridden(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``raw`` with the overrides applied in order; ``grid.<axis key>=[...]`` sets that axis.

    An axis key may have dots (``grid.train.epochs=[1,2]`` is the axis ``train.epochs``), so
    everything after ``grid.`` names one axis rather than a nested section.
    """
    out = apply_overrides(raw, [])
    for text in overrides:
        parts, value = parse_override(text)
        if parts[0] != GRID_KEY or len(parts) == 1:
            out = apply_overrides(out, [text])
            continue
        spec = out.get(GRID_KEY)
        if spec is None:
            spec = out[GRID_KEY] = {}
        if not isinstance(spec, dict):
            raise ConfigError(f"override {text!r}: grid is a value, not a section")
        spec[".".join(parts[1:])] = value
    return out


# --------------------------------------------------------------------------- axes


def _axis(key: str, values: Any, refs: dict[str, list[tuple[str, bool]]]) -> Axis:
    where = f"grid axis {key!r}"
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"{where}: an empty key part; write a path like students.kd.temperature")
    if isinstance(values, dict):
        labels, items = [str(k) for k in values], list(values.values())
    elif isinstance(values, list):
        items = list(values)
        labels = [_label(v, key, i) for i, v in enumerate(items)]
    else:
        raise ConfigError(
            f"{where}: expected a list of values (got {values!r}); write {key}: [{values!r}]"
        )
    if not items:
        raise ConfigError(f"{where} has no values; give at least one, e.g. {key}: [0, 1, 2]")
    dup = next((lab for i, lab in enumerate(labels) if lab in labels[:i]), None)
    if dup is not None:
        raise ConfigError(f"{where} lists {dup!r} twice; give each value once")
    if _is_path(key):
        if isinstance(values, dict):
            _check_nested_axis(key, values)
        return Axis(key, "path", tuple(labels), tuple(items), (normal_path(key),))
    if not re.fullmatch(_VAR, key):
        raise ConfigError(
            f"{where} is neither a config key nor a variable name (letters, digits, '_'); "
            "valid config keys: " + ", ".join(sorted(ExperimentConfig.model_fields))
        )
    embedded = [path for path, inside in refs.get(key, []) if inside]
    for label, value in zip(labels, items):
        if embedded and isinstance(value, (dict, list)):
            raise ConfigError(
                f"{where}: value {label!r} is a {type(value).__name__} but {embedded[0]!r} uses "
                f"${{{key}}} inside a longer string; use scalar values there"
            )
    used = tuple(p for p, _ in refs.get(key, []))
    return Axis(key, "variable", tuple(labels), tuple(items), used)


def _check_nested_axis(key: str, values: dict[Any, Any]) -> None:
    """``train: {epochs: [1, 2]}`` under ``grid:`` labels a value of ``train``; it was surely
    meant as the axis ``train.epochs`` (a config key under ``train`` with a list of values)."""
    model = schema_at(ExperimentConfig, normal_path(key).split("."))
    if model is None:
        return
    for label, value in values.items():
        if str(label) in model.model_fields and isinstance(value, list):
            axis = f"{key}.{label}"
            raise ConfigError(
                f"grid axis {key!r}: its value {label!r} is a list, but {axis!r} is a config key; "
                f"to vary it write the axis with its full path, {axis}: {value!r}, under grid "
                f"(a mapping under an axis labels that axis's values)"
            )


def _is_path(key: str) -> bool:
    """A config path (dotted, or a top-level config key) rather than a variable name."""
    return "." in key or key in ExperimentConfig.model_fields or key == GRID_KEY


def _without(base: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """A copy of ``base`` without the values at the dotted ``keys``."""
    out = copy.deepcopy(base)
    for key in keys:
        *parents, last = key.split(".")
        node = get_at(out, parents)
        if isinstance(node, dict):
            node.pop(last, None)
    return out


def _label(value: Any, key: str, index: int) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float, str)):
        return str(value)
    raise ConfigError(
        f"grid axis {key!r}: value {index + 1} is a {type(value).__name__}; name such values: "
        f"{key}: {{label: value, ...}}"
    )


def _combinations(axes: tuple[Axis, ...]) -> list[tuple[int, ...]]:
    return list(itertools.product(*(range(len(a.values)) for a in axes)))


def _seed_axis(axes: tuple[Axis, ...]) -> str | None:
    for axis in axes:
        if SEED_KEY in axis.used_at:
            return axis.key
    return None


def _check_overlaps(axes: tuple[Axis, ...]) -> None:
    owned = [(a.key, p) for a in axes for p in a.used_at]
    for (k1, p1), (k2, p2) in itertools.combinations(owned, 2):
        if p1 == p2 or p2.startswith(p1 + ".") or p1.startswith(p2 + "."):
            both = f"grid axes {k1!r} and {k2!r}" if k1 != k2 else f"grid axis {k1!r}"
            raise ConfigError(
                f"{both} both set {min(p1, p2, key=len)!r}; let one axis own each key"
            )


# --------------------------------------------------------------------------- variables


def _references(node: Any, path: str = "") -> dict[str, list[tuple[str, bool]]]:
    """Variable name -> ``(config path, inside a longer string)`` of each place that uses it."""
    found: dict[str, list[tuple[str, bool]]] = {}
    if isinstance(node, dict):
        for k, v in node.items():
            for name, paths in _references(v, f"{path}.{k}" if path else str(k)).items():
                found.setdefault(name, []).extend(paths)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            for name, paths in _references(v, f"{path}.{i}").items():
                found.setdefault(name, []).extend(paths)
    elif isinstance(node, str):
        whole = _WHOLE.fullmatch(node)
        names = [whole.group(1) or whole.group(2)] if whole else _EMBEDDED.findall(node)
        for name in names:
            if not re.fullmatch(_VAR, name):
                raise ConfigError(
                    f"config key {path!r}: ${{{name}}} is not a variable name; use letters, "
                    "digits and '_'"
                )
            found.setdefault(name, []).append((path, whole is None))
    return found


def _check_references(axes: tuple[Axis, ...], refs: dict[str, list[tuple[str, bool]]]) -> None:
    declared = {a.key for a in axes if a.kind == "variable"}
    for name, uses in refs.items():
        if name not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise ConfigError(
                f"config key {uses[0][0]!r} uses ${{{name}}}, which is no grid variable "
                f"(grid variables: {known}); add {name}: [...] under grid"
            )
        for path, _ in uses:
            top = path.split(".")[0]
            if top in FIXED_KEYS:
                raise ConfigError(
                    f"config key {top!r} cannot use the grid variable ${{{name}}}: it names the "
                    "grid directory, which all cells share; cells are named by the grid"
                )


def _check_unused(
    axes: tuple[Axis, ...], base: dict[str, Any], written: dict[str, Any], replaced: list[str]
) -> None:
    """Every variable axis is used where its value lands; say why one is not.

    ``base`` is the config the cells are made from, ``written`` the config as written (before
    the path axes in ``replaced`` took their keys away).
    """
    names = {a.key for a in axes if a.kind == "variable"}
    for path, name in _bare_uses(base, names):
        raise ConfigError(
            f"config key {path!r} writes ${name} inside a longer string, where only ${{{name}}} "
            f"is replaced; write ${{{name}}} there"
        )
    for axis in axes:
        if axis.kind != "variable" or axis.used_at:
            continue
        key, where = axis.key, f"grid axis {axis.key!r}"
        hidden = [p for p, _ in _references(written).get(key, [])]
        if hidden:
            owner = next(
                k
                for k in replaced
                if hidden[0] == normal_path(k) or hidden[0].startswith(normal_path(k) + ".")
            )
            raise ConfigError(
                f"{where}: the config uses ${{{key}}} only where grid axes replace what it writes "
                f"({hidden[0]!r}, set by the axis {owner!r}); use ${key} outside {owner!r} or "
                "drop one of the two axes"
            )
        close = difflib.get_close_matches(key, sorted(ExperimentConfig.model_fields), n=1)
        hint = f" (did you mean the config key {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"{where} is not a config key and the config never uses ${{{key}}}{hint}; "
            f"write ${key} where its value goes, or use a dotted config path"
        )


def _bare_uses(node: Any, names: set[str], path: str = "") -> list[tuple[str, str]]:
    """``(config path, variable)`` of each ``$T`` written inside a longer string (not ``${T}``)."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for k, v in node.items():
            found += _bare_uses(v, names, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            found += _bare_uses(v, names, f"{path}.{i}")
    elif isinstance(node, str) and not _WHOLE.fullmatch(node):
        found += [(path, name) for name in _BARE.findall(node) if name in names]
    return found


def _substitute(node: Any, values: dict[str, Any]) -> Any:
    """A copy of ``node`` with ``$T`` / ``${T}`` replaced by ``values["T"]``."""
    if isinstance(node, dict):
        return {k: _substitute(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, values) for v in node]
    if isinstance(node, str):
        whole = _WHOLE.fullmatch(node)
        if whole:
            return copy.deepcopy(values[whole.group(1) or whole.group(2)])
        return _EMBEDDED.sub(lambda m: _text(values[m.group(1)], m.group(1)), node)
    return node


def _text(value: Any, name: str) -> str:
    if isinstance(value, (dict, list)):
        raise ConfigError(
            f"grid variable {name!r} has a {type(value).__name__} value but ${{{name}}} is used "
            "inside a longer string; use scalar values there"
        )
    return _label(value, name, 0)


# --------------------------------------------------------------------------- paths


def _resolved_or_empty(raw: dict[str, Any]) -> dict[str, Any]:
    """The config with every default filled in, or ``{}`` if it is not valid without the axes."""
    try:
        return dump_config(load_config_dict(raw))
    except ConfigError:
        return {}


def _check_path(key: str, path: str, raw: dict[str, Any], resolved: dict[str, Any]) -> None:
    """Reject a path axis whose section does not exist; schema sections check their last key."""
    parts = path.split(".")
    if parts[0] == GRID_KEY:
        raise ConfigError(f"grid axis {key!r}: the grid cannot vary itself")
    if parts[0] not in ExperimentConfig.model_fields:
        raise ConfigError(_unknown(key, parts[0], "", sorted(ExperimentConfig.model_fields)))
    for depth in range(1, len(parts)):
        section = parts[:depth]
        nodes = [
            n for n in (get_at(raw, section), get_at(resolved, section)) if isinstance(n, dict)
        ]
        if not nodes:
            parent = section[:-1]
            above = [
                n for n in (get_at(raw, parent), get_at(resolved, parent)) if isinstance(n, dict)
            ]
            valid = sorted({k for n in above for k in n})
            raise ConfigError(_unknown(key, section[-1], ".".join(parent), valid))
    model = schema_at(ExperimentConfig, parts[:-1])
    strict = model is not None and model.model_config.get("extra") == "forbid"
    if strict and parts[-1] not in model.model_fields:
        valid = sorted(model.model_fields)
        raise ConfigError(_unknown(key, parts[-1], ".".join(parts[:-1]), valid))


def _unknown(key: str, part: str, under: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(part, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    where = f" under {under!r}" if under else ""
    return (
        f"grid axis {key!r}: the config has no key {part!r}{where}{hint}; "
        f"valid keys: {', '.join(valid) or 'none'}"
    )


# --------------------------------------------------------------------------- cells


def _cell(
    base: dict[str, Any],
    axes: tuple[Axis, ...],
    combo: tuple[int, ...],
    name: str,
    checked: set[str],
) -> Cell:
    labels = {a.key: a.labels[i] for a, i in zip(axes, combo)}
    params = {a.key: a.values[i] for a, i in zip(axes, combo)}
    raw = _substitute(base, {k: v for k, v in params.items() if _kind(axes, k) == "variable"})
    for axis in axes:
        if axis.kind == "path":
            set_at(raw, axis.used_at[0], params[axis.key])
    cell_id = cell_id_of(labels)
    raw["name"] = cell_run_name(name, cell_id)
    raw["progress"] = False  # cells run side by side: the grid reports progress per cell
    try:
        config = _validated(raw, checked)
    except ConfigError as exc:
        raise ConfigError(f"grid cell {cell_id}: {exc}") from None
    return Cell(id=cell_id, labels=labels, params=params, raw=raw, config=config)


def _validated(raw: dict[str, Any], checked: set[str]) -> ExperimentConfig:
    """``raw`` validated exactly as :func:`load_config_dict` does, but fast for many cells.

    The schema check runs on every cell. The registry checks (names, parameters, building
    every loss and probe: most of the cost) read neither the run's ``name`` nor its ``seed``,
    so cells that differ only there (the replicates of a grid) share them: ``checked`` holds
    the configs, without those two keys, that passed them; each cell's name is checked alone.
    """
    config = load_config_dict(raw, names=False)
    key = json.dumps({k: v for k, v in raw.items() if k not in ("name", SEED_KEY)},
                     sort_keys=True, default=repr)  # fmt: skip
    if key in checked:
        check_name(config.name, "name")
    else:
        validate_names(config)
        checked.add(key)
    return config


def _kind(axes: tuple[Axis, ...], key: str) -> str:
    return next(a.kind for a in axes if a.key == key)


def cell_id_of(labels: dict[str, str]) -> str:
    """``"T=10,seed=0"``, with characters unsafe in a folder name replaced by ``_``.

    Example:
        >>> cell_id_of({"T": "10", "data.root": "a/b c"})
        'T=10,data.root=a_b_c'
    """
    text = ",".join(f"{k}={v}" for k, v in labels.items())
    safe = _UNSAFE.sub("_", text)
    if safe.startswith((".", "-")):
        safe = "_" + safe
    if len(safe) > MAX_ID:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        safe = f"{safe[: MAX_ID - 9]}-{digest}"
    return safe


def cell_run_name(name: str, cell_id: str) -> str:
    """The run name of a cell: the grid's name and the cell id, using name-safe characters.

    Example:
        >>> cell_run_name("toy", "T=10,seed=0")
        'toy_T-10_seed-0'
    """
    slug = cell_id.replace("=", "-").replace(",", "_").replace("+", "p")
    full = f"{name}_{slug}"
    if len(full) > MAX_ID:
        digest = hashlib.sha256(full.encode()).hexdigest()[:8]
        full = f"{full[: MAX_ID - 9]}-{digest}"
    return full


def _check_distinct(cells: tuple[Cell, ...]) -> None:
    """Two cells with the same resolved config (but their run names) would compute one result
    twice and count it as two replicates: refused. Values compare by value, not by how they are
    written (``seed: [1, 1.0]``, ``T: [4, 4.0]``, labels ``a: 0, b: 00``)."""
    seen: dict[str, Cell] = {}
    for cell in cells:
        resolved = {k: v for k, v in dump_config(cell.config).items() if k != "name"}
        key = digest(resolved)
        other = seen.get(key)
        if other is not None:
            raise ConfigError(
                f"grid cells {other.id!r} and {cell.id!r} are the same config (their axis values "
                "are equal as values); give each value once"
            )
        seen[key] = cell


def _check_unique(cells: tuple[Cell, ...]) -> None:
    seen: dict[str, Cell] = {}
    for cell in cells:
        other = seen.get(cell.id)
        if other is not None:
            raise ConfigError(
                f"grid cells {other.labels} and {cell.labels} get the same folder {cell.id!r}; "
                "label the values: axis: {label: value, ...}"
            )
        seen[cell.id] = cell
