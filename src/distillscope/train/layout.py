"""Channels-last (NHWC) memory layout for convolutional networks, where it is safe and pays.

oneDNN's CPU convolution and batch-norm kernels are faster on channels-last tensors: measured
here (``benchmarks/epoch_time.py``), a CIFAR ResNet-20 on 28x28 Fashion-MNIST trains about
1.3x faster per image and runs inference about 1.35x faster; the ``mnist_cnn`` student gains
a few percent. On CUDA the gain is the tensor cores': cuDNN's half-precision convolutions
work on NHWC data, so a network in the default NCHW layout pays a transpose around every
convolution under bf16/fp16 autocast (NVIDIA's "Convolutional Layers User's Guide", section
"Tensor layouts"; PyTorch's channels-last tutorial measures its gains with AMP), while in fp32
the layout gains little. The values a layer computes are the same; only the order of
floating-point additions inside a convolution may differ, so results agree with the default
layout to float rounding and stay deterministic from run to run.

``train.channels_last`` (:class:`~distillscope.config_train.TrainConfig`) chooses: ``auto``
(the rule above: the CPU, or CUDA under bf16/fp16, for image batches and a network with a 2-D
convolution), ``on`` (always; refused in one line when the network cannot run that way) or
``off``.

The layout is a view of the same numbers, but code that calls ``.view`` on an activation (a
common way to flatten) fails on it. :func:`channels_last` therefore first runs the model once
on two samples in that layout (eval mode, no gradients, the random generators untouched): under
``auto`` it keeps the default layout if that fails, under ``on`` it raises. It restores the
default layout on exit, so the model leaves the block exactly as it came in (parameter values
are never changed, only their strides).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from distillscope.errors import ConfigError

__all__ = ["LAYOUTS", "channels_last", "to_layout", "worth_trying"]

#: ``train.channels_last``'s values.
LAYOUTS = ("auto", "on", "off")
#: Precisions whose CUDA convolutions run on tensor cores, which want NHWC data.
TENSOR_CORE_PRECISIONS = ("bf16", "fp16")


def worth_trying(model: nn.Module, sample: Tensor, device: torch.device, precision: str) -> bool:
    """The ``auto`` rule: image batches ``(B, C, H, W)``, at least one 2-D convolution, and
    the CPU, or CUDA under bf16/fp16 autocast (tensor cores).

    Example:
        >>> net = nn.Conv2d(1, 2, 3)
        >>> x = torch.zeros(1, 1, 5, 5)
        >>> [worth_trying(net, x, torch.device(d), p)
        ...  for d, p in [("cpu", "fp32"), ("cuda", "fp32"), ("cuda", "bf16")]]
        [True, False, True]
    """
    if sample.dim() != 4 or not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return False
    return device.type == "cpu" or (device.type == "cuda" and precision in TENSOR_CORE_PRECISIONS)


def _trial(model: nn.Module, sample: Tensor) -> Exception | None:
    """Run ``model`` (already converted) on a channels-last batch of two; the error it raised,
    or ``None`` when it ran."""
    was_training = [m.training for m in model.modules()]
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            model.eval()
            model(sample[:2].contiguous(memory_format=torch.channels_last))
        return None
    except Exception as exc:  # noqa: BLE001 (any failure means: not in this layout)
        return exc
    finally:
        for module, mode in zip(model.modules(), was_training):
            module.training = mode


def to_layout(x: Tensor, enabled: bool) -> Tensor:
    """``x`` in channels-last layout when ``enabled`` and ``x`` is 4-D, else ``x`` itself."""
    if enabled and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


@contextmanager
def channels_last(
    model: nn.Module,
    sample: Tensor,
    device: torch.device,
    mode: str = "auto",
    precision: str = "fp32",
) -> Iterator[bool]:
    """Put ``model``'s 4-D parameters in channels-last layout inside the block, as ``mode``
    says.

    Yields whether the layout is on (then inputs should go through :func:`to_layout`). The
    parameters stay the same ``nn.Parameter`` objects (an optimizer built inside the block keeps
    working) and get the default layout back on exit, even after an exception.

    Args:
        model: The network, already on ``device``.
        sample: A batch of inputs like the ones the model will see (at least one row).
        device: Where the model runs.
        mode: ``auto``: when :func:`worth_trying` and the trial pass runs; ``on``: always
            (image batches only); ``off``: never.
        precision: The autocast precision the model runs in (``auto`` on CUDA wants bf16/fp16).

    Raises:
        ConfigError: ``on`` with batches that are not images, or a model that fails the trial
            pass in that layout (naming its error).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
        >>> with channels_last(net, torch.zeros(2, 2, 6, 6), torch.device("cpu")) as on:
        ...     on, net[0].weight.is_contiguous()
        (True, False)
        >>> net[0].weight.is_contiguous()
        True
    """
    if mode not in LAYOUTS:
        raise ConfigError(f"train.channels_last={mode!r} is invalid; use one of auto, on, off")
    if mode == "on" and sample.dim() != 4:
        raise ConfigError(
            f"train.channels_last=on needs image batches (B, C, H, W), but these inputs are "
            f"{tuple(sample.shape[1:])} per item; use auto or off"
        )
    on = False
    if mode == "on" or (mode == "auto" and worth_trying(model, sample, device, precision)):
        _convert(model, torch.channels_last)
        error = _trial(model, sample)
        on = error is None
        if not on:
            _convert(model, torch.contiguous_format)
            if mode == "on":
                what = " ".join(str(error).split())[:160]
                raise ConfigError(
                    f"train.channels_last=on: {type(model).__name__} cannot run channels-last "
                    f"({type(error).__name__}: {what}); use auto or off (e.g. flatten with "
                    "reshape or flatten, not view)"
                )
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
