"""TensorBoard event files of a run, written with ``torch.utils.tensorboard.SummaryWriter``.

Each member (network) is a TensorBoard "run" of its own, the subfolder ``<folder>/<member>``,
so one chart overlays the members' curves of a scalar. Scalars are the numbers of the member's
``metrics.jsonl`` lines (``loss``, its parts, ``train_acc``, ``val_acc``, ``val_loss``,
``lr``, ``time``) at step = epoch; stage lines give ``stage/<term>/<stage>/loss``. TensorBoard
keeps scalars in float32. A grid cell's axis values are written once per member as the text
``grid_cell``.

The ``tensorboard`` package is imported only when ``tracking.tensorboard`` is set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from distillscope.config_tracking import TensorBoardConfig
from distillscope.files import check_writable_dir
from distillscope.tracking.base import RunLabel, Tracker, missing_package, scalars

__all__ = ["DEFAULT_FOLDER", "TensorBoardTracker", "check_tensorboard", "tensorboard_folder"]

#: The event files' folder inside the run directory when ``log_dir`` is not given.
DEFAULT_FOLDER = "tensorboard"
KEY = "tracking.tensorboard"


def tensorboard_folder(cfg: TensorBoardConfig, run_dir: Path, label: RunLabel) -> Path:
    """Where a run's event files go: ``<run_dir>/tensorboard``, or ``<log_dir>/<label.name>``.

    Example:
        >>> label = RunLabel("grid-ab12/T=4,seed=0")
        >>> tensorboard_folder(TensorBoardConfig(), Path("runs/x"), label).as_posix()
        'runs/x/tensorboard'
        >>> tensorboard_folder(TensorBoardConfig(log_dir="tb"), Path("runs/x"), label).as_posix()
        'tb/grid-ab12/T=4,seed=0'
    """
    if cfg.log_dir is None:
        return run_dir / DEFAULT_FOLDER
    return Path(cfg.log_dir).expanduser() / label.name


def check_tensorboard(cfg: TensorBoardConfig) -> None:
    """Fail at start-up, writing nothing, when the package is missing or ``log_dir`` cannot be
    written (one-line :class:`~distillscope.errors.ConfigError`)."""
    _writer_class()
    if cfg.log_dir is not None:
        check_writable_dir(Path(cfg.log_dir).expanduser(), f"{KEY}.log_dir",
                           "give a folder this user can write")  # fmt: skip


def _writer_class() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise missing_package(KEY, "tensorboard") from None
    return SummaryWriter


class TensorBoardTracker(Tracker):
    """Writes a run's metrics lines as TensorBoard scalars, one subfolder per member.

    Args:
        folder: The run's folder (:func:`tensorboard_folder`).
        label: The run's name and a grid cell's axis values.
    """

    name = "tensorboard"

    def __init__(self, folder: Path, label: RunLabel) -> None:
        self.folder = folder
        self.label = label
        self.where = str(folder)
        self._writer_type = _writer_class()
        self.writers: dict[str, Any] = {}

    def _writer(self, member: str) -> Any:
        if member not in self.writers:
            writer = self._writer_type(log_dir=str(self.folder / member))
            if self.label.axes:
                cell = ", ".join(f"{k} = {v}" for k, v in self.label.axes.items())
                writer.add_text("grid_cell", f"{self.label.name}: {cell}", 0)
            self.writers[member] = writer
        return self.writers[member]

    def log(self, lines: Sequence[Mapping[str, Any]]) -> None:
        """Add every number of ``lines`` as its member's scalar at step = epoch, then flush
        (a background writer's failure surfaces here)."""
        touched = []
        for line in lines:
            member, step, values = scalars(line)
            writer = self._writer(member)
            for tag, value in values.items():
                writer.add_scalar(tag, value, step)
            touched.append(writer)
        for writer in dict.fromkeys(touched):
            writer.flush()

    def close(self, status: str, artifacts: Sequence[Path] = ()) -> None:
        """Flush and close every member's writer (event files keep no status or files)."""
        for writer in self.writers.values():
            writer.close()
