"""An MLflow file store of a run: one MLflow run per run or grid cell.

The MLflow run is named by the run's label (its run directory's name, or
``<grid directory>/<cell id>``) and tagged with the run directory (``distillscope.run_dir``,
by which a resumed run finds it again), the run's identity digest and, for a grid cell, each
axis value (``grid.<axis key>``). Its params are the resolved config flattened to dotted keys;
its metrics are the numbers of the ``metrics.jsonl`` lines under ``<member>/<name>`` at step =
epoch (stage lines: ``<member>/stage/<term>/<stage>/loss``). At the end it keeps
``results.json``, ``report.html`` and ``metrics.jsonl`` as artifacts and is marked finished.

Only file stores are written (``tracking_uri: file:...`` or a folder): MLflow 3 keeps them in
maintenance mode and refuses them unless ``MLFLOW_ALLOW_FILE_STORE`` is true, so choosing one in
the config sets that variable in this process when it is unset (and an explicit false is
refused at start-up). The ``mlflow`` package (or ``mlflow-skinny``) is imported only when
``tracking.mlflow`` is set.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from distillscope.config_tracking import MlflowConfig
from distillscope.errors import ConfigError, quoted
from distillscope.files import check_writable_dir
from distillscope.tracking.base import RunLabel, Tracker, flat_params, missing_package, scalars

__all__ = ["DEFAULT_FOLDER", "MlflowTracker", "check_mlflow", "mlflow_key", "store_folder"]

#: The store's folder inside the run directory when ``tracking_uri`` is not given.
DEFAULT_FOLDER = "mlruns"
#: MLflow's switch that lets a file store be opened (MLflow 3 refuses one without it).
ALLOW_FILE_STORE = "MLFLOW_ALLOW_FILE_STORE"
#: The tag naming the run directory; a resumed run continues the MLflow run that has it.
RUN_TAG = "distillscope.run_dir"
KEY = "tracking.mlflow"
#: MLflow's limits: params and tags per request, metrics per request, key and value lengths
#: (the oldest supported release's param value limit, 500, is the one kept).
PARAMS_PER_BATCH, METRICS_PER_BATCH, KEY_LENGTH, VALUE_LENGTH = 100, 1000, 250, 500
_BAD_KEY = re.compile(r"[^\w./\- ]")


def mlflow_key(text: str) -> str:
    """``text`` as a valid MLflow key: characters MLflow refuses become ``_``, no empty path
    parts, at most 250 characters.

    Example:
        >>> mlflow_key("kd/kd:soft"), mlflow_key("data.params.a|b"), mlflow_key("/a//b")
        ('kd/kd_soft', 'data.params.a_b', 'a/b')
    """
    key = "/".join(part for part in _BAD_KEY.sub("_", text).split("/") if part not in ("", "."))
    return key[:KEY_LENGTH] or "_"


def store_folder(cfg: MlflowConfig, run_dir: Path) -> Path:
    """The store's folder: ``<run_dir>/mlruns``, or the ``tracking_uri``'s folder (a relative
    one under the working directory).

    Example:
        >>> store_folder(MlflowConfig(), Path("runs/x")).as_posix()
        'runs/x/mlruns'
        >>> store_folder(MlflowConfig(tracking_uri="file:///srv/ml%20runs"), Path(".")).as_posix()
        '/srv/ml runs'
    """
    uri = cfg.tracking_uri
    if uri is None:
        return run_dir / DEFAULT_FOLDER
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ConfigError(
                f"{KEY}.tracking_uri {quoted(uri)} names another host; give a folder on this "
                "machine (file:///path or file:relative/path)"
            )
        return Path(unquote(parsed.path)).expanduser()
    return Path(uri).expanduser()


def check_mlflow(cfg: MlflowConfig, run_name: str) -> None:
    """Fail at start-up, writing nothing, when the package is missing, file stores are switched
    off, the store's folder cannot be written or the experiment (``cfg.experiment``, else
    ``run_name``) was deleted in it (one-line :class:`~distillscope.errors.ConfigError`)."""
    experiment = cfg.experiment or run_name
    _client_class()
    allowed = os.environ.get(ALLOW_FILE_STORE)
    if allowed is not None and allowed.strip().lower() not in ("true", "1"):
        raise ConfigError(
            f"{KEY} writes an MLflow file store, but {ALLOW_FILE_STORE}={quoted(allowed)} in "
            f"the environment switches file stores off; unset it or set it to true"
        )
    if cfg.tracking_uri is None:  # a folder inside the new run directory
        return
    folder = store_folder(cfg, Path("."))
    check_writable_dir(folder, f"{KEY}.tracking_uri", "give a folder this user can write")
    if (folder / ".trash").is_dir():  # an existing store: opening it writes nothing
        found = _open_client(folder).get_experiment_by_name(experiment)
        if found is not None and found.lifecycle_stage == "deleted":
            raise ConfigError(
                f"{KEY}: experiment {quoted(experiment)} was deleted in {str(folder)!r}; "
                f"restore it (mlflow experiments restore --experiment-id "
                f"{found.experiment_id}) or set {KEY}.experiment to another name"
            )


def _client_class() -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise missing_package(KEY, "mlflow") from None
    return MlflowClient


def _open_client(folder: Path) -> Any:
    os.environ.setdefault(ALLOW_FILE_STORE, "true")  # the config chose a file store
    return _client_class()(tracking_uri=folder.resolve().as_uri())


class MlflowTracker(Tracker):
    """Logs a run's params, metrics lines and final files to its MLflow run.

    Args:
        folder: The store's folder (:func:`store_folder`).
        experiment: The MLflow experiment's name (created when missing).
        label: The run's name and a grid cell's axis values.
        run_dir: The run directory (its tag; a resumed run continues the MLflow run with it).
        config: The resolved config, logged flattened as params.
        tags: More tags (the identity digest).
        resume: Continue the MLflow run of ``run_dir`` when the store has one.
    """

    name = "mlflow"

    def __init__(
        self,
        folder: Path,
        experiment: str,
        label: RunLabel,
        run_dir: Path,
        config: Mapping[str, Any],
        tags: Mapping[str, str] | None = None,
        resume: bool = False,
    ) -> None:
        self.client = _open_client(folder)  # MLflow makes a new store's folder
        where = str(run_dir.resolve())
        with _store_lock(folder):  # parallel grid cells sharing a store: one experiment
            experiment_id = self._experiment(experiment)
        run_id = self._find(experiment_id, where) if resume else None
        logged: Mapping[str, str] = {}
        if run_id is None:
            every = {RUN_TAG: where, **(tags or {})}
            every.update({f"grid.{axis}": value for axis, value in label.axes.items()})
            run = self.client.create_run(
                experiment_id,
                run_name=label.name,
                tags={mlflow_key(k): str(v)[:VALUE_LENGTH] for k, v in every.items()},
            )
            run_id = run.info.run_id
        else:  # killed before: the same MLflow run goes on
            self.client.update_run(run_id, status="RUNNING")
            logged = self.client.get_run(run_id).data.params
        self.run_id = run_id
        self.where = f"{folder} (experiment {experiment!r}, run {run_id})"
        self._params(config, logged)

    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        return str(self.client.create_experiment(name))

    def _find(self, experiment_id: str, where: str) -> str | None:
        """The MLflow run tagged with run directory ``where``, if any."""
        token = None
        while True:
            page = self.client.search_runs([experiment_id], max_results=1000, page_token=token)
            for run in page:
                if run.data.tags.get(RUN_TAG) == where:
                    return str(run.info.run_id)
            token = page.token
            if not token:
                return None

    def _params(self, config: Mapping[str, Any], logged: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        params = [Param(key, value[:VALUE_LENGTH])
                  for key, value in _unique_keys(flat_params(config)).items()
                  if key not in logged]  # fmt: skip
        for i in range(0, len(params), PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=params[i : i + PARAMS_PER_BATCH])

    def log(self, lines: Sequence[Mapping[str, Any]]) -> None:
        """Log every number of ``lines`` as ``<member>/<name>`` at step = epoch."""
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = []
        for line in lines:
            member, step, values = scalars(line)
            metrics.extend(Metric(mlflow_key(f"{member}/{name}"), value, stamp, step)
                           for name, value in values.items())  # fmt: skip
        for i in range(0, len(metrics), METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i : i + METRICS_PER_BATCH])

    def close(self, status: str, artifacts: Sequence[Path] = ()) -> None:
        """Keep ``artifacts`` that exist with the MLflow run and end it with ``status``."""
        for path in artifacts:
            if path.is_file():
                self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, status)


def _unique_keys(params: Mapping[str, str]) -> dict[str, str]:
    """``params`` under :func:`mlflow_key` names (a clash after cleaning keeps the first)."""
    out: dict[str, str] = {}
    for key, value in params.items():
        out.setdefault(mlflow_key(key), value)
    return out


@contextlib.contextmanager
def _store_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on the store while its experiment is looked up or created."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        yield
        return
    with open(folder / ".distillscope.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
