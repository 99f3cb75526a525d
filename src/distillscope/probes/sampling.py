"""What every probe shares: the sample choice, the batches, the models in eval mode.

A probe audits the first ``max_samples`` of a permutation of the held-out split drawn from
``seed``, so two probes (or two runs) with the same seed look at the same samples.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from tqdm import tqdm

from distillscope.contracts import Batch
from distillscope.data.base import DistillDataset, TensorDataset, iter_batches, num_batches
from distillscope.errors import ConfigError, DataError
from distillscope.probes.base import Probe, ProbeData

__all__ = [
    "evaluating",
    "forward_all",
    "probe_batches",
    "probe_logits",
    "probe_samples",
    "sample_indices",
]


def sample_indices(n: int, max_samples: int, seed: int) -> Tensor:
    """The first ``min(n, max_samples)`` entries of a ``seed``-ed permutation of ``range(n)``.

    Example:
        >>> sample_indices(10, 3, seed=0).tolist() == sample_indices(10, 3, seed=0).tolist()
        True
        >>> len(sample_indices(10, 50, seed=0))
        10
    """
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))  # (n,)
    return order[:max_samples]


class _IndexedView(DistillDataset):
    """Lazy view of ``indices`` of a dataset that is not held in memory."""

    def __init__(self, dataset: DistillDataset, indices: Tensor) -> None:
        self.dataset = dataset
        self.indices = indices.tolist()
        self.info = dataset.info
        self.augmented = dataset.augmented

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, int]:
        x, y, _ = self.dataset[self.indices[i]]
        return x, torch.as_tensor(y), i

    def targets_tensor(self) -> Tensor:
        return self.dataset.targets_tensor()[torch.as_tensor(self.indices, dtype=torch.long)]


def probe_samples(data: ProbeData, max_samples: int, seed: int) -> DistillDataset:
    """The audited samples of ``data``: a seeded subset of at most ``max_samples``.

    Raises:
        DataError: The held-out split is empty.
    """
    if len(data.dataset) == 0:
        raise DataError(f"the probe dataset {data.info.name!r} is empty; pass a non-empty split")
    idx = sample_indices(len(data.dataset), max_samples, seed)
    if isinstance(data.dataset, TensorDataset):
        return data.dataset.subset(idx)
    return _IndexedView(data.dataset, idx)


def probe_batches(probe: Probe, data: ProbeData) -> Iterator[Batch]:
    """Batches of ``probe.batch_size`` over the probe's samples, on ``data.device``.

    With ``probe.progress`` set (the experiment sets it from its ``progress`` flag), a tqdm bar
    on stderr counts the batches.
    """
    samples = probe_samples(data, probe.max_samples, probe.seed)
    total = num_batches(samples, probe.batch_size)
    with tqdm(
        total=total, desc=probe.name, file=sys.stderr, disable=not probe.progress, leave=False
    ) as bar:
        for batch in iter_batches(samples, probe.batch_size):
            yield batch.to(data.device)
            bar.update()


def probe_logits(
    probe: Probe, data: ProbeData, models: Mapping[str, nn.Module]
) -> Iterator[tuple[Batch, dict[str, Tensor]]]:
    """:func:`probe_batches` with every model's ``(B, K)`` logits on each batch.

    The logits come from ``data.logits``: a batch another probe of the run already passed
    through a model (same held-out samples in the same order, the model unchanged) is read
    back, not computed again; they are what :func:`forward_all` gives on that batch.

    Args:
        probe: The probe (its ``batch_size``, ``max_samples`` and ``seed`` choose the batches).
        data: The held-out split and its logit cache.
        models: The models, in eval mode on ``data.device`` (from :func:`evaluating`).
    """
    dataset = data.dataset
    start = 0
    for batch in probe_batches(probe, data):
        stop = start + len(batch)
        if dataset.augmented:  # random per read: every probe sees other inputs
            yield batch, forward_all(models, batch.inputs)
        else:  # the batch is rows start:stop of the seed's permutation of the split
            key = (id(dataset), len(dataset), data.device, probe.seed, start, stop)
            yield batch, data.logits.logits(models, key, batch.inputs)
        start = stop


@contextmanager
def evaluating(
    models: Mapping[str, nn.Module], names: Iterable[str], device: str
) -> Iterator[dict[str, nn.Module]]:
    """The models ``names`` on ``device`` and in eval mode; their training flags are restored.

    Raises:
        ConfigError: A name (from the roles) is not among ``models``.
    """
    chosen: dict[str, nn.Module] = {}
    for name in names:
        if name not in models:
            raise ConfigError(
                f"model {name!r} named by the roles is not among the probed models "
                f"({', '.join(models) or 'none'}); pass it or fix the roles"
            )
        chosen[name] = models[name]
    modes = {name: [m.training for m in model.modules()] for name, model in chosen.items()}
    try:
        for model in chosen.values():
            model.to(device).eval()
        yield chosen
    finally:
        for name, model in chosen.items():
            for module, mode in zip(model.modules(), modes[name]):
                module.training = mode


@torch.no_grad()
def forward_all(models: Mapping[str, nn.Module], inputs: Tensor) -> dict[str, Tensor]:
    """``(B, K)`` logits of every model on ``inputs``, without a graph."""
    return {name: model(inputs) for name, model in models.items()}
