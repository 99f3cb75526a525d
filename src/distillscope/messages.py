"""Progress messages of a run, on stderr."""

from __future__ import annotations

import sys

__all__ = ["say"]


def say(msg: str) -> None:
    """Progress message on stderr (stdout's last line is the run directory)."""
    print(f"[distillscope] {msg}", file=sys.stderr, flush=True)
