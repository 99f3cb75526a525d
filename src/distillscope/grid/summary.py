"""The grid's summary: ``grid.json`` (every cell and the mean and spread over seeds) and
``summary.csv`` (the same statistics, one line per value, for pandas and spreadsheets).

Cells that differ only in the seed axis form a *group*; per group and per probe value the summary
holds the mean, the sample standard deviation (``n - 1`` in the denominator; ``None`` when fewer
than two seeds have a value) and ``n``, the number of seeds that gave a finite value.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillscope.errors import UserError
from distillscope.grid.expand import Cell, Grid, cell_id_of
from distillscope.results import load_results, results_path
from distillscope.rundir import atomic_write_text

GRID_FILE = "grid.json"
SUMMARY_CSV = "summary.csv"
GRID_SCHEMA = 1
CELLS_DIR = "cells"


@dataclass(frozen=True)
class CellOutcome:
    """What happened to a cell in this invocation of the grid.

    Attributes:
        id: The cell id.
        status: ``done`` or ``failed``.
        seconds: Wall time of this attempt.
        error: One line when it failed.
        user_error: The failure was a user error (exit 2) rather than a crash.
    """

    id: str
    status: str
    seconds: float
    error: str | None = None
    user_error: bool = False


def mean_std(values: Iterable[float | None]) -> dict[str, float | int | None]:
    """Mean, sample standard deviation and count of the finite ``values``.

    Example:
        >>> mean_std([0.8, 0.9, 1.0, None, float("nan")])
        {'mean': 0.9, 'std': 0.1, 'n': 3}
        >>> mean_std([0.5])
        {'mean': 0.5, 'std': None, 'n': 1}
    """
    xs = [float(v) for v in values if _finite(v)]
    n = len(xs)
    if n == 0:
        return {"mean": None, "std": None, "n": 0}
    mean = math.fsum(xs) / n
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else None
    return {"mean": _round(mean), "std": None if std is None else _round(std), "n": n}


def _round(x: float) -> float:
    return float(f"{x:.12g}")  # drop float noise (0.9000000000000001) from the file


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def cell_dir(root: Path, cell: Cell) -> Path:
    """``<grid dir>/cells/<cell id>``."""
    return root / CELLS_DIR / cell.id


def cell_record(
    root: Path, cell: Cell, outcome: CellOutcome | None = None, running: bool = False
) -> dict[str, Any]:
    """One cell of ``grid.json``: its axis values, status and flattened probe values.

    Status is ``done`` (``results.json`` written), ``failed`` (this invocation; ``error`` says
    why), ``running``, ``partial`` (started, not finished: a re-run resumes it) or ``pending``.
    """
    path = cell_dir(root, cell)
    record: dict[str, Any] = {
        "id": cell.id,
        "dir": f"{CELLS_DIR}/{cell.id}",
        "labels": dict(cell.labels),
        "params": _jsonable(cell.params),
        "status": "pending",
        "error": None,
        "duration_s": None,
        "models": {},
        "values": {},
    }
    if results_path(path).is_file():
        try:
            results = load_results(path)
        except UserError as exc:
            record.update(status="failed", error=str(exc))
            return record
        record["status"] = "done"
        record["duration_s"] = results["run"].get("duration_s")
        record["models"] = {
            name: {k: spec.get(k) for k in ("role", "arch", "teacher", "train_temperature")}
            for name, spec in results["models"].items()
        }
        record["values"] = {
            probe: {k: v if _finite(v) else None for k, v in p.get("values", {}).items()}
            for probe, p in results.get("probes", {}).items()
        }
        return record
    if outcome is not None and outcome.status == "failed":
        record.update(status="failed", error=outcome.error, duration_s=round(outcome.seconds, 2))
    elif running:
        record["status"] = "running"
    elif (path / "config.yaml").is_file():
        record["status"] = "partial"
    return record


def aggregate(records: Sequence[Mapping[str, Any]], seed_axis: str | None) -> list[dict[str, Any]]:
    """Group done cells by every label but the seed's and summarise each probe value.

    Example:
        >>> cells = [
        ...     {"labels": {"T": "1", "seed": "0"}, "status": "done", "id": "a",
        ...      "values": {"accuracy": {"s/top1": 0.8}}},
        ...     {"labels": {"T": "1", "seed": "1"}, "status": "done", "id": "b",
        ...      "values": {"accuracy": {"s/top1": 1.0}}},
        ... ]
        >>> g = aggregate(cells, "seed")
        >>> g[0]["id"], g[0]["values"]["accuracy"]["s/top1"]
        ('T=1', {'mean': 0.9, 'std': 0.141421356237, 'n': 2})
    """
    groups: dict[str, dict[str, Any]] = {}
    collected: dict[str, dict[str, dict[str, list[float | None]]]] = {}
    for rec in records:
        labels = {k: v for k, v in rec["labels"].items() if k != seed_axis}
        gid = cell_id_of(labels) if labels else "all"
        group = groups.setdefault(
            gid, {"id": gid, "labels": labels, "cells": [], "done": 0, "values": {}}
        )
        group["cells"].append(rec["id"])
        if rec["status"] != "done":
            continue
        group["done"] += 1
        for probe, values in rec["values"].items():
            for key, value in values.items():
                collected.setdefault(gid, {}).setdefault(probe, {}).setdefault(key, []).append(
                    value
                )
    for gid, group in groups.items():
        group["values"] = {
            probe: {key: mean_std(xs) for key, xs in values.items()}
            for probe, values in collected.get(gid, {}).items()
        }
    return list(groups.values())


def model_catalogue(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every model seen in a done cell, in first-seen order, with its role and architecture."""
    models: dict[str, dict[str, Any]] = {}
    for rec in records:
        for name, spec in rec.get("models", {}).items():
            models.setdefault(name, dict(spec))
    return models


def build_summary(
    grid: Grid,
    root: Path,
    outcomes: Mapping[str, CellOutcome] | None = None,
    running: Iterable[str] = (),
    jobs: int = 1,
) -> dict[str, Any]:
    """The content of ``grid.json``, read from the cells' ``results.json`` files."""
    outcomes = outcomes or {}
    running = set(running)
    records = [cell_record(root, c, outcomes.get(c.id), c.id in running) for c in grid.cells]
    counts: dict[str, int] = {}
    for rec in records:
        counts[rec["status"]] = counts.get(rec["status"], 0) + 1
    return {
        "schema": GRID_SCHEMA,
        "kind": "distillscope-grid",
        "grid": {
            "name": grid.name,
            "key": grid.key,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "jobs": jobs,
            "seed_axis": grid.seed_axis,
            "axes": [
                {"key": a.key, "kind": a.kind, "labels": list(a.labels), "used_at": list(a.used_at)}
                for a in grid.axes
            ],
            "counts": counts,
        },
        "models": model_catalogue(records),
        "cells": records,
        "groups": aggregate(records, grid.seed_axis),
    }


def write_summary(root: Path, payload: Mapping[str, Any]) -> Path:
    """Write ``grid.json`` and ``summary.csv`` atomically; return the ``grid.json`` path."""
    atomic_write_text(root / GRID_FILE, json.dumps(payload, indent=1, allow_nan=False) + "\n")
    atomic_write_text(root / SUMMARY_CSV, summary_csv(payload))
    return root / GRID_FILE


def summary_csv(payload: Mapping[str, Any]) -> str:
    """One line per (group, probe, value key): the group's axis labels, mean, std and n.

    Example:
        >>> stats = {"mean": 0.9, "std": 0.1, "n": 3}
        >>> p = {"grid": {"axes": [{"key": "T"}, {"key": "seed"}], "seed_axis": "seed"},
        ...      "groups": [{"labels": {"T": "4"}, "values": {"accuracy": {"s/top1": stats}}}]}
        >>> print(summary_csv(p).strip())
        T,probe,key,mean,std,n
        4,accuracy,s/top1,0.9,0.1,3
    """
    axes = [a["key"] for a in payload["grid"]["axes"] if a["key"] != payload["grid"]["seed_axis"]]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*axes, "probe", "key", "mean", "std", "n"])
    for group in payload["groups"]:
        for probe, values in group["values"].items():
            for key, stats in values.items():
                writer.writerow(
                    [
                        *(group["labels"].get(a, "") for a in axes),
                        probe,
                        key,
                        *("" if stats[s] is None else stats[s] for s in ("mean", "std", "n")),
                    ]
                )
    return out.getvalue()


def _jsonable(value: Any) -> Any:
    """Axis values as JSON (they came from YAML, so only non-finite floats need care)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
