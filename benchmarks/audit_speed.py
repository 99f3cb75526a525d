"""How long the quickstart's audit takes, probe by probe, before and after a change (issue 22.6).

Setup: the quickstart's networks and probes (``configs/quickstart.yaml``: accuracy, agreement,
class_similarity, adherence, adversarial, decision_map, each with its quickstart parameters),
on its 2,000 held-out Fashion-MNIST images. The models come from a finished quickstart run
(``--run-dir``: its ``config.yaml`` and ``models/*.safetensors``); without one, the script
builds the quickstart's networks and trains them briefly itself (``--train-batches`` SGD steps
each, seeded, so every call gets the same stand-ins). A round runs the probes in the config's
order on a fresh ``ProbeData`` (what one run pays), timing each probe's wall time and the
process's CPU time, after an untimed warm-up pass of every model.

Before and after: the code timed is whatever ``distillscope`` imports (its source folder and
commit are recorded). ``--label before`` under ``PYTHONPATH=<the old src>``, then ``--label
after`` under the new one, each add their rounds to the JSON; or ``--before-src <old src>``
alternates the two itself, one child process per round (before, after, after, before, ...).
Medians per label and the ratio after / before per probe and for the whole audit are
recomputed from all rounds so far. Each label's probe values are stored and compared:
``values_identical`` says, per probe, whether after gave exactly the numbers of before.

Usage: ``python benchmarks/audit_speed.py --before-src ../main/src --run-dir RUN [--reps 2]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import distillscope
from distillscope.config import load_config
from distillscope.data.base import iter_batches
from distillscope.errors import UserError
from distillscope.plan import build_members, load_plan_splits, resolve_plan, roles_of
from distillscope.probes import create_probe
from distillscope.probes.base import ProbeData
from distillscope.train.checkpoint import load_model_weights
from distillscope.train.seeding import seed_everything

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "audit_speed.json"
QUICKSTART = HERE.parent / "configs" / "quickstart.yaml"
LABELS = ("before", "after")


def load_models(run_dir: Path | None, train_batches: int) -> tuple[Any, dict, ProbeData, Any]:
    """The plan, the models (eval mode), the held-out data and the roles."""
    plan = resolve_plan(load_config(run_dir / "config.yaml" if run_dir else QUICKSTART))
    seed_everything(plan.seed)
    splits = load_plan_splits(plan)
    members = build_members(plan, splits)
    for i, (name, member) in enumerate(members.items()):
        if run_dir is not None:
            load_model_weights(run_dir / "models" / f"{name}.safetensors", member.model)
        else:  # a stand-in: a few seeded SGD steps on the training images, its own order
            seed_everything(plan.seed)
            model = member.model.train()
            opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
            order = torch.Generator().manual_seed(plan.seed + i)  # students differ
            batches = iter_batches(splits.train, 128, shuffle=True, generator=order)
            for _, batch in zip(range(train_batches), batches, strict=False):
                opt.zero_grad()
                F.cross_entropy(model(batch.inputs), batch.targets).backward()
                opt.step()
    models = {name: m.model.eval() for name, m in members.items()}
    data = ProbeData(splits.test, splits.test.info, device="cpu")
    return plan, models, data, roles_of(members)


def weights_digest(models: dict) -> str:
    h = hashlib.sha256()
    for name, model in models.items():
        h.update(name.encode())
        for tensor in model.state_dict().values():
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def source_commit() -> dict[str, Any]:
    """Which code ``distillscope`` was imported from: its checkout's folder name and commit."""
    src = Path(distillscope.__file__).resolve().parents[1]
    git = ["git", "-C", str(src)]
    try:
        commit = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True,
                                text=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run([*git, "status", "--porcelain", "--", "."], check=True,
                               capture_output=True, text=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        commit, dirty = "unknown", ""
    return {"checkout": src.parent.name, "commit": commit, "uncommitted_changes": bool(dirty)}


def one_round(
    plan: Any, models: dict, base: ProbeData, roles: Any, only: list[str] | None
) -> tuple[dict, dict]:
    """Every probe once, in the config's order, on a fresh ProbeData: times and results."""
    data = ProbeData(base.dataset, base.info, device=base.device)
    times: dict[str, dict[str, float]] = {}
    results: dict[str, Any] = {}
    for name, params in plan.probes.items():
        if only and name not in only:
            continue
        probe = create_probe(name, **{**plan.probe_defaults, **(params or {})})
        seed_everything(plan.seed)  # as probes/run.py does before each probe
        wall, cpu = time.perf_counter(), time.process_time()
        result = probe.run(models, data, roles)
        times[name] = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
        results[name] = {"values": result.values, "series": result.series}
        print(f"  {name}: {times[name]['wall']:.1f} s (cpu {times[name]['cpu']:.1f} s)", flush=True)
    times["total"] = {k: sum(t[k] for t in times.values()) for k in ("wall", "cpu")}
    return times, results


def warm_up(models: dict, data: ProbeData) -> None:
    """One forward and backward pass of every model on one batch (first-call costs)."""
    x = torch.stack([data.dataset[i][0] for i in range(64)]).requires_grad_(True)
    for model in models.values():
        torch.autograd.grad(model(x).sum(), x)


def summarise(record: dict[str, Any]) -> None:
    """Medians per label, ratios after / before, values compared (in place)."""
    record["median_s"] = {
        label: {
            probe: {k: statistics.median(r[probe][k] for r in rounds) for k in ("wall", "cpu")}
            for probe in rounds[0]
        }
        for label, rounds in record["rounds"].items()
        if rounds
    }
    med = record["median_s"]
    if all(label in med for label in LABELS):
        record["ratios"] = {
            probe: {
                k: med["after"][probe][k] / med["before"][probe][k]
                if med["before"][probe][k]
                else None
                for k in ("wall", "cpu")
            }
            for probe in med["after"]
        }
    values = record["values"]
    if all(label in values for label in LABELS):
        record["values_identical"] = {
            probe: values["after"][probe] == values["before"][probe] for probe in values["before"]
        }


def measure(args: argparse.Namespace) -> None:
    """This process's rounds under ``args.label``, added to ``args.out``."""
    torch.set_num_threads(args.threads)
    plan, models, data, roles = load_models(args.run_dir, args.train_batches)
    warm_up(models, data)
    record = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if record.get("benchmark") != "audit_speed" or record.get("digest") != weights_digest(models):
        record = {"benchmark": "audit_speed", "digest": weights_digest(models), "rounds": {},
                  "values": {}, "code": {}, "calls": []}  # fmt: skip
    record["setup"] = {
        "models": "run" if args.run_dir else f"stand-ins, {args.train_batches} SGD steps each",
        "probes": {name: {**plan.probe_defaults, **(p or {})} for name, p in plan.probes.items()},
        "threads": args.threads,
        "n_heldout": len(data.dataset),
    }
    record["code"][args.label] = source_commit()
    rounds = record["rounds"].setdefault(args.label, [])
    for r in range(args.reps):
        print(f"{args.label} round {len(rounds) + 1} ({distillscope.__file__})", flush=True)
        times, results = one_round(plan, models, data, roles, args.probes)
        rounds.append(times)
        stored = record["values"].setdefault(args.label, results)
        if stored != results:
            raise SystemExit(f"{args.label}: the probes gave other values in round {r + 1}")
    record["calls"].append({"label": args.label, "load_average": list(os.getloadavg()),
                            "time": time.strftime("%Y-%m-%dT%H:%M:%S")})  # fmt: skip
    record.update(torch=torch.__version__, python=platform.python_version(),
                  cpu_count=os.cpu_count())  # fmt: skip
    summarise(record)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(args.out)  # never a half-written result
    for probe, ratio in record.get("ratios", {}).items():
        print(f"{probe}: after / before {ratio['wall']:.3f} (cpu {ratio['cpu']:.3f})")
    if "values_identical" in record:
        print(f"values identical: {record['values_identical']}")


def alternate(args: argparse.Namespace) -> None:
    """``--reps`` rounds of each label, one child process per round, alternating."""
    here = str(Path(distillscope.__file__).resolve().parents[1])
    sources = {"before": str(args.before_src.resolve()), "after": here}
    for r in range(args.reps):
        for label in LABELS if r % 2 == 0 else LABELS[::-1]:
            cmd = [sys.executable, __file__, "--label", label, "--reps", "1",
                   "--threads", str(args.threads), "--out", str(args.out),
                   "--train-batches", str(args.train_batches)]  # fmt: skip
            if args.probes:
                cmd += ["--probes", *args.probes]
            if args.run_dir is not None:
                cmd += ["--run-dir", str(args.run_dir)]
            env = {**os.environ, "PYTHONPATH": sources[label]}
            subprocess.run(cmd, check=True, env=env)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, help="a finished quickstart run to audit")
    parser.add_argument("--label", choices=LABELS, help="the code this process times")
    parser.add_argument("--before-src", type=Path, help="the old code's src folder: alternate")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="the quickstart's 2 cores")
    parser.add_argument("--train-batches", type=int, default=30, help="stand-ins' SGD steps")
    parser.add_argument("--probes", nargs="+", help="time only these (a quick check)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if (args.label is None) == (args.before_src is None):
        parser.error("give --label (time this code) or --before-src (alternate both)")
    try:
        alternate(args) if args.before_src is not None else measure(args)
    except UserError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
