"""Helpers on the config tree: raw mappings (as read from YAML) and the schema's models.

Floor 1, the config schema (see ``docs/design-notes.md``, "Floors"): used by
:mod:`distillscope.config` (error messages, the ``teacher:`` shorthand) and by
:mod:`distillscope.grid.expand` (grid axes address config paths). Imports only pydantic and
:mod:`distillscope.errors`; the schema's root model is passed in, so this module does not import
the schema.

Example:
    >>> raw = {"teacher": {"model": {"name": "mlp"}}, "seed": 1}
    >>> merge_teacher(raw)
    {'seed': 1, 'teachers': {'teacher': {'model': {'name': 'mlp'}}}}
    >>> normal_path("teacher.model.name"), get_at(raw, ["teacher", "model", "name"])
    ('teachers.teacher.model.name', 'mlp')
"""

from __future__ import annotations

import copy
import json
from typing import Any

from pydantic import BaseModel

from distillscope.errors import ConfigError

__all__ = [
    "get_at",
    "is_mapping",
    "merge_teacher",
    "model_in",
    "normal_path",
    "override_path",
    "schema_at",
    "set_at",
]

#: The shorthand key of the one teacher, and its name under ``teachers:``.
TEACHER = "teacher"


def merge_teacher(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with the ``teacher:`` shorthand written as ``teachers.teacher``.

    ``raw`` itself is returned when it has no shorthand, or when ``teachers`` is not a mapping
    (the schema then says what is wrong with it); otherwise a shallow copy.

    Raises:
        ConfigError: Both ``teacher`` and ``teachers.teacher`` are given, or a ``teacher``
            without a model beside named teachers (``teacher.train.epochs=1`` on a config of
            ``teachers:``): the line names the teachers and the keys to use.
    """
    teachers = raw.get("teachers") or {}
    shorthand = raw.get(TEACHER)
    if shorthand is None or not isinstance(teachers, dict):
        return raw
    if TEACHER in teachers:
        raise ConfigError("give either 'teacher' or 'teachers.teacher', not both")
    if teachers and isinstance(shorthand, dict) and "model" not in shorthand:
        # `teacher.train.epochs=1` on a config of named teachers: a setting meant for them
        path, value = _first_leaf(shorthand)
        first = next(iter(teachers))
        raise ConfigError(
            f"config key 'teacher.{path}': this config names its teachers under 'teachers:' "
            f"({', '.join(map(str, teachers))}); set teachers.<name>.{path} instead, one "
            f"override per teacher, e.g. teachers.{first}.{path}={json.dumps(value)}"
        )
    out = dict(raw)
    out["teachers"] = {TEACHER: out.pop(TEACHER), **teachers}
    return out


def _first_leaf(node: dict[str, Any]) -> tuple[str, Any]:
    """The dotted path and value of the first non-mapping value in ``node`` (depth first)."""
    key, value = next(iter(node.items()), ("model", None))
    if isinstance(value, dict) and value:
        path, leaf = _first_leaf(value)
        return f"{key}.{path}", leaf
    return str(key), value


def override_path(raw: dict[str, Any], parts: list[str]) -> list[str]:
    """The path an override's ``parts`` address in ``raw``, with the teacher written either way.

    ``teachers.teacher.x`` on a config that uses the ``teacher:`` shorthand sets ``teacher.x``,
    and ``teacher.x`` on one that writes ``teachers: {teacher: ...}`` sets
    ``teachers.teacher.x``, so an error's key (always ``teachers.teacher...``) can be typed back
    as an override. Other paths are returned as they are.

    Example:
        >>> override_path({"teacher": {"model": {}}}, ["teachers", "teacher", "train", "lr"])
        ['teacher', 'train', 'lr']
        >>> override_path({"teachers": {"teacher": {}}}, ["teacher", "seed"])
        ['teachers', 'teacher', 'seed']
        >>> override_path({"teachers": {"ft": {}}}, ["teacher", "seed"])
        ['teacher', 'seed']
    """
    teachers = raw.get("teachers")
    named = isinstance(teachers, dict) and TEACHER in teachers
    if parts[:2] == ["teachers", TEACHER] and len(parts) > 2:
        if isinstance(raw.get(TEACHER), dict) and not named:
            return [TEACHER, *parts[2:]]
    elif parts[0] == TEACHER and len(parts) > 1 and raw.get(TEACHER) is None and named:
        return ["teachers", TEACHER, *parts[1:]]
    return parts


def normal_path(key: str) -> str:
    """The dotted path ``key`` names once the shorthand is merged: ``teacher.x`` is
    ``teachers.teacher.x``."""
    if key == TEACHER or key.startswith(TEACHER + "."):
        return "teachers.teacher" + key[len(TEACHER) :]
    return key


def get_at(node: Any, parts: list[str]) -> Any:
    """The value at the path ``parts`` of a raw mapping, or ``None`` if there is none."""
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def set_at(node: dict[str, Any], key: str, value: Any) -> None:
    """Set a copy of ``value`` at the dotted ``key``; a missing section, or a value on the way,
    becomes an empty section."""
    parts = key.split(".")
    for part in parts[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = node[part] = {}
        node = nxt
    node[parts[-1]] = copy.deepcopy(value)


def is_mapping(annotation: Any) -> bool:
    """Whether a field's annotation is a mapping of free keys (``dict[str, X]``)."""
    return getattr(annotation, "__origin__", None) is dict


def model_in(annotation: Any, *, in_mappings: bool = False) -> type[BaseModel] | None:
    """The pydantic model a field's annotation holds (``X | None`` holds ``X``), or ``None``.

    Args:
        annotation: A field's annotation.
        in_mappings: Also look into mappings (``dict[str, X]`` holds ``X``); else a mapping
            holds no model (its keys are free, not fixed by the schema).
    """
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if not in_mappings and is_mapping(annotation):
        return None
    for arg in getattr(annotation, "__args__", ()) or ():
        found = model_in(arg, in_mappings=in_mappings)
        if found is not None:
            return found
    return None


def schema_at(
    root: type[BaseModel], parts: tuple[Any, ...] | list[Any], *, named: bool = False
) -> type[BaseModel] | None:
    """The pydantic model of the section at ``parts`` below ``root``, or ``None``.

    Args:
        root: The schema's root model (:class:`~distillscope.config.ExperimentConfig`).
        parts: The path, one key a part (an ``int`` part, a list index, has no model).
        named: Let the path pass through mappings of named models (``teachers.<name>.model``):
            a part that is not a field of a mapping's model is taken as the mapping's key.
            Without it a mapping's section has no fixed schema (``None``).

    Example:
        >>> from distillscope.config import ExperimentConfig
        >>> schema_at(ExperimentConfig, ["teachers", "t1", "model"], named=True).__name__
        'ModelSpec'
        >>> schema_at(ExperimentConfig, ["teachers"]) is None
        True
    """
    model: Any = root
    in_mapping = False
    for part in parts:
        if isinstance(part, int) or model is None:
            return None
        field = model.model_fields.get(part)
        if field is None:
            if in_mapping:  # a user's name inside teachers: / students:
                in_mapping = False
                continue
            return None
        in_mapping = named and is_mapping(field.annotation)
        model = model_in(field.annotation, in_mappings=named)
    return model
