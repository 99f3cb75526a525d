"""``distillscope reproduce``: run a paper's claims over seeds and compute their verdicts.

Each config the chosen claims read runs once as a grid over the seeds (``grid.seed=[0, ...]``,
finished cells reused), and each claim's rule and controls are computed per seed from the
cells' probe values (:mod:`distillscope.claims.rule`). The results go to
``<output_dir>/reproduce-<paper>/claims.json``, ``claims.md`` and ``report.html``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from distillscope.checks import check_int
from distillscope.claims.declare import Claim, PaperClaims, load_claims, selected
from distillscope.claims.rule import Interval, Rule, interval, verdict
from distillscope.claims.write import claims_markdown
from distillscope.errors import ConfigError
from distillscope.report.claims import render_claims_report
from distillscope.rundir import atomic_write_text

__all__ = ["CLAIMS_JSON", "CLAIMS_MD", "evaluate_claim", "reproduce", "seed_values"]

CLAIMS_JSON = "claims.json"
CLAIMS_MD = "claims.md"
CLAIMS_SCHEMA = 1
GRID_FILE = "grid.json"

#: Runs one config as a grid over seeds and returns the grid directory.
GridRunner = Callable[[Path, list[int]], Path]


def reproduce(
    paper: str,
    claim_ids: Sequence[str] | None = None,
    *,
    seeds: int = 3,
    root: str | Path = "configs/reproduce",
    run_grid: GridRunner,
    output_dir: str | Path = "runs",
) -> Path:
    """Run ``paper``'s claims (all, or ``claim_ids``) over ``seeds`` seeds; return the folder
    holding ``claims.json`` and ``claims.md``.

    Args:
        paper: The paper's id, e.g. ``"003"``.
        claim_ids: Claims to run (default: every declared claim).
        seeds: Seeds ``0 .. seeds - 1``; at least 2 (an interval needs two).
        root: The reproduce folder holding ``claims/`` and the configs.
        run_grid: Runs one config over the seeds, returning its grid directory.
        output_dir: Parent of the ``reproduce-<paper>`` folder.

    Raises:
        ConfigError: Bad paper, claim id, seed count or declaration (nothing run).
    """
    seeds = check_int("seeds", seeds, minimum=2)
    declared = load_claims(root, paper)
    chosen = selected(declared, list(claim_ids or []))
    seed_list = list(range(seeds))
    values: dict[str, dict[int, dict[str, float | None]]] = {}
    grids: dict[str, str] = {}
    for config in dict.fromkeys(c.config for c in chosen.values()):
        grid_dir = run_grid(Path(root) / config, seed_list)
        grids[config] = str(grid_dir)
        values[config] = seed_values(grid_dir)
    records = [
        evaluate_claim(cid, claim, values[claim.config], seed_list, grids[claim.config])
        for cid, claim in chosen.items()
    ]
    out = Path(output_dir) / f"reproduce-{declared.paper}"
    out.mkdir(parents=True, exist_ok=True)
    payload = _payload(declared, records, seed_list)
    atomic_write_text(out / CLAIMS_JSON, json.dumps(payload, indent=1, allow_nan=False) + "\n")
    atomic_write_text(out / CLAIMS_MD, claims_markdown(payload))
    render_claims_report(out)
    return out


def seed_values(grid_dir: str | Path) -> dict[int, dict[str, float | None]]:
    """Per seed, every probe value of the grid's finished cells as ``{"probe:key": value}``.

    Raises:
        ConfigError: The grid has no ``grid.json`` or a cell other than by its seed.
    """
    path = Path(grid_dir) / GRID_FILE
    if not path.is_file():
        raise ConfigError(f"{str(grid_dir)!r} holds no {GRID_FILE}; run the grid first")
    summary = json.loads(path.read_text(encoding="utf-8"))
    axis = summary["grid"]["seed_axis"]
    out: dict[int, dict[str, float | None]] = {}
    for cell in summary["cells"]:
        others = {k: v for k, v in cell["labels"].items() if k != axis}
        if axis is None or others:
            raise ConfigError(
                f"grid {str(grid_dir)!r} varies more than the seed ({', '.join(others)}); a "
                "claim's config must not have its own grid axes"
            )
        if cell["status"] != "done":
            continue
        flat = {
            f"{probe}:{key}": value
            for probe, probe_values in cell["values"].items()
            for key, value in probe_values.items()
        }
        out[int(cell["labels"][axis])] = flat
    return out


def evaluate_claim(
    cid: str,
    claim: Claim,
    values: Mapping[int, Mapping[str, float | None]],
    seeds: Sequence[int],
    grid_dir: str = "",
) -> dict[str, Any]:
    """One claim's record: its rule and controls per seed, their intervals and the verdict."""
    main, controls = claim.rules(cid)
    main_rec, main_iv = _rule_record(main, values, seeds)
    control_recs = {}
    control_ivs: list[tuple[Rule, Interval]] = []
    for name, rule in controls.items():
        rec, iv = _rule_record(rule, values, seeds)
        rec["holds"] = iv.side() == (1 if rule.direction == ">" else -1)
        control_recs[name] = rec
        control_ivs.append((rule, iv))
    missing = sorted({m for r in (main, *controls.values()) for m in _missing(r, values)})
    return {
        "id": cid,
        "config": claim.config,
        "grid": grid_dir,
        "statement": claim.statement,
        "paper_value": claim.paper_value,
        "measure": claim.measure,
        "departures": claim.departures,
        **main_rec,
        "controls": control_recs,
        "missing": missing,
        "verdict": verdict(main, main_iv, control_ivs),
    }


def _rule_record(
    rule: Rule, values: Mapping[int, Mapping[str, float | None]], seeds: Sequence[int]
) -> tuple[dict[str, Any], Interval]:
    per_seed = {s: (rule.value(values[s]) if s in values else None) for s in seeds}
    iv = interval(list(per_seed.values()))
    measures = {m: {str(s): _num(values.get(s, {}).get(m)) for s in seeds} for m in rule.measures}
    record = {
        "rule": rule.text,
        "per_seed": {str(s): _num(v) for s, v in per_seed.items()},
        "measures": measures,
        "n": iv.n,
        "mean": _num(iv.mean),
        "sd": _num(iv.sd),
        "interval": None if iv.low is None else [_num(iv.low), _num(iv.high)],
    }
    return record, iv


def _missing(rule: Rule, values: Mapping[int, Mapping[str, float | None]]) -> list[str]:
    """Measures no finished seed has (a wrong key in the declaration, or a skipped value)."""
    return [m for m in rule.measures if all(v.get(m) is None for v in values.values())]


def _num(x: float | None) -> float | None:
    if x is None or not math.isfinite(float(x)):
        return None
    return round(float(x), 6)


def _payload(
    declared: PaperClaims, records: list[dict[str, Any]], seeds: list[int]
) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for rec in records:
        counts[rec["verdict"]] = counts.get(rec["verdict"], 0) + 1
    return {
        "schema": CLAIMS_SCHEMA,
        "kind": "distillscope-claims",
        "paper": declared.paper,
        "title": declared.title,
        "seeds": seeds,
        "level": 0.95,
        "verdicts": counts,
        "claims": records,
    }
