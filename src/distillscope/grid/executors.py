"""Where a grid's cells run: local processes (the default), Slurm through submitit, or Ray.

Each executor runs the same :func:`~distillscope.grid.runner.run_cell` on the same
:class:`~distillscope.grid.runner.CellTask` (the cell's plan, resolved and checked once), so a
cell computes the same numbers whichever ran it, finished cells are skipped before any executor
is asked, and the grid summary is built from the cells' folders afterwards, the same way.
submitit and Ray are optional extras, imported only when chosen (one line names the extra when
missing); their own engines schedule, distillscope never does.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillscope.errors import ConfigError, quoted

__all__ = ["EXECUTORS", "Executor", "check_executor"]

#: The executors ``--executor`` takes.
EXECUTORS = ("local", "slurm", "ray")
#: Options each executor takes (``--slurm-*``, ``--ray-address``, or ``executor_options``).
OPTIONS: dict[str, dict[str, type]] = {
    "local": {},
    "slurm": {"partition": str, "time_min": int, "cpus": int, "gpus": int, "cluster": str},
    "ray": {"address": str, "cpus": int, "gpus": int},
}
#: Seconds between polls of submitted jobs.
POLL_S = 1.0
#: A traceback's last line: ``SomeError: message``.
_RAISED = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b.*")


@dataclass(frozen=True)
class Executor:
    """A checked executor choice: ``name`` of :data:`EXECUTORS` and its options."""

    name: str = "local"
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def cpus(self) -> int | None:
        """CPUs per cell, when the executor is told (threads of each cell)."""
        value = self.options.get("cpus")
        return None if value is None else int(value)


def check_executor(name: str, options: Mapping[str, Any] | None = None) -> Executor:
    """The executor ``name`` with ``options``, checked: an unknown name or option, a bad value,
    or a missing extra is a one-line ConfigError (before any cell runs).

    Example:
        >>> check_executor("local").name
        'local'
    """
    if name not in EXECUTORS:
        raise ConfigError(
            f"--executor {quoted(name)} is unknown; use one of {', '.join(EXECUTORS)}"
        )
    options = {k: v for k, v in (options or {}).items() if v is not None}
    allowed = OPTIONS[name]
    for key, value in options.items():
        if key not in allowed:
            valid = ", ".join(allowed) or "none"
            raise ConfigError(f"executor {name} takes no option {key!r}; its options: {valid}")
        kind = allowed[key]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"executor {name}: {key}={value!r} is invalid; use an integer >= 1")
        if kind is str and (not isinstance(value, str) or not value):
            raise ConfigError(f"executor {name}: {key}={value!r} is invalid; give a name")
    if name == "slurm" and options.get("cluster", "slurm") not in ("slurm", "local", "debug"):
        raise ConfigError(
            f"executor slurm: cluster={options['cluster']!r} is invalid; use slurm, or local / "
            "debug (submitit's executors on this machine, for trying a grid)"
        )
    _module(name)  # the extra is installed
    return Executor(name, options)


def _module(name: str) -> Any:
    """The engine's module (``submitit`` for slurm, ``ray``), or a one-line ConfigError naming
    the extra to install; ``None`` for local."""
    package = {"slurm": "submitit", "ray": "ray"}.get(name)
    if package is None:
        return None
    try:
        return __import__(package)
    except ImportError:
        raise ConfigError(
            f"--executor {name} needs the {package} package; install it with "
            f"pip install 'distillscope[{'cluster' if name == 'slurm' else 'ray'}]'"
        ) from None


def run_remote(
    executor: Executor,
    tasks: list[Any],
    jobs: int,
    started: Callable[[str], None],
    finished: Callable[[Any], None],
    failed: Callable[[], bool],
    root: Path,
    run_cell: Callable[[Any], Any],
    outcome: Callable[[str, str], Any],
) -> None:
    """Run ``tasks`` on a remote engine, at most ``jobs`` at once; report each through
    ``started(cell id)`` and ``finished(CellOutcome)``; after a failure (``failed()``) no new
    cell starts. ``outcome(cell id, error)`` makes the outcome of a job that died."""
    submit, poll = _submitit(executor, root) if executor.name == "slurm" else _ray(executor)
    pending: dict[str, Any] = {}
    queue = list(tasks)
    while queue or pending:
        while queue and len(pending) < jobs and not failed():
            task = queue.pop(0)
            pending[task.id] = submit(run_cell, task)
            started(task.id)
        if not pending:
            break
        for cid, done in poll(pending).items():
            job = pending.pop(cid)
            try:
                finished(done(job))
            except Exception as exc:  # the job itself died: its engine's log says why
                log = _job_log(job)
                where = f" (engine log: {log})" if log else ""
                finished(outcome(cid, f"{executor.name} job died: {_line(exc)}{where}"))
        if failed():
            queue.clear()
        if pending:
            time.sleep(POLL_S)


def _submitit(executor: Executor, root: Path) -> tuple[Callable, Callable]:
    submitit = _module("slurm")
    opts = executor.options
    ex = submitit.AutoExecutor(folder=root / "submitit", cluster=opts.get("cluster", "slurm"))
    params: dict[str, Any] = {"timeout_min": opts.get("time_min", 60 * 24)}
    if opts.get("cpus"):
        params["cpus_per_task"] = opts["cpus"]
    if ex.cluster == "slurm":
        if opts.get("partition"):
            params["slurm_partition"] = opts["partition"]
        if opts.get("gpus"):
            params["slurm_gpus_per_node"] = opts["gpus"]
    ex.update_parameters(**params)

    def poll(pending: dict[str, Any]) -> dict[str, Callable]:
        return {cid: (lambda job: job.result()) for cid, job in pending.items() if job.done()}

    return ex.submit, poll


def _ray(executor: Executor) -> tuple[Callable, Callable]:
    ray = _module("ray")
    opts = executor.options
    if not ray.is_initialized():
        ray.init(address=opts.get("address"), ignore_reinit_error=True, log_to_driver=False)
    remote: dict[str, Any] = {}

    def submit(fn: Callable, task: Any) -> Any:
        if "fn" not in remote:
            remote["fn"] = ray.remote(num_cpus=opts.get("cpus", 1), num_gpus=opts.get("gpus", 0))(
                fn
            )
        return remote["fn"].remote(task)

    def poll(pending: dict[str, Any]) -> dict[str, Callable]:
        ready, _ = ray.wait(list(pending.values()), num_returns=len(pending), timeout=0)
        return {cid: ray.get for cid, ref in pending.items() if ref in ready}

    return submit, poll


def _line(exc: BaseException) -> str:
    """One line for a job's failure: the job's own exception line when the engine wraps its
    traceback in an exception of its own (``RuntimeError: ...``), else the message's first
    line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    raised = [line for line in lines if _RAISED.match(line)]
    text = raised[-1] if raised else (lines[0] if lines else type(exc).__name__)
    return text[:300]


def _job_log(job: Any) -> str | None:
    """Where the engine kept the job's stderr (submitit), if it says."""
    try:
        return str(job.paths.stderr)
    except AttributeError:
        return None
