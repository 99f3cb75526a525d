"""Run a config, kill it with SIGKILL mid-training, resume it; print the run directory.

The run is started as ``distillscope run CONFIG`` in a subprocess; as soon as ``metrics.jsonl``
shows model ``--model`` (a student, or a group's member) finished epoch ``--after-epoch``, the
process is killed with ``kill -9`` (no clean-up of any kind), then ``distillscope run --resume``
continues it. Compare the result with an uninterrupted run of the same config with
``scripts/compare_runs.py``: a resume must reach bit-identical weights.

Usage: ``python scripts/kill_and_resume.py CONFIG --model crd --after-epoch 1 --output-dir DIR
[override ...]``
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def epochs_done(run: Path, model: str) -> int:
    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        return 0
    done = 0
    for line in metrics.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("model") == model and isinstance(row.get("epoch"), int):
            done = max(done, row["epoch"])
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--model", required=True)
    parser.add_argument("--after-epoch", type=int, default=1)
    parser.add_argument("--output-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    cli = [sys.executable, "-m", "distillscope", "run"]
    args.output_dir.mkdir(parents=True, exist_ok=True)
    before = set(args.output_dir.iterdir())
    proc = subprocess.Popen([*cli, args.config, *args.overrides, "--output-dir",
                             str(args.output_dir), "--no-progress"])  # fmt: skip
    run = None
    while proc.poll() is None:
        new = [p for p in args.output_dir.iterdir() if p not in before and p.is_dir()]
        run = new[0] if new else None
        if run is not None and epochs_done(run, args.model) >= args.after_epoch:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            break
        time.sleep(0.2)
    else:
        print(f"the run ended (exit {proc.returncode}) before {args.model} reached epoch "
              f"{args.after_epoch}", file=sys.stderr)  # fmt: skip
        return 1
    assert run is not None
    print(f"killed after {args.model} epoch {epochs_done(run, args.model)}", file=sys.stderr)
    code = subprocess.call([*cli, "--resume", str(run), "--no-progress"])
    print(run)
    return code


if __name__ == "__main__":
    sys.exit(main())
