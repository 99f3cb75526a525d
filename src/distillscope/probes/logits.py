"""The clean logits of the audited batches, computed once and read by every probe of a run.

Several probes start from the same forward pass: with the quickstart's settings, ``accuracy``,
``agreement`` and ``class_similarity`` each ran every model over the same 1,000 held-out images
in the same batches. A :class:`LogitCache` lives in the run's
:class:`~distillscope.probes.base.ProbeData`, so the first probe that needs a model's logits on
a batch computes them and the others read them back. Nothing changes in the numbers: an entry
is only reused for the same model object with the same weights (the version counters of its
parameters and buffers, which every in-place change such as an optimizer step or
``load_state_dict`` advances), in eval mode, on the same batch (the same held-out samples in
the same order, so the same forward pass), and it holds exactly what that pass returned.

The cache stays inside the probes' floor and moves nothing backwards: it is filled and read
while the probes run and is never written to disk.
"""

from __future__ import annotations

import weakref
from collections.abc import Hashable, Mapping
from itertools import chain

import torch
from torch import Tensor, nn

__all__ = ["LOGIT_CACHE_MB", "LogitCache"]

#: Memory the cache may fill: 256 MB, the logits of 64,000 audited images x 1,000 classes in
#: float32 (the probes' default audits 1,000 images per model); beyond it, logits are computed
#: and not kept.
LOGIT_CACHE_MB = 256


def _weights_state(model: nn.Module) -> tuple[int, ...]:
    """The version counters of ``model``'s parameters and buffers: any in-place change moves
    one of them."""
    return tuple(t._version for t in chain(model.parameters(), model.buffers()))


class LogitCache:
    """Each model's logits per audited batch, kept within a memory budget.

    Args:
        budget_mb: Memory the kept logits may fill, in MB.

    Attributes:
        hits: Forward passes saved so far (one per model and batch read back).
        nbytes: Memory the kept logits fill.

    Example:
        >>> net = nn.Linear(3, 2).eval()  # a model in training mode is never kept
        >>> cache, x = LogitCache(), torch.randn(4, 3)
        >>> first = cache.logits({"net": net}, "batch 0", x)["net"]
        >>> again = cache.logits({"net": net}, "batch 0", x)["net"]
        >>> torch.equal(first, again), cache.hits
        (True, 1)
    """

    def __init__(self, budget_mb: float = LOGIT_CACHE_MB) -> None:
        self.budget = int(budget_mb * 2**20)
        self.nbytes = 0
        self.hits = 0
        # (id(model), batch key) -> (weak reference to the model, its weights' state, logits)
        self._entries: dict[tuple[int, Hashable], tuple[weakref.ref, tuple[int, ...], Tensor]] = {}

    def logits(
        self, models: Mapping[str, nn.Module], batch: Hashable, inputs: Tensor
    ) -> dict[str, Tensor]:
        """``(B, K)`` logits of every model on ``inputs``, without a graph.

        Args:
            models: The models, in eval mode (a model in training mode is run, never kept).
            batch: What identifies ``inputs``: equal keys must mean the same samples in the
                same order (see :func:`~distillscope.probes.sampling.probe_logits`).
            inputs: ``(B, ...)`` the batch, on the models' device.

        Returns:
            Model name -> its logits, in the order of ``models``; each a tensor of its own, so
            a caller may change it in place.
        """
        out: dict[str, Tensor] = {}
        for name, model in models.items():
            key = (id(model), batch)
            state = _weights_state(model)
            entry = self._entries.get(key)
            if entry is not None and entry[0]() is model and entry[1] == state:
                out[name] = entry[2].clone()
                self.hits += 1
                continue
            if entry is not None:  # stale: the model changed since
                del self._entries[key]
                self.nbytes -= entry[2].numel() * entry[2].element_size()
            with torch.no_grad():
                z = model(inputs)  # (B, K)
            out[name] = z
            size = z.numel() * z.element_size()
            if any(m.training for m in model.modules()) or self.nbytes + size > self.budget:
                continue
            self._entries[key] = (weakref.ref(model), state, z.clone())
            self.nbytes += size
        return out
