"""Write docs/config.md, the reference of every config key, from the config schema.

    python scripts/config_reference.py           # rewrite docs/config.md
    python scripts/config_reference.py --check   # exit 1 when docs/config.md is stale

Every key of the pydantic models in ``distillscope.config`` / ``distillscope.config_train``
becomes one row: its dotted path (``teachers.<name>.model.params``), type (with the schema's
bounds), default and one line of meaning, the first sentence of the key's entry in its
model's ``Attributes:`` docstring section. A key without one stops the script with its name:
describe it there. The ``grid:`` keys (``distillscope.grid.expand``) are not pydantic models;
their rows are written here from that module's constants. ``tests/core/test_config_reference.py``
fails when docs/config.md differs from what this script writes.
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from distillscope.config import ExperimentConfig
from distillscope.config_tree import is_mapping, model_in
from distillscope.describe import doc_section, one_line, plain, show_value
from distillscope.grid.expand import DEFAULT_MAX_CELLS, GRID_KEY, MAX_CELLS_KEY

REPO = Path(__file__).resolve().parents[1]
TARGET = REPO / "docs" / "config.md"
SCRIPT = "scripts/config_reference.py"

#: Sections written once under another path: the ``teacher:`` shorthand is ``teachers.teacher``.
ALIASES = {"teacher": "teachers.<name>"}
#: Mappings whose keys are those of another section (a member's ``train`` overrides).
OVERRIDES = {"train": "train"}
#: The name of a mapping's free key in a path, by the mapping's field.
KEY_NAMES = {"teachers": "<name>", "students": "<name>", "probes": "<probe>"}
BOUNDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}

HEADER = f"""# Config reference

<!-- Written by {SCRIPT} from the config schema; do not edit by hand: run
`python {SCRIPT}` after changing a key. tests/core/test_config_reference.py fails when this
file is stale. -->

Every key a config file may hold, by its dotted path. A run refuses any other key at load, in
one line naming the valid ones. Any key can be set from the command line as `key.path=value`
(the value is read as YAML: `null`, `true`, `[0, 1]`, `{{a: 1}}`), e.g. `distillscope run
CONFIG train.epochs=2 students.kd.temperature=8`. `<name>` stands for a name you choose (a
teacher's, a student's). Defaults are shown as YAML writes them; `required` keys have none.

The registered names a key takes (models, losses, probes, datasets) and their own parameters
are listed by the tool itself: `distillscope list KIND` and `distillscope list KIND NAME
--params`, e.g. `distillscope list losses kd --params`.
"""


def main(argv: list[str]) -> int:
    text = render()
    if argv == ["--check"]:
        current = TARGET.read_text(encoding="utf-8") if TARGET.is_file() else ""
        if current != text:
            print(f"{TARGET.relative_to(REPO)} is stale; run `python {SCRIPT}`", file=sys.stderr)
            return 1
        return 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET.relative_to(REPO)}")
    return 0


def render() -> str:
    """The whole of docs/config.md."""
    written: dict[type[BaseModel], str] = {}  # a model already written out -> its path
    top: list[list[str]] = []
    sections: list[str] = []
    for key, field in ExperimentConfig.model_fields.items():
        meaning = _meaning(ExperimentConfig, key)
        inner = model_in(field.annotation, in_mappings=True)
        if inner is None:
            top.append(_row(key, field, meaning))
            if key == "probes":
                top.append(_probe_row())
            continue
        if key in ALIASES:
            top.append([key, "section", _default(field), f"{meaning} Keys as under "
                        f"`{ALIASES[key]}`."])  # fmt: skip
            continue
        path = f"{key}.{KEY_NAMES[key]}" if is_mapping(field.annotation) else key
        rows = [[path, "section", _default(field), meaning]]
        rows += _rows(inner, path, written)
        sections.append(_table(f"`{path}`", _section_intro(inner), rows))
    sections.append(_table("`grid`", GRID_INTRO, _grid_rows()))
    parts = [HEADER, _table("Top level", "", top), *sections]
    return "\n".join(parts).rstrip() + "\n"


def _rows(
    model: type[BaseModel], path: str, written: dict[type[BaseModel], str]
) -> list[list[str]]:
    """One row per key of ``model`` below ``path``; a model met before is referred to."""
    written.setdefault(model, path)
    rows: list[list[str]] = []
    for key, field in model.model_fields.items():
        at = f"{path}.{key}"
        meaning = _meaning(model, key)
        inner = model_in(field.annotation, in_mappings=True)
        if inner is not None and written.get(inner, at) != at:
            rows.append([at, "section", _default(field), f"{meaning} Keys as under "
                         f"`{written[inner]}`."])  # fmt: skip
            continue
        if inner is not None:
            rows.append([at, "section", _default(field), meaning])
            rows += _rows(inner, at, written)
            continue
        if key in OVERRIDES and is_mapping(field.annotation):
            rows.append([at, f"mapping of `{OVERRIDES[key]}` keys", _default(field), meaning])
            continue
        rows.append(_row(at, field, meaning))
    if model.model_config.get("extra") == "allow":  # a student's loss parameters
        loss = "Any other key is a parameter of its loss, when `loss` is one name "
        loss += "(`distillscope list losses NAME --params`)."
        rows.append([f"{path}.<parameter>", "any", "", loss])
    return rows


def _row(path: str, field: Any, meaning: str) -> list[str]:
    return [path, _type(field.annotation, field.metadata), _default(field), meaning]


def _probe_row() -> list[str]:
    return ["probes.<probe>.<parameter>", "any", "", "A parameter of that probe "
            "(`distillscope list probes NAME --params`); `batch_size` and `max_samples` "
            "default to `probe_defaults`."]  # fmt: skip


def _meaning(model: type[BaseModel], key: str) -> str:
    text = doc_section(model, "Attributes").get(key)
    if not text:
        raise SystemExit(
            f"config key {key!r} of {model.__name__} has no description; add it to the "
            f"Attributes section of {model.__name__}'s docstring, then run `python {SCRIPT}`"
        )
    return _cell(plain(one_line(text)))


def _section_intro(model: type[BaseModel]) -> str:
    return _cell(plain(one_line((model.__doc__ or "").split("\n\n", 1)[0])))


def _type(annotation: Any, metadata: list[Any] | None = None) -> str:
    """The annotation as a reader types it: ``int >= 1``, ``float or null``, ``one of ...``."""
    bounds = [f"{sign} {getattr(m, attr)}" for m in metadata or []
              for attr, sign in BOUNDS.items() if hasattr(m, attr)]  # fmt: skip
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:  # Field(ge=...) inside: its bounds are in .metadata
        extra = [m for a in args[1:] for m in getattr(a, "metadata", [a])]
        return _type(args[0], [*(metadata or []), *extra])
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        inner = [_type(a, metadata) for a in rest]
        return f"{' or '.join(inner)} or null"
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin is dict:
        if args[1] is Any:
            return "mapping"
        return f"mapping of {_type(args[0])} to {_type(args[1])}"
    if origin is list:
        return f"list of {_type(args[0])}"
    if args:  # a union of several types
        return " or ".join(_type(a) for a in args)
    name = getattr(annotation, "__name__", str(annotation))
    return f"{name} {' and '.join(bounds)}" if bounds else name


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    return f"`{show_value(_plain_data(value))}`"


def _plain_data(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_defaults=True)
    if isinstance(value, dict):
        return {k: _plain_data(v) for k, v in value.items()}
    return value


GRID_INTRO = (
    "A `grid:` section turns a config into a study: one run (a cell) per combination of its "
    "axes' values, each in its own folder, reported with mean and spread over seeds "
    "(`docs/grids.md`)."
)


def _grid_rows() -> list[list[str]]:
    return [
        [GRID_KEY, "mapping of axis to list", "", "The axes, in order: the first varies slowest."],
        [f"{GRID_KEY}.<config key>", "list", "", "An axis over a config key: each value is set "
         "there (`grid: {seed: [0, 1, 2]}`, `grid: {students.kd.temperature: [1, 4]}`)."],
        [f"{GRID_KEY}.<VARIABLE>", "list", "", "An axis over a variable: each value replaces "
         "`$VARIABLE` / `${VARIABLE}` wherever the config writes it."],
        [MAX_CELLS_KEY, "int", f"`{DEFAULT_MAX_CELLS}`", "Cells a grid runs without `--yes` "
         "(a top-level key beside `grid:`)."],
    ]  # fmt: skip


def _table(title: str, intro: str, rows: list[list[str]]) -> str:
    lines = [f"## {title}", ""]
    if intro:
        lines += [intro, ""]
    lines += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    lines += [
        f"| `{path}` | {kind} | {default} | {meaning} |" for path, kind, default, meaning in rows
    ]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """``text`` safe inside a Markdown table cell."""
    return text.replace("|", "\\|")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
