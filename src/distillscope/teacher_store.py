"""Trained teachers kept across runs, by a key of everything that determines their weights.

A later run that asks for the same teacher (the same identity: its whole config, every byte of
its data, the runtime; :func:`~distillscope.experiment.teacher_identity`) loads it instead of
training it again;
``--retrain-teacher`` forces a new one. An entry is a folder ``<arch>-<key>/`` holding
``model.safetensors`` and ``meta.json``: the key, what went into it (shown when the entry is
reused), the SHA-256 of the model file, and the training history shown in reports.

An entry is reused only when its ``meta.json`` has the expected shape, names the same key, and
the model file's checksum matches; anything else (a damaged, truncated or edited entry) is
reported in one line and the teacher is retrained, never fatal and never used silently.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from distillscope.errors import CheckpointError
from distillscope.files import atomic_write_text, cache_root, check_writable_dir, file_digest
from distillscope.identity import digest
from distillscope.messages import say
from distillscope.train.checkpoint import load_model_weights, save_model

#: Bump when training code changes what a stored teacher means (2: data fingerprint, checksum;
#: 3: the key is the digest of the teacher's identity, every byte of its data included).
STORE_VERSION = 3


def default_store_root(configured: str | None = None) -> Path:
    """The store folder: ``configured``, else ``$DISTILLSCOPE_CACHE/teachers``, else
    ``~/.cache/distillscope/teachers``."""
    if configured:
        return Path(configured).expanduser()
    return cache_root() / "teachers"


class TeacherStore:
    """A folder of stored teachers.

    Args:
        root: The store's folder (created on first save).
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def entry(self, arch: str, key: str) -> Path:
        """The entry folder of architecture ``arch`` under ``key`` (a name safe for any path)."""
        return self.root / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', arch).lstrip('.-')}-{key}"

    def check_writable(self) -> None:
        """Raise :class:`ConfigError` if a new entry could not be saved (checked up front)."""
        check_writable_dir(
            self.root,
            "teacher store",
            "set teacher_store=DIR or DISTILLSCOPE_CACHE to a writable folder",
        )

    def load(
        self, entry: Path, model: nn.Module, key: str | None = None
    ) -> tuple[list[dict[str, Any]] | None, str]:
        """Load ``entry`` into ``model``: ``(history, "")``, or ``(None, why)`` when unusable.

        Args:
            entry: The entry folder.
            model: Receives the weights.
            key: The key the caller expects; an entry stored under another key is unusable.

        On failure the model keeps its initial weights, so retraining starts where a fresh run
        would.
        """
        weights = entry / "model.safetensors"
        if not weights.is_file():
            return None, "not stored"
        try:
            meta = read_meta(entry / "meta.json")
        except (OSError, ValueError) as exc:
            return None, f"meta.json unusable: {' '.join(str(exc).split())[:160]}"
        if key is not None and meta["key"] != key:
            return None, f"meta.json names key {meta['key']!r}, not {key!r}"
        try:
            digest = file_digest(weights)
        except OSError as exc:
            return None, f"model file unreadable ({exc.strerror})"
        if digest != meta["sha256"]:
            return None, "model file checksum mismatch (the file changed after it was stored)"
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        try:
            load_model_weights(weights, model)
        except (CheckpointError, OSError, ValueError) as exc:
            model.load_state_dict(initial)
            return None, str(exc)
        return list(meta["history"]), ""

    def reuse(
        self, name: str, entry: Path, model: nn.Module, key: str, why_same: str
    ) -> list[dict[str, Any]] | None:
        """Load teacher ``name`` from ``entry`` and say so (``why_same``: what matched); its
        history, or ``None`` when it must be trained (one line says why, unless not stored)."""
        history, why = self.load(entry, model, key)
        if history is not None:
            say(f"teacher {name}: reusing stored teacher {entry} ({why_same}; checksum verified)")
        elif why != "not stored":
            say(f"teacher {name}: stored teacher {entry} is unusable ({why}); retraining")
        return history

    def keep(
        self,
        name: str,
        entry: Path,
        model: nn.Module,
        meta: dict[str, Any],
        history: list[dict[str, Any]],
    ) -> None:
        """:meth:`save`, saying in one line (not failing) when the disk refuses it: writability
        was checked up front, but a full disk or a race can still fail."""
        try:
            self.save(entry, model, meta, history)
        except OSError as exc:
            say(f"teacher {name}: could not store it ({exc.strerror}); the run goes on")

    def needs_room(self, entries: list[Path], retrain: bool) -> None:
        """Fail now (one line) if a teacher will be trained into one of ``entries`` (absent, or
        ``retrain``) and the store cannot take it."""
        if any(retrain or not (e / "model.safetensors").is_file() for e in entries):
            self.check_writable()

    def obtain(
        self,
        name: str,
        arch: str,
        identity: dict[str, Any],
        model: nn.Module,
        train: Callable[[], list[dict[str, Any]]],
        *,
        retrain: bool = False,
        described: dict[str, Any] | None = None,
        keep: bool = True,
    ) -> tuple[str, list[dict[str, Any]], bool]:
        """The store's policy for teacher ``name``: reuse the entry of its ``identity`` (same
        digest, intact files) unless ``retrain``, else ``train()`` it and store it.

        Args:
            name: The teacher's name in the run (messages).
            arch: Its architecture (the entry's folder name starts with it).
            identity: What determines its weights (:func:`~distillscope.plan.
                teacher_identity`); its digest is the key.
            model: Receives the stored weights, or is trained by ``train``.
            train: Trains ``model`` and returns its history.
            retrain: Train even when the store has it.
            described: What went into the key, for people (``meta.json``'s ``matches``).
            keep: Store a teacher it trained (``False`` on the ranks after 0 of a
                data-parallel run: rank 0 stores it).

        Returns:
            ``(key, history, reused)``.
        """
        key = digest(identity, 16)
        entry = self.entry(arch, key)
        data, rt = identity["data"], identity["runtime"]
        why_same = (
            f"same teacher config, training data fingerprint {data['train'][:16]}, torch "
            f"{rt['torch']} on {rt['threads']} threads"
        )
        history = None if retrain else self.reuse(name, entry, model, key, why_same)
        if history is not None:
            return key, history, True
        history = train()
        if keep:
            meta = {"key": key, "matches": described or {}, "identity": identity}
            self.keep(name, entry, model, meta, history)
        return key, history, False

    def describe(self, entry: Path) -> dict[str, Any]:
        """What went into the entry's key (``meta.json``'s ``matches``), or ``{}``."""
        try:
            return dict(read_meta(entry / "meta.json").get("matches") or {})
        except (OSError, ValueError):
            return {}

    def save(
        self, entry: Path, model: nn.Module, meta: dict[str, Any], history: list[dict[str, Any]]
    ) -> None:
        """Store ``model`` (atomically) with its ``meta``, checksum and training ``history``."""
        entry.mkdir(parents=True, exist_ok=True)
        weights = entry / "model.safetensors"
        save_model(weights, model, {"key": meta.get("key", "")})
        record = {**meta, "sha256": file_digest(weights), "history": history}
        atomic_write_text(entry / "meta.json", json.dumps(record, indent=1, sort_keys=True))


def read_meta(path: Path) -> dict[str, Any]:
    """Read an entry's ``meta.json`` and check its shape.

    Raises:
        OSError: The file cannot be read.
        ValueError: Not JSON, or not an object with ``key`` (str), ``sha256`` (64 hex digits)
            and ``history`` (a list of objects).
    """
    meta = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(meta, Mapping):
        raise ValueError(f"expected a JSON object, got {type(meta).__name__}")
    if not isinstance(meta.get("key"), str):
        raise ValueError("'key' is missing or not a string")
    sha = meta.get("sha256")
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise ValueError("'sha256' is missing or not a SHA-256 hex digest")
    history = meta.get("history")
    if not isinstance(history, list) or not all(isinstance(r, Mapping) for r in history):
        raise ValueError("'history' is not a list of objects")
    return dict(meta)
