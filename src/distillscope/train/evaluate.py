"""Evaluation of a model on a dataset at temperature 1 (accuracy and cross-entropy)."""

from __future__ import annotations

from itertools import islice

import torch
import torch.nn.functional as F
from torch import nn

from distillscope.data.base import DistillDataset, iter_batches
from distillscope.errors import ConfigError
from distillscope.train.seeding import resolve_device

__all__ = ["evaluate"]


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    dataset: DistillDataset,
    batch_size: int,
    device: str | torch.device = "cpu",
    max_batches: int | None = None,
) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` on ``dataset`` at temperature 1.

    The model runs in eval mode (restored afterwards); sums stay on the device until the end.

    Args:
        model: Network returning logits, already on ``device``.
        dataset: Items to score, in order.
        batch_size: Inference batch size.
        device: Where the batches go.
        max_batches: Score only the first batches (quick runs).

    Returns:
        ``{"acc": fraction correct, "loss": mean cross-entropy}``.

    Example:
        >>> from distillscope.data.base import DatasetInfo, TensorDataset
        >>> info = DatasetInfo("toy", 2, (2,), ["a", "b"])
        >>> data = TensorDataset(torch.eye(2), torch.tensor([0, 1]), info)
        >>> evaluate(nn.Identity(), data, batch_size=2)["acc"]
        1.0
    """
    device = resolve_device(device)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    try:
        for batch in islice(iter_batches(dataset, batch_size), max_batches):
            batch = batch.to(device)
            logits = model(batch.inputs)  # (B, K)
            loss_sum += F.cross_entropy(logits.float(), batch.targets, reduction="sum")
            correct += (logits.argmax(1) == batch.targets).sum()
            seen += len(batch)
    finally:
        model.train(was_training)
    if seen == 0:
        raise ConfigError("cannot evaluate on an empty dataset; check the split")
    return {"acc": correct.item() / seen, "loss": loss_sum.item() / seen}
