"""Small file helpers shared by the run directory, checkpoints, the teacher store and the report.

Every file that ends up in a run directory or the teacher store is written to a temporary
sibling and renamed into place (a kill never leaves a half-written file under the real name),
with the mode the process's umask gives new files.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write_text",
    "clean_stale_temporaries",
    "file_digest",
    "file_mode",
    "read_jsonl",
]

#: Suffix of our temporary files (``.<name>.<random>.tmp``).
TMP_SUFFIX = ".tmp"


def file_mode() -> int:
    """The mode a new file gets under the process's umask (``0o666 & ~umask``).

    Temporary files are created ``0600``; every file we rename into place gets this mode
    instead, so a run directory never mixes ``0600`` and ``0644`` files.
    """
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_digest(path: str | Path) -> str:
    """SHA-256 hex digest of a file's bytes (teacher-store checksums)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def clean_stale_temporaries(folder: Path) -> list[Path]:
    """Delete our leftover ``.<name>.*.tmp`` files under ``folder`` (a kill during a write).

    Returns:
        The deleted paths.
    """
    removed = []
    if not folder.is_dir():
        return removed
    for path in sorted(folder.rglob(f".*{TMP_SUFFIX}")):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file, skipping lines that are not one.

    A run killed while appending can leave a last line cut short; such lines (and blank ones)
    are skipped, as the writer skips them when it appends again.

    Example:
        >>> import tempfile
        >>> tmp = Path(tempfile.mkdtemp()) / "m.jsonl"
        >>> _ = tmp.write_text('{"epoch": 1}\\n{"epo')
        >>> read_jsonl(tmp)
        [{'epoch': 1}]
    """
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows
