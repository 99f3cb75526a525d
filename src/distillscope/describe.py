"""What a factory or a config model says about itself: parameters, defaults, one-line meanings.

``distillscope list KIND NAME --params`` prints a registered model's, loss's, probe's or
dataset's parameters from its signature (and the probes' shared
:class:`~distillscope.probes.base.ProbeParams`), each with its default and the first sentence
of its entry in the docstring's ``Args:`` section; ``scripts/config_reference.py`` reads the
config models' ``Attributes:`` sections the same way. Docstrings are Google style (STYLE.md 7),
so the text a reader sees in the code is the text the tool prints.

Floor 0, beside the registries it describes (see ``docs/design-notes.md``, "Floors").

Example:
    >>> def toy(noise: float = 0.4, *, steps: int) -> None:
    ...     '''A toy factory.
    ...
    ...     Args:
    ...         noise: Standard deviation of the noise. Paper 004 uses 0.4.
    ...         steps: Number of steps.
    ...     '''
    >>> summary(toy)
    'A toy factory.'
    >>> [(p.name, p.type, p.default, p.meaning) for p in parameters(toy)]
    [('noise', 'float', '0.4', 'Standard deviation of the noise.'), ('steps', 'int', \
'required', 'Number of steps.')]
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from distillscope.registry import annotations_of, signature_of, type_name, unpacked_of

__all__ = [
    "FROM_THE_RUN",
    "Param",
    "describe",
    "doc_section",
    "one_line",
    "parameters",
    "plain",
    "show_value",
    "summary",
]

#: Parameters the run gives a registered factory itself, by kind (``plan.build_model`` offers
#: the models theirs from the data; datasets get the split and ``data.root``): listed as such.
FROM_THE_RUN = {
    "models": ("num_classes", "in_channels", "input_size", "in_features", "input_mean",
               "input_std", "vocab_size", "seq_len"),
    "datasets": ("split", "root"),
}  # fmt: skip
#: Where a kind's parameters go in a config (``{name}``: the registered name).
CONFIG_KEYS = {
    "models": "student.params.<parameter> or teachers.<teacher>.model.params.<parameter>, "
    "with name: {name}",
    "losses": "students.<student>.<parameter> (with loss: {name}) or "
    "students.<student>.loss.{name}.<parameter>",
    "probes": "probes.{name}.<parameter>",
    "datasets": "data.params.<parameter> (with data.name: {name})",
}
#: A Google-style section header (``Args:``) and an entry in it (``name: text`` or
#: ``name (type): text``).
_HEADER = re.compile(r"^(\s*)([A-Z][A-Za-z ]*):\s*$")
_ENTRY = re.compile(r"^\*{0,2}([A-Za-z_][A-Za-z0-9_]*)(?: \([^)]*\))?:\s*(.*)$")
#: Sphinx roles (``:class:`~a.b.C``` reads as ``C``) and literals (````x```` reads as ```x```).
_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")
_LITERAL = re.compile(r"``([^`]+)``")
#: The end of a sentence: a full stop followed by a capital letter (not ``e.g. x``).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(])")


@dataclass(frozen=True)
class Param:
    """One parameter of a factory.

    Attributes:
        name: The keyword it is given by.
        type: Its annotation as a user reads it (``""`` when it has none).
        default: Its default shown as YAML would write it, or ``required``.
        meaning: The first sentence of its docstring entry (``""`` when it has none).
    """

    name: str
    type: str
    default: str
    meaning: str


def plain(text: str) -> str:
    """``text`` with Sphinx roles and double-backtick literals made plain (one backtick).

    Example:
        >>> plain("See :class:`~distillscope.probes.base.Probe` and ``seed``.")
        'See `Probe` and `seed`.'
    """
    text = _ROLE.sub(lambda m: f"`{m.group(1).rsplit('.', 1)[-1].removesuffix('()')}`", text)
    return _LITERAL.sub(r"`\1`", text)


def one_line(text: str) -> str:
    """The first sentence of ``text``, on one line.

    Example:
        >>> one_line("Passes over the training\\n split. More below.")
        'Passes over the training split.'
        >>> one_line("Extra dataset parameters (e.g. ``augment: true``).")
        'Extra dataset parameters (e.g. ``augment: true``).'
    """
    joined = " ".join(text.split())
    return _SENTENCE_END.split(joined, maxsplit=1)[0]


def summary(obj: Any) -> str:
    """The first sentence of ``obj``'s docstring (``""`` without one).

    Example:
        >>> summary(Param)
        'One parameter of a factory.'
    """
    doc = inspect.getdoc(obj) or ""
    return plain(one_line(doc.split("\n\n", 1)[0]))


def doc_section(obj: Any, name: str = "Args") -> dict[str, str]:
    """The entries of the Google-style section ``name`` (``Args``, ``Attributes``) of ``obj``'s
    docstring, each on one line; for a class, of every class in its MRO (its own first).

    Example:
        >>> doc_section(Param, "Attributes")["default"]
        'Its default shown as YAML would write it, or ``required``.'
    """
    owners = inspect.getmro(obj) if inspect.isclass(obj) else (obj,)
    entries: dict[str, str] = {}
    for owner in owners:
        for key, text in _section(inspect.getdoc(owner) or "", name).items():
            if key not in entries or entries[key].startswith("See "):  # the base's own words
                entries[key] = text
    return entries


def _section(doc: str, name: str) -> dict[str, str]:
    entries: dict[str, list[str]] = {}
    indent: int | None = None  # of the section header, once found
    current: list[str] | None = None
    for line in doc.splitlines():
        header = _HEADER.match(line)
        if indent is None:
            if header and header.group(2) == name:
                indent = len(header.group(1))
            continue
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if depth <= indent:  # the section ended
            break
        entry = _ENTRY.match(line.strip())
        if entry and (current is None or depth <= indent + 4):
            current = entries.setdefault(entry.group(1), [])
            current.append(entry.group(2))
        elif current is not None:
            current.append(line.strip())
    return {key: " ".join(" ".join(parts).split()) for key, parts in entries.items()}


def show_value(value: Any) -> str:
    """``value`` as a config file writes it: JSON (valid YAML), else its ``repr``.

    Example:
        >>> show_value(None), show_value((1, 2)), show_value("sgd"), show_value(0.05)
        ('null', '[1, 2]', '"sgd"', '0.05')
    """
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def parameters(fn: Callable[..., Any], skip: Iterable[str] = ()) -> list[Param]:
    """The keyword parameters of ``fn`` (a class: its ``__init__``, with the keys of a
    ``**kwargs: Unpack[TypedDict]`` and their defaults from the classes above it), in
    signature order, without ``skip``.
    """
    skipped = {"self", *skip}
    meanings = doc_section(fn, "Args")
    hints = annotations_of(fn)
    found: list[Param] = []
    for p in signature_of(fn).parameters.values():
        if p.name in skipped or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.kind is p.POSITIONAL_ONLY:
            continue
        default = "required" if p.default is p.empty else show_value(p.default)
        found.append(_param(p.name, hints.get(p.name), default, meanings))
    for key, ann in unpacked_of(fn).items():
        if key not in skipped:
            found.append(_param(key, ann, _inherited_default(fn, key), meanings))
    return found


def _param(name: str, ann: Any, default: str, meanings: dict[str, str]) -> Param:
    shown = "" if ann is None or ann is inspect.Parameter.empty else type_name(ann)
    return Param(name, shown, default, plain(one_line(meanings.get(name, ""))))


def _inherited_default(fn: Callable[..., Any], key: str) -> str:
    """The default of ``key`` in the first ``__init__`` above ``fn`` that names it."""
    for owner in inspect.getmro(fn) if inspect.isclass(fn) else ():
        p = inspect.signature(owner.__init__).parameters.get(key)
        if p is not None and p.default is not p.empty:
            return show_value(p.default)
    return "required"


def describe(kind: str, name: str, fn: Callable[..., Any]) -> list[str]:
    """The lines ``distillscope list KIND NAME --params`` prints for the factory ``fn``.

    The name and its docstring's first sentence, then one row per parameter (type, default,
    meaning; those the run gives itself marked ``(from the run)``), then where they go in a
    config.

    Example:
        >>> def toy(split: str, size: int = 8) -> None:
        ...     "Toy images."
        >>> print("\\n".join(describe("datasets", "toy", toy)))
        toy: Toy images.
          size   int  8
          split  str  (from the run)
          set as data.params.<parameter> (with data.name: toy)
    """
    skip = ("name",) if ":" in name else ()  # a prefix factory takes the name's rest first
    given = FROM_THE_RUN.get(kind, ())
    params = parameters(fn, skip)
    rows = [p for p in params if p.name not in given]
    rows += [Param(p.name, p.type, "(from the run)", "") for p in params if p.name in given]
    lines = [f"{name}: {summary(fn)}"]
    if not rows:
        lines.append("  (no parameters)")
    widths = [max((len(getattr(p, f)) for p in rows), default=0) for f in ("name", "type")]
    default_width = max((len(p.default) for p in rows), default=0)
    for p in rows:
        cells = [p.name.ljust(widths[0]), p.type.ljust(widths[1]), p.default.ljust(default_width)]
        lines.append(f"  {'  '.join(cells)}  {p.meaning}".rstrip())
    lines.append(f"  set as {CONFIG_KEYS.get(kind, '<parameter>').format(name=name)}")
    return lines
