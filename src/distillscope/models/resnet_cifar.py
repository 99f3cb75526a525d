"""CIFAR ResNets (He et al., 2016, "Deep Residual Learning for Image Recognition", Sec. 4.2).

A 3x3 stem conv, three stages of n BasicBlocks each with widths (w, 2w, 4w) (the paper's
16, 32, 64 for w = 16) on feature maps 32, 16 and 8 pixels wide, global average pooling and a
linear classifier: 6n + 2 weighted layers. Where a block changes width or resolution, the
shortcut is a strided 1x1 conv + BN (the paper's option B); elsewhere it is the identity.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from distillscope.errors import ModelError
from distillscope.registry import register_model

#: The depths registered as their own names (the paper's Table 6 plus ResNet-8 and -14).
NAMED_DEPTHS = (8, 14, 20, 32, 44, 56, 110)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual shortcut: ``relu(F(x) + shortcut(x))``.

    ``preact`` is an identity on ``F(x) + shortcut(x)``, the block's output before its last
    ReLU: a tap point for methods that read pre-ReLU features (OFD, AB; the batch norm that
    precedes it is ``bn2``). It holds no weights, so checkpoints are unchanged.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        stride: Stride of the first conv (2 at the start of stages 2 and 3).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.preact = nn.Identity()
        self.act2 = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))  # (B, C_out, H/s, W/s)
        out = self.bn2(self.conv2(out))  # (B, C_out, H/s, W/s)
        return self.act2(self.preact(out + self.shortcut(x)))  # (B, C_out, H/s, W/s)


@register_model("resnet_cifar")
class ResNetCifar(nn.Module):
    """He et al.'s CIFAR ResNet of depth 6n + 2 (ResNet-20: n = 3).

    Args:
        num_classes: Number of classes K.
        in_channels: Input channels.
        depth: Number of weighted layers, 6n + 2 with n >= 1.
        width: Base width w; the stages have w, 2w and 4w channels (paper: 16).

    Raises:
        ModelError: ``depth`` is not of the form 6n + 2, or ``width`` is not positive.

    Example:
        >>> import torch
        >>> ResNetCifar(num_classes=10, depth=8)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self, *, num_classes: int, in_channels: int = 3, depth: int = 20, width: int = 16
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ModelError(
                f"resnet_cifar depth must be 6n+2 with n >= 1, got {depth}; valid depths: "
                f"{', '.join(map(str, NAMED_DEPTHS))}, ... (any 6n+2)"
            )
        if width < 1:
            raise ModelError(f"resnet_cifar width must be >= 1, got {width}; the paper uses 16")
        blocks = (depth - 2) // 6
        widths = (width, 2 * width, 4 * width)
        self.depth = depth
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.act1 = nn.ReLU()
        self.layer1 = _stage(width, widths[0], blocks, stride=1)
        self.layer2 = _stage(widths[0], widths[1], blocks, stride=2)
        self.layer3 = _stage(widths[1], widths[2], blocks, stride=2)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.fc = nn.Linear(widths[2], num_classes)
        self.cam_layer: str | None = "layer3"
        self.feature_layers: list[str] = ["layer1", "layer2", "layer3", "pool"]
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act1(self.bn1(self.conv1(x)))  # (B, w, H, W)
        x = self.layer3(self.layer2(self.layer1(x)))  # (B, 4w, H/4, W/4)
        return self.fc(self.pool(x))  # (B, K)


def _stage(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
    """``blocks`` BasicBlocks; the first one changes width and resolution."""
    layers = [BasicBlock(in_channels, out_channels, stride)]
    layers += [BasicBlock(out_channels, out_channels) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def _init_weights(model: nn.Module) -> None:
    """He initialisation (He et al., 2015) for convs, as the paper; BN starts as identity."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _fixed_depth(depth: int) -> Callable[..., ResNetCifar]:
    def build(*, num_classes: int, in_channels: int = 3, width: int = 16) -> ResNetCifar:
        return ResNetCifar(
            num_classes=num_classes, in_channels=in_channels, depth=depth, width=width
        )

    build.__name__ = f"resnet{depth}"
    build.__doc__ = f"CIFAR ResNet-{depth} (He et al., 2016): {(depth - 2) // 6} blocks per stage."
    return build


for _depth in NAMED_DEPTHS:
    register_model(f"resnet{_depth}")(_fixed_depth(_depth))
