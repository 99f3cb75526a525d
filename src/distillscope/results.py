"""``results.json``, the one file a run's report is made from: its name, schema, making and reading.

Floor 1, beside the config schema (see ``docs/design-notes.md``, "Floors"): it imports only
:mod:`distillscope.errors` and :mod:`distillscope.files`, so the runner that writes the file
(:mod:`distillscope.experiment`), the run directory (:mod:`distillscope.rundir`), the report and
the grid read it through one module. :func:`build_results` makes the payload from what a run
computed, :func:`write_results` writes it, :func:`load_results` reads and :func:`check_results`
checks it.

Every problem found when reading raises :class:`~distillscope.errors.UserError` with one line
naming the file, what is wrong and the fix: re-run ``distillscope run`` so that the runner writes
the file again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

import distillscope
from distillscope.errors import UserError, clipped, quoted
from distillscope.files import atomic_write_text

__all__ = [
    "RESULTS_FILE",
    "SCHEMA_VERSION",
    "build_results",
    "check_results",
    "load_results",
    "results_path",
    "write_results",
]

RESULTS_FILE = "results.json"
SCHEMA_VERSION = 1
FIX = "re-run `distillscope run CONFIG` to write it again"
REQUIRED = ("run", "models")
OPTIONAL = ("config", "dataset", "training", "probes")


def results_path(run_dir: Path | str) -> Path:
    """Where the results of the run in ``run_dir`` are: ``run_dir/results.json``."""
    return Path(run_dir) / RESULTS_FILE


def build_results(
    *,
    config: dict[str, Any],
    members: Iterable[Any],
    parameters: Mapping[str, int],
    splits: Any,
    probes: dict[str, Any],
    duration: float,
    device: str,
    config_file: str | None,
    digest: str,
    identity: dict[str, Any],
) -> dict[str, Any]:
    """The results of a run, as ``results.json`` holds them (schema :data:`SCHEMA_VERSION`).

    Args:
        config: The resolved config as plain data (:func:`~distillscope.config.dump_config`).
        members: The run's networks in order (:class:`~distillscope.experiment.Member`: ``name``,
            ``role``, ``spec.name``, ``train.temperature``, ``teacher``, ``loss``, ``reused``,
            ``group``, ``seed``, ``history``).
        parameters: Network name -> its number of parameters.
        splits: The run's data (:class:`~distillscope.splits.Splits`: ``train``, ``test``,
            ``member_train``).
        probes: Probe name -> its result as a dict.
        duration: Wall time of the run so far, in seconds.
        device: The device the run used.
        config_file: The YAML file the config was read from (``None``: not read from a file).
        digest: The digest of the run's identity.
        identity: The run's identity (:func:`~distillscope.experiment.run_identity`).
    """
    members = list(members)
    info = splits.train.info
    return {
        "schema": SCHEMA_VERSION,
        "run": {
            "name": config["name"],
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "seed": config["seed"],
            "device": device,
            "config_file": config_file,
            "duration_s": round(duration, 2),
            "distillscope_version": distillscope.__version__,
            "torch_version": torch.__version__,
        },
        "config": config,
        "identity": {"digest": digest, **identity},
        "dataset": {
            "name": info.name,
            "source": info.source,
            "fingerprints": identity["data"],
            "num_classes": info.num_classes,
            "class_names": list(info.class_names),
            "n_train": len(splits.train),
            "n_test": len(splits.test),
            "input_shape": list(info.input_shape),
        },
        "models": {
            m.name: {
                "role": m.role,
                "arch": m.spec.name,
                "params": parameters[m.name],
                "train_temperature": float(m.train.temperature),
                "teacher": m.teacher,
                "loss": m.loss if m.role != "teacher" else None,
                "reused": m.reused,
                "group": m.group,
                **_own_data(splits, m.name),
                **({"seed": m.seed} if m.seed not in (None, config["seed"]) else {}),
            }
            for m in members
        },
        "training": {m.name: m.history for m in members},
        "probes": probes,
    }


def _own_data(splits: Any, name: str) -> dict[str, Any]:
    """``{"data": {...}}`` for a member trained on its own data, else nothing."""
    if name not in splits.member_train:
        return {}
    data = splits.member_train[name]
    return {"data": {"name": data.info.name, "n_train": len(data)}}


def write_results(run_dir: Path | str, results: dict[str, Any]) -> Path:
    """Write ``results`` to ``run_dir/results.json`` (atomically) and return the file's path."""
    path = results_path(run_dir)
    atomic_write_text(path, json.dumps(results, indent=1, allow_nan=True))
    return path


def load_results(run_dir: Path | str) -> dict[str, Any]:
    """Read and check ``run_dir/results.json``.

    Args:
        run_dir: A run directory written by ``distillscope run``.

    Returns:
        The parsed results (schema version 1).

    Raises:
        UserError: The file is missing, unreadable, not JSON or not a version-1 results file.
    """
    path = results_path(run_dir)
    if not path.is_file():
        raise UserError(f"{path}: file not found; {FIX} (or pass the run directory that has it)")
    try:
        results = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror}); {FIX}") from exc
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start}); {FIX}") from exc
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno}); {FIX}") from exc
    check_results(results, str(path))
    return results


def check_results(results: object, source: str = "results") -> None:
    """Check the parts of the schema the report relies on.

    Args:
        results: Parsed results.
        source: Name of the file (or object) used in error messages.

    Raises:
        UserError: The first problem found, on one line.

    Example:
        >>> check_results({"schema": 1, "run": {"name": "r"}, "models": {}})
        >>> check_results({"schema": 2, "run": {}, "models": {}})
        Traceback (most recent call last):
        ...
        distillscope.errors.UserError: results: schema 2 is not supported (expected 1); ...
    """
    if not isinstance(results, Mapping):
        raise UserError(f"{source}: expected a JSON object, got {type(results).__name__}; {FIX}")
    schema = results.get("schema")
    if schema != SCHEMA_VERSION:
        raise UserError(
            f"{source}: schema {quoted(schema)} is not supported (expected {SCHEMA_VERSION}); {FIX}"
        )
    for key in (*REQUIRED, *OPTIONAL):
        if key in REQUIRED and key not in results:
            raise UserError(f"{source}: key {key!r} is missing; {FIX}")
        if key in results and not isinstance(results[key], Mapping):
            raise UserError(f"{source}: key {key!r} must be an object; {FIX}")
    for name, spec in results["models"].items():
        if not isinstance(spec, Mapping):
            raise UserError(f"{source}: models.{clipped(name)} must be an object; {FIX}")
    for name, epochs in results.get("training", {}).items():
        if not isinstance(epochs, list) or not all(isinstance(e, Mapping) for e in epochs):
            raise UserError(f"{source}: training.{clipped(name)} must be a list of objects; {FIX}")
        for i, row in enumerate(epochs):
            for key, value in row.items():
                if key != "model" and not _is_number(value):
                    raise UserError(
                        f"{source}: training.{clipped(name)}[{i}].{clipped(key)} = "
                        f"{quoted(value, 40)} is not a "
                        f"number; {FIX}"
                    )
    for name, probe in results.get("probes", {}).items():
        _check_probe(probe, f"{source}: probes.{clipped(name)}")


def _check_probe(probe: object, where: str) -> None:
    """Check one probe result: ``values`` numbers, ``series`` lists of numbers, the rest objects."""
    if not isinstance(probe, Mapping) or not isinstance(probe.get("values"), Mapping):
        raise UserError(f"{where}: expected an object with a 'values' object; {FIX}")
    for part in ("series", "params", "images"):
        if not isinstance(probe.get(part, {}), Mapping):
            raise UserError(f"{where}.{part} must be an object; {FIX}")
    for key, value in probe["values"].items():
        if not _is_number(value):
            raise UserError(
                f"{where}.values[{quoted(key)}] = {quoted(value, 40)} is not a number; {FIX}"
            )
    for key, ys in probe.get("series", {}).items():
        if not isinstance(ys, list) or not all(_is_number(y) for y in ys):
            raise UserError(f"{where}.series[{quoted(key)}] must be a list of numbers; {FIX}")


def _is_number(value: object) -> bool:
    """Whether ``value`` is a number or ``None`` (``None`` and NaN are shown as missing)."""
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
