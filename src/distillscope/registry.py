"""One generic registry, used for models, losses, probes and datasets.

Example:
    >>> reg = Registry("widget")
    >>> @reg.register("round")
    ... class Round:
    ...     def __init__(self, radius: float = 1.0):
    ...         self.radius = radius
    >>> reg.create("round", radius=2.0).radius
    2.0
    >>> reg.list("r*")
    ['round']
"""

from __future__ import annotations

import fnmatch
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any

from distillscope.errors import ConfigError, quoted


class DuplicateNameError(ValueError):
    """A name registered twice in one registry (a plugin reusing a taken name is told so).

    Args:
        kind: The registry's kind (``"loss"``, ...).
        name: The taken name.
    """

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"{kind} {name!r} is already registered")
        self.kind, self.name = kind, name


class Registry:
    """Maps names to factories (classes or functions); a duplicate name raises.

    Args:
        kind: What the registry holds ("model", "loss", ...), used in error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}
        self._prefixes: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator registering ``fn`` under ``name``; raises if the name is taken."""

        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries:
                raise DuplicateNameError(self.kind, name)
            if inspect.isclass(fn):  # the class's ``name`` is its key, written once (here)
                own = vars(fn).get("name")
                if own is not None and own != name:
                    raise ValueError(
                        f"{self.kind} class {fn.__name__} says name {own!r} but is registered "
                        f"as {name!r}; drop its name attribute (registration sets it)"
                    )
                fn.name = name
            self._entries[name] = fn
            return fn

        return deco

    def register_prefix(self, prefix: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a factory for names ``"<prefix>:<rest>"``; it receives ``rest`` first."""

        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            if prefix in self._prefixes:
                raise DuplicateNameError(self.kind, f"{prefix}:<name>")
            self._prefixes[prefix] = fn
            return fn

        return deco

    def unregister(self, name: str) -> None:
        """Remove ``name`` (``"prefix:<name>"`` for a prefix), as :meth:`names` spells it: how
        a plugin that failed to import, or is imported again after an edit, leaves no stale
        entry behind (:mod:`distillscope.plugins`). An unknown name raises ``KeyError``."""
        if name in self._entries:
            del self._entries[name]
        elif name.endswith(":<name>") and name[: -len(":<name>")] in self._prefixes:
            del self._prefixes[name[: -len(":<name>")]]
        else:
            raise KeyError(name)

    def lookup(self, name: str) -> Callable[..., Any] | None:
        """The factory that builds ``name`` (a prefix's factory for ``"prefix:rest"``), or
        ``None`` when nothing is registered under it."""
        if ":" in name:
            return self._prefixes.get(name.split(":", 1)[0])
        return self._entries.get(name)

    def __contains__(self, name: str) -> bool:
        if ":" in name:
            return name.split(":", 1)[0] in self._prefixes
        return name in self._entries

    def get(self, name: str) -> Callable[..., Any]:
        """The factory registered under ``name``; unknown names raise :class:`ConfigError`."""
        if name in self._entries:
            return self._entries[name]
        raise ConfigError(f"unknown {self.kind} {name!r}; valid choices: {', '.join(self.names())}")

    def factory(self, name: str) -> Callable[..., Any]:
        """The factory of ``name``, a registered name or a ``"prefix:<rest>"`` form (then the
        prefix's factory, which takes ``rest`` first); unknown names raise :class:`ConfigError`.
        """
        if ":" in name and name.split(":", 1)[0] in self._prefixes:
            return self._prefixes[name.split(":", 1)[0]]
        return self.get(name)

    def create(self, name: str, **params: Any) -> Any:
        """Build the entry ``name`` with ``params``; unknown names or parameters raise."""
        if ":" in name:
            prefix, rest = name.split(":", 1)
            if prefix not in self._prefixes:
                raise ConfigError(
                    f"unknown {self.kind} prefix {prefix!r} in {name!r}; "
                    f"valid prefixes: {', '.join(sorted(self._prefixes))}"
                )
            return self._prefixes[prefix](rest, **params)
        fn = self.get(name)
        what = f"{self.kind} {name!r}"
        check_params(fn, params, what, label=name)
        missing = [p for p in required_params(fn) if p not in params]
        if missing:
            raise ConfigError(
                f"{what} needs parameter {missing[0]!r} (required: "
                f"{', '.join(required_params(fn))}); give it, e.g. {{{missing[0]}: ...}}"
            )
        return fn(**params)

    def names(self) -> list[str]:
        """All registered names (prefixes shown as ``"prefix:<name>"``), sorted."""
        return sorted(self._entries) + [f"{p}:<name>" for p in sorted(self._prefixes)]

    def list(self, pattern: str = "*") -> list[str]:
        """Registered names matching an fnmatch ``pattern``, sorted."""
        return [n for n in sorted(self._entries) if fnmatch.fnmatch(n, pattern)]


def accepted_params(fn: Callable[..., Any]) -> set[str] | None:
    """Keyword parameters ``fn`` accepts, or ``None`` when it takes free ``**kwargs``.

    ``**kwargs: Unpack[SomeTypedDict]`` counts as the TypedDict's keys (the probes take their
    shared parameters so, declared once in :class:`~distillscope.probes.base.ProbeParams`).
    """
    sig = signature_of(fn)
    names = set(unpacked_of(fn))
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD and not unpacked_of(fn):
            return None
        if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            names.add(p.name)
    return names


def check_params(
    fn: Callable[..., Any],
    params: dict[str, Any],
    what: str,
    label: str | None = None,
    *,
    key: str | None = None,
) -> None:
    """Raise :class:`ConfigError` naming any key of ``params`` that ``fn`` does not accept, or
    any value that does not fit the parameter's annotation (see :func:`check_param_types`).

    ``key``, the config section holding ``params`` (``teachers.t.model.params``), makes the
    message name the parameter's whole config key."""
    valid = accepted_params(fn)
    if valid is not None:
        unknown = sorted(set(params) - valid)
        if unknown:
            problem = (
                f"unknown config key '{key}.{unknown[0]}' (not a parameter of {what})"
                if key
                else f"unknown parameter {unknown[0]!r} for {what}"
            )
            raise ConfigError(
                f"{problem}; valid parameters: {', '.join(sorted(valid)) or '(none)'}"
            )
    check_param_types(fn, params, label or what, key=key)


def required_params(fn: Callable[..., Any]) -> list[str]:
    """Keyword parameters of ``fn`` without a default, in signature order."""
    return [
        p.name
        for p in signature_of(fn).parameters.values()
        if p.name != "self"
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.default is p.empty
    ]


def check_param_types(
    fn: Callable[..., Any], params: dict[str, Any], label: str, *, key: str | None = None
) -> None:
    """Check each value of ``params`` against ``fn``'s annotation of that parameter.

    Strict: no strings for numbers, no bools for integers, no NaN or infinity for floats; a YAML
    list is accepted where a tuple is annotated. Parameters without a usable annotation (or with
    one that is not plain data, such as a tensor) are left to the factory's own checks.

    Raises:
        ConfigError: One line naming the parameter (as ``label.<name>``, or as the config key
            ``key.<name>`` when ``key`` is given), the value and the expected type.

    Example:
        >>> def toy(noise: float = 0.4, steps: int = 10) -> None: ...
        >>> check_param_types(toy, {"noise": 0.1, "steps": 3}, "toy")
        >>> check_param_types(toy, {"noise": "abc"}, "toy")
        Traceback (most recent call last):
        ...
        distillscope.errors.ConfigError: toy.noise='abc' is invalid: input should be a valid \
number (expected float)
        >>> check_param_types(toy, {"steps": 2.5}, "toy", key="data.params")
        Traceback (most recent call last):
        ...
        distillscope.errors.ConfigError: config key 'data.params.steps': 2.5 is invalid for toy: \
input should be a valid integer (expected int)
    """
    from pydantic import ValidationError

    hints = annotations_of(fn)
    for name, value in params.items():
        adapter = _adapter(hints.get(name))
        if adapter is None:
            continue
        try:
            adapter.validate_python(value, strict=True)
            continue
        except ValidationError as exc:
            error = exc
        try:
            adapter.validate_python(_lists_to_tuples(value), strict=True)
            continue
        except ValidationError:
            pass
        msg = error.errors()[0]["msg"]
        what = (
            f"config key '{key}.{name}': {quoted(value)} is invalid for {label}"
            if key
            else f"{label}.{name}={quoted(value)} is invalid"
        )
        raise ConfigError(
            f"{what}: {msg[:1].lower()}{msg[1:]} (expected {type_name(hints.get(name))})"
        )


def type_name(ann: Any) -> str:
    """``float``, ``Sequence[str]``, ``int | None``: an annotation as a user reads it."""
    if isinstance(ann, type) and not getattr(ann, "__args__", None):
        return ann.__name__
    return str(ann).replace("collections.abc.", "").replace("typing.", "")


@functools.cache
def signature_of(fn: Callable[..., Any]) -> inspect.Signature:
    """``fn``'s signature (its ``__init__``'s for a class), read once: configs of big grids
    check the same factories thousands of times."""
    return inspect.signature(fn.__init__ if inspect.isclass(fn) else fn)


@functools.cache
def annotations_of(fn: Callable[..., Any]) -> dict[str, Any]:
    """Parameter annotations of ``fn`` (or its ``__init__``), evaluated where possible (cached:
    callers must not change the mapping)."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    raw = dict(getattr(target, "__annotations__", {}) or {})
    namespace = dict(getattr(target, "__globals__", {}))
    out: dict[str, Any] = {}
    for name, ann in raw.items():
        if name == "return":
            continue
        if isinstance(ann, str):
            try:
                ann = eval(ann, namespace)  # noqa: S307 - annotations of our own code
            except Exception:
                continue
        if typing.get_origin(ann) is typing.Unpack:
            out.update(typing.get_type_hints(typing.get_args(ann)[0]))
            continue
        out[name] = ann
    return out


@functools.cache
def unpacked_of(fn: Callable[..., Any]) -> dict[str, Any]:
    """The keys and types of ``fn``'s ``**kwargs: Unpack[TypedDict]``, if it has one (cached:
    callers must not change the mapping)."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    kwargs = [p for p in signature_of(fn).parameters.values() if p.kind is p.VAR_KEYWORD]
    if not kwargs:
        return {}
    ann = (getattr(target, "__annotations__", {}) or {}).get(kwargs[0].name)
    if isinstance(ann, str):
        try:
            ann = eval(ann, dict(getattr(target, "__globals__", {})))  # noqa: S307
        except Exception:
            return {}
    if typing.get_origin(ann) is not typing.Unpack:
        return {}
    return typing.get_type_hints(typing.get_args(ann)[0])


_ADAPTERS: dict[Any, Any] = {}


def _adapter(ann: Any) -> Any:
    """A cached pydantic ``TypeAdapter`` for ``ann`` (finite floats), or ``None``."""
    if ann is None or ann is Any:
        return None
    try:
        if ann in _ADAPTERS:
            return _ADAPTERS[ann]
    except TypeError:  # unhashable annotation
        return None
    from pydantic import ConfigDict, TypeAdapter

    try:
        adapter: Any = TypeAdapter(ann, config=ConfigDict(allow_inf_nan=False))
    except Exception:  # not plain data (tensors, modules, callables): the factory checks it
        adapter = None
    _ADAPTERS[ann] = adapter
    return adapter


def _lists_to_tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_lists_to_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _lists_to_tuples(v) for k, v in value.items()}
    return value


MODELS = Registry("model")
LOSSES = Registry("loss")
PROBES = Registry("probe")
DATASETS = Registry("dataset")
EXPLAINERS = Registry("explainer")

register_model = MODELS.register
register_loss = LOSSES.register
register_probe = PROBES.register
register_dataset = DATASETS.register
register_explainer = EXPLAINERS.register

#: Names of the registered datasets whose items are token ids (text data).
TEXT_DATASETS: set[str] = set()


def register_text_dataset(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """:func:`register_dataset` for a text dataset: also listed in :data:`TEXT_DATASETS`, so a
    config pairing it with a probe that does not apply to text is refused at load."""
    TEXT_DATASETS.add(name)
    return DATASETS.register(name)
