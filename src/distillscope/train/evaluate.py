"""Evaluation of a model on a dataset at temperature 1 (accuracy and cross-entropy)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import islice
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from distillscope.data.base import DistillDataset, iter_batches
from distillscope.errors import ConfigError
from distillscope.train.distributed import SINGLE, World, batch_rows, sum_across
from distillscope.train.seeding import resolve_device

__all__ = ["CHANCE_MARGIN", "chance_warning", "evaluate"]

#: How far above chance (1 / K) a final held-out accuracy must be not to be flagged.
CHANCE_MARGIN = 0.02


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    dataset: DistillDataset,
    batch_size: int,
    device: str | torch.device = "cpu",
    max_batches: int | None = None,
    *,
    world: World = SINGLE,
    workers: int = 0,
) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``model`` on ``dataset`` at temperature 1.

    The model runs in eval mode (restored afterwards); sums stay on the device until the end.

    Args:
        model: Network returning logits, already on ``device``.
        dataset: Items to score, in order.
        batch_size: Inference batch size.
        device: Where the batches go.
        max_batches: Score only the first batches (quick runs).
        world: The ranks of a data-parallel run: each scores every ``size``-th batch from its
            rank on and the sums are added up over the ranks (every rank returns the same).
        workers: DataLoader workers for a dataset not held in memory; on CUDA the batches
            are pinned and copied asynchronously.

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
        rows = batch_rows(len(dataset), batch_size, max_batches, world) if world.parallel else None
        pin = device.type == "cuda"
        batches = iter_batches(dataset, batch_size, rows=rows, workers=workers, pin_memory=pin)
        for batch in islice(batches, max_batches):
            batch = batch.to(device, non_blocking=pin)
            logits = model(batch.inputs)  # (B, K)
            loss_sum += F.cross_entropy(logits.float(), batch.targets, reduction="sum")
            correct += (logits.argmax(1) == batch.targets).sum()
            seen += len(batch)
    finally:
        model.train(was_training)
    hits, loss = correct.item(), loss_sum.item()
    if world.parallel:  # every rank scored its batches: add them up
        sums = torch.tensor([loss, hits, seen], dtype=torch.float64, device=device)  # (3,)
        loss, hits, seen = sum_across(sums, world).tolist()
    if seen == 0:
        raise ConfigError("cannot evaluate on an empty dataset; check the split")
    return {"acc": hits / seen, "loss": loss / seen}


def chance_warning(name: str, history: Sequence[Mapping[str, Any]], num_classes: int) -> str | None:
    """A one-line warning when ``name`` ends training at chance accuracy, else ``None``.

    Flagged when the last epoch's ``val_acc`` is at most ``1 / K + CHANCE_MARGIN``; the
    probes of such a model would be meaningless. The line says why, as far as the history
    tells: when the training loss rose (its last epoch's mean above its first's) the run
    likely diverged (a loss that exploded to a finite value passes the trainer's NaN guard);
    when it did not rise, the model has not learnt yet (a smoke run of one or two epochs):
    training was probably too short.

    Example:
        >>> rose = [{"epoch": 1, "val_acc": 0.3, "loss": 2.1}, {"val_acc": 0.1, "loss": 3857.6}]
        >>> chance_warning("kd", rose, 10)[:40]
        'kd ends at chance accuracy (0.100 held-o'
        >>> "diverged" in chance_warning("kd", rose, 10)
        True
        >>> short = [{"epoch": 1, "val_acc": 0.1, "loss": 2.3}]
        >>> chance_warning("kd", short, 10).split(") after ")[1]
        '1 epoch (training loss 2.3, no earlier epoch to compare); probably too short to \
learn: give it more train.epochs or data'
        >>> chance_warning("kd", [{"epoch": 1, "val_acc": 0.8}], 10) is None
        True
    """
    scored = [h for h in history if isinstance(h.get("val_acc"), (int, float))]
    if not scored or num_classes < 2:
        return None
    acc = float(scored[-1]["val_acc"])
    chance = 1.0 / num_classes
    if acc > chance + CHANCE_MARGIN:
        return None
    losses = [float(h["loss"]) for h in history if isinstance(h.get("loss"), (int, float))]
    at = f"{name} ends at chance accuracy ({acc:.3f} held-out, chance {chance:.3f})"
    if len(losses) >= 2 and losses[-1] > losses[0]:
        return (
            f"{at}; its training loss rose from {losses[0]:.4g} to {losses[-1]:.4g} (peak "
            f"{max(losses):.4g}); training likely diverged: lower its train.lr (or add "
            "warmup_epochs) and run again"
        )
    epochs = len(history)
    after = f"{at} after {epochs} epoch{'s' if epochs != 1 else ''}"
    if len(losses) >= 2:
        trend = f"; its training loss did not rise ({losses[0]:.4g} to {losses[-1]:.4g})"
    elif losses:
        trend = f" (training loss {losses[-1]:.4g}, no earlier epoch to compare)"
    else:
        trend = ""
    return f"{after}{trend}; probably too short to learn: give it more train.epochs or data"
