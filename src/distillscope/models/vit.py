"""A tiny Vision Transformer for 28x28 / 32x32 inputs (CNN -> ViT distillation, paper 001 4.3).

Dosovitskiy et al. 2021 (ViT) at CPU scale: non-overlapping ``patch x patch`` patches (4 by
default: a 7x7 grid on 28x28 inputs) linearly embedded, learned position embeddings, ``depth``
pre-norm transformer blocks (multi-head self-attention, GELU MLP), and a classifier on the
mean of the patch tokens after a final LayerNorm (no class token, as the "simple ViT" of
Beyer et al. 2022 that the B-cos ViTs of paper 001 follow).

No convolution beyond the patch embedding: the model has no built-in translation
equivariance, which is what paper 001's Fig. 5 probes (explanations of shifted images repeat
with the patch period). For GradCAM the final patch tokens are laid out on their grid as a
``(B, D, h, w)`` map by the ``grid`` module (``cam_layer``), which the head then averages; so
GradCAM explains the ViT as it explains a CNN's last block (ours: paper 001 explains its ViTs
with B-cos weights).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from distillscope.errors import ConfigError, ModelError
from distillscope.registry import register_model

__all__ = ["TinyViT", "check_vit_sizes"]


class TokenGrid(nn.Module):
    """``(B, h * w, D)`` tokens -> ``(B, D, h, w)`` map (a view; no parameters)."""

    def __init__(self, side: int) -> None:
        super().__init__()
        self.side = side

    def forward(self, tokens: Tensor) -> Tensor:
        b, n, d = tokens.shape
        return tokens.transpose(1, 2).reshape(b, d, self.side, self.side)


class Block(nn.Module):
    """Pre-norm transformer block: ``x + MSA(LN(x))``, then ``x + MLP(LN(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]  # (B, N, D)
        return x + self.mlp(self.norm2(x))  # (B, N, D)


def check_vit_sizes(
    owner: str, input_size: int, patch: int, dim: int, depth: int, heads: int
) -> int:
    """The token grid's side ``input_size // patch``, or a one-line error naming ``owner``."""
    for key, value in (("patch", patch), ("dim", dim), ("depth", depth), ("heads", heads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{owner}.{key} must be a positive integer, got {value!r}")
    if input_size % patch:
        raise ModelError(
            f"{owner}: input_size {input_size} is not a multiple of patch {patch}; "
            "pick a patch that divides it (4 for 28 or 32)"
        )
    if dim % heads:
        raise ConfigError(f"{owner}: dim {dim} is not a multiple of heads {heads}; fix one")
    return input_size // patch


@register_model("vit_tiny")
class TinyViT(nn.Module):
    """A tiny ViT (see the module docstring).

    Args:
        num_classes: Number of classes K.
        in_channels: Input channels.
        input_size: Side of the square inputs; a multiple of ``patch``.
        patch: Patch side (4: a 7x7 grid on 28x28 inputs, 8x8 on 32x32).
        dim: Token width.
        depth: Number of transformer blocks.
        heads: Attention heads (dividing ``dim``).
        mlp_ratio: MLP width over ``dim``.

    Example:
        >>> TinyViT(num_classes=10)(torch.zeros(2, 1, 28, 28)).shape
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
    ) -> None:
        super().__init__()
        side = check_vit_sizes("vit_tiny", input_size, patch, dim, depth, heads)
        self.embed = nn.Conv2d(in_channels, dim, patch, stride=patch)  # patch embedding
        self.pos = nn.Parameter(torch.zeros(1, side * side, dim))
        nn.init.trunc_normal_(self.pos, std=0.02)
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.grid = TokenGrid(side)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(dim, num_classes)
        self.cam_layer: str | None = "grid"
        self.feature_layers: list[str] = [*(f"blocks.{i}" for i in range(depth)), "pool"]

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2) + self.pos  # (B, N, D)
        tokens = self.norm(self.blocks(tokens))  # (B, N, D)
        return self.head(self.pool(self.grid(tokens)))  # (B, K)
