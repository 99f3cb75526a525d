"""Experiment-tracking settings (part of the YAML schema; see :mod:`distillscope.config`).

``tracking: {tensorboard: {...}, mlflow: {...}}`` turns on optional loggers that receive every
line the run appends to ``metrics.jsonl``, as it is appended (:mod:`distillscope.tracking`).
Both are off by default; neither changes a number, so neither enters a run's identity
(:data:`~distillscope.identity.NOT_RESULT_KEYS`). ``metrics.jsonl`` stays the record: the
trackers are copies of it for TensorBoard's and MLflow's viewers.

Example:
    >>> TrackingConfig(tensorboard={}).tensorboard
    TensorBoardConfig(log_dir=None)
    >>> TrackingConfig(mlflow={"tracking_uri": "file:mlruns"}).mlflow.tracking_uri
    'file:mlruns'
    >>> TrackingConfig(tensorboard=True).tensorboard, TrackingConfig(mlflow=False).mlflow
    (TensorBoardConfig(log_dir=None), None)
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from pydantic import Field, field_validator

from distillscope.config_train import Strict

__all__ = ["MlflowConfig", "TensorBoardConfig", "TrackingConfig", "is_file_store"]


def is_file_store(uri: str) -> bool:
    """Whether an MLflow tracking URI names a file store: a ``file:`` URI or a plain folder.

    Example:
        >>> [is_file_store(u) for u in ("file:///tmp/mlruns", "mlruns", "http://host:5000")]
        [True, True, False]
    """
    scheme = urlparse(uri).scheme
    return scheme in ("", "file") or len(scheme) == 1  # one letter: a Windows drive, a path


class TensorBoardConfig(Strict):
    """TensorBoard event files, written with ``torch.utils.tensorboard.SummaryWriter``.

    Attributes:
        log_dir: Folder of the event files (default: ``<run directory>/tensorboard``). Given, a
            run writes under ``<log_dir>/<run directory's name>`` and a grid cell under
            ``<log_dir>/<grid directory's name>/<cell id>``, so runs and cells sharing it stay
            apart. Each member (network) writes its own subfolder, a TensorBoard "run".
    """

    log_dir: str | None = Field(None, min_length=1)


class MlflowConfig(Strict):
    """An MLflow file store: one MLflow run per run (or grid cell).

    Attributes:
        tracking_uri: The file store, a ``file:`` URI or a folder, relative ones under the
            working directory (default: ``<run directory>/mlruns``). Other stores (an MLflow
            server, a database) are refused.
        experiment: The MLflow experiment the run goes to, created when missing (default: the
            config's ``name``).
    """

    tracking_uri: str | None = Field(None, min_length=1)
    experiment: str | None = Field(None, min_length=1, max_length=500)

    @field_validator("tracking_uri")
    @classmethod
    def _file_store(cls, uri: str | None) -> str | None:
        if uri is not None and not is_file_store(uri):
            raise ValueError(
                "only an MLflow file store is supported; give a file: URI or a folder "
                "(e.g. file:mlruns)"
            )
        return uri


class TrackingConfig(Strict):
    """Optional loggers fed with the run's metrics lines; ``null`` (the default) is off.

    ``true`` turns a back-end on with its defaults (``{}``), ``false`` turns it off.

    Attributes:
        tensorboard: TensorBoard event files (needs the ``tensorboard`` package).
        mlflow: An MLflow file store (needs ``mlflow`` or ``mlflow-skinny``).
    """

    tensorboard: TensorBoardConfig | None = None
    mlflow: MlflowConfig | None = None

    @field_validator("tensorboard", "mlflow", mode="before")
    @classmethod
    def _switch(cls, value: Any) -> Any:
        return ({} if value else None) if isinstance(value, bool) else value

    @property
    def chosen(self) -> list[str]:
        """The back-ends turned on, in a fixed order."""
        return [name for name in ("tensorboard", "mlflow") if getattr(self, name) is not None]
