"""One forward pass as the losses and probes see it, and two small model queries."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from distillscope.contracts import Outputs
from distillscope.errors import ModelError
from distillscope.models.taps import FeatureTap


def forward_outputs(model: nn.Module, x: Tensor, tap: FeatureTap | None = None) -> Outputs:
    """Run ``model`` on ``x`` and collect its logits and the tapped features.

    Args:
        model: A network whose ``forward`` returns logits.
        x: ``(B, ...)`` input batch.
        tap: Optional tap attached to ``model`` (or to a submodule ``model`` runs).

    Returns:
        ``Outputs(logits (B, K), features {path: activation})``.

    Raises:
        ModelError: The model does not return a ``(B, K)`` tensor, or a tapped module did not
            run during this pass.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3))
        >>> out = forward_outputs(net, torch.zeros(5, 2), FeatureTap(net, ["1"]))
        >>> tuple(out.logits.shape), tuple(out.features["1"].shape)
        ((5, 3), (5, 4))
    """
    if tap is not None:
        tap.clear()  # a tap on another model must not hand back stale features
    logits = model(x)  # (B, K)
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        got = (
            f"shape {tuple(logits.shape)}" if isinstance(logits, Tensor) else type(logits).__name__
        )
        raise ModelError(
            f"{type(model).__name__} returned {got}, expected logits of shape (B, K); "
            "wrap the model so that forward returns one (B, K) tensor"
        )
    features = {} if tap is None else tap.features
    missing = [] if tap is None else [p for p in tap.paths if p not in features]
    if missing:
        raise ModelError(
            f"tapped module {missing[0]!r} did not run in the forward pass of "
            f"{type(model).__name__}; tap a module on the forward path, e.g. from "
            "model.feature_layers"
        )
    return Outputs(logits, features)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a stateless model).

    Example:
        >>> model_device(nn.Linear(2, 3))
        device(type='cpu')
    """
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters, shared parameters counted once.

    Args:
        model: The network.
        trainable_only: Count only parameters with ``requires_grad``.

    Example:
        >>> count_parameters(nn.Linear(2, 3))  # 2*3 weights + 3 biases
        9
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@contextmanager
def running_stats_kept(model: nn.Module) -> Iterator[nn.Module]:
    """Restore every batch norm's running statistics after the block.

    For an extra forward pass in training mode (batch statistics used) that must not move the
    running estimates a second time in a step, e.g. e2KD's explanation pass of a B-cos student.

    Example:
        >>> bn = nn.BatchNorm1d(2)
        >>> with running_stats_kept(bn):
        ...     _ = bn(torch.randn(4, 2) + 5)
        >>> bn.running_mean.tolist(), int(bn.num_batches_tracked)
        ([0.0, 0.0], 0)
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [
        {k: b.detach().clone() for k, b in m.named_buffers(recurse=False) if b is not None}
        for m in norms
    ]
    try:
        yield model
    finally:
        with torch.no_grad():
            for m, buffers in zip(norms, saved):
                for k, value in buffers.items():
                    getattr(m, k).copy_(value)
