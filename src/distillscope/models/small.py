"""Small networks: the toy-data MLP, the PyTorch MNIST example CNN and LeNet-5.

Every model returns logits ``(B, K)`` and names, as module paths, the layer GradCAM reads
(``cam_layer``) and the layers feature distillation and CKA compare (``feature_layers``).
Activations are separate modules (not ``F.relu`` calls) so that each one can be tapped.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from distillscope.errors import ModelError
from distillscope.registry import register_model


@register_model("mlp")
class MLP(nn.Module):
    """Fully connected ReLU network for 2-D toy data (or flattened images).

    Paper 004 (Sec. 5.1) uses a "three-layer MLP with 32 hidden neurons" as the Full
    architecture and the same with 16 hidden neurons as the Reduced one on its 2-D ring
    dataset. The authors' code shows the three layers are of *neurons* (input, one hidden
    layer, output): ``Linear(2, 32) - ReLU - Linear(32, 3)``, i.e. ``depth=2`` here
    (``mlp_full`` / ``mlp_reduced``). ``depth`` counts the Linear layers, the last of which is
    the classifier.

    Args:
        num_classes: Number of classes K.
        in_features: Input size; for images it must equal C*H*W (they are flattened).
        hidden: Width of every hidden layer.
        depth: Number of Linear layers (1 = a linear classifier).

    Example:
        >>> import torch
        >>> MLP(num_classes=3)(torch.zeros(4, 2)).shape
        torch.Size([4, 3])
    """

    def __init__(
        self, *, num_classes: int, in_features: int = 2, hidden: int = 32, depth: int = 3
    ) -> None:
        super().__init__()
        if min(in_features, hidden, depth) < 1:
            raise ModelError(
                f"mlp sizes must be positive, got in_features={in_features}, hidden={hidden}, "
                f"depth={depth}; pass integers >= 1"
            )
        self.in_features = in_features
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        width = in_features
        for i in range(1, depth):
            layers[f"fc{i}"] = nn.Linear(width, hidden)
            layers[f"act{i}"] = nn.ReLU()
            width = hidden
        self.body = nn.Sequential(layers)
        self.head = nn.Linear(width, num_classes)
        self.cam_layer: str | None = None
        self.feature_layers: list[str] = [f"body.act{i}" for i in range(1, depth)]

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)  # (B, F)
        if x.shape[1] != self.in_features:
            raise ModelError(
                f"mlp was built with in_features={self.in_features} but the input has "
                f"{x.shape[1]} features per sample after flattening; build it with "
                f"in_features={x.shape[1]}"
            )
        return self.head(self.body(x))  # (B, K)


@register_model("mlp_full")
def mlp_full(*, num_classes: int, in_features: int = 2) -> MLP:
    """Paper 004's Full toy network: ``Linear(2, 32) - ReLU - Linear(32, K)``.

    Section 5.1's "three-layer MLP with 32 hidden neurons", as in the authors' published code
    (input, one hidden layer of 32, output).
    """
    return MLP(num_classes=num_classes, in_features=in_features, hidden=32, depth=2)


@register_model("mlp_reduced")
def mlp_reduced(*, num_classes: int, in_features: int = 2) -> MLP:
    """Paper 004's Reduced toy network: ``Linear(2, 16) - ReLU - Linear(16, K)``."""
    return MLP(num_classes=num_classes, in_features=in_features, hidden=16, depth=2)


@register_model("mlp_full_deep")
def mlp_full_deep(*, num_classes: int, in_features: int = 2) -> MLP:
    """Ours: two hidden layers of 32 (``Linear - ReLU - Linear - ReLU - Linear``).

    Not paper 004's network (see :func:`mlp_full`); a deeper variant for comparisons.
    """
    return MLP(num_classes=num_classes, in_features=in_features, hidden=32, depth=3)


@register_model("mlp_reduced_deep")
def mlp_reduced_deep(*, num_classes: int, in_features: int = 2) -> MLP:
    """Ours: two hidden layers of 16; the deeper counterpart of :func:`mlp_reduced`."""
    return MLP(num_classes=num_classes, in_features=in_features, hidden=16, depth=3)


def _check_input_size(model: str, input_size: int, minimum: int) -> None:
    if input_size < minimum:
        raise ModelError(
            f"{model} needs input_size >= {minimum} (its convolutions and pooling shrink the "
            f"image), got {input_size}; pass the side of your square images"
        )


@register_model("mnist_cnn")
class MnistCNN(nn.Module):
    """The CNN of PyTorch's MNIST example (pytorch/examples, ``mnist/main.py``).

    conv 3x3 (32) -> ReLU -> conv 3x3 (64) -> ReLU -> max-pool 2 -> dropout 0.25 -> fc 128 ->
    ReLU -> dropout 0.5 -> fc K. For 28x28 inputs the first fc layer has 64*12*12 = 9216
    inputs; ``input_size`` recomputes it for other square sizes (32 -> 12544). Returns
    logits, not the example's log-softmax.

    Args:
        num_classes: Number of classes K.
        in_channels: Input channels (1 for MNIST, 3 for colour digits).
        input_size: Side of the square input images.

    Example:
        >>> import torch
        >>> MnistCNN(num_classes=10)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, *, num_classes: int, in_channels: int = 1, input_size: int = 28) -> None:
        super().__init__()
        _check_input_size("mnist_cnn", input_size, minimum=6)
        pooled = (input_size - 4) // 2  # two valid 3x3 convs, then a 2x2 max-pool
        self.conv1 = nn.Conv2d(in_channels, 32, 3)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.act2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.drop1 = nn.Dropout(0.25)  # the example's constants
        self.fc1 = nn.Linear(64 * pooled * pooled, 128)
        self.act3 = nn.ReLU()
        self.drop2 = nn.Dropout(0.5)
        self.fc2 = nn.Linear(128, num_classes)
        self.cam_layer: str | None = "act2"
        self.feature_layers: list[str] = ["act1", "act2", "act3"]

    def forward(self, x: Tensor) -> Tensor:
        x = self.act1(self.conv1(x))  # (B, 32, S-2, S-2)
        x = self.act2(self.conv2(x))  # (B, 64, S-4, S-4)
        x = self.drop1(self.pool(x)).flatten(1)  # (B, 64 * P * P)
        x = self.drop2(self.act3(self.fc1(x)))  # (B, 128)
        return self.fc2(x)  # (B, K)


@register_model("lenet5")
class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al., 1998, "Gradient-based learning applied to document recognition").

    conv 5x5 (6) -> pool 2 -> conv 5x5 (16) -> pool 2 -> fc 120 -> fc 84 -> fc K, with the
    paper's subsampling as 2x2 average pooling. Departures from the paper, as in most modern
    re-implementations: ReLU instead of the scaled tanh, a full C3 connection table, a plain
    linear output instead of RBF units, and padding 2 on the first conv so a 28x28 digit is
    seen as the paper's 32x32 input (fc input 16*5*5 = 400 for 28x28).

    Args:
        num_classes: Number of classes K.
        in_channels: Input channels.
        input_size: Side of the square input images.

    Example:
        >>> import torch
        >>> LeNet5(num_classes=10)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, *, num_classes: int, in_channels: int = 1, input_size: int = 28) -> None:
        super().__init__()
        _check_input_size("lenet5", input_size, minimum=12)
        pooled = (input_size // 2 - 4) // 2  # pad-2 conv keeps S, pool, valid 5x5 conv, pool
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
        self.act1 = nn.ReLU()
        self.pool1 = nn.AvgPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.act2 = nn.ReLU()
        self.pool2 = nn.AvgPool2d(2)
        self.fc1 = nn.Linear(16 * pooled * pooled, 120)
        self.act3 = nn.ReLU()
        self.fc2 = nn.Linear(120, 84)
        self.act4 = nn.ReLU()
        self.fc3 = nn.Linear(84, num_classes)
        self.cam_layer: str | None = "act2"
        self.feature_layers: list[str] = ["act1", "act2", "act3", "act4"]

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool1(self.act1(self.conv1(x)))  # (B, 6, S/2, S/2)
        x = self.pool2(self.act2(self.conv2(x))).flatten(1)  # (B, 16 * P * P)
        x = self.act4(self.fc2(self.act3(self.fc1(x))))  # (B, 84)
        return self.fc3(x)  # (B, K)
