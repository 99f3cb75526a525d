"""Checkpoints: atomic safetensors files with JSON metadata, and the training state for resume.

Every file is written to a temporary sibling, flushed to disk and renamed over the target with
:func:`os.replace`, so a run killed mid-write leaves the previous checkpoint intact. Files are
read only with :mod:`safetensors` (no pickle). The metadata of a safetensors file is a
``str -> str`` map; ours lives as one JSON document under the key ``"distillscope"``.

Training-state layout (one file, ``last.safetensors``):

=============================  ===================================================
tensor key                     content
=============================  ===================================================
``model/<state key>``          model ``state_dict``
``loss/<state key>``           loss-term ``state_dict`` (regressors, memory banks)
``optim/<group>/<idx>/<key>``  optimizer per-parameter tensors (momentum, moments)
``rng/<name>``                 global generator states (see :func:`get_rng_state`)
=============================  ===================================================

Scalars (optimizer hyper-parameters, scheduler state, epochs done, history) go to the JSON.
What differs between identical runs (wall times, :data:`VOLATILE_FIELDS`) never enters the file:
a training state keeps it in a small JSON beside it (``last.volatile.json``), so identical runs
write byte-identical checkpoints.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save
from torch import Tensor, nn

from distillscope.errors import CheckpointError, quoted
from distillscope.files import TMP_SUFFIX, atomic_write_text, file_mode

_META_KEY = "distillscope"
#: History fields that differ between identical runs (wall times); kept out of checkpoint and
#: model files so identical runs write byte-identical files.
VOLATILE_FIELDS = ("time",)


def stable(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``history`` without :data:`VOLATILE_FIELDS`.

    Example:
        >>> stable([{"epoch": 1, "loss": 0.5, "time": 2.1}])
        [{'epoch': 1, 'loss': 0.5}]
    """
    return [{k: v for k, v in row.items() if k not in VOLATILE_FIELDS} for row in history]


def volatile(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Only the :data:`VOLATILE_FIELDS` of each row of ``history``.

    Example:
        >>> volatile([{"epoch": 1, "loss": 0.5, "time": 2.1}, {"epoch": 2}])
        [{'time': 2.1}, {}]
    """
    return [{k: row[k] for k in VOLATILE_FIELDS if k in row} for row in history]


def with_volatile(
    history: list[dict[str, Any]], fields: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Rows of ``history`` with their volatile ``fields`` put back (rows without any stay as
    they are): the inverse of :func:`stable` and :func:`volatile`.

    Example:
        >>> with_volatile([{"epoch": 1}, {"epoch": 2}], [{"time": 2.1}])
        [{'epoch': 1, 'time': 2.1}, {'epoch': 2}]
    """
    return [{**row, **(fields[i] if i < len(fields) else {})} for i, row in enumerate(history)]


def volatile_path(path: str | Path) -> Path:
    """The JSON beside checkpoint ``path`` that holds what differs between identical runs.

    Example:
        >>> volatile_path("run/checkpoints/kd/last.safetensors").name
        'last.volatile.json'
    """
    path = Path(path)
    return path.with_name(f"{path.name.removesuffix('.safetensors')}.volatile.json")


def save_checkpoint(path: str | Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Write ``tensors`` and JSON-serialisable ``meta`` to ``path`` atomically.

    Tensors are moved to the CPU and made contiguous; tensors sharing storage (tied weights)
    are copied so safetensors accepts them.

    Example:
        >>> import tempfile, torch
        >>> tmp = tempfile.TemporaryDirectory()
        >>> path = Path(tmp.name) / "x.safetensors"
        >>> save_checkpoint(path, {"w": torch.ones(2)}, {"epoch": 3})
        >>> tensors, meta = load_checkpoint(path)
        >>> tensors["w"].tolist(), meta
        ([1.0, 1.0], {'epoch': 3})
        >>> tmp.cleanup()
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {_META_KEY: json.dumps(meta, sort_keys=True), "format": "pt"}
    blob = canonical_safetensors(save(_storable(tensors), metadata=metadata))
    # a hidden sibling that clean_stale_temporaries removes if a kill leaves it behind
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    _fsync_dir(path.parent)


def canonical_safetensors(blob: bytes) -> bytes:
    """``blob`` with its JSON header's keys sorted (metadata and tensor entries).

    safetensors writes the header from hash maps, so two saves of the same tensors and metadata
    can order the header differently; sorting makes identical content give identical bytes.
    The header keeps its length (padded with spaces, as the format allows), so the data
    offsets stay valid.

    Example:
        >>> import torch
        >>> a = save({"w": torch.ones(2), "b": torch.zeros(1)}, metadata={"k": "1", "j": "2"})
        >>> out = canonical_safetensors(a)
        >>> len(out) == len(a), out[8:41]
        (True, b'{"__metadata__":{"j":"2","k":"1"}')
    """
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    if len(text) > n:  # cannot happen with safetensors' compact JSON; keep the original then
        return blob
    return blob[:8] + text + b" " * (n - len(text)) + blob[8 + n :]


def load_checkpoint(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read ``(tensors, meta)`` from a safetensors file (tensors on the CPU).

    A file without our metadata (a plain safetensors export) gives ``meta == {}``.

    Raises:
        CheckpointError: If the file is missing, truncated, corrupt or not safetensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; check the path or train the model first")
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118
        meta = json.loads(metadata.get(_META_KEY, "{}"))
    except Exception as exc:  # safetensors raises several types; all mean "not loadable"
        raise _invalid(path, exc) from exc
    if not isinstance(meta, dict):
        raise _invalid(path, "metadata is not a JSON object")
    return tensors, meta


def save_model(path: str | Path, model: nn.Module, meta: dict[str, Any] | None = None) -> None:
    """Write ``model.state_dict()`` and ``meta`` to ``path`` atomically."""
    save_checkpoint(path, dict(model.state_dict()), {"kind": "model", **(meta or {})})


def load_model_weights(path: str | Path, model: nn.Module) -> dict[str, Any]:
    """Load weights from ``path`` into ``model`` strictly and return the file's metadata.

    Raises:
        CheckpointError: If the file is unreadable or a key or shape does not match the model.

    Example:
        >>> import tempfile, torch
        >>> tmp = tempfile.TemporaryDirectory()
        >>> path = Path(tmp.name) / "m.safetensors"
        >>> save_model(path, torch.nn.Linear(3, 2), {"name": "probe"})
        >>> load_model_weights(path, torch.nn.Linear(3, 2))["name"]
        'probe'
        >>> tmp.cleanup()
    """
    tensors, meta = load_checkpoint(path)
    load_state_strict(model, tensors, path)
    return meta


def load_state_strict(module: nn.Module, state: dict[str, Tensor], path: str | Path) -> None:
    """``module.load_state_dict(state)`` with a one-line :class:`CheckpointError` on mismatch."""
    expected = module.state_dict()
    problem = _first_mismatch(expected, state)
    if problem is not None:
        raise CheckpointError(
            f"{path} does not match the model: {problem}; pass the architecture it was "
            "trained with or retrain"
        )
    module.load_state_dict(state, strict=True)


@dataclass
class TrainState:
    """Everything a resumed run needs, as read from or written to one checkpoint file.

    Attributes:
        model: Model ``state_dict``.
        loss: Loss-term ``state_dict``.
        optimizer: An ``Optimizer.state_dict()``.
        scheduler: An ``LRScheduler.state_dict()`` (numbers only).
        rng_tensors: Tensor part of :func:`~distillscope.train.seeding.get_rng_state`.
        rng_meta: JSON part of it.
        meta: Epochs done, history, config, trainable parameter names, ``prepared`` flag.
        volatile: JSON of what differs between identical runs (the history's wall times),
            written beside the file (:func:`volatile_path`), never in it.
    """

    model: dict[str, Tensor]
    loss: dict[str, Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng_tensors: dict[str, Tensor] = field(default_factory=dict)
    rng_meta: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    volatile: dict[str, Any] = field(default_factory=dict)


def save_train_state(path: str | Path, state: TrainState) -> None:
    """Flatten ``state`` into one safetensors file (layout in the module docstring), atomically.

    ``state.volatile`` goes first to its own JSON beside the file, so a run killed between the
    two writes leaves wall times for an epoch the checkpoint lacks, never the reverse. An empty
    state (no optimizer: ``{}``) is kept as such.
    """
    side = volatile_path(path)
    if state.volatile:
        atomic_write_text(side, json.dumps(state.volatile, sort_keys=True) + "\n")
    elif side.is_file():
        side.unlink()
    tensors: dict[str, Tensor] = {}
    tensors.update({f"model/{k}": v for k, v in state.model.items()})
    tensors.update({f"loss/{k}": v for k, v in state.loss.items()})
    tensors.update({f"rng/{k}": v for k, v in state.rng_tensors.items()})
    optim_tensors, optim_meta = _flatten_optimizer(state.optimizer)
    tensors.update(optim_tensors)
    meta = {
        "kind": "train_state",
        "format_version": 1,
        "optimizer": optim_meta,
        "scheduler": state.scheduler,
        "rng": state.rng_meta,
        **state.meta,
    }
    save_checkpoint(path, tensors, meta)


def load_train_state(path: str | Path) -> TrainState:
    """Read a file written by :func:`save_train_state`.

    Raises:
        CheckpointError: If the file is unreadable or is not a training state.
    """
    tensors, meta = load_checkpoint(path)
    if meta.get("kind") != "train_state" or "optimizer" not in meta:
        raise _invalid(path, "no training state in it")
    groups: dict[str, dict[str, Tensor]] = {"model": {}, "loss": {}, "rng": {}, "optim": {}}
    for key, value in tensors.items():
        head, _, rest = key.partition("/")
        if head not in groups or not rest:
            raise _invalid(path, f"unexpected tensor {key!r}")
        groups[head][rest] = value
    try:
        optimizer = _unflatten_optimizer(groups["optim"], meta.pop("optimizer"))
    except (KeyError, ValueError, TypeError) as exc:
        raise _invalid(path, f"optimizer state is inconsistent: {exc}") from exc
    scheduler = meta.pop("scheduler", {})
    rng_meta = meta.pop("rng", {})
    return TrainState(groups["model"], groups["loss"], optimizer, scheduler, groups["rng"],
                      rng_meta, meta, _read_volatile(path))  # fmt: skip


def _read_volatile(path: str | Path) -> dict[str, Any]:
    """The JSON beside a training state, ``{}`` when there is none."""
    side = volatile_path(path)
    if not side.is_file():
        return {}
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        data = exc
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{side} is not a JSON object ({' '.join(str(data).split())[:100]}); delete it "
            "(it holds only wall times) and resume"
        )
    history = data.get("history", {})
    if not isinstance(history, dict) or not all(
        isinstance(rows, list) and all(isinstance(row, dict) for row in rows)
        for rows in history.values()
    ):
        raise CheckpointError(
            f"{side} does not hold a history of rows per network; delete it (it holds only "
            "wall times) and resume"
        )
    return data


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``Optimizer.state_dict()`` -> (``optim/<group>/<idx>/<key>`` tensors, JSON rest); no
    optimizer (``{}``) -> nothing."""
    if not state:
        return {}, {}
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    groups = []
    for g, group in enumerate(state["param_groups"]):
        groups.append(dict(group))
        for idx in group["params"]:
            for key, value in state["state"].get(idx, {}).items():
                if isinstance(value, Tensor):
                    tensors[f"optim/{g}/{idx}/{key}"] = value
                else:
                    scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": groups, "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`_flatten_optimizer`."""
    if not meta and not tensors:
        return {}
    per_param: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, idx, name = key.split("/", 2)
        per_param.setdefault(int(idx), {})[name] = value
    for idx, values in meta["scalars"].items():
        per_param.setdefault(int(idx), {}).update(values)
    groups = [dict(g) for g in meta["param_groups"]]
    for group in groups:
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    return {"state": per_param, "param_groups": groups}


def _first_mismatch(expected: dict[str, Tensor], got: dict[str, Tensor]) -> str | None:
    """A phrase naming the first key (in the model's order) that differs, else ``None``."""
    for key, value in expected.items():
        if key not in got:
            return f"key {key!r} is missing from the file"
        if tuple(got[key].shape) != tuple(value.shape):
            return (
                f"key {key!r} has shape {tuple(got[key].shape)} in the file but "
                f"{tuple(value.shape)} in the model"
            )
    for key in got:
        if key not in expected:
            return f"key {key!r} is in the file but not in the model"
    return None


def _storable(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """CPU, contiguous, detached copies where needed; no two tensors share storage."""
    out: dict[str, Tensor] = {}
    seen: set[int] = set()
    for key, value in tensors.items():
        t = value.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen and t.numel() > 0:
            t = t.clone()
        seen.add(ptr)
        out[key] = t
    return out


def _invalid(path: str | Path, reason: object) -> CheckpointError:
    text = " ".join(str(reason).split())[:200] or type(reason).__name__
    return CheckpointError(f"{path} is not a valid checkpoint ({text}); delete it or retrain")


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable where the platform allows it (POSIX); harmless elsewhere."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_own_model(path: str | Path, model: nn.Module, digest: str) -> dict[str, Any]:
    """Load a model file a run wrote before it was killed into ``model``; its metadata.

    Refused when another run wrote it: its recorded identity digest is not ``digest``.
    """
    meta = load_model_weights(path, model)
    if meta.get("identity") != digest:
        raise CheckpointError(
            f"{path} was not written by this run (identity {quoted(meta.get('identity'))}, "
            f"this run {digest}); delete it to train that model again"
        )
    return meta
