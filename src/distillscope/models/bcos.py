"""B-cos versions of the zoo's small CNN, CIFAR ResNets and tiny ViT (paper 001, 3.1 and 4).

Every model here is built from :mod:`distillscope.models.bcos_layers` (B = 2), takes
normalised images like the other zoo models (its first module, ``encode``, recovers the pixels
and feeds ``[p, 1 - p]``), and carries, besides ``cam_layer`` and ``feature_layers``:

- ``is_bcos = True`` and ``input_layer = "encode"``: the module whose output the dynamic
  weights ``W(x)`` refer to (``(B, 2C, H, W)``);
- ``dynamic_weights(x, target)``: ``W(x)`` rows of the ``target`` logits, the explanation
  e2KD distils for B-cos models (paper 001: "we use the dynamic weights W(x) as explanations");
- ``explain(x, target)``: the ``(B, H, W)`` contribution map ``sum_c W(x)_c * [p, 1 - p]_c``
  that the explanation probes read (summing to the logit minus the logit bias).

Architectures (ours, at CPU scale, after the authors' v2 designs): no ReLU (the B-cos units
are the non-linearity), batch norms without centring or bias, average instead of max pooling,
the classifier applied before the global pooling in the ResNet (as B-cos v2), a constant logit
bias. Train them as their authors do with the ``bce`` loss (optional; ``ce`` works too) and
without weight decay.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from distillscope.errors import ConfigError, ModelError
from distillscope.models.bcos_layers import (
    BcosConv2d,
    BcosEncode,
    BcosLinear,
    Detachable,
    DetachableLayerNorm,
    LogitBias,
    UncenteredBatchNorm2d,
    dynamic_product,
    explanation_mode,
)
from distillscope.models.resnet_cifar import NAMED_DEPTHS
from distillscope.models.small import _check_input_size
from distillscope.models.vit import TokenGrid, check_vit_sizes
from distillscope.registry import register_model

__all__ = ["BcosMnistCNN", "BcosNet", "BcosResNetCifar", "BcosViT"]

Stats = Sequence[float] | None


class BcosNet(nn.Module):
    """What every B-cos zoo model shares: the encoded input and its explanations."""

    is_bcos = True
    input_layer = "encode"
    encode: BcosEncode

    def dynamic_weights(self, x: Tensor, target: Tensor, create_graph: bool = False) -> Tensor:
        """``(B, 2C, H, W)`` dynamic weights ``W(x)`` of logit ``target[b]`` of each image.

        The gradient of the selected logits w.r.t. the encoded input in explanation mode; one
        forward pass (the model's mode, e.g. eval, is left as it is). With ``create_graph`` a
        backward pass through the result, run after this returns, differentiates through the
        dynamic factors as well (their dependence on the parameters; the e2KD authors'
        ``_DynamicMultiplication``, see :func:`~distillscope.models.bcos_layers.dynamic_product`).
        """
        with explanation_mode(self), torch.enable_grad():
            encoded: list[Tensor] = []
            handle = self.encode.register_forward_hook(lambda m, i, o: encoded.append(o))
            try:
                logits = self(x)  # (B, K)
            finally:
                handle.remove()
            chosen = logits.gather(1, target.view(-1, 1).to(logits.device)).sum()
            (weights,) = torch.autograd.grad(chosen, encoded[0], create_graph=create_graph)
        return weights  # (B, 2C, H, W)

    def explain(self, x: Tensor, target: Tensor) -> Tensor:
        """``(B, H, W)`` contributions ``sum_c W(x)_c * encode(x)_c`` (detached)."""
        weights = self.dynamic_weights(x, target)  # (B, 2C, H, W)
        with torch.no_grad():
            return (weights * self.encode(x)).sum(1)  # (B, H, W)


def _encode(in_channels: int, mean: Stats, std: Stats) -> BcosEncode:
    if mean is not None and len(mean) != in_channels:
        raise ConfigError(
            f"B-cos input_mean has {len(mean)} values for {in_channels} input channels; give "
            "one per channel"
        )
    return BcosEncode(mean, std)


@register_model("bcos_mnist_cnn")
class BcosMnistCNN(BcosNet):
    """B-cos counterpart of ``mnist_cnn``: two 3x3 B-cos convs (32, 64) with uncentred batch
    norms and MaxOut 2 (the first B-cos paper's units), 2x2 average pooling, a B-cos hidden
    layer (128) and a B-cos classifier; no dropout.

    Args:
        num_classes: Number of classes K.
        in_channels: Image channels C (the model sees 2C).
        input_size: Side of the square inputs.
        input_mean: Normalisation mean of the inputs (set from the data by the experiment).
        input_std: Normalisation std of the inputs.
        max_out: MaxOut units of the convs and the hidden layer.

    Example:
        >>> BcosMnistCNN(num_classes=10)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int = 1,
        input_size: int = 28,
        input_mean: Stats = None,
        input_std: Stats = None,
        max_out: int = 2,
    ) -> None:
        super().__init__()
        _check_input_size("bcos_mnist_cnn", input_size, minimum=6)
        pooled = (input_size - 4) // 2
        self.encode = _encode(in_channels, input_mean, input_std)
        self.conv1 = BcosConv2d(2 * in_channels, 32, 3, max_out=max_out)
        self.bn1 = UncenteredBatchNorm2d(32)
        self.conv2 = BcosConv2d(32, 64, 3, max_out=max_out)
        self.bn2 = UncenteredBatchNorm2d(64)
        self.pool = nn.AvgPool2d(2)
        self.fc1 = BcosLinear(64 * pooled * pooled, 128, max_out=max_out)
        self.fc2 = BcosLinear(128, num_classes)
        self.logit_bias = LogitBias(num_classes)
        self.cam_layer: str | None = "bn2"
        self.feature_layers: list[str] = ["bn1", "bn2", "fc1"]

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn1(self.conv1(self.encode(x)))  # (B, 32, S-2, S-2)
        x = self.bn2(self.conv2(x))  # (B, 64, S-4, S-4)
        x = self.fc1(self.pool(x).flatten(1))  # (B, 128)
        return self.logit_bias(self.fc2(x))  # (B, K)


class BcosBlock(nn.Module):
    """B-cos BasicBlock: ``bn2(conv2(bn1(conv1(x)))) + shortcut(x)``, no ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = BcosConv2d(in_channels, out_channels, 3, stride, padding=1)
        self.bn1 = UncenteredBatchNorm2d(out_channels)
        self.conv2 = BcosConv2d(out_channels, out_channels, 3, padding=1)
        self.bn2 = UncenteredBatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                BcosConv2d(in_channels, out_channels, 1, stride),
                UncenteredBatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.bn1(self.conv1(x))))  # (B, C_out, H/s, W/s)
        return out + self.shortcut(x)


@register_model("bcos_resnet_cifar")
class BcosResNetCifar(BcosNet):
    """B-cos CIFAR ResNet of depth 6n + 2 (He et al. 2016's layout, B-cos v2's blocks).

    Stem 3x3 B-cos conv + uncentred BN, three stages of B-cos BasicBlocks (w, 2w, 4w), a 1x1
    B-cos conv to K classes on the last map (``fc``), global average pooling and the logit
    bias.

    Args:
        num_classes: Number of classes K.
        in_channels: Image channels C (the model sees 2C).
        depth: 6n + 2 with n >= 1.
        width: Base width w.
        input_mean: Normalisation mean of the inputs (set from the data by the experiment).
        input_std: Normalisation std of the inputs.

    Example:
        >>> BcosResNetCifar(num_classes=10, depth=8)(torch.zeros(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int = 3,
        depth: int = 20,
        width: int = 16,
        input_mean: Stats = None,
        input_std: Stats = None,
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ModelError(f"bcos_resnet_cifar depth must be 6n+2 with n >= 1, got {depth}")
        if width < 1:
            raise ModelError(f"bcos_resnet_cifar width must be >= 1, got {width}")
        blocks = (depth - 2) // 6
        widths = (width, 2 * width, 4 * width)
        self.depth = depth
        self.encode = _encode(in_channels, input_mean, input_std)
        self.conv1 = BcosConv2d(2 * in_channels, width, 3, padding=1)
        self.bn1 = UncenteredBatchNorm2d(width)
        self.layer1 = _stage(width, widths[0], blocks, 1)
        self.layer2 = _stage(widths[0], widths[1], blocks, 2)
        self.layer3 = _stage(widths[1], widths[2], blocks, 2)
        self.fc = BcosConv2d(widths[2], num_classes, 1)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.logit_bias = LogitBias(num_classes)
        self.cam_layer: str | None = "layer3"
        self.feature_layers: list[str] = ["layer1", "layer2", "layer3"]

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn1(self.conv1(self.encode(x)))  # (B, w, H, W)
        x = self.layer3(self.layer2(self.layer1(x)))  # (B, 4w, H/4, W/4)
        return self.logit_bias(self.pool(self.fc(x)))  # (B, K)


def _stage(c_in: int, c_out: int, blocks: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        BcosBlock(c_in, c_out, stride), *(BcosBlock(c_out, c_out) for _ in range(blocks - 1))
    )


def _fixed_depth(depth: int) -> Callable[..., BcosResNetCifar]:
    def build(
        *,
        num_classes: int,
        in_channels: int = 3,
        width: int = 16,
        input_mean: Stats = None,
        input_std: Stats = None,
    ) -> BcosResNetCifar:
        return BcosResNetCifar(
            num_classes=num_classes,
            in_channels=in_channels,
            depth=depth,
            width=width,
            input_mean=input_mean,
            input_std=input_std,
        )

    build.__name__ = f"bcos_resnet{depth}"
    build.__doc__ = f"B-cos CIFAR ResNet-{depth}: {(depth - 2) // 6} B-cos blocks per stage."
    return build


for _depth in NAMED_DEPTHS:
    register_model(f"bcos_resnet{_depth}")(_fixed_depth(_depth))


class BcosAttention(Detachable):
    """Multi-head self-attention whose attention matrix is a dynamic factor in explanation mode.

    The block is then dynamic linear in the values (B-cos ViTs): the product with the values is
    a :func:`~distillscope.models.bcos_layers.dynamic_product`, as the e2KD authors' attention
    (GoodTeachersExplain, ``bcos/models/vit.py``) multiplies through their dynamic
    multiplication. ``to_qkv`` is a plain linear map, the output projection a B-cos one.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = DetachableLayerNorm(dim)
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = BcosLinear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        qkv = self.to_qkv(self.norm(x)).view(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, h, N, d_h)
        attn = torch.softmax(q @ k.transpose(-1, -2) * (d // self.heads) ** -0.5, -1)
        mixed = dynamic_product(attn, v, self, matmul=True) if self.detach else attn @ v
        out = mixed.transpose(1, 2).reshape(b, n, d)  # (B, N, D)
        return self.to_out(out)


class BcosViTBlock(nn.Module):
    """``x + attention(x)``, then ``x + B-cos MLP(LN(x))`` (no activation: B-cos units)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.attn = BcosAttention(dim, heads)
        self.mlp = nn.Sequential(
            DetachableLayerNorm(dim), BcosLinear(dim, hidden), BcosLinear(hidden, dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(x)  # (B, N, D)
        return x + self.mlp(x)


@register_model("bcos_vit_tiny")
class BcosViT(BcosNet):
    """B-cos counterpart of ``vit_tiny`` (B-cos v2's simple ViT at CPU scale).

    B-cos patch embedding (a B-cos conv with kernel = stride = ``patch``), learned position
    embeddings (ours; v2 adds fixed sin-cos ones: either is a bias, so contributions sum to the
    logit only up to it), ``depth`` B-cos blocks, a bias-free layer norm, the tokens laid on
    their grid (``grid``, the GradCAM layer as in ``vit_tiny``), mean pooling, a B-cos
    classifier and the logit bias. No convolution beyond the embedding.

    Args:
        num_classes: Number of classes K.
        in_channels: Image channels C (the model sees 2C).
        input_size: Side of the square inputs; a multiple of ``patch``.
        patch: Patch side.
        dim: Token width.
        depth: Number of blocks.
        heads: Attention heads (dividing ``dim``).
        mlp_ratio: MLP width over ``dim``.
        input_mean: Normalisation mean of the inputs (set from the data by the experiment).
        input_std: Normalisation std of the inputs.

    Example:
        >>> BcosViT(num_classes=10)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int = 1,
        input_size: int = 28,
        patch: int = 4,
        dim: int = 64,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        input_mean: Stats = None,
        input_std: Stats = None,
    ) -> None:
        super().__init__()
        side = check_vit_sizes("bcos_vit_tiny", input_size, patch, dim, depth, heads)
        self.encode = _encode(in_channels, input_mean, input_std)
        self.embed = BcosConv2d(2 * in_channels, dim, patch, stride=patch)
        self.pos = nn.Parameter(torch.zeros(1, side * side, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.blocks = nn.Sequential(*(BcosViTBlock(dim, heads, mlp_ratio) for _ in range(depth)))
        self.norm = DetachableLayerNorm(dim)
        self.grid = TokenGrid(side)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = BcosLinear(dim, num_classes)
        self.logit_bias = LogitBias(num_classes)
        self.cam_layer: str | None = "grid"
        self.feature_layers: list[str] = [*(f"blocks.{i}" for i in range(depth)), "pool"]

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.embed(self.encode(x)).flatten(2).transpose(1, 2) + self.pos  # (B, N, D)
        tokens = self.norm(self.blocks(tokens))  # (B, N, D)
        return self.logit_bias(self.head(self.pool(self.grid(tokens))))  # (B, K)
