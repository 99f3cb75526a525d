"""Progress messages of a run, on stderr."""

from __future__ import annotations

import sys

__all__ = ["quiet", "say"]

_quiet = False


def say(msg: str) -> None:
    """Progress message on stderr (stdout's last line is the run directory)."""
    if not _quiet:
        print(f"[distillscope] {msg}", file=sys.stderr, flush=True)


def quiet(on: bool) -> bool:
    """Silence :func:`say` (the ranks other than 0 of a data-parallel run); the previous
    setting, to restore."""
    global _quiet
    before, _quiet = _quiet, bool(on)
    return before
