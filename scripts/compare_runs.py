"""Compare two run directories: every model's weights tensor by tensor, and results.json values.

A refactor that must not change a number is proven by running the same config before and after
it and comparing the two run directories with this script: every ``models/*.safetensors`` must
hold the same tensor names with bit-identical values, and every value of ``results.json``'s
``probes`` and ``training`` sections (wall times and the run's own metadata left out) must be
equal. Prints one line per difference and a summary; exits 1 when anything differs.

Usage: ``python scripts/compare_runs.py RUN_A RUN_B [--json OUT]``
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from distillscope.results import results_path

#: Fields that differ between identical runs: wall times.
VOLATILE = ("time", "duration_s", "seconds")


def compare_models(a: Path, b: Path) -> tuple[list[str], int]:
    """Differences between the model files of two runs, and the number of tensors compared."""
    diffs: list[str] = []
    names_a = {p.name for p in (a / "models").glob("*.safetensors")}
    names_b = {p.name for p in (b / "models").glob("*.safetensors")}
    for name in sorted(names_a ^ names_b):
        diffs.append(f"models/{name}: only in {'A' if name in names_a else 'B'}")
    count = 0
    for name in sorted(names_a & names_b):
        ta, tb = load_file(str(a / "models" / name)), load_file(str(b / "models" / name))
        for key in sorted(ta.keys() ^ tb.keys()):
            diffs.append(f"models/{name}: tensor {key} only in {'A' if key in ta else 'B'}")
        for key in sorted(ta.keys() & tb.keys()):
            count += 1
            x, y = ta[key], tb[key]
            if x.shape != y.shape or x.dtype != y.dtype:
                diffs.append(
                    f"models/{name}:{key}: {x.dtype}{list(x.shape)} vs {y.dtype}{list(y.shape)}"
                )
            elif not torch.equal(x, y):
                gap = (x.double() - y.double()).abs().max().item()
                diffs.append(f"models/{name}:{key}: values differ (max |a-b| {gap:.3g})")
    return diffs, count


def compare_values(a: Any, b: Any, path: str, out: list[str]) -> int:
    """Append differences of two JSON values to ``out``; return the number of leaves compared."""
    if isinstance(a, dict) and isinstance(b, dict):
        n = 0
        for key in sorted(a.keys() | b.keys()):
            if key in VOLATILE:
                continue
            if key not in a or key not in b:
                out.append(f"{path}.{key}: only in {'A' if key in a else 'B'}")
                continue
            n += compare_values(a[key], b[key], f"{path}.{key}", out)
        return n
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{path}: {len(a)} items vs {len(b)}")
            return 1
        return sum(compare_values(x, y, f"{path}[{i}]", out) for i, (x, y) in enumerate(zip(a, b)))
    same = a == b or (
        isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    )
    if not same:
        out.append(f"{path}: {a!r} vs {b!r}")
    return 1


def compare(a: Path, b: Path) -> dict[str, Any]:
    diffs, tensors = compare_models(a, b)
    ra = json.loads(results_path(a).read_text())
    rb = json.loads(results_path(b).read_text())
    values = 0
    for section in ("probes", "training", "models"):
        values += compare_values(ra.get(section), rb.get(section), section, diffs)
    return {"run_a": str(a), "run_b": str(b), "tensors": tensors, "values": values,
            "differences": diffs}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--json", type=Path, help="also write the comparison here")
    args = parser.parse_args(argv)
    result = compare(args.run_a, args.run_b)
    for line in result["differences"]:
        print(line)
    verdict = (
        "identical" if not result["differences"] else f"{len(result['differences'])} differences"
    )
    print(f"{result['tensors']} tensors and {result['values']} result values compared: {verdict}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0 if not result["differences"] else 1


if __name__ == "__main__":
    sys.exit(main())
