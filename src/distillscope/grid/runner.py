"""Run a grid: every cell as a normal experiment in ``<grid dir>/cells/<cell id>/``.

The grid directory is ``<output_dir>/<name>-grid-<key>`` (``key``: a hash of the config without
its ``grid`` section), so running the same command again finds it. Then:

- a cell whose ``results.json`` exists is never recomputed;
- a cell that was started and killed (``config.yaml`` but no ``results.json``) resumes from its
  checkpoints, like ``distillscope run --resume``;
- the rest start fresh. Teachers are shared through the teacher store whenever their keys match.

Before anything is written every cell's plan is resolved (once: the cell runs that plan), its
data loaded, its models built and its trackers checked, and cells that were run before are
checked to hold the same config. With ``jobs > 1`` cells run in spawned worker processes, each with
``max(1, cores // jobs)`` torch threads unless the config sets ``threads``; a cell's own
messages go to its ``run.log``. ``grid.json``, ``summary.csv`` and ``report.html`` are
rewritten whenever a cell finishes.

Two locks keep a cell from running twice at once: the grid process holds ``.grid.lock`` in the
grid directory, and whoever runs a cell (this process or a worker) holds ``.cell.lock`` in the
cell's folder for the whole cell, with its pid written in it. Workers die with the grid process,
even when it is killed with SIGKILL (see :func:`_worker_init`).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import yaml

from distillscope.checks import check_int
from distillscope.errors import ConfigError, UserError, quoted
from distillscope.grid.executors import check_executor, run_remote
from distillscope.grid.expand import MAX_CELLS_KEY, Cell, Grid, load_grid
from distillscope.grid.summary import CellOutcome, build_summary, cell_dir, write_summary
from distillscope.identity import first_difference, runtime
from distillscope.results import results_path
from distillscope.rundir import atomic_write_text
from distillscope.tracking import RunLabel, check_tracking

if TYPE_CHECKING:  # the plan (and torch) load when a grid runs, not when this is imported
    from distillscope.plan import Plan

GRID_CONFIG = "grid.yaml"
LOCK_FILE = ".grid.lock"
CELL_LOCK_FILE = ".cell.lock"
LOG_FILE = "run.log"
#: Grids with more cells than this say that their cells are being checked (it takes a while).
QUIET_CHECK_CELLS = 50
#: Seconds a cell waits for another process that holds its lock before it fails.
CELL_LOCK_WAIT_S = 5.0


class GridCellError(RuntimeError):
    """A cell crashed (not a user error); the message names the cell and its log."""


def say(msg: str) -> None:
    """Grid progress on stderr (stdout's last line is the grid directory)."""
    from distillscope.messages import say as experiment_say

    experiment_say(msg)


@dataclass(frozen=True)
class CellTask:
    """What a worker needs to run one cell (picklable: spawned workers receive it).

    Attributes:
        id: The cell's id.
        path: The cell's folder.
        plan: The cell's plan, resolved once by :func:`plan_cells` (``--data-root`` and, with
            ``jobs > 1``, the worker's thread count written in): a new cell runs it as it is.
        data_root: ``--data-root``, for a started cell, which resumes from its ``config.yaml``.
        retrain_teacher: Train teachers even when the store has them.
        threads: Torch threads of the worker (``None``: as they are).
        labels: The cell's axis values (axis key -> label), for the trackers.
    """

    id: str
    path: str
    plan: Plan
    data_root: str | None
    retrain_teacher: bool
    threads: int | None
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def tracking_label(self) -> RunLabel:
        """The cell in the trackers: ``<grid directory>/<cell id>`` and its axis values."""
        return RunLabel(f"{Path(self.path).parent.parent.name}/{self.id}", dict(self.labels))


def run_grid(
    config: str | Path | dict[str, Any] | Grid,
    overrides: list[str] | None = None,
    *,
    jobs: int = 1,
    data_root: str | None = None,
    retrain_teacher: bool = False,
    output_dir: str | Path | None = None,
    yes: bool = False,
    executor: str = "local",
    executor_options: dict[str, Any] | None = None,
) -> Path:
    """Run every cell of a grid config that is not finished; return the grid directory.

    Args:
        config: A YAML path or mapping with a ``grid:`` section, or an expanded :class:`Grid`.
        overrides: Dotted overrides applied before expansion.
        jobs: Cells run at the same time, each in its own process (``1``: one after the other,
            in this process).
        data_root: Folder holding the dataset.
        retrain_teacher: Train teachers even when the store has them (cells that run now).
        output_dir: Parent of the grid directory (default: the config's ``output_dir``).
        yes: Run even when more cells are to run than the grid's ``max_cells`` (the config's
            ``grid_max_cells``, default 100); without it such a grid is refused at once.
        executor: Where cells run (:mod:`distillscope.grid.executors`): ``local`` processes,
            ``slurm`` (submitit) or ``ray``; ``jobs`` cells at once on any of them.
        executor_options: The executor's options (slurm: partition, time_min, cpus, gpus,
            cluster; ray: address, cpus, gpus).

    Raises:
        UserError: A bad config or axis, or too many cells to run without ``yes`` (nothing
            written), or a cell that failed with a user error (other cells are kept;
            re-running continues).
        GridCellError: A cell crashed; its traceback is in its ``run.log``.
    """
    jobs = check_int("jobs", jobs, minimum=1)
    engine = check_executor(executor, executor_options)
    grid = config if isinstance(config, Grid) else load_grid(config, overrides)
    root = grid.directory(output_dir)
    plans = plan_cells(grid, data_root)
    _check_size(grid, plans, [c for c in grid.cells if not _finished(root, c)], yes)
    if len(grid.cells) > QUIET_CHECK_CELLS:  # checking takes a while: say what is going on
        say(f"grid {root}: checking the data and networks of {len(grid.cells)} cells")
    splits, images = preflight(grid, plans)
    _check_existing_cells(grid, root, plans, splits)
    (root / "cells").mkdir(parents=True, exist_ok=True)
    with _locked(root):
        atomic_write_text(root / GRID_CONFIG, yaml.safe_dump(grid.source, sort_keys=False))
        todo = [c for c in schedule(grid) if not _finished(root, c)]
        done = len(grid.cells) - len(todo)
        say(
            f"grid {root}: {len(grid.cells)} cells, {done} finished, {len(todo)} to run"
            + (f" with {jobs} jobs" if todo else "")
        )
        if todo:
            say(f"grid: estimated cost: {estimate(grid, root, plans, todo, images, jobs)}")
        runner = _GridProgress(grid, root, jobs, total=len(todo))
        runner.publish()
        threads = None if jobs == 1 else max(1, _cores() // jobs)
        if engine.name != "local":  # cells run on other machines: as many threads as CPUs given
            threads = engine.cpus
        tasks = [_task(root, c, plans[c.id], data_root, retrain_teacher, threads) for c in todo]
        try:
            if engine.name != "local":
                run_remote(engine, tasks, jobs, runner.started, runner.finished,
                           lambda: runner.failed is not None, root, run_cell,
                           lambda cid, error: CellOutcome(cid, "failed", 0.0, error))  # fmt: skip
            elif jobs == 1 or len(tasks) <= 1:
                for task in tasks:
                    runner.started(task.id)
                    runner.finished(run_cell(task))
                    if runner.failed:
                        break
            else:
                _run_parallel(tasks, jobs, runner)
        finally:
            runner.running.clear()  # an interrupted cell is partial: a re-run resumes it
            runner.publish()
        runner.raise_failure()
    say(f"grid report {root / 'report.html'}")
    return root


def resume_grid(
    grid_dir: str | Path,
    *,
    jobs: int = 1,
    data_root: str | None = None,
    yes: bool = False,
    executor: str = "local",
    executor_options: dict[str, Any] | None = None,
) -> Path:
    """Continue the grid in ``grid_dir`` from the ``grid.yaml`` it saved."""
    root = Path(grid_dir)
    if not (root / GRID_CONFIG).is_file():
        raise ConfigError(
            f"{str(root)!r} is not a grid directory (no {GRID_CONFIG}); pass the directory "
            "printed by `distillscope run` on a grid config"
        )
    grid = load_grid(root / GRID_CONFIG)
    expected = grid.directory(root.parent)
    if expected.resolve() != root.resolve():
        raise ConfigError(
            f"{str(root)!r}: its {GRID_CONFIG} belongs to the grid directory {expected.name!r}; "
            "rename the folder back or re-run the config"
        )
    return run_grid(grid, jobs=jobs, data_root=data_root, output_dir=root.parent, yes=yes,
                    executor=executor, executor_options=executor_options)  # fmt: skip


# --------------------------------------------------------------------------- checks


def plan_cells(grid: Grid, data_root: str | None = None) -> dict[str, Plan]:
    """Each cell's plan (:func:`~distillscope.plan.resolve_plan`), with ``data_root`` written
    in: resolved here once, checked by :func:`preflight`, and run as it is by the cell."""
    from distillscope.plan import resolve_plan, with_data_root

    plans: dict[str, Plan] = {}
    for cell in grid.cells:
        try:
            plans[cell.id] = resolve_plan(with_data_root(cell.config, data_root))
        except UserError as exc:
            raise type(exc)(f"grid cell {cell.id}: {exc}") from None
    return plans


def preflight(grid: Grid, plans: dict[str, Plan]) -> tuple[dict[str, Any], dict[str, int]]:
    """Load each cell's data and build its models from its plan, so a bad cell fails before
    anything runs.

    Datasets are loaded once per distinct data section; nothing is trained or written. The
    built networks are dropped at once (the cell builds them again when it runs: building is
    cheap on small models, and a grid's hundreds of cells could not keep theirs in memory);
    the plans are kept. Returns, per cell id, its :class:`~distillscope.splits.Splits` (shared
    between cells of one data section) and the training images its networks go through
    (epochs x images per epoch, summed over its teachers and students).
    """
    from distillscope.plan import build_members, load_plan_splits

    splits: dict[str, Any] = {}
    by_cell: dict[str, Any] = {}
    images: dict[str, int] = {}
    trackers: set[str] = set()
    for cell in grid.cells:
        plan = plans[cell.id]
        own = {n: m.data.model_dump() for n, m in plan.members.items() if m.data is not None}
        key = repr([plan.data.model_dump(mode="json"), own])
        tracking = repr([plan.tracking.model_dump(), plan.name])
        try:
            if tracking not in trackers:  # the cells' trackers can run (their packages, folders)
                check_tracking(plan.tracking, plan.name)
                trackers.add(tracking)
            if key not in splits:
                splits[key] = load_plan_splits(plan)
            build_members(plan, splits[key])  # the dry run; the networks are not kept
        except UserError as exc:
            raise type(exc)(f"grid cell {cell.id}: {exc}") from None
        by_cell[cell.id] = splits[key]
        images[cell.id] = sum(
            m.train.epochs * _per_epoch(len(splits[key].train_of(n)), m.train)
            for n, m in plan.members.items()
        )
    return by_cell, images


def _per_epoch(size: int, train: Any) -> int:
    if train.max_batches is None:
        return size
    return min(size, train.max_batches * train.batch_size)


def _finished(root: Path, cell: Cell) -> bool:
    return results_path(cell_dir(root, cell)).is_file()


def _trainings(plan: Plan) -> tuple[int, int]:
    """(networks, epochs over all of them) a cell trains at most (stored teachers are reused)."""
    return len(plan.members), sum(m.train.epochs for m in plan.members.values())


def _check_size(grid: Grid, plans: dict[str, Plan], todo: list[Cell], yes: bool) -> None:
    """Refuse, at once, to start more than ``grid.max_cells`` cells unless told ``yes``."""
    if yes or len(todo) <= grid.max_cells:
        return
    networks = sum(_trainings(plans[c.id])[0] for c in todo)
    raise UserError(
        f"grid {grid.name}: {len(todo)} cells to run ({networks} network trainings) is more "
        f"than {grid.max_cells} without confirmation; run it with --yes, or write "
        f"{MAX_CELLS_KEY}: {len(todo)} in the config"
    )


def estimate(
    grid: Grid,
    root: Path,
    plans: dict[str, Plan],
    todo: list[Cell],
    images: dict[str, int],
    jobs: int,
) -> str:
    """One line: what the cells to run train, and how long that takes at the pace of the
    finished cells (their mean wall time; none finished: no time is guessed).

    When the finished cells trained teachers (not reused from the store), the time is a range:
    from their pace without the teachers' training epochs (the cells to run find the teachers
    stored) to their whole pace (they train their own)."""
    networks = sum(_trainings(plans[c.id])[0] for c in todo)
    epochs = sum(_trainings(plans[c.id])[1] for c in todo)
    seen = sum(images.get(c.id, 0) for c in todo)
    text = (
        f"{networks} network trainings in {len(todo)} cells, {epochs} epochs, {seen:,} "
        "training images (at most: stored teachers are reused)"
    )
    done = [c for c in grid.cells if _finished(root, c)]
    timed = [pace for c in done if (pace := _pace(root, c))]
    if not timed:
        return text
    mean = sum(t for t, _ in timed) / len(timed)
    teachers = sum(min(t, max(0.0, s)) for t, s in timed) / len(timed)  # within [0, t]
    scale = len(todo) / max(1, min(jobs, len(todo)))
    over = f" over {jobs} jobs" if jobs > 1 else ""
    low, high = _clock((mean - teachers) * scale), _clock(mean * scale)
    if low == high:  # no teacher training, or too little to show
        return (
            text + f"; about {high} at the {mean:.1f} s mean of {len(timed)} finished cells{over}"
        )
    return text + (
        f"; about {low} to {high}{over} at the "
        f"{mean:.1f} s mean of {len(timed)} finished cells, {teachers:.1f} s of it training "
        "teachers (the low end: the cells to run find them stored)"
    )


def _pace(root: Path, cell: Cell) -> tuple[float, float] | None:
    """A finished cell's wall time and the seconds of it in the training epochs of teachers
    it trained (not reused from the store; 0 when its results do not say), read once from
    its results; ``None`` without a positive wall time."""
    try:
        data = json.loads(results_path(cell_dir(root, cell)).read_text())
        value = data["run"]["duration_s"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(value, (int, float)) or value <= 0:
        return None
    try:
        models, training = data["models"], data["training"]
        teachers = sum(
            float(row["time"])
            for name, model in models.items()
            if model.get("role") == "teacher" and model.get("reused") is False
            for row in training.get(name, [])
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        teachers = 0.0
    return float(value), teachers


def _clock(seconds: float) -> str:
    """``"2 h 05 min"``, ``"3 min 20 s"``, ``"12 s"``."""
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"


def _check_existing_cells(
    grid: Grid, root: Path, plans: dict[str, Plan], splits: dict[str, Any]
) -> None:
    """A cell folder from an earlier run must hold a run of this cell: the same identity
    (config, data fingerprints, runtime; :mod:`distillscope.identity`), else its results would
    be reported for a cell they were not computed for."""
    from distillscope.plan import run_identity
    from distillscope.rundir import RunDir
    from distillscope.train.seeding import resolve_device

    for cell in grid.cells:
        run = RunDir(cell_dir(root, cell))
        if not run.config.is_file():
            continue
        saved = run.read_identity()
        if saved is None or not isinstance(saved.get("identity"), dict):
            raise ConfigError(
                f"grid cell {cell.id}: {run.path} has no readable identity.json (made by an "
                "older distillscope, or damaged), so what it was computed from cannot be "
                "checked; move that folder away to recompute the cell"
            )
        before = saved["identity"]
        plan = plans[cell.id]
        threads = plan.threads  # unset: the cell keeps the count it started with
        if threads is None:
            threads = (before.get("runtime") or {}).get("threads")
        rt = runtime(resolve_device(plan.device), threads)
        diff = first_difference(before, run_identity(plan, splits[cell.id], rt))
        if diff is not None:
            where, old, new = diff
            raise ConfigError(
                f"grid cell {cell.id}: {run.path} holds a run of another {_what(where)} "
                f"({where}: {quoted(old)} there, {quoted(new)} now); move that folder away (or "
                "pass another --output-dir) to recompute the cell"
            )


def _what(where: str) -> str:
    """What an identity path belongs to, for messages."""
    return {"config": "config", "data": "data", "plugins": "plugin code"}.get(
        where.split(".")[0], "runtime"
    )


def schedule(grid: Grid) -> list[Cell]:
    """The order cells start in: the seed axis varies fastest.

    Cells that differ only in their seed never share a teacher, so neighbours running side by
    side do not train the same teacher twice; later cells then find the shared ones stored.
    """
    seed = grid.seed_axis
    if seed is None:
        return list(grid.cells)
    position = {a.key: {lab: i for i, lab in enumerate(a.labels)} for a in grid.axes}

    def key(cell: Cell) -> tuple[int, ...]:
        rest = [position[a.key][cell.labels[a.key]] for a in grid.axes if a.key != seed]
        return (*rest, position[seed][cell.labels[seed]])

    return sorted(grid.cells, key=key)


# --------------------------------------------------------------------------- running


def _task(
    root: Path, cell: Cell, plan: Plan, data_root: str | None, retrain: bool, threads: int | None
) -> CellTask:
    own = threads if plan.threads is None else None  # a count the config sets is kept
    return CellTask(
        id=cell.id,
        path=str(cell_dir(root, cell)),
        # the cell's config.yaml records the count that ran
        plan=plan if own is None else plan.with_threads(own),
        data_root=data_root,
        retrain_teacher=retrain,
        threads=own,
        labels=dict(cell.labels),
    )


def run_cell(task: CellTask) -> CellOutcome:
    """Run (or resume) one cell into its folder; messages go to the cell's ``run.log``.

    The cell's ``.cell.lock`` is held meanwhile; when another process holds it for more than
    :data:`CELL_LOCK_WAIT_S` seconds the cell fails with a user error naming that process.
    """
    path = Path(task.path)
    path.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with _cell_lock(path, task.id) as busy:
        if busy is not None:
            with open(path / LOG_FILE, "a", encoding="utf-8") as log:
                print(f"distillscope: error: {busy}", file=log)
            return CellOutcome(task.id, "failed", time.time() - start, busy, user_error=True)
        if results_path(path).is_file():  # finished by the process we waited for
            return CellOutcome(task.id, "done", time.time() - start)
        return _run_locked_cell(task, path, start)


def _run_locked_cell(task: CellTask, path: Path, start: float) -> CellOutcome:
    from distillscope.experiment import resume_experiment, run_experiment

    with (
        open(path / LOG_FILE, "a", encoding="utf-8") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        print(f"--- {stamp} cell {task.id} (pid {os.getpid()})", file=log, flush=True)
        if task.threads is not None:
            import torch

            torch.set_num_threads(task.threads)
        try:
            if (path / "config.yaml").is_file():
                # a cell started and killed before: continued like `distillscope run --resume`,
                # from the config.yaml it saved (that entry point reads and plans it again)
                resume_experiment(path, data_root=task.data_root,
                                  tracking_label=task.tracking_label)  # fmt: skip
            else:  # the plan the grid resolved and checked: not validated or resolved again
                run_experiment(plan=task.plan, retrain_teacher=task.retrain_teacher, run_at=path,
                               tracking_label=task.tracking_label)  # fmt: skip
        except UserError as exc:
            print(f"distillscope: error: {exc}", file=log)
            return CellOutcome(task.id, "failed", time.time() - start, str(exc), user_error=True)
        except Exception as exc:  # a crash: keep the traceback in the cell's log
            traceback.print_exc(file=log)
            line = f"{type(exc).__name__}: {exc}".splitlines()[0]
            return CellOutcome(task.id, "failed", time.time() - start, line)
    return CellOutcome(task.id, "done", time.time() - start)


def _run_parallel(tasks: list[CellTask], jobs: int, runner: _GridProgress) -> None:
    ctx = multiprocessing.get_context("spawn")
    # Workers are spawned by submit() in this thread (no max_tasks_per_child: the pool never
    # respawns them from its manager thread), which outlives them: the parent-death signal
    # they set is tied to the thread that spawned them.
    with ProcessPoolExecutor(
        max_workers=min(jobs, len(tasks)),
        mp_context=ctx,
        initializer=_worker_init,
        initargs=(os.getpid(),),
    ) as pool:
        pending: dict[Future[CellOutcome], str] = {}
        queue = list(tasks)
        try:
            while queue or pending:
                while queue and len(pending) < jobs and not runner.failed:
                    task = queue.pop(0)
                    pending[pool.submit(run_cell, task)] = task.id
                    runner.started(task.id)
                if not pending:
                    break
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    cid = pending.pop(fut)
                    try:
                        runner.finished(fut.result())
                    except Exception as exc:  # the worker process itself died
                        runner.finished(CellOutcome(cid, "failed", 0.0, f"worker died: {exc!r}"))
                if runner.failed and queue:
                    say(f"grid: stopping after the failure; {len(pending)} running cells finish")
                    queue.clear()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def _worker_init(parent: int) -> None:
    """Make a worker die with the grid process, even one killed with SIGKILL.

    On Linux the kernel sends the worker SIGKILL when its parent dies (``PR_SET_PDEATHSIG``);
    if the parent died before that was set, the worker exits now. Everywhere, a daemon thread
    waits for the parent to go and then ends the worker: a worker must never train on outside
    the grid's lock (a re-run would train the same cell twice at once).
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes
            import signal

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(_ORPHANED)
    threading.Thread(target=_watch_parent, args=(parent,), name="grid-parent", daemon=True).start()


_PR_SET_PDEATHSIG = 1
_ORPHANED = 75  # a worker's exit code when its grid process is gone


def _watch_parent(parent: int, poll_s: float = 0.5) -> None:
    """Exit the process once ``parent`` is gone (re-parented, or its sentinel pipe closed)."""
    proc = multiprocessing.parent_process()
    while os.getppid() == parent and (proc is None or proc.is_alive()):
        time.sleep(poll_s)
    os._exit(_ORPHANED)


class _GridProgress:
    """Tracks cells of this invocation and keeps ``grid.json`` and the report up to date."""

    def __init__(self, grid: Grid, root: Path, jobs: int, total: int) -> None:
        self.grid, self.root, self.jobs, self.total = grid, root, jobs, total
        self.outcomes: dict[str, CellOutcome] = {}
        self.running: set[str] = set()
        self.failed: CellOutcome | None = None
        self.count = 0

    def started(self, cid: str) -> None:
        self.running.add(cid)
        self.publish()

    def finished(self, outcome: CellOutcome) -> None:
        self.running.discard(outcome.id)
        self.outcomes[outcome.id] = outcome
        self.count += 1
        where = f"{self.count}/{self.total}"
        if outcome.status == "done":
            say(f"grid: cell {where} {outcome.id} done in {outcome.seconds:.1f} s")
        else:
            say(f"grid: cell {where} {outcome.id} FAILED: {outcome.error}")
            self.failed = self.failed or outcome
        self.publish()

    def publish(self) -> None:
        from distillscope.report.grid import render_grid_report

        payload = build_summary(self.grid, self.root, self.outcomes, self.running, self.jobs)
        write_summary(self.root, payload)
        render_grid_report(self.root)

    def raise_failure(self) -> None:
        if self.failed is None:
            return
        log = Path("cells") / self.failed.id / LOG_FILE
        msg = (
            f"grid cell {self.failed.id} failed: {self.failed.error} (log: {self.root / log}); "
            "fix it and run the same command again: finished cells are kept"
        )
        if self.failed.user_error:
            raise UserError(msg)
        raise GridCellError(msg)


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on the grid directory (two runs of one grid would collide)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        yield
        return
    with open(root / LOCK_FILE, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"grid {root} is being run by another process; wait for it or stop it first"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def _cell_lock(path: Path, cell: str) -> Iterator[str | None]:
    """Hold ``path/.cell.lock`` (with this pid written in it) while the block runs.

    Yields ``None`` when the lock is held, or the one-line error when another process kept it
    for :data:`CELL_LOCK_WAIT_S` seconds.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        yield None
        return
    with open(path / CELL_LOCK_FILE, "a+", encoding="utf-8") as fh:
        deadline = time.monotonic() + CELL_LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield (
                        f"cell {cell} is being run by another process{_holder(fh)}; wait for it "
                        "to finish or stop it, then run the same command again"
                    )
                    return
                time.sleep(0.1)
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(f"{os.getpid()}\n")
            fh.flush()
            yield None
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _holder(fh: IO[str]) -> str:
    """`` (pid N)`` from a lock file, if it names one."""
    fh.seek(0)
    text = fh.read().strip()
    return f" (pid {text})" if text.isdigit() else ""


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
