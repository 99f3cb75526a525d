"""The run directory: where one experiment writes everything it produces.

Layout::

    <output_dir>/<name>-<YYYYmmdd-HHMMSS>/
        config.yaml            the resolved config (re-run or resume from it)
        identity.json          what made the run: config, data fingerprints, runtime (resume and
                               grid re-runs compare it before reusing anything)
        models/<model>.safetensors
        checkpoints/<model>/   training state for --resume
        metrics.jsonl          one line per model per epoch (the record; trackers copy it)
        tensorboard/, mlruns/  with ``tracking:`` and no folder of their own: event files, an
                               MLflow file store
        results.json           every probe's values, series and params
        report.html            self-contained report rendered from results.json

Floor 1 (see ``docs/design-notes.md``, "Floors"): it imports :mod:`distillscope.files` and
:mod:`distillscope.results` only.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from distillscope.errors import ConfigError, quoted
from distillscope.files import atomic_write_text, check_writable_dir, read_jsonl
from distillscope.identity import first_difference
from distillscope.messages import say
from distillscope.results import results_path, write_results


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run directory."""

    path: Path

    @classmethod
    def create(cls, output_dir: str | Path, name: str) -> RunDir:
        """A new, unique run directory ``<output_dir>/<name>-<timestamp>``."""
        root = Path(output_dir)
        root.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for n in range(1000):
            path = root / (f"{name}-{stamp}" if n == 0 else f"{name}-{stamp}-{n}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            return cls(path)
        raise RuntimeError(f"could not create a run directory under {root}")

    @classmethod
    def create_at(cls, path: str | Path) -> RunDir:
        """A new run directory at exactly ``path`` (a grid cell); it may exist but hold no run.

        Raises:
            FileExistsError: ``path`` already holds a run (its ``config.yaml``); resume it instead.
        """
        rd = cls(Path(path))
        rd.path.mkdir(parents=True, exist_ok=True)
        if rd.config.exists():
            raise FileExistsError(f"{rd.path} already holds a run; resume it instead")
        return rd

    @classmethod
    def start(
        cls,
        output_dir: str | Path,
        name: str,
        at: str | Path | None,
        identity: dict[str, Any],
        config: dict[str, Any],
    ) -> RunDir:
        """A new run: ``<output_dir>/<name>-<time>`` (or exactly ``at``, a grid cell) holding
        its ``identity.json`` and ``config.yaml``; the parent folder is checked writable first."""
        if at:
            check_writable_dir(Path(at).parent, "grid folder", "pass a writable --output-dir")
            rd = cls.create_at(at)
        else:
            where = Path(output_dir)
            check_writable_dir(where, "output_dir", "pass --output-dir naming a writable folder")
            rd = cls.create(output_dir, name)
        rd.write_identity(identity)
        rd.write_config(config)
        return rd

    @classmethod
    def existing(cls, path: str | Path) -> RunDir:
        """The run directory at ``path``; one line when it is none (no ``config.yaml``)."""
        rd = cls(Path(path))
        if not rd.config.is_file():
            raise ConfigError(
                f"{str(rd.path)!r} is not a run directory (no config.yaml); pass the directory "
                "printed by `distillscope run`"
            )
        return rd

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def identity(self) -> Path:
        return self.path / "identity.json"

    @property
    def results(self) -> Path:
        return results_path(self.path)

    @property
    def report(self) -> Path:
        return self.path / "report.html"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    def model(self, name: str) -> Path:
        return self.path / "models" / f"{name}.safetensors"

    def checkpoints(self, name: str) -> Path:
        return self.path / "checkpoints" / name

    def write_config(self, data: dict[str, Any]) -> None:
        atomic_write_text(self.config, yaml.safe_dump(data, sort_keys=False))

    def write_identity(self, data: dict[str, Any]) -> None:
        atomic_write_text(self.identity, json.dumps(data, indent=1, sort_keys=True))

    def read_identity(self) -> dict[str, Any] | None:
        """The recorded identity, or ``None`` when missing or unreadable."""
        try:
            data = json.loads(self.identity.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def resumed_runtime(self, now: dict[str, Any], device_changed: bool) -> dict[str, Any]:
        """The runtime to compare a resumed run's identity under: ``now``, but with the device
        the run was made on when the user moved it on purpose (``--resume --device X``)."""
        saved = self.read_identity() or {}
        before = ((saved.get("identity") or {}).get("runtime") or {}).get("device")
        if device_changed and before and before != now["device"]:
            say(f"resuming a run made on {before} on {now['device']}, as asked")
            return {**now, "device": before}
        return now

    def check_identity(self, now: dict[str, Any]) -> None:
        """Refuse (one line naming the field) to resume a run whose config, data or runtime
        changed since it started (``identity.json``, :mod:`distillscope.identity`)."""
        saved = self.read_identity()
        if saved is None or not isinstance(saved.get("identity"), dict):
            raise ConfigError(
                f"{self.path} has no readable identity.json (made by an older distillscope, or "
                "damaged), so what it was made from cannot be checked; start a new run from "
                f"its config: `distillscope run {self.config}`"
            )
        diff = first_difference(saved["identity"], now)
        if diff is None:
            return
        where, before, after = diff
        raise ConfigError(
            f"cannot resume {self.path}: {where} was {quoted(before)} when it started and is "
            f"{quoted(after)} now; {_resume_fix(where)}"
        )

    def history(self, name: str) -> list[dict[str, Any]]:
        """The per-epoch rows of model ``name`` in ``metrics.jsonl`` (lines cut by a kill
        skipped; stage rows left out)."""
        if not self.metrics.is_file():
            return []
        rows = read_jsonl(self.metrics)
        by_epoch = {
            r["epoch"]: r
            for r in rows
            if r.get("model") == name and isinstance(r.get("epoch"), int) and "stage" not in r
        }
        return [by_epoch[e] for e in sorted(by_epoch)]

    def write_results(self, data: dict[str, Any]) -> None:
        write_results(self.path, data)

    def __str__(self) -> str:
        return str(self.path)


def _resume_fix(where: str) -> str:
    """How to fix a resume refused for a difference at ``where`` (an identity path)."""
    if where.startswith("data."):
        return (
            "the data changed: resume on the data the run started with (--data-root naming "
            "its folder), or start a new run"
        )
    if where.startswith("config."):
        return (
            "config.yaml was edited after the run started: undo the edit to resume, or start a "
            "new run from the edited config"
        )
    return (
        "resume with the torch version, thread count and device it started with, or start a new run"
    )
