"""Seeds, random-number-generator state, deterministic mode and device selection.

Resume reproduces an uninterrupted run bit for bit because two things are pinned: the batch
order of every epoch comes from its own generator (:func:`epoch_generator`), independent of the
epochs before it, and the global generators that dropout and augmentation draw from are saved
with each checkpoint (:func:`get_rng_state`) and restored on resume (:func:`set_rng_state`).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor

from distillscope.errors import ConfigError

#: cuBLAS needs a fixed workspace to be deterministic (CUDA >= 10.2); value from the CUDA docs.
_CUBLAS_WORKSPACE = ":4096:8"


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (all CUDA devices included).

    Args:
        seed: A non-negative integer below ``2**32`` (NumPy's limit).

    Raises:
        ConfigError: If ``seed`` is out of range.

    Example:
        >>> seed_everything(3); a = torch.rand(2)
        >>> seed_everything(3); torch.equal(a, torch.rand(2))
        True
    """
    if not 0 <= int(seed) < 2**32:
        raise ConfigError(f"seed {seed} is out of range; use an integer in [0, 2**32)")
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the legacy global state is what third-party code draws)
    torch.manual_seed(seed)


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A CPU generator seeded from ``(seed, epoch, stream)`` alone.

    The batch order of epoch ``e`` therefore does not depend on what ran before it, which is
    what lets a resumed run draw the same batches as an uninterrupted one.

    Args:
        seed: Run seed.
        epoch: Epoch index (0-based).
        stream: Separates independent uses (0: training batches, 1: a loss term's ``prepare``).

    Example:
        >>> a = torch.randperm(5, generator=epoch_generator(0, 2))
        >>> torch.equal(a, torch.randperm(5, generator=epoch_generator(0, 2)))
        True
    """
    words = np.random.SeedSequence([seed, epoch, stream]).generate_state(2, dtype=np.uint32)
    value = (int(words[0]) << 31) ^ int(words[1])  # < 2**63: a valid torch seed
    return torch.Generator().manual_seed(value)


def get_rng_state() -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Snapshot of the global generators as ``(tensors, json_meta)`` for a checkpoint.

    Tensors: ``"torch"`` (uint8 CPU state), ``"cuda/<i>"`` per visible GPU, ``"numpy"`` (the
    624-word Mersenne Twister key as int64). Metadata: the rest of NumPy's state and Python's.
    """
    tensors: dict[str, Tensor] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda/{i}"] = state
    kind, key, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002
    tensors["numpy"] = torch.from_numpy(key.astype(np.int64))  # (624,)
    version, words, gauss_next = random.getstate()
    meta = {
        "numpy": [kind, int(pos), int(has_gauss), float(gauss)],
        "python": [version, list(words), gauss_next],
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Restore the global generators from :func:`get_rng_state`'s output."""
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(tensors, key=_cuda_index) if k.startswith("cuda/")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])
    if "numpy" in tensors and "numpy" in meta:
        kind, pos, has_gauss, gauss = meta["numpy"]
        key = tensors["numpy"].numpy().astype(np.uint32)  # (624,)
        np.random.set_state((kind, key, pos, has_gauss, gauss))  # noqa: NPY002
    if "python" in meta:
        version, words, gauss_next = meta["python"]
        random.setstate((version, tuple(words), gauss_next))


@contextmanager
def deterministic_mode(enabled: bool = True) -> Iterator[None]:
    """Switch torch's deterministic algorithms and cuDNN's flags on (or off) inside the block.

    Everything is restored on exit: ``torch.use_deterministic_algorithms``, its warn-only flag,
    ``cudnn.deterministic``, ``cudnn.benchmark`` and ``CUBLAS_WORKSPACE_CONFIG``.

    Example:
        >>> with deterministic_mode(True):
        ...     torch.are_deterministic_algorithms_enabled()
        True
        >>> torch.are_deterministic_algorithms_enabled()
        False
    """
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    if enabled:
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", _CUBLAS_WORKSPACE)
    try:
        yield
    finally:
        algorithms, warn_only, cudnn_det, cudnn_bench, cublas = saved
        torch.use_deterministic_algorithms(algorithms, warn_only=warn_only)
        torch.backends.cudnn.deterministic = cudnn_det
        torch.backends.cudnn.benchmark = cudnn_bench
        if cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:<i>"`` or ``"mps"`` into a device.

    ``"auto"`` picks CUDA if available, else MPS if available, else the CPU.

    Raises:
        ConfigError: For an unknown name or a backend (or GPU index) this machine lacks.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if isinstance(device, torch.device):
        device = str(device)
    name = device.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not _mps_available():
            raise ConfigError("device 'mps' requested but MPS is not available; use cpu or auto")
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {device!r} requested but CUDA is not available; use cpu or auto"
            )
        index = name.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise ConfigError(
                f"device {device!r} does not exist; this machine has "
                f"{torch.cuda.device_count()} CUDA device(s): use cuda:0 .. "
                f"cuda:{torch.cuda.device_count() - 1}"
            )
        return torch.device(name)
    raise ConfigError(
        f"unknown device {device!r}; valid choices: auto, cpu, cuda, cuda:<index>, mps"
    )


def _cuda_index(key: str) -> int:
    return int(key.split("/")[1]) if key.startswith("cuda/") else -1


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())
