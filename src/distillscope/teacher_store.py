"""Trained teachers kept across runs, by a key of everything that determines their weights.

A later run that asks for the same teacher (same architecture, training settings, loss, data and
seed) loads it instead of training it again; ``--retrain-teacher`` forces a new one. An entry is
a folder ``<arch>-<key>/`` holding ``model.safetensors`` and ``meta.json`` (the key, the model
spec and the training history shown in reports). A damaged entry is retrained, never fatal.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from distillscope.errors import CheckpointError
from distillscope.rundir import atomic_write_text
from distillscope.train.checkpoint import load_model_weights, save_model

#: Bump when training code changes what a stored teacher means.
STORE_VERSION = 1


def default_store_root(configured: str | None = None) -> Path:
    """The store folder: ``configured``, else ``$DISTILLSCOPE_CACHE/teachers``, else
    ``~/.cache/distillscope/teachers``."""
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("DISTILLSCOPE_CACHE")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "distillscope"
    return root / "teachers"


class TeacherStore:
    """A folder of stored teachers.

    Args:
        root: The store's folder (created on first save).
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def entry(self, arch: str, key: str) -> Path:
        return self.root / f"{arch.replace(':', '_')}-{key}"

    def load(self, entry: Path, model: nn.Module) -> tuple[list[dict[str, Any]] | None, str]:
        """Load ``entry`` into ``model``: ``(history, "")``, or ``(None, why)`` when unusable.

        On failure the model keeps its initial weights, so retraining starts where a fresh run
        would.
        """
        if not (entry / "model.safetensors").is_file():
            return None, "not stored"
        initial = {k: v.clone() for k, v in model.state_dict().items()}
        try:
            load_model_weights(entry / "model.safetensors", model)
            meta = json.loads((entry / "meta.json").read_text())
        except (CheckpointError, OSError, ValueError) as exc:
            model.load_state_dict(initial)
            return None, str(exc)
        return list(meta.get("history", [])), ""

    def save(
        self, entry: Path, model: nn.Module, meta: dict[str, Any], history: list[dict[str, Any]]
    ) -> None:
        """Store ``model`` (atomically) with its ``meta`` and training ``history``."""
        entry.mkdir(parents=True, exist_ok=True)
        save_model(entry / "model.safetensors", model, {"key": meta.get("key", "")})
        atomic_write_text(entry / "meta.json", json.dumps({**meta, "history": history}))
