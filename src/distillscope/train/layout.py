"""Channels-last (NHWC) memory layout for convolutional networks on the CPU, where it is safe.

oneDNN's CPU convolution and batch-norm kernels are faster on channels-last tensors: measured
here (``benchmarks/epoch_time.py``), a CIFAR ResNet-20 on 28x28 Fashion-MNIST trains about
1.3x faster per image and runs inference about 1.35x faster; the ``mnist_cnn`` student gains
a few percent. The values a layer computes are the same; only the order of floating-point
additions inside a convolution may differ, so results agree with the default layout to float
rounding and stay deterministic from run to run.

The layout is a view of the same numbers, but code that calls ``.view`` on an activation (a
common way to flatten) fails on it. :func:`channels_last` therefore first runs the model once
on two samples in that layout (eval mode, no gradients, the random generators untouched) and
keeps the default layout if that fails. It restores the default layout on exit, so the model
leaves the block exactly as it came in (parameter values are never changed, only their strides).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

__all__ = ["channels_last", "to_layout"]


def _worth_trying(model: nn.Module, sample: Tensor, device: torch.device) -> bool:
    """CPU, image batches ``(B, C, H, W)`` and at least one 2-D convolution."""
    return (
        device.type == "cpu"
        and sample.dim() == 4
        and any(isinstance(m, nn.Conv2d) for m in model.modules())
    )


def _runs_channels_last(model: nn.Module, sample: Tensor) -> bool:
    """Whether ``model`` (already converted) accepts a channels-last batch without error."""
    was_training = [m.training for m in model.modules()]
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            model.eval()
            model(sample[:2].contiguous(memory_format=torch.channels_last))
        return True
    except Exception:  # noqa: BLE001 (any failure means: keep the default layout)
        return False
    finally:
        for module, mode in zip(model.modules(), was_training):
            module.training = mode


def to_layout(x: Tensor, enabled: bool) -> Tensor:
    """``x`` in channels-last layout when ``enabled`` and ``x`` is 4-D, else ``x`` itself."""
    if enabled and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


@contextmanager
def channels_last(model: nn.Module, sample: Tensor, device: torch.device) -> Iterator[bool]:
    """Put ``model``'s 4-D parameters in channels-last layout inside the block, if worthwhile.

    Yields whether the layout is on (then inputs should go through :func:`to_layout`). The
    parameters stay the same ``nn.Parameter`` objects (an optimizer built inside the block keeps
    working) and get the default layout back on exit, even after an exception.

    Args:
        model: The network, already on ``device``.
        sample: A batch of inputs like the ones the model will see (at least one row).
        device: Where the model runs; other devices than the CPU keep the default layout.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
        >>> with channels_last(net, torch.zeros(2, 2, 6, 6), torch.device("cpu")) as on:
        ...     on, net[0].weight.is_contiguous()
        (True, False)
        >>> net[0].weight.is_contiguous()
        True
    """
    on = False
    if _worth_trying(model, sample, device):
        _convert(model, torch.channels_last)
        on = _runs_channels_last(model, sample)
        if not on:
            _convert(model, torch.contiguous_format)
    try:
        yield on
    finally:
        if on:
            _convert(model, torch.contiguous_format)


def _convert(model: nn.Module, memory_format: torch.memory_format) -> None:
    """Change the layout of 4-D parameters and buffers in place (same Parameter objects).

    Outside inference mode even when called inside it (e.g. by the teacher cache): parameters
    made there would become inference tensors, unusable for a later backward pass.
    """
    with torch.inference_mode(False):
        model.to(memory_format=memory_format)
