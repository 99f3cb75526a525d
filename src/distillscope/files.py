"""Small file helpers shared by the run directory, checkpoints, the teacher store and the report.

Every file that ends up in a run directory or the teacher store is written to a temporary
sibling and renamed into place (a kill never leaves a half-written file under the real name),
with the mode the process's umask gives new files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from distillscope.errors import ConfigError

__all__ = [
    "atomic_write_text",
    "cache_root",
    "check_writable_dir",
    "clean_stale_temporaries",
    "file_digest",
    "file_digests",
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


def cache_root() -> Path:
    """distillscope's cache folder: ``$DISTILLSCOPE_CACHE``, else ``~/.cache/distillscope``."""
    base = os.environ.get("DISTILLSCOPE_CACHE")
    return Path(base).expanduser() if base else Path.home() / ".cache" / "distillscope"


#: The file-digest cache inside :func:`cache_root`.
DIGEST_DB = "file-digests.sqlite"


def file_digests(paths: Sequence[str | Path]) -> list[str]:
    """SHA-256 of each file's bytes, remembered by path, size and modification time.

    A file is read once; later calls only ``stat`` it while its size and mtime stay the same
    (editing a file changes its mtime, so its bytes are read again). The digests live in a
    small SQLite file in :func:`cache_root`; when that cannot be written every file is read.

    Raises:
        OSError: A file cannot be read.
    """
    keys = []
    for p in paths:
        st = os.stat(p)
        keys.append((str(Path(p).resolve()), st.st_size, st.st_mtime_ns))
    known: dict[tuple[str, int, int], str] = {}
    db = _digest_db()
    if db is not None:
        with contextlib.closing(db):
            try:
                known = _known_digests(db, keys)
            except sqlite3.Error:  # a damaged or locked cache: read every file instead
                known = {}
            missing = [k for k in keys if k not in known]
            for key in missing:
                known[key] = file_digest(key[0])
            if missing:
                with contextlib.suppress(sqlite3.Error), db:
                    db.executemany(
                        "INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?)",
                        [(*k, known[k]) for k in missing],
                    )
    else:
        known = {k: file_digest(k[0]) for k in keys}
    return [known[k] for k in keys]


def _known_digests(
    db: sqlite3.Connection, keys: list[tuple[str, int, int]]
) -> dict[tuple[str, int, int], str]:
    known: dict[tuple[str, int, int], str] = {}
    for i in range(0, len(keys), 500):
        chunk = keys[i : i + 500]
        marks = ",".join("?" * len(chunk))
        rows = db.execute(
            f"SELECT path, size, mtime, sha256 FROM digests WHERE path IN ({marks})",
            [k[0] for k in chunk],
        ).fetchall()
        known.update({(r[0], r[1], r[2]): r[3] for r in rows})
    return known


def _digest_db() -> sqlite3.Connection | None:
    try:
        root = cache_root()
        root.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(root / DIGEST_DB, timeout=30)
        db.execute(
            "CREATE TABLE IF NOT EXISTS digests "
            "(path TEXT PRIMARY KEY, size INTEGER, mtime INTEGER, sha256 TEXT)"
        )
        return db
    except (OSError, sqlite3.Error):
        return None


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


def check_writable_dir(path: Path, what: str, fix: str) -> None:
    """Raise :class:`~distillscope.errors.ConfigError` unless ``path`` is (or can be created
    as) a writable folder.

    Nothing is created: the nearest existing ancestor is checked instead.

    Args:
        path: The folder that will be written to.
        what: What the folder is, for the message (e.g. ``"teacher store"``).
        fix: How to fix it, for the message.
    """
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(f"{what} {str(path)!r}: {str(probe)!r} is a file, not a folder; {fix}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {str(path)!r} is not writable; {fix}")
