"""The configs shipped inside the package, found by name from any directory.

The config tree (the quickstart, the method configs, the examples and the reproduce folder with
its claims) is package data in ``distillscope/configs/``, so ``distillscope run`` and
``distillscope reproduce`` work after a plain ``pip install``, wherever they are typed; the
repository's ``configs/`` is a link to that folder. A config is named by its path below the
folder without ``.yaml`` (``quickstart``, ``methods/dkd``, ``reproduce/what-transfers/domains``).

A file the user names is always looked up where they are first: ``distillscope run
quickstart`` runs ``./quickstart`` or ``./quickstart.yaml`` when there is one, the packaged
quickstart only when there is none. Where a config was read from never enters a run's identity
(:mod:`distillscope.identity`): the same content run from the package or from a copy is the same
run.

Floor 1, beside the config schema (see ``docs/design-notes.md``, "Floors"): paths only, no
schema, no registries.

Example:
    >>> find_config("quickstart") == packaged_configs()["quickstart"]
    True
    >>> describe(packaged_configs()["quickstart"])
    'Quickstart, the packaged default: `distillscope run` (no argument) runs this.'
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from distillscope.errors import ConfigError, quoted

__all__ = [
    "CONFIG_DIR",
    "QUICKSTART",
    "REPRODUCE",
    "describe",
    "find_config",
    "packaged_configs",
    "reproduce_dir",
]

#: The packaged config tree (package data: every ``.yaml`` below it ships in the wheel).
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
#: The config ``distillscope run`` runs when given none.
QUICKSTART = "quickstart"
#: The reproduce folder (``claims/`` and the configs they name) below :data:`CONFIG_DIR`.
REPRODUCE = "reproduce"
#: Folders below :data:`CONFIG_DIR` that hold declarations, not run configs.
NOT_RUN_CONFIGS = ("reproduce/claims",)
#: How the repository's link to the packaged tree is spelt in docs and commands.
REPO_PREFIX = "configs/"


def packaged_configs() -> dict[str, Path]:
    """Every packaged run config, by name (its path below :data:`CONFIG_DIR` without
    ``.yaml``), sorted; claim declarations (``reproduce/claims``) are not run configs."""
    found: dict[str, Path] = {}
    for path in sorted(CONFIG_DIR.rglob("*.yaml")):
        name = path.relative_to(CONFIG_DIR).with_suffix("").as_posix()
        if not any(name.startswith(skip + "/") for skip in NOT_RUN_CONFIGS):
            found[name] = path
    return found


def find_config(name: str | os.PathLike[str]) -> Path:
    """The config file ``name`` names: a local file if there is one, else the packaged config.

    A packaged config may be named with or without ``.yaml`` and with the repository's
    ``configs/`` in front (``configs/methods/dkd.yaml`` as the README writes it, from any
    directory).

    Raises:
        ConfigError: Neither a local file nor a packaged config has that name (one line, with
            the closest packaged names).
    """
    local = Path(name)
    if local.is_file():
        return local
    with_suffix = Path(f"{local}.yaml")
    if local.suffix != ".yaml" and with_suffix.is_file():
        return with_suffix
    key = local.as_posix().removeprefix(REPO_PREFIX).removesuffix(".yaml")
    packaged = packaged_configs()
    if key in packaged:
        return packaged[key]
    close = difflib.get_close_matches(key, list(packaged), n=3, cutoff=0.5)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ConfigError(
        f"config file {quoted(str(name))} not found here, and no packaged config has that "
        f"name{hint}; pass an existing YAML file or a name from `distillscope run --list-configs`"
    )


def reproduce_dir() -> Path:
    """The packaged reproduce folder (``distillscope reproduce``'s default ``--configs``)."""
    return CONFIG_DIR / REPRODUCE


def describe(path: str | os.PathLike[str]) -> str:
    """The first comment line of a config (its one-line description), ``#`` stripped; empty
    when the file does not start with a comment.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = Path(d) / "x.yaml"
        ...     _ = p.write_text("#  KD at T=8\\n# more\\nname: x\\n")
        ...     describe(p)
        'KD at T=8'
    """
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            text = line.strip()
            if not text:
                continue
            return text.lstrip("#").strip() if text.startswith("#") else ""
    return ""
