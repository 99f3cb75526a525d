"""Read and check ``results.json``, the one file the report is made from.

Every problem raises :class:`~distillscope.errors.UserError` with one line naming the file, what is
wrong and the fix: re-run ``distillscope run`` so that the runner writes the file again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from distillscope.errors import UserError, clipped, quoted

RESULTS_FILE = "results.json"
SCHEMA_VERSION = 1
FIX = "re-run `distillscope run CONFIG` to write it again"
REQUIRED = ("run", "models")
OPTIONAL = ("config", "dataset", "training", "probes")


def load_results(run_dir: Path | str) -> dict[str, Any]:
    """Read and check ``run_dir/results.json``.

    Args:
        run_dir: A run directory written by ``distillscope run``.

    Returns:
        The parsed results (schema version 1).

    Raises:
        UserError: The file is missing, unreadable, not JSON or not a version-1 results file.
    """
    path = Path(run_dir) / RESULTS_FILE
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
