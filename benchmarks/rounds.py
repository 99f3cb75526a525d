"""Shared by the benchmarks: interleaved timing rounds and the JSON result file."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch


def interleaved(
    variants: Mapping[str, Callable[[], object]], reps: int
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Time every variant ``reps`` times after one untimed warm-up round.

    The variant order rotates every round, so slow drift of the machine spreads over all of
    them. Returns the times per variant and their medians.
    """
    names = list(variants)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(reps + 1):  # round 0: warm-up, not kept
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            start = time.perf_counter()
            variants[name]()
            if r:
                times[name].append(time.perf_counter() - start)
        if r:
            print(f"round {r}/{reps}: " + ", ".join(f"{k}={times[k][-1]:.2f}s" for k in names))
    return times, {k: statistics.median(v) for k, v in times.items()}


def write_result(
    out: Path,
    name: str,
    setup: dict[str, Any],
    times: dict[str, list[float]],
    medians: dict[str, float],
    ratios: dict[str, float],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write a benchmark's JSON (setup, times, medians, ratios, ``extra`` measurements,
    versions); print the ratios."""
    result = {
        "benchmark": name,
        "setup": {**setup, "load_average": list(os.getloadavg())},
        "median_s": medians,
        "times_s": times,
        "ratios": ratios,
        **(extra or {}),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    for k, v in ratios.items():
        print(f"{k}: {v:.3f}")
    print(f"wrote {out}")
    return result


def image_bench_args(doc: str, default_out: Path, argv: list[str] | None) -> argparse.Namespace:
    """The arguments of the image-training benchmarks (``--n``, ``--reps``, ``--threads``,
    ``--out``), parsed, with torch's thread count set."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--n", type=int, default=3200, help="training images")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    return args
