"""What the explanation-map probes share: the explained class, which models can be explained,
and example panels for the report."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from distillscope.checks import check_choice
from distillscope.data.base import DatasetInfo
from distillscope.explain.maps import why_not

__all__ = ["OWN_TARGETS", "check_choice", "own_targets", "pixel_image", "unexplainable"]

#: Which class a model explains: the ground-truth label, or the model's own top-1 class.
OWN_TARGETS = ("ground_truth", "predicted")


@torch.no_grad()
def own_targets(kind: str, model: nn.Module, inputs: Tensor, labels: Tensor) -> Tensor:
    """``(B,)`` classes ``model`` explains: ``labels`` or its own top-1 class on ``inputs``."""
    if kind == "ground_truth":
        return labels
    return model(inputs).argmax(1)  # (B,)


def unexplainable(
    models: Mapping[str, nn.Module], names: Iterable[str], method: str
) -> dict[str, str]:
    """Model name -> why ``method`` cannot explain it, for the models among ``names`` that fail.

    Names that are not among ``models`` are left to
    :func:`~distillscope.probes.sampling.evaluating`, which names them in its error.
    """
    reasons = {}
    for name in names:
        if name in models:
            reason = why_not(models[name], method)
            if reason is not None:
                reasons[name] = reason
    return reasons


def pixel_image(x: Tensor, info: DatasetInfo) -> list | None:
    """One normalised ``(C, H, W)`` input as a drawable ``(H, W)`` or ``(H, W, 3)`` nested list
    in ``[0, 1]`` (normalisation undone), or ``None`` for other channel counts."""
    x = x.detach().to("cpu", torch.float32)
    if info.mean is not None and info.std is not None:
        mean = torch.tensor(info.mean).view(-1, 1, 1)
        std = torch.tensor(info.std).view(-1, 1, 1)
        x = x * std + mean  # (C, H, W)
    low, high = info.pixel_range or (float(x.min()), float(x.max()))
    x = ((x - low) / max(high - low, 1e-12)).clamp(0, 1)  # (C, H, W) in [0, 1]
    if x.shape[0] == 1:
        return x[0].tolist()
    if x.shape[0] == 3:
        return x.permute(1, 2, 0).tolist()
    return None
