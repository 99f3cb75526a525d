"""Experiment tracking: TensorBoard event files and an MLflow file store, fed with the run's
``metrics.jsonl`` lines (``tracking:`` in the config, :mod:`distillscope.config_tracking`).

``metrics.jsonl`` is the record; a tracker receives each line as the run appends it and
computes nothing of its own. :func:`check_tracking` runs at start-up, before the run directory
exists (a missing package, an unwritable folder or a refused store: one line, nothing
written); :func:`open_trackers` opens the chosen back-ends in the new run directory. A tracker
that fails later is reported once and dropped (:class:`~distillscope.tracking.base.Trackers`).

Floor 1, with the records a run writes (``docs/design-notes.md``, "Floors"): it imports the
schema and the ground only; the back-ends' packages load when chosen.

Example:
    >>> from distillscope.config_tracking import TrackingConfig
    >>> trackers = open_trackers(TrackingConfig(), Path("runs/x"), RunLabel("x"), {}, "run")
    >>> bool(trackers)
    False
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from distillscope.config_tracking import TrackingConfig
from distillscope.messages import say
from distillscope.tracking.base import RunLabel, Tracker, Trackers, flat_params, scalars

__all__ = [
    "RunLabel",
    "Tracker",
    "Trackers",
    "check_tracking",
    "flat_params",
    "open_trackers",
    "scalars",
]


def check_tracking(cfg: TrackingConfig, experiment: str) -> None:
    """Check every chosen back-end before anything is written.

    Args:
        cfg: The ``tracking`` section.
        experiment: The run's name (the MLflow experiment unless ``tracking.mlflow.experiment``
            names one).

    Raises:
        ConfigError: One line naming the back-end, the problem and the fix.
    """
    if cfg.tensorboard is not None:
        from distillscope.tracking.tensorboard_writer import check_tensorboard

        check_tensorboard(cfg.tensorboard)
    if cfg.mlflow is not None:
        from distillscope.tracking.mlflow_store import check_mlflow

        check_mlflow(cfg.mlflow, experiment)


def open_trackers(
    cfg: TrackingConfig,
    run_dir: Path,
    label: RunLabel,
    config: Mapping[str, Any],
    experiment: str,
    *,
    tags: Mapping[str, str] | None = None,
    resume: bool = False,
    warn: Callable[[str], None] = say,
) -> Trackers:
    """The chosen trackers of the run in ``run_dir``, open (one that cannot open is reported
    and left out; the run goes on).

    Args:
        cfg: The ``tracking`` section (checked by :func:`check_tracking`).
        run_dir: The run directory.
        label: The run's name in the trackers and a grid cell's axis values.
        config: The resolved config (MLflow params).
        experiment: The run's name (the default MLflow experiment).
        tags: More MLflow tags (the identity digest).
        resume: The run continues a killed one: MLflow continues its run.
        warn: Where a failure's one line goes.
    """
    trackers = Trackers(warn=warn)
    opened: list[Tracker] = []
    for name in cfg.chosen:
        try:
            opened.append(_open(name, cfg, run_dir, label, config, experiment, tags, resume))
        except Exception as exc:  # the run does not depend on a copy of its metrics
            trackers.failed(name, exc)
    trackers.live = opened
    return trackers


def _open(
    name: str,
    cfg: TrackingConfig,
    run_dir: Path,
    label: RunLabel,
    config: Mapping[str, Any],
    experiment: str,
    tags: Mapping[str, str] | None,
    resume: bool,
) -> Tracker:
    if name == "tensorboard":
        from distillscope.tracking.tensorboard_writer import TensorBoardTracker, tensorboard_folder

        assert cfg.tensorboard is not None
        return TensorBoardTracker(tensorboard_folder(cfg.tensorboard, run_dir, label), label)
    from distillscope.tracking.mlflow_store import MlflowTracker, store_folder

    assert cfg.mlflow is not None
    return MlflowTracker(store_folder(cfg.mlflow, run_dir), cfg.mlflow.experiment or experiment,
                         label, run_dir, config, tags, resume)  # fmt: skip
