"""Plugins: a user's own models, losses, probes and datasets, registered from outside the package.

A plugin is a Python module that registers what it defines with the public decorators
(:func:`~distillscope.registry.register_loss`, ``register_probe``, ``register_model``,
``register_dataset``, ``register_text_dataset``) when it is imported. It comes in three ways:

- ``--plugin MODULE`` on ``distillscope run`` and ``distillscope reproduce`` (repeatable);
- ``plugins: [MODULE, ...]`` in a config (``config.yaml`` keeps the list, so ``--resume`` and a
  grid's cells, each in its own process, import the same modules again);
- the entry-point group :data:`ENTRY_POINT_GROUP` of installed distributions (the entry
  point's value names the module), imported whenever the registries are filled.

``MODULE`` is an importable module (``my_pkg.losses``) or a path to a ``.py`` file, relative to
the working directory. A plugin that fails to import, or registers a name that is taken, is a
one-line :class:`~distillscope.errors.ConfigError` naming the plugin and the fix, raised before
anything is written, and it leaves no entry behind.

**Identity.** A plugin's name says where its code lies, not what it is (a file edited in place
keeps its name), so the code itself enters the identity of everything that is reused
(:mod:`distillscope.identity`): :func:`code_digests` gives, for the plugins a run names and for
every registered entry the run uses that is not distillscope's own, a SHA-256 of the source
that defines it: every ``.py`` file of a plugin package, the file of a plugin module, or the
file of the module that defines an entry registered in some other way. A run, a grid cell and
a stored teacher (which counts only the entries it uses: editing a student's loss keeps the
teacher) computed with other code are then never taken for the new one. Code a plugin imports
from elsewhere is not hashed; an entry defined where no source file exists (an interactive
session) gets a digest that matches nothing, so nothing computed with it is reused.

A module imported again after its source changed (a notebook re-running an edited plugin) is
executed afresh: its old entries are removed first.

Floor 6, beside :mod:`distillscope.validate` (see ``docs/design-notes.md``, "Floors"): it
imports the families to fill the registries before any plugin adds to them.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import sys
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillscope.errors import ConfigError, error_line, quoted
from distillscope.registry import (
    DATASETS,
    EXPLAINERS,
    LOSSES,
    MODELS,
    PROBES,
    TEXT_DATASETS,
    DuplicateNameError,
    Registry,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "Plugin",
    "code_digests",
    "import_registries",
    "load_plugin",
    "load_plugins",
    "loaded_plugins",
    "source_digest",
    "unload_plugin",
]

#: The entry-point group an installed distribution declares its plugin modules in.
ENTRY_POINT_GROUP = "distillscope.plugins"
#: Registries a plugin may add to, by the kind their entries are named as in identities.
REGISTRIES: dict[str, Registry] = {
    r.kind: r for r in (MODELS, LOSSES, PROBES, DATASETS, EXPLAINERS)
}
#: Prefix of the names path plugins are imported under (``sys.modules``).
PATH_MODULE_PREFIX = "_distillscope_plugin_"


@dataclass(frozen=True)
class Plugin:
    """A plugin module, imported.

    Attributes:
        spec: How it was named (a module name, or a path to a ``.py`` file).
        name: Its name in identities: the module's name, or a file's stem.
        module: Its name in ``sys.modules``.
        digest: SHA-256 (hex) of the source it was imported from (:func:`source_digest`).
        entries: ``(kind, name)`` of everything it registered.
    """

    spec: str
    name: str
    module: str
    digest: str
    entries: tuple[tuple[str, str], ...]


_LOADED: dict[str, Plugin] = {}  # by module name
_BY_SPEC: dict[str, str] = {}  # spec -> module name
_UNSOURCED: dict[int, str] = {}  # id of a factory without source -> its one-process digest
_state = {"entry_points": "no"}  # no | loading | done


def import_registries() -> None:
    """Import every family module of the package, then every installed plugin of the
    :data:`ENTRY_POINT_GROUP` entry points, so all registries are filled (once a process).

    Raises:
        ConfigError: An installed plugin fails to import or takes a registered name.
    """
    import distillscope.data  # noqa: F401
    import distillscope.distill  # noqa: F401
    import distillscope.models  # noqa: F401
    import distillscope.probes  # noqa: F401

    if _state["entry_points"] != "no":  # done, or being done further up this call stack
        return
    _state["entry_points"] = "loading"
    try:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(getattr(ep, "dist", None), "name", None)
            source = f"entry point {ep.name!r} of the installed package {dist or '?'!r}"
            load_plugin(ep.module, source=source, fix=f"fix or uninstall {dist or 'it'}")
    except BaseException:
        _state["entry_points"] = "no"  # the next call tries again (and fails the same way)
        raise
    _state["entry_points"] = "done"


def load_plugins(specs: Iterable[str]) -> list[Plugin]:
    """:func:`load_plugin` each of ``specs``, in order."""
    return [load_plugin(spec) for spec in specs]


def load_plugin(spec: str, *, source: str | None = None, fix: str | None = None) -> Plugin:
    """Import the plugin ``spec`` (a module name, or a path to a ``.py`` file) once.

    Importing it again is free while its source is unchanged; after an edit the module runs
    again, its old entries removed first.

    Args:
        spec: The module's name, or the path of a ``.py`` file (relative to the working
            directory).
        source: Where it was named, for messages (default: ``plugin 'spec'``).
        fix: The fix an error line ends with (default: fix the module or drop the plugin).

    Raises:
        ConfigError: It cannot be found, fails to import, or registers a taken name (one line;
            nothing it registered is kept).
    """
    import_registries()
    what = f"plugin {_shown(spec)}" + (f" ({source})" if source else "")
    fix = fix or "fix the module, or drop the plugin"
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(
            f"plugin {_shown(spec)}: expected a module name or the path of a .py file; "
            "e.g. --plugin my_losses or --plugin ./my_losses.py"
        )
    module, name, files = _locate(spec, what)
    digest = source_digest(files)
    old = _LOADED.get(module)
    if old is not None and old.digest == digest:
        _BY_SPEC[spec] = module
        return old
    if old is not None:  # edited since it was imported: run the new source
        _forget(old)
    before = {kind: set(r.names()) for kind, r in REGISTRIES.items()}
    text_before = set(TEXT_DATASETS)
    try:
        _import(spec, module)
    except DuplicateNameError as exc:
        _roll_back(module, before, text_before)
        owner = _owner(REGISTRIES[exc.kind].lookup(exc.name))
        raise ConfigError(
            f"{what} registers {exc.kind} {exc.name!r}, which {owner} already registered; "
            f"give it another name in the plugin, e.g. @register_{exc.kind}"
            f"('{name}_{exc.name}')"
        ) from None
    except (Exception, SystemExit) as exc:
        _roll_back(module, before, text_before)
        raise ConfigError(
            f"{what} failed to import ({type(exc).__name__}: {error_line(exc, 300)}); {fix}"
        ) from None
    entries = tuple(
        (kind, entry)
        for kind, r in REGISTRIES.items()
        for entry in r.names()
        if entry not in before[kind]
    )
    plugin = Plugin(spec=spec, name=name, module=module, digest=digest, entries=entries)
    _LOADED[module] = plugin
    _BY_SPEC[spec] = module
    return plugin


def loaded_plugins() -> list[Plugin]:
    """The plugins imported in this process, in the order they were."""
    return list(_LOADED.values())


def unload_plugin(spec: str) -> None:
    """Remove the plugin ``spec`` (as it was named) and everything it registered; the next
    :func:`load_plugin` imports it afresh. A plugin not loaded is left alone."""
    module = _BY_SPEC.pop(spec, None)
    plugin = _LOADED.get(module or "")
    if plugin is not None:
        _forget(plugin)
        for other in [s for s, m in _BY_SPEC.items() if m == module]:
            del _BY_SPEC[other]


def source_digest(files: Sequence[Path]) -> str:
    """SHA-256 (hex) of source files: each file's name (relative to the first file's folder)
    and bytes, in the order given.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     a, b = Path(d) / "a.py", Path(d) / "b.py"
        ...     _ = a.write_text("x = 1\\n"), b.write_text("x = 2\\n")
        ...     source_digest([a]) == source_digest([a]), source_digest([a]) == source_digest([b])
        (True, False)
    """
    h = hashlib.sha256()
    base = files[0].parent if files else Path()
    for path in files:
        rel = path.relative_to(base).as_posix() if path.is_relative_to(base) else path.name
        data = path.read_bytes()
        h.update(f"{rel}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def code_digests(used: Iterable[tuple[str, str]], plugins: Sequence[str] = ()) -> dict[str, str]:
    """The source digests a result depends on beyond distillscope's own code.

    Args:
        used: ``(kind, name)`` of every registry entry the result uses (``("loss", "kd")``).
        plugins: The plugins it names (a config's ``plugins``), each counted whole.

    Returns:
        Name -> SHA-256 (hex): each named plugin, and the code behind each used entry that is
        not distillscope's (its plugin, else its defining module's file); empty when there is
        none, so a result that uses none has the identity it always had.
    """
    out: dict[str, str] = {}
    for spec in plugins:
        plugin = _LOADED.get(_BY_SPEC.get(spec, "")) or load_plugin(spec)
        out[plugin.name] = plugin.digest
    for kind, name in used:
        registry = REGISTRIES.get(kind)
        factory = registry.lookup(name) if registry is not None else None
        module = getattr(factory, "__module__", None) or ""
        if factory is None or _is_ours(module):
            continue
        plugin = _plugin_of(module)
        if plugin is not None:
            out[plugin.name] = plugin.digest
        else:
            out[module] = _module_digest(module, factory)
    return dict(sorted(out.items()))


# --------------------------------------------------------------------------- internals


def _locate(spec: str, what: str) -> tuple[str, str, list[Path]]:
    """(module name in ``sys.modules``, name in identities, source files) of ``spec``."""
    if spec.endswith(".py") or "/" in spec or "\\" in spec:
        path = Path(spec)
        if not path.is_file() or path.suffix != ".py":
            raise ConfigError(
                f"{what}: no .py file at {_shown(spec)}; pass the path of an existing .py file "
                "(relative to the working directory) or an importable module name"
            )
        where = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:10]
        return f"{PATH_MODULE_PREFIX}{path.stem}_{where}", path.stem, [path]
    try:
        found = importlib.util.find_spec(spec)
    except (ImportError, ValueError) as exc:  # a parent package that does not import
        raise ConfigError(
            f"{what}: cannot look up module {_shown(spec)} ({type(exc).__name__}: {exc}); "
            "fix the package, or pass the path of a .py file"
        ) from None
    except Exception as exc:  # a parent package that crashes while importing
        raise ConfigError(
            f"{what} failed to import ({type(exc).__name__}: {error_line(exc, 300)}); fix "
            "the module, or drop the plugin"
        ) from None
    if found is None:
        raise ConfigError(
            f"{what}: no module named {_shown(spec)}; install it, put its folder on "
            "PYTHONPATH, or pass the path of a .py file"
        )
    return spec, spec, _sources(found)


def _sources(found: Any) -> list[Path]:
    """The source files of a found module: a package's every ``.py`` file, else its file."""
    locations = list(found.submodule_search_locations or [])
    if locations:
        files: list[Path] = []
        for folder in locations:
            files += sorted(p for p in Path(folder).rglob("*.py") if "__pycache__" not in p.parts)
        return files
    origin = found.origin
    return [Path(origin)] if origin and Path(origin).is_file() else []


def _import(spec: str, module: str) -> None:
    if not module.startswith(PATH_MODULE_PREFIX):
        importlib.import_module(module)
        return
    found = importlib.util.spec_from_file_location(module, spec)
    assert found is not None and found.loader is not None
    mod = importlib.util.module_from_spec(found)
    sys.modules[module] = mod  # dataclasses and pickle look classes up here
    found.loader.exec_module(mod)


def _roll_back(module: str, before: dict[str, set[str]], text_before: set[str]) -> None:
    """Remove what a failed import registered, and its half-made modules."""
    for kind, registry in REGISTRIES.items():
        for name in set(registry.names()) - before[kind]:
            registry.unregister(name)
    TEXT_DATASETS.intersection_update(text_before | set(DATASETS.names()))
    _drop_modules(module)


def _forget(plugin: Plugin) -> None:
    """Remove an imported plugin's entries and modules (it is about to be imported again)."""
    for kind, name in plugin.entries:
        registry = REGISTRIES[kind]
        if name in registry.names():
            registry.unregister(name)
        if kind == DATASETS.kind:
            TEXT_DATASETS.discard(name)
    _drop_modules(plugin.module)
    del _LOADED[plugin.module]


def _drop_modules(module: str) -> None:
    for key in [k for k in sys.modules if k == module or k.startswith(module + ".")]:
        del sys.modules[key]


def _shown(spec: object) -> str:
    """A plugin's name for an error line: paths are long, and the whole one is the point."""
    return quoted(spec, limit=300)


def _is_ours(module: str) -> bool:
    return module == "distillscope" or module.startswith("distillscope.")


def _plugin_of(module: str) -> Plugin | None:
    for plugin in _LOADED.values():
        if module == plugin.module or module.startswith(plugin.module + "."):
            return plugin
    return None


def _owner(factory: Any) -> str:
    """Who registered ``factory``, for messages."""
    module = getattr(factory, "__module__", None) or ""
    if _is_ours(module):
        return "distillscope"
    plugin = _plugin_of(module)
    return f"plugin {plugin.spec!r}" if plugin is not None else f"module {module!r}"


def _module_digest(module: str, factory: Any) -> str:
    """The digest of the file defining ``module``; without one, a digest of this process only
    (nothing computed with that code is reused)."""
    file = getattr(sys.modules.get(module), "__file__", None)
    if file and Path(file).is_file():
        return source_digest([Path(file)])
    if id(factory) not in _UNSOURCED:
        _UNSOURCED[id(factory)] = f"no source file: {uuid.uuid4().hex}"
    return _UNSOURCED[id(factory)]
