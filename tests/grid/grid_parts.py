"""Tiny grid configs shared by the study tests: 2-D toy data, one epoch, a few batches."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml


def tiny_grid(tmp_path: Path, grid: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A grid over the kd student's temperature and the seed; the teacher does not depend on T."""
    cfg: dict[str, Any] = {
        "name": "tiny",
        "output_dir": str(tmp_path / "runs"),
        "device": "cpu",
        "data": {"name": "toy2d-ring"},
        "train": {
            "epochs": 1,
            "batch_size": 64,
            "optimizer": "adam",
            "lr": 0.01,
            "max_batches": 2,
        },
        "teacher": {"model": {"name": "mlp_reduced"}},
        "student": {"name": "mlp_reduced"},
        "students": {
            "independent": {"loss": "ce"},
            "kd": {"loss": "kd", "temperature": "$T", "train": {"temperature": "${T}"}},
        },
        "probe_defaults": {"max_samples": 32, "batch_size": 32},
        "probes": {"accuracy": {}, "agreement": {}},
        "grid": grid if grid is not None else {"T": [1, 4], "seed": [0, 1]},
    }
    cfg.update(copy.deepcopy(extra))
    return cfg


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
