"""What made a result: one identity for everything that is reused.

A stored teacher, a finished or killed grid cell and a killed run are reused only when the
identity of what is asked for now equals the one recorded when they were made. An identity is a
plain mapping of everything that determines the numbers, built from the whole resolved config
(every field, so a field added to the schema enters it without anyone listing it):

- ``config``: the resolved config without :data:`NOT_RESULT_KEYS` (names, where output goes,
  progress bars, trackers), without the folders data is read from (``root``): where the data
  lies is not what it is, and :data:`~distillscope.data.base.DistillDataset.fingerprint` says
  what it is; and without :data:`NOT_RESULT_TRAIN_KEYS` (how many processes read the data);
- ``data``: the fingerprint of every split read: every byte loaded, not a sample;
- ``runtime``: what changes numbers outside the config: torch's version and thread count (CPU
  kernels reduce in another order on another number of threads), the device type and
  distillscope's identity version;
- ``plugins`` (only when there is any): the source digest of each plugin the config names and
  of the code behind every entry it uses that is not distillscope's own
  (:func:`distillscope.plugins.code_digests`); the plugins' names (:data:`CODE_KEYS`) say where
  that code lies, not what it is, and stay out of ``config``.

The digest is a SHA-256 of canonical JSON: keys sorted, and floats that are whole numbers
written as integers, so ``4`` and ``4.0`` are one value (a grid axis ``[4, 4.0]`` is one cell).
When two identities differ, :func:`first_difference` names the first field that does, for a
one-line refusal.

Example:
    >>> a = {"config": {"seed": 1, "students": {"kd": {"temperature": 4}}}}
    >>> b = {"config": {"seed": 1.0, "students": {"kd": {"temperature": 4.0}}}}
    >>> digest(a) == digest(b)
    True
    >>> first_difference(a, {"config": {"seed": 2, "students": {"kd": {"temperature": 4}}}})
    ('config.seed', 1, 2)
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

import torch

__all__ = [
    "CODE_KEYS",
    "IDENTITY_VERSION",
    "NOT_RESULT_KEYS",
    "NOT_RESULT_TRAIN_KEYS",
    "TEACHER_PASSES_VERSION",
    "canonical",
    "digest",
    "first_difference",
    "runtime",
    "without_locations",
]

#: Bump when the code changes what a recorded result means: older records then never match.
#: 2: defaults that follow the reference implementations (cc without normalisation, crd's
#: other-class negatives, tf_kd's multiplier), the B-cos double backward, domain_consensus's
#: paper domains and class_similarity's pooled category entropy.
IDENTITY_VERSION = 2

#: Bump when the code changes what a teacher's passes compute under ``teacher_precision`` bf16 /
#: auto; it enters only the identities of runs that ask for other than fp32 (``fp32`` runs, their
#: cells and checkpoints keep matching). 3: a teacher whose students read only its output runs
#: its folded copy as one oneDNN graph on the CPU (:mod:`distillscope.train.onednn`); 2: bf16
#: passes on a copy with the batch norms folded into their convolutions
#: (:mod:`distillscope.train.fold`); 1 (never recorded): the teacher as is.
TEACHER_PASSES_VERSION = 3

#: Top-level config keys that do not change a result: the run's name, where output goes, whether
#: progress bars show, the teacher store's folder, the trackers that copy the metrics lines
#: (``tracking``); ``device`` and ``threads`` enter :func:`runtime` with their effective values
#: instead ("auto" and "cpu" on a CPU are one device).
NOT_RESULT_KEYS = (
    "name",
    "output_dir",
    "progress",
    "teacher_store",
    "tracking",
    "device",
    "threads",
)

#: Keys of a ``train`` section that do not change a result: how many processes read the data
#: (the batch order is the seed's whatever their number).
NOT_RESULT_TRAIN_KEYS = ("loader_workers",)

#: Top-level config keys that name code by where it lies (plugin modules): their sources enter
#: the identity instead, under ``plugins``.
CODE_KEYS = ("plugins",)

#: Keys inside data sections that say where data lies, not what it is (its fingerprint does).
LOCATION_KEYS = ("root",)


def canonical(value: Any) -> Any:
    """``value`` as plain JSON data with one spelling per value.

    Mappings get string keys, tuples become lists, and floats that are whole numbers become
    integers (``4.0`` -> ``4``); booleans stay booleans.

    Example:
        >>> canonical({"T": 4.0, "lr": 0.5, "flag": True, "shape": (1, 2.0)})
        {'T': 4, 'lr': 0.5, 'flag': True, 'shape': [1, 2]}
    """
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        return int(value) if math.isfinite(value) and value.is_integer() else value
    if isinstance(value, int):
        return value
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return str(value)


def digest(value: Any, length: int = 32) -> str:
    """A hex SHA-256 of ``value``'s :func:`canonical` JSON, cut to ``length`` characters."""
    blob = json.dumps(canonical(value), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def without_locations(config: Mapping[str, Any]) -> dict[str, Any]:
    """A dumped config without :data:`NOT_RESULT_KEYS`, :data:`CODE_KEYS`, every data
    section's :data:`LOCATION_KEYS` (the top-level ``data`` and each member's ``data``) and
    every train section's :data:`NOT_RESULT_TRAIN_KEYS`."""
    out = {k: v for k, v in config.items() if k not in NOT_RESULT_KEYS + CODE_KEYS}
    out["data"] = _without(out.get("data"), LOCATION_KEYS)
    if "train" in out:
        out["train"] = _without(out["train"], NOT_RESULT_TRAIN_KEYS)
    for section in ("teachers", "students"):
        members = out.get(section)
        if isinstance(members, Mapping):
            out[section] = {
                name: _member_part(spec) if isinstance(spec, Mapping) else spec
                for name, spec in members.items()
            }
    return out


def _member_part(spec: Mapping[str, Any]) -> dict[str, Any]:
    out = {**spec, "data": _without(spec.get("data"), LOCATION_KEYS)}
    if "train" in out:
        out["train"] = _without(out["train"], NOT_RESULT_TRAIN_KEYS)
    return out


def _without(section: Any, keys: tuple[str, ...]) -> Any:
    if not isinstance(section, Mapping):
        return section
    return {k: v for k, v in section.items() if k not in keys}


def runtime(device: torch.device | str, threads: int | None = None) -> dict[str, Any]:
    """The parts of the runtime that change numbers.

    Args:
        device: The device the work runs on (only its type counts: ``cuda:0`` and ``cuda:1``
            compute alike).
        threads: torch's intra-op thread count (default: the current one).
    """
    return {
        "identity_version": IDENTITY_VERSION,
        "torch": torch.__version__,
        "device": torch.device(device).type,
        "threads": int(threads if threads is not None else torch.get_num_threads()),
    }


def first_difference(before: Any, now: Any, path: str = "") -> tuple[str, Any, Any] | None:
    """The first field (in sorted order) whose values differ, as ``(dotted path, before, now)``.

    A key present on one side only is a difference (its missing value is ``None``); values are
    compared in :func:`canonical` form.

    Example:
        >>> first_difference({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}})
        ('a.c', 2, 3)
        >>> first_difference({"a": [1, 2]}, {"a": [1.0, 2.0]}) is None
        True
    """
    before, now = canonical(before), canonical(now)
    if isinstance(before, dict) and isinstance(now, dict):
        for key in sorted(before.keys() | now.keys()):
            found = first_difference(
                before.get(key), now.get(key), f"{path}.{key}" if path else key
            )
            if found is not None:
                return found
        return None
    if isinstance(before, list) and isinstance(now, list) and len(before) == len(now):
        for i, (a, b) in enumerate(zip(before, now)):
            found = first_difference(a, b, f"{path}.{i}" if path else str(i))
            if found is not None:
                return found
        return None
    if before != now:
        return path or "identity", before, now
    return None
