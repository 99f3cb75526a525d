"""How long expanding (validating) a big grid takes, before anything runs.

A small toy config (one teacher, two students, two probes) with ``grid: {T: [...], seed:
[0..9]}``: 1,000 and 10,000 cells, where cells of one T differ only in their seed, and 1,000
cells over T alone (every cell differs in more than its seed, so none shares the registry
checks). ``--preflight`` also times what ``distillscope run`` does next on 1,000 cells: resolve
each cell's plan and check its data and networks. One untimed warm-up (imports), then
``--reps`` rounds; medians kept.

    .venv/bin/python benchmarks/grid_expansion.py              # about half a minute on 2 cores
    .venv/bin/python benchmarks/grid_expansion.py --preflight --out /tmp/g.json
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rounds import interleaved, write_result

from distillscope.grid.expand import expand_grid
from distillscope.grid.runner import plan_cells, preflight


def toy(axes: dict[str, list[Any]]) -> dict[str, Any]:
    return {
        "name": "bench",
        "device": "cpu",
        "data": {"name": "toy2d-ring"},
        "train": {"epochs": 1, "batch_size": 64, "optimizer": "adam", "lr": 0.01},
        "teacher": {"model": {"name": "mlp_reduced"}},
        "student": {"name": "mlp_reduced"},
        "students": {
            "independent": {"loss": "ce"},
            "kd": {"loss": "kd", "temperature": "$T", "train": {"temperature": "${T}"}},
        },
        "probes": {"accuracy": {}, "agreement": {}},
        "grid": axes,
    }


def by_seed(cells: int) -> dict[str, Any]:
    return toy({"T": list(range(1, cells // 10 + 1)), "seed": list(range(10))})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--preflight", action="store_true", help="also time the preflight")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "grid_expansion.json"
    )
    args = parser.parse_args()
    configs = {
        "expand_1000": by_seed(1000),
        "expand_10000": by_seed(10_000),
        "expand_1000_distinct": toy({"T": list(range(1, 1001))}),
    }
    variants = {name: (lambda raw=raw: expand_grid(raw)) for name, raw in configs.items()}
    if args.preflight:
        grid = expand_grid(by_seed(1000))
        variants["preflight_1000"] = lambda: preflight(grid, plan_cells(grid))
    times, medians = interleaved(variants, args.reps)
    cells = {"expand_1000": 1000, "expand_10000": 10_000, "expand_1000_distinct": 1000}
    cells["preflight_1000"] = 1000
    per_cell = {f"{k}_ms_per_cell": 1000 * v / cells[k] for k, v in medians.items()}
    setup = {"config": "toy2d-ring, 1 teacher, 2 students, 2 probes", "reps": args.reps}
    write_result(args.out, "grid_expansion", setup, times, medians, per_cell)


if __name__ == "__main__":
    main()
