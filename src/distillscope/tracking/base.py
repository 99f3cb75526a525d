"""What every tracker shares: a run's label, metrics lines as scalars, the flattened config,
and the fan-out that keeps a failing tracker from stopping a run.

A tracker is a copy of ``metrics.jsonl`` for another viewer: it receives the lines the run
appends there, as they are appended, and computes nothing of its own. A line
``{"model": m, "epoch": e, "loss": ..., "val_acc": ...}`` becomes member ``m``'s scalars at
step ``e``; a stage line (``"stage": "fitnets/hint"``) becomes ``stage/fitnets/hint/<key>`` at
the stage's epoch. When a tracker fails in the middle of a run (a full disk, a store that went
away) :class:`Trackers` says so once and drops it; the run goes on, and ``metrics.jsonl`` still
holds every line.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillscope.errors import ConfigError, clipped
from distillscope.messages import say

__all__ = [
    "EXTRA",
    "RunLabel",
    "Tracker",
    "Trackers",
    "flat_params",
    "missing_package",
    "scalars",
]

#: The optional dependency group that installs every tracking back-end.
EXTRA = "tracking"
#: Keys of a metrics line that say whose and which epoch it is, not a value.
LINE_KEYS = ("model", "epoch", "stage")


@dataclass(frozen=True)
class RunLabel:
    """How a run is named in the trackers.

    Attributes:
        name: Its run directory's name, or a grid cell's ``<grid directory's name>/<cell id>``.
        axes: A grid cell's axis values (axis key -> label of the value), tags of its MLflow
            run and a text note in its event files; empty for a run outside a grid.
    """

    name: str
    axes: Mapping[str, str] = field(default_factory=dict)


def scalars(line: Mapping[str, Any]) -> tuple[str, int, dict[str, float]]:
    """A metrics line as ``(member, step, {name: value})``: every number but the line's keys.

    Example:
        >>> scalars({"model": "kd", "epoch": 2, "loss": 0.5, "kd/soft": 0.25, "train_acc": 0.9})
        ('kd', 2, {'loss': 0.5, 'kd/soft': 0.25, 'train_acc': 0.9})
        >>> scalars({"model": "kd", "stage": "fitnets/hint", "epoch": 1, "loss": 2})
        ('kd', 1, {'stage/fitnets/hint/loss': 2.0})
    """
    prefix = f"stage/{line['stage']}/" if "stage" in line else ""
    values = {
        f"{prefix}{key}": float(value)
        for key, value in line.items()
        if key not in LINE_KEYS and isinstance(value, (int, float)) and not isinstance(value, bool)
    }
    return str(line["model"]), int(line["epoch"]), values


def flat_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as dotted keys -> text (strings as they are, the rest as JSON).

    Example:
        >>> flat_params({"seed": 0, "train": {"lr": 0.05, "milestones": [2, 4]}, "root": None})
        {'seed': '0', 'train.lr': '0.05', 'train.milestones': '[2, 4]', 'root': 'null'}
    """
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flat_params(value, f"{name}."))
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value, default=str)
    return out


def missing_package(key: str, package: str) -> ConfigError:
    """The one-line error for a chosen back-end whose package is not installed."""
    return ConfigError(
        f"{key} needs the {package} package, which is not installed; install it with "
        f"pip install 'distillscope[{EXTRA}]', or remove {key} from the config"
    )


class Tracker(ABC):
    """One back-end: receives metrics lines as they are written, and the run's end."""

    #: The back-end's name in messages (``tensorboard``, ``mlflow``).
    name: str = ""
    #: Where it writes, for the run's messages.
    where: str = ""

    @abstractmethod
    def log(self, lines: Sequence[Mapping[str, Any]]) -> None:
        """Copy metrics lines (just appended to ``metrics.jsonl``)."""

    @abstractmethod
    def close(self, status: str, artifacts: Sequence[Path] = ()) -> None:
        """End the run: ``status`` is ``FINISHED``, ``FAILED`` or ``KILLED``; ``artifacts`` are
        files to keep with it (``results.json``, the report), for back-ends that keep files."""


class Trackers:
    """The trackers of one run, fed together; a tracker that raises is reported once and
    dropped, and the run goes on.

    Args:
        trackers: The open trackers.
        warn: Where the one line goes (default: the run's messages on stderr).

    Example:
        >>> class Broken(Tracker):
        ...     name = "broken"
        ...     def log(self, lines): raise OSError("No space left on device")
        ...     def close(self, status, artifacts=()): pass
        >>> said = []
        >>> trackers = Trackers([Broken()], warn=said.append)
        >>> trackers.log([{"model": "kd", "epoch": 1, "loss": 1.0}])
        >>> trackers.log([{"model": "kd", "epoch": 2, "loss": 0.5}])
        >>> len(said), said[0].split(";")[0], bool(trackers)
        (1, 'warning: tracking: broken failed (OSError: No space left on device)', False)
    """

    def __init__(self, trackers: Sequence[Tracker] = (), warn: Callable[[str], None] = say) -> None:
        self.live = list(trackers)
        self.warn = warn

    def __bool__(self) -> bool:
        return bool(self.live)

    def log(self, lines: Sequence[Mapping[str, Any]]) -> None:
        """Hand ``lines`` to every live tracker."""
        for tracker in list(self.live):
            self._guarded(tracker, lambda t=tracker: t.log(lines))

    def close(self, status: str, artifacts: Sequence[Path] = ()) -> None:
        """End every live tracker's run (they are dropped afterwards)."""
        for tracker in list(self.live):
            self._guarded(tracker, lambda t=tracker: t.close(status, artifacts))
        self.live.clear()

    def failed(self, name: str, exc: BaseException) -> None:
        """Say (once per tracker) that ``name`` failed and logs nothing more."""
        text = clipped(" ".join(str(exc).split()), 200)
        self.warn(
            f"warning: tracking: {name} failed ({type(exc).__name__}: {text}); it logs nothing "
            "more in this run, and metrics.jsonl holds every line"
        )

    def _guarded(self, tracker: Tracker, call: Callable[[], None]) -> None:
        try:
            call()
        except Exception as exc:  # any failure of a copy: the run itself goes on
            self.live.remove(tracker)
            self.failed(tracker.name, exc)
