"""Teacher caches on disk, for caches over the memory budget (``teacher_cache_mb``).

A disk cache is a folder of memory-mapped ``.npy`` arrays (logits, each tapped feature, the
explanations) plus ``cache.json``, written once under a temporary name and renamed when whole,
so a kill leaves no half-written cache behind. Epochs read the rows of each batch from the
mapped files (the operating system keeps the hot pages in memory), so a cache far larger than
memory serves every epoch after one teacher pass: 1.28 M images x 1,000 classes in fp32 is
5.1 GB of logits on disk, not in RAM.

The folder is keyed like the teacher store: by the teacher's weights, the data's fingerprint,
the features read and the explanation settings, so the same teacher on the same data is cached
once and reused by later runs (and grid cells); anything else gets another folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from distillscope.files import cache_root
from distillscope.train.distributed import SINGLE, World, barrier

__all__ = [
    "DISK_VERSION",
    "disk_allocator",
    "disk_key",
    "disk_root",
    "free_bytes",
    "open_disk_cache",
    "publish",
]

#: Version of the folder layout, part of every key.
DISK_VERSION = 1
#: The file that marks a finished cache and lists its arrays.
MARK = "cache.json"


def disk_root() -> Path:
    """Where disk caches live: ``$DISTILLSCOPE_CACHE/teacher-caches``."""
    return cache_root() / "teacher-caches"


def disk_key(teacher: nn.Module, data: str, paths: Iterable[str], explaining: Iterable[str]) -> str:
    """The folder name of a cache: a digest of the teacher's weights (every tensor of its
    state), the data's fingerprint, the feature paths and the explanation settings."""
    h = hashlib.sha256(f"v{DISK_VERSION}|{data}|{sorted(paths)}|{sorted(explaining)}".encode())
    for name, value in teacher.state_dict().items():
        h.update(name.encode())
        h.update(value.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()[:32]


def _file(name: str) -> str:
    """``logits`` / ``features/<path>`` / ``explanation`` -> a file name."""
    return name.replace("/", "__") + ".npy"


def disk_allocator(
    folder: Path, world: World = SINGLE
) -> tuple[Callable[[str, int, Tensor], Tensor], dict[str, Any]]:
    """An allocator for :meth:`~distillscope.train.teacher_cache.TeacherCache.build` that maps
    each array to a new ``.npy`` file in ``folder`` (on the CPU), and the record of what it
    made (``name -> numpy memmap``) to flush and list.

    In a data-parallel ``world`` every rank allocates the same arrays in the same order (a
    collective): rank 0 makes each file, the others map it to write their rows into."""
    made: dict[str, Any] = {}

    def allocate(name: str, n: int, like: Tensor) -> Tensor:
        dtype = torch.empty((), dtype=like.dtype).numpy().dtype  # TypeError: no numpy dtype
        path = folder / _file(name)
        if world.main:
            array = np.lib.format.open_memmap(
                path, mode="w+", dtype=dtype, shape=(n, *like.shape[1:])
            )
        barrier(world)  # the file exists (with its header) before the others map it
        if not world.main:
            array = np.load(path, mmap_mode="r+")
        made[name] = array
        return torch.from_numpy(array)

    return allocate, made


def publish(tmp: Path, folder: Path, made: dict[str, Any], meta: dict[str, Any]) -> None:
    """Flush the arrays, write ``cache.json`` and rename ``tmp`` to ``folder``. A whole cache
    already there (another process finished first) wins and ``tmp`` is removed; a damaged one
    is replaced."""
    for array in made.values():
        array.flush()
    record = {**meta, "version": DISK_VERSION, "arrays": {k: _file(k) for k in made}}
    (tmp / MARK).write_text(json.dumps(record, sort_keys=True))
    if folder.exists():
        if open_disk_cache(folder) is not None:
            shutil.rmtree(tmp, ignore_errors=True)
            return
        shutil.rmtree(folder, ignore_errors=True)
    try:
        os.replace(tmp, folder)
    except OSError:  # a concurrent finisher renamed first
        shutil.rmtree(tmp, ignore_errors=True)


def open_disk_cache(folder: Path) -> tuple[dict[str, Tensor], dict[str, Any]] | None:
    """The arrays of a finished cache, memory-mapped (copy-on-write: the files are never
    changed), and its record; ``None`` when the folder holds no whole cache (missing,
    half-written or damaged: it is then built again)."""
    try:
        record = json.loads((folder / MARK).read_text())
        if record.get("version") != DISK_VERSION:
            return None
        arrays = {
            name: torch.from_numpy(np.load(folder / file, mmap_mode="c"))
            for name, file in record["arrays"].items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    n = {t.shape[0] for t in arrays.values()}
    if "logits" not in arrays or len(n) != 1 or n != {record.get("num_items")}:
        return None
    return arrays, record


def free_bytes(path: Path) -> int:
    """Free space where ``path`` (or its nearest existing parent) lives."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free
