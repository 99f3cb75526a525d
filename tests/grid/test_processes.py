"""Grid worker processes: they die with a killed grid process, and a cell runs in one at a time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from distillscope.errors import UserError
from distillscope.grid import load_grid, run_grid
from distillscope.grid.runner import CELL_LOCK_FILE
from tests.grid.grid_parts import tiny_grid, write_yaml

fcntl = pytest.importorskip("fcntl")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc"),
]

SRC = Path(__file__).resolve().parents[2] / "src"


def env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(SRC), path) if p)}


def alive(pid: int) -> bool:
    """Whether any thread of ``pid`` runs (a zombie, dead but not yet reaped, counts as gone).

    Every thread counts: a killed multi-threaded process shows its first thread as a zombie
    while the others are still exiting and its open files (and their locks) not yet closed.
    """
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False
    for task in tasks:
        try:
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            return True
    return False


def held(lock: Path) -> bool:
    """Whether another process holds the flock on ``lock`` now."""
    with open(lock, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def lock_pid(lock: Path) -> int | None:
    text = lock.read_text().strip() if lock.is_file() else ""
    return int(text) if text.isdigit() else None


def wait_for(predicate, timeout: float, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def epochs_logged(metrics: Path) -> list[tuple[str, int]]:
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return [(r["model"], r["epoch"]) for r in rows if isinstance(r.get("epoch"), int)]


def test_kill_9_on_the_grid_process_kills_its_workers_and_a_rerun_finishes_the_rest(tmp_path):
    train = {**tiny_grid(tmp_path)["train"], "epochs": 6, "max_batches": 8}
    raw = tiny_grid(tmp_path, {"T": [1, 4], "seed": [0, 1, 2]}, train=train)
    path = write_yaml(tmp_path / "grid.yaml", raw)
    cmd = [sys.executable, "-m", "distillscope", "run", str(path), "--jobs", "2"]
    parent = subprocess.Popen(
        cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    workers: set[int] = set()
    try:
        runs = tmp_path / "runs"

        def cells() -> list[Path]:
            return sorted(runs.glob("*/cells/*")) if runs.is_dir() else []

        def mid_grid() -> bool:  # a cell finished and a worker holds another one's lock
            done = [c for c in cells() if (c / "results.json").is_file()]
            busy = [c for c in cells() if not (c / "results.json").is_file()]
            return bool(done) and any(held(c / CELL_LOCK_FILE) for c in busy)

        assert wait_for(mid_grid, timeout=120), parent.communicate(timeout=60)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        workers = {p for c in cells() if (p := lock_pid(c / CELL_LOCK_FILE)) is not None}
        assert workers and parent.pid not in workers
        assert wait_for(lambda: not any(alive(p) for p in workers), timeout=5), [
            p for p in workers if alive(p)
        ]
        # the kernel closes a killed process's files as its last thread exits: give it a moment
        assert wait_for(lambda: not any(held(c / CELL_LOCK_FILE) for c in cells()), timeout=5)
    finally:
        for pid in workers:  # only if the test failed: do not leave them training
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()
        parent.communicate()

    root = next(runs.iterdir())
    finished = {
        c.name: (c / "results.json").stat().st_mtime_ns
        for c in cells()
        if (c / "results.json").is_file()
    }
    assert 1 <= len(finished) < 6
    again = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"6 cells, {len(finished)} finished, {6 - len(finished)} to run" in again.stderr
    assert again.stdout.strip().splitlines()[-1] == str(root)
    for cell, mtime in finished.items():
        assert (root / "cells" / cell / "results.json").stat().st_mtime_ns == mtime, cell
    summary = json.loads((root / "grid.json").read_text())
    assert [c["status"] for c in summary["cells"]] == ["done"] * 6
    for cell in cells():
        logged = epochs_logged(cell / "metrics.jsonl")
        assert len(logged) == len(set(logged)), (cell.name, logged)
        assert {e for m, e in logged if m == "kd"} == set(range(1, 7)), cell.name


def test_a_worker_exits_when_its_parent_dies_without_the_parent_death_signal(tmp_path):
    """The portable fallback alone: a daemon thread that watches the parent."""
    script = textwrap.dedent(
        """
        import multiprocessing, os, sys, time

        def child(parent, out):
            from distillscope.grid.runner import _watch_parent
            import threading
            threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
            with open(out, "w") as fh:
                fh.write(str(os.getpid()))
            time.sleep(60)

        if __name__ == "__main__":
            ctx = multiprocessing.get_context("spawn")
            proc = ctx.Process(target=child, args=(os.getpid(), sys.argv[1]))
            proc.start()
            while not (os.path.exists(sys.argv[1]) and os.path.getsize(sys.argv[1])):
                time.sleep(0.05)
            os.kill(os.getpid(), 9)
        """
    )
    out, main = tmp_path / "child.pid", tmp_path / "orphan.py"  # spawn re-imports main
    main.write_text(script)
    done = subprocess.run(
        [sys.executable, str(main), str(out)], env=env(), timeout=60, capture_output=True
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    pid = int(out.read_text())
    try:
        assert wait_for(lambda: not alive(pid), timeout=5)
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_cell_held_by_another_process_fails_in_one_line_and_is_not_run(tmp_path, monkeypatch):
    from distillscope.grid import runner

    monkeypatch.setattr(runner, "CELL_LOCK_WAIT_S", 0.3)
    raw = tiny_grid(tmp_path, {"T": [1], "seed": [0]})
    cell = load_grid(raw).directory() / "cells" / "T=1,seed=0"
    cell.mkdir(parents=True)
    with open(cell / CELL_LOCK_FILE, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write("4242\n")
        fh.flush()
        with pytest.raises(UserError) as err:
            run_grid(raw)
    msg = str(err.value)
    assert "cell T=1,seed=0 is being run by another process (pid 4242)" in msg
    assert "\n" not in msg and not (cell / "config.yaml").exists()
    assert "is being run by another process" in (cell / "run.log").read_text()
    # once the lock is free the same command runs the cell, and records its own pid
    run_grid(raw)
    assert (cell / "results.json").is_file() and lock_pid(cell / CELL_LOCK_FILE) == os.getpid()
