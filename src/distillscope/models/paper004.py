"""Paper 004's image networks: the "Full" and "Reduced" CNNs of its CIFAR-10 study.

Paper 004 (Trustworthy Distillation?), section 5.2: "For the 'Full' architecture, we use the same
CNN architecture used in [10], [9], [4], and [5]" (Papernot et al.'s defensive-distillation CIFAR
network), and "the 'Reduced' architecture removes every other layer of this 'Full' architecture
and halves the sizes of the remaining layers". The layer sizes below are those of the authors'
published code (3x3 convolutions with "same" padding, 2x2 max-pooling, dropout 0.5):

- Full: [conv 64 - ReLU - conv 64 - ReLU - pool] [conv 128 - ReLU - conv 128 - ReLU - pool]
  - dropout - fc 256 - ReLU - dropout - fc 256 - ReLU - fc K
- Reduced: [conv 32 - ReLU - pool] [conv 64 - ReLU - pool] - dropout - fc 128 - ReLU - fc K

The input channels and size come from the data (``in_channels``, ``input_size``), so the same
networks run on 1x28x28 Fashion-MNIST (fc input 128*7*7 for Full) and 3x32x32 CIFAR-10 (128*8*8).
``cam_layer`` is ``block2``, the output of the second convolutional block after its pooling: the
layer the authors' code hands to captum's (Guided) GradCAM.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from distillscope.models.small import _check_input_size
from distillscope.registry import register_model

#: Dropout probability of both networks: the defensive-distillation baseline's 0.5.
DROPOUT = 0.5


def _conv_block(widths: list[tuple[int, int]]) -> nn.Sequential:
    """3x3 "same" convolutions, each followed by a ReLU, then a 2x2 max-pool."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, (c_in, c_out) in enumerate(widths, start=1):
        layers[f"conv{i}"] = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1)
        layers[f"act{i}"] = nn.ReLU()
    layers["pool"] = nn.MaxPool2d(2)
    return nn.Sequential(layers)


@register_model("p004_full")
class Paper004Full(nn.Module):
    """Paper 004's Full CNN (Papernot et al.'s CIFAR network; see the module docstring).

    Two blocks of two 3x3 convolutions (64, 128 channels), each block ending in a 2x2 max-pool,
    then ``dropout - fc 256 - ReLU - dropout - fc 256 - ReLU - fc K``. 2,425,930 parameters for
    3x32x32 inputs and K = 10.

    Args:
        num_classes: Number of classes K.
        in_channels: Input channels (3 for CIFAR-10, 1 for Fashion-MNIST).
        input_size: Side of the square input images; the fc input is ``128 * (S // 4)^2``.

    Example:
        >>> import torch
        >>> model = Paper004Full(num_classes=10, in_channels=1, input_size=28)
        >>> model(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, *, num_classes: int, in_channels: int = 3, input_size: int = 32) -> None:
        super().__init__()
        _check_input_size("p004_full", input_size, minimum=4)
        side = input_size // 4  # two 2x2 max-pools
        self.block1 = _conv_block([(in_channels, 64), (64, 64)])
        self.block2 = _conv_block([(64, 128), (128, 128)])
        self.drop1 = nn.Dropout(DROPOUT)
        self.fc1 = nn.Linear(128 * side * side, 256)
        self.act1 = nn.ReLU()
        self.drop2 = nn.Dropout(DROPOUT)
        self.fc2 = nn.Linear(256, 256)
        self.act2 = nn.ReLU()
        self.fc3 = nn.Linear(256, num_classes)
        self.cam_layer: str | None = "block2"
        self.feature_layers: list[str] = ["block1", "block2", "act1", "act2"]

    def forward(self, x: Tensor) -> Tensor:
        x = self.block2(self.block1(x)).flatten(1)  # (B, 128 * S/4 * S/4)
        x = self.act1(self.fc1(self.drop1(x)))  # (B, 256)
        x = self.act2(self.fc2(self.drop2(x)))  # (B, 256)
        return self.fc3(x)  # (B, K)


@register_model("p004_reduced")
class Paper004Reduced(nn.Module):
    """Paper 004's Reduced CNN: every other layer of the Full one removed, the rest halved.

    ``[conv 32 - ReLU - pool] [conv 64 - ReLU - pool] - dropout - fc 128 - ReLU - fc K``, 3x3
    "same" convolutions and 2x2 max-pools. 545,098 parameters for 3x32x32 inputs and K = 10.

    Args:
        num_classes: Number of classes K.
        in_channels: Input channels.
        input_size: Side of the square input images; the fc input is ``64 * (S // 4)^2``.

    Example:
        >>> import torch
        >>> Paper004Reduced(num_classes=10)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, *, num_classes: int, in_channels: int = 3, input_size: int = 32) -> None:
        super().__init__()
        _check_input_size("p004_reduced", input_size, minimum=4)
        side = input_size // 4  # two 2x2 max-pools
        self.block1 = _conv_block([(in_channels, 32)])
        self.block2 = _conv_block([(32, 64)])
        self.drop1 = nn.Dropout(DROPOUT)
        self.fc1 = nn.Linear(64 * side * side, 128)
        self.act1 = nn.ReLU()
        self.fc2 = nn.Linear(128, num_classes)
        self.cam_layer: str | None = "block2"
        self.feature_layers: list[str] = ["block1", "block2", "act1"]

    def forward(self, x: Tensor) -> Tensor:
        x = self.block2(self.block1(x)).flatten(1)  # (B, 64 * S/4 * S/4)
        x = self.act1(self.fc1(self.drop1(x)))  # (B, 128)
        return self.fc2(x)  # (B, K)
