"""Data-parallel training of one run: the world of ranks, its process group and collectives.

``torchrun --nproc-per-node N -m distillscope run cfg.yaml`` (or ``srun`` with ``N`` tasks)
starts ``N`` copies of the run; :func:`world_from_env` reads which one this is and
:func:`process_group` joins them (``gloo`` on the CPU, ``nccl`` on CUDA, one GPU per rank).
What stays global is what a config says: ``train.batch_size`` is the global batch, and every
rank draws the same epoch order from the seed and takes its share of each batch
(:func:`~distillscope.data.base.rank_share`, DistributedSampler's dealing), so the maths of a
config does not change with ``N``. Averaging the ranks' gradients of their weighted mean losses
(:func:`~distillscope.data.base.share_weight`) gives the gradient of the global batch's mean
loss: a network without batch norm trains as one process would, to float tolerance
(``tests/integration/test_data_parallel.py``).

Rank 0 writes (run directory, checkpoints, metrics, teacher store, results, report) and runs
the probes; the other ranks read what it wrote and wait at barriers. One process
(``WORLD_SIZE`` unset or 1) runs exactly as without this module.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from distillscope import messages
from distillscope.distill.base import LossTerm
from distillscope.errors import ConfigError
from distillscope.train.seeding import get_rng_state

__all__ = [
    "SINGLE",
    "TIMEOUT",
    "World",
    "average_gradients",
    "backend_for",
    "barrier",
    "batch_rows",
    "block",
    "broadcast_state",
    "check_data_parallel",
    "current_world",
    "from_main",
    "gather_rng_state",
    "gather_rows",
    "process_group",
    "rank_device",
    "rank_rng_state",
    "rank_seed",
    "sum_across",
    "world_from_env",
    "wrap",
]

#: How long a rank waits in a collective: rank 0 alone runs the probes and builds disk caches
#: while the others wait at a barrier, which takes longer than torch's default 10-30 minutes.
TIMEOUT = timedelta(hours=3)

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """Which of the run's processes this is.

    Attributes:
        rank: This process's rank, ``0 .. size - 1`` (rank 0 writes and probes).
        size: How many processes train the run together.
        local_rank: Its rank on its node (its GPU index on CUDA).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this is rank 0."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        """Whether more than one process trains the run."""
        return self.size > 1


#: One process: the world of a plain ``distillscope run``.
SINGLE = World()

_active: World | None = None


def world_from_env(env: Mapping[str, str] | None = None) -> World:
    """The world the launcher describes in the environment.

    ``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; ``srun`` sets
    ``SLURM_PROCID``, ``SLURM_NTASKS`` and ``SLURM_LOCALID`` in each task of a job step
    (``SLURM_STEP_ID``; a batch script's own shell, outside any step, is one process). torchrun's
    variables win when both are there (torchrun started inside a Slurm job).

    Raises:
        ConfigError: A variable is not an integer, or the rank is outside the world.

    Example:
        >>> world_from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
        World(rank=1, size=2, local_rank=1)
        >>> world_from_env({"SLURM_STEP_ID": "0", "SLURM_PROCID": "3", "SLURM_NTASKS": "4",
        ...                 "SLURM_LOCALID": "1"})
        World(rank=3, size=4, local_rank=1)
        >>> world_from_env({})
        World(rank=0, size=1, local_rank=0)
    """
    env = os.environ if env is None else env
    if "WORLD_SIZE" in env:
        names = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    elif "SLURM_STEP_ID" in env and "SLURM_NTASKS" in env:
        names = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")
    else:
        return SINGLE
    values = []
    for name in names:
        text = env.get(name, "0")
        if not text.strip().isdigit():
            raise ConfigError(
                f"{name}={text!r} is not a non-negative integer; launch with torchrun or srun, "
                "which set it"
            )
        values.append(int(text))
    rank, size, local = values
    if size < 1 or rank >= size:
        raise ConfigError(
            f"{names[0]}={rank} is outside a world of {names[1]}={size}; launch with torchrun "
            "or srun, which set both"
        )
    return World(rank, size, local)


def backend_for(device: torch.device) -> str:
    """``nccl`` for CUDA devices, ``gloo`` otherwise.

    Example:
        >>> backend_for(torch.device("cpu"))
        'gloo'
    """
    return "nccl" if device.type == "cuda" else "gloo"


def rank_device(device: torch.device, world: World) -> torch.device:
    """Where this rank trains: its own GPU on CUDA, ``cuda:<local rank>`` (modulo the GPUs it
    sees: a task that Slurm gave one GPU sees it as ``cuda:0``), else ``device``.

    Example:
        >>> rank_device(torch.device("cpu"), World(1, 2, 1))
        device(type='cpu')
    """
    if device.type == "cuda" and world.parallel:
        return torch.device("cuda", world.local_rank % max(torch.cuda.device_count(), 1))
    return device


@contextmanager
def process_group(world: World, device: torch.device) -> Iterator[World]:
    """Join the run's process group for the block (nothing for one process); messages are
    printed by rank 0 only. ``MASTER_ADDR`` and ``MASTER_PORT`` say where rank 0 listens
    (torchrun sets them; with srun, export them first).

    Raises:
        ConfigError: ``MASTER_ADDR`` or ``MASTER_PORT`` is missing.
    """
    global _active
    if not world.parallel or dist.is_initialized():
        yield world if world.parallel else SINGLE
        return
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        raise ConfigError(
            f"{' and '.join(missing)} not set for a data-parallel run of {world.size} processes; "
            "launch with torchrun, or before srun export MASTER_ADDR=$(scontrol show hostnames "
            "$SLURM_JOB_NODELIST | head -n 1) MASTER_PORT=29500"
        )
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend_for(device), rank=world.rank, world_size=world.size, timeout=TIMEOUT
    )
    _active = world
    quiet = messages.quiet(not world.main)
    try:
        yield world
    finally:
        messages.quiet(quiet)
        _active = None
        dist.destroy_process_group()


def current_world() -> World:
    """The world of the process group this process is in (:func:`process_group`, or one the
    caller initialised), else :data:`SINGLE`."""
    if _active is not None:
        return _active
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        return World(dist.get_rank(), dist.get_world_size(), local)
    return SINGLE


def barrier(world: World) -> None:
    """Wait for every rank (nothing for one process)."""
    if world.parallel:
        dist.barrier()


def from_main(world: World, fn: Callable[[], T]) -> T:
    """``fn()`` run on rank 0, its result handed to every rank; an error it raises is raised
    on every rank (the others would otherwise wait for rank 0 until :data:`TIMEOUT`).

    Example:
        >>> from_main(SINGLE, lambda: 3)
        3
    """
    if not world.parallel:
        return fn()
    box: list[Any] = [None]
    error: BaseException | None = None
    if world.main:
        try:
            box[0] = ("ok", fn())
        except Exception as exc:  # handed on, then raised here too
            error = exc
            box[0] = ("error", exc)
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if error is not None:
        raise error
    if kind == "error":
        raise value
    return value


def broadcast_state(module: nn.Module, world: World) -> None:
    """Give every rank rank 0's parameters and buffers of ``module`` (in place)."""
    if not world.parallel:
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def sum_across(tensor: Tensor, world: World) -> Tensor:
    """``tensor`` summed over the ranks (in place; itself for one process)."""
    if world.parallel:
        dist.all_reduce(tensor)
    return tensor


def average_gradients(params: Iterable[nn.Parameter], world: World) -> None:
    """Average the gradients of ``params`` over the ranks in one all-reduce (the parameters a
    loss term owns: regressors, embeddings; a network's are DDP's). A parameter without a
    gradient on every rank keeps none; one with a gradient on some ranks gets their sum / N.
    """
    params = [p for p in params if p.requires_grad]
    if not world.parallel or not params:
        return
    flat = [p.grad.reshape(-1) if p.grad is not None else torch.zeros_like(p).reshape(-1)
            for p in params]  # fmt: skip
    had = torch.tensor([p.grad is not None for p in params], dtype=flat[0].dtype,
                       device=flat[0].device)  # fmt: skip
    packed = torch.cat([*flat, had])  # (sum numel + P,)
    dist.all_reduce(packed)
    packed /= world.size
    start = 0
    for p, count in zip(params, packed[-len(params) :].tolist()):
        n = p.numel()
        p.grad = packed[start : start + n].view_as(p).clone() if count > 0 else None
        start += n


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s global generators at a fresh start of training (ranks after
    0; rank 0 keeps the run's seed), so the ranks' dropout and augmentation draws differ.

    Example:
        >>> rank_seed(0, 1) == rank_seed(0, 1) != rank_seed(0, 2)
        True
    """
    words = np.random.SeedSequence([seed, rank, 2]).generate_state(1, dtype=np.uint32)
    return int(words[0])


def gather_rng_state(world: World) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Every rank's :func:`~distillscope.train.seeding.get_rng_state`, for rank 0's
    checkpoint: rank 0's under their own keys, rank ``r``'s tensors under ``rank<r>/`` and its
    metadata under ``rank<r>`` (a collective: every rank calls it)."""
    tensors, meta = get_rng_state()
    if not world.parallel:
        return tensors, meta
    states: list[Any] = [None] * world.size
    dist.all_gather_object(states, (tensors, meta))
    for r, (their_tensors, their_meta) in enumerate(states[1:], start=1):
        tensors.update({f"rank{r}/{k}": v for k, v in their_tensors.items()})
        meta[f"rank{r}"] = their_meta
    return tensors, meta


def rank_rng_state(
    tensors: dict[str, Tensor], meta: dict[str, Any], rank: int
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Rank ``rank``'s generator state from a checkpoint of :func:`gather_rng_state` (rank 0's
    when the file holds no other, as one process writes).

    Example:
        >>> t = {"torch": torch.ones(1), "rank1/torch": torch.zeros(1)}
        >>> rank_rng_state(t, {"rank1": {"python": 1}}, 1)
        ({'torch': tensor([0.])}, {'python': 1})
    """
    prefix = f"rank{rank}/"
    mine = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    if rank == 0 or not mine:
        return {k: v for k, v in tensors.items() if not k.startswith("rank")}, meta
    return mine, dict(meta.get(f"rank{rank}", {}))


def block(n: int, world: World) -> tuple[int, int]:
    """Rank ``world.rank``'s rows ``[lo, hi)`` of ``n``, in contiguous blocks of sizes differing
    by at most one (a teacher cache is built so, :func:`gather_rows` puts them together).

    Example:
        >>> [block(5, World(r, 2)) for r in (0, 1)]
        [(0, 2), (2, 5)]
    """
    return n * world.rank // world.size, n * (world.rank + 1) // world.size


def batch_rows(n: int, batch_size: int, limit: int | None, world: World) -> Tensor:
    """The items of rank ``world.rank``'s batches when the first ``limit`` (all: ``None``)
    in-order batches of ``n`` items are dealt round-robin over the ranks (evaluation).

    Example:
        >>> batch_rows(7, 2, None, World(1, 2)).tolist()
        [2, 3, 6]
    """
    count = -(-n // batch_size)
    count = min(count, limit) if limit is not None else count
    mine = [torch.arange(b * batch_size, min((b + 1) * batch_size, n))
            for b in range(world.rank, count, world.size)]  # fmt: skip
    return torch.cat(mine) if mine else torch.zeros(0, dtype=torch.long)


def gather_rows(stores: Iterable[Tensor], world: World) -> None:
    """Fill every rank's ``(N, ...)`` stores with every rank's :func:`block` of rows: each
    block is broadcast from the rank that computed it, in place."""
    if not world.parallel:
        return
    for store in stores:
        for r in range(world.size):
            lo, hi = block(len(store), World(r, world.size))
            dist.broadcast(store[lo:hi], src=r)


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in :class:`~torch.nn.parallel.DistributedDataParallel` (its trainable
    parameters averaged in the backward pass; rank 0's weights and buffers given to all)."""
    ids = [device.index if device.index is not None else 0] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def check_data_parallel(
    world: World, losses: Mapping[str, LossTerm], batch_size: int, num_train: int
) -> None:
    """Refuse (one line) what cannot train data-parallel in ``world``: a global batch size not
    divisible by the number of ranks, fewer training items than ranks, or a loss term that
    reads statistics of the whole batch (:meth:`~distillscope.distill.base.LossTerm.
    data_parallel_issue`).

    Example:
        >>> check_data_parallel(World(0, 2), {}, 64, 100)
        >>> check_data_parallel(World(0, 2), {}, 63, 100)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        distillscope.errors.ConfigError: train.batch_size 63 is the global batch ... use e.g. 64
    """
    if not world.parallel:
        return
    if batch_size % world.size:
        even = -(-batch_size // world.size) * world.size
        raise ConfigError(
            f"train.batch_size {batch_size} is the global batch of a data-parallel run of "
            f"{world.size} processes and must be divisible by {world.size}; use e.g. {even}"
        )
    if num_train < world.size:
        raise ConfigError(
            f"the training set has {num_train} items, fewer than the {world.size} processes; "
            "run it in one process"
        )
    for member, loss in losses.items():
        issue = loss.data_parallel_issue()
        if issue is not None:
            raise ConfigError(
                f"{member!r} cannot train data-parallel ({issue}); run it in one process "
                "(without torchrun / srun)"
            )
