"""The run directory: where one experiment writes everything it produces.

Layout::

    <output_dir>/<name>-<YYYYmmdd-HHMMSS>/
        config.yaml            the resolved config (re-run or resume from it)
        identity.json          what made the run: config, data fingerprints, runtime (resume and
                               grid re-runs compare it before reusing anything)
        models/<model>.safetensors
        checkpoints/<model>/   training state for --resume
        metrics.jsonl          one line per model per epoch
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

from distillscope.files import atomic_write_text
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

    def write_results(self, data: dict[str, Any]) -> None:
        write_results(self.path, data)

    def __str__(self) -> str:
        return str(self.path)
