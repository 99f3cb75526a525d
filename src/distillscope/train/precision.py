"""Training precision: the forward half of each step under ``torch.autocast``.

``train.precision`` (:class:`~distillscope.config_train.TrainConfig`): ``fp32`` runs as before;
``bf16`` runs the networks' forward passes and the losses under autocast in bfloat16 (matrix
products and convolutions in bf16, reductions and softmax in fp32 as autocast decides), while
the weights, the optimiser's state and the gradients stay fp32 (the backward runs outside the
context, as PyTorch's AMP recipe does); ``fp16`` does the same in float16 with a gradient
scaler, which only CUDA supports here.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from distillscope.errors import ConfigError

__all__ = ["PRECISIONS", "autocast", "check_precision"]

#: Precision name -> the autocast dtype (``None``: no autocast).
PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def check_precision(precision: str, device: torch.device) -> None:
    """A one-line ConfigError when ``precision`` cannot train on ``device``.

    Example:
        >>> check_precision("bf16", torch.device("cpu"))
        >>> check_precision("fp16", torch.device("cpu"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        distillscope.errors.ConfigError: train.precision=fp16 needs a CUDA device ...
    """
    if precision not in PRECISIONS:
        raise ConfigError(
            f"train.precision={precision!r} is invalid; use one of {', '.join(PRECISIONS)}"
        )
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"train.precision=fp16 needs a CUDA device (its gradient scaler); on {device.type} "
            "use bf16 or fp32"
        )


def autocast(precision: str, device: torch.device) -> AbstractContextManager[object]:
    """The autocast context of ``precision`` on ``device`` (nothing for ``fp32``)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
