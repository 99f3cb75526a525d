"""Tiny models for the probe tests: a CNN on 1x8x8 images and an MLP on 2-D points."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.probes.base import ProbeData

NUM_CLASSES = 4


class TinyCNN(nn.Module):
    """Two conv blocks and a linear head on ``(B, 1, 8, 8)`` inputs; GradCAM on ``block2``."""

    cam_layer: str | None = "block2"
    feature_layers: list[str] = ["block1", "block2"]

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 4) -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * width, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block2(self.block1(x)))


class TinyMLP(nn.Module):
    """A 2 -> 8 -> K perceptron; no conv layer, so no GradCAM."""

    cam_layer: str | None = None
    feature_layers: list[str] = ["net.1"]

    def __init__(self, num_classes: int = 3, hidden: int = 8) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def seeded(factory: type[nn.Module], seed: int, **kwargs: int) -> nn.Module:
    torch.manual_seed(seed)
    return factory(**kwargs)


class Logits(nn.Module):
    """Returns ``x @ mix``: with ``mix`` = identity the inputs *are* the logits (golden tests)."""

    cam_layer: str | None = None

    def __init__(self, mix: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mix", mix)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.mix


def logit_data(
    z: np.ndarray, y: np.ndarray, categories: Mapping[str, Sequence[int]] | None = None
) -> ProbeData:
    """A dataset whose inputs are the rows of ``z`` (float64), to be read by :class:`Logits`."""
    k = z.shape[1]
    info = DatasetInfo("logits", k, (k,), [str(c) for c in range(k)], dict(categories or {}))
    return ProbeData(TensorDataset(torch.tensor(z), torch.tensor(y), info), info)


def quadrant_data(n: int = 30) -> ProbeData:
    """``n`` noisy 1x8x8 images; class ``c`` brightens quadrant ``c`` a little (4 classes in 2
    categories), normalised with mean 0.5, std 0.25: some images sit near a boundary."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % NUM_CLASSES
    pixels = 0.3 + 0.4 * torch.rand(n, 1, 8, 8, generator=g)
    for i in range(n):
        row, col = divmod(int(y[i]), 2)
        pixels[i, 0, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4] += 0.12
    info = image_info("quadrants")
    return ProbeData(TensorDataset((pixels.clamp(0, 1) - 0.5) / 0.25, y, info), info)


def quadrant_cnn(scale: float, seed: int) -> TinyCNN:
    """A :class:`TinyCNN` that reads the class off the brightest quadrant (logit ``c`` is
    ``scale`` times quadrant ``c``'s mean), its weights then moved by seeded noise: a model
    with confident, mostly right answers that small attacks can flip."""
    net = TinyCNN(width=4)
    with torch.no_grad():
        for conv in (net.block1[0], net.block2[0]):
            conv.weight.zero_()
            conv.bias.zero_()
        net.block1[0].weight[:, 0, 1, 1] = 1.0  # every channel copies the image, shifted by 2
        net.block1[0].bias.fill_(2.0)
        for k in range(4):
            net.block2[0].weight[k, k, 1, 1] = 1.0
        head = net.head[2]
        head.weight.zero_()
        head.bias.zero_()
        for c in range(NUM_CLASSES):
            head.weight[c, c] = scale  # channel 0's pooled quadrant c
        g = torch.Generator().manual_seed(seed)
        for p in net.parameters():
            p.add_(0.03 * torch.randn(p.shape, generator=g))
    return net


def image_info(name: str) -> DatasetInfo:
    """1x8x8 images in [0, 1] normalised with mean 0.5, std 0.25; 4 classes in 2 categories."""
    return DatasetInfo(
        name=name,
        num_classes=NUM_CLASSES,
        input_shape=(1, 8, 8),
        class_names=[f"c{i}" for i in range(NUM_CLASSES)],
        categories={"ab": [0, 1], "cd": [2, 3]},
        mean=(0.5,),
        std=(0.25,),
        pixel_range=(0.0, 1.0),
    )
