"""Models with hand-written explanations and data with object masks, for the map probes."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.probes.base import ProbeData

Explainer = Callable[[Tensor, Tensor], Tensor]  # (inputs, target) -> (B, H, W)


class MapModel(nn.Module):
    """A model whose ``explain`` is ``explainer``; its logits are a fixed linear read-out.

    Args:
        explainer: ``(inputs (B, C, H, W), target (B,)) -> (B, H, W)``.
        logits: Optional ``(inputs) -> (B, K)``; default: the mean of the first channel times
            ``(0, 1, ..., K-1)`` (so the top-1 class is K-1 for bright images, 0 for dark ones).
    """

    cam_layer: str | None = None

    def __init__(
        self, explainer: Explainer, logits: Callable[[Tensor], Tensor] | None = None, k: int = 4
    ) -> None:
        super().__init__()
        self.explainer = explainer
        self.logits = logits
        self.scale = nn.Parameter(torch.ones(()))  # a parameter, so .train()/.eval() matter
        self.k = k

    def forward(self, x: Tensor) -> Tensor:
        if self.logits is not None:
            return self.logits(x) * self.scale
        return x[:, 0].mean((1, 2))[:, None] * torch.arange(self.k, dtype=x.dtype) * self.scale

    def explain(self, x: Tensor, target: Tensor) -> Tensor:
        return self.explainer(x, target)


def mask_data(n: int = 16, size: int = 8, k: int = 4, seed: int = 0) -> ProbeData:
    """``n`` images whose pixels are 1 on a random rectangle (the object mask) and 0 elsewhere,
    plus uniform noise in [0, 0.05]; mean 0, std 1 (inputs are pixels); labels ``i % k``."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, size, size, dtype=torch.bool)
    for i in range(n):
        top, left = torch.randint(0, size // 2, (2,), generator=g).tolist()
        h, w = torch.randint(1, size // 2 + 1, (2,), generator=g).tolist()
        masks[i, top : top + h, left : left + w] = True
    pixels = masks.float()[:, None] + 0.05 * torch.rand(n, 1, size, size, generator=g)
    info = DatasetInfo(
        "masked-squares",
        k,
        (1, size, size),
        [f"c{i}" for i in range(k)],
        mean=(0.0,),
        std=(1.0,),
        pixel_range=(0.0, 1.05),
    )
    return ProbeData(TensorDataset(pixels, torch.arange(n) % k, info, masks=masks), info)
