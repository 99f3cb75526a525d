"""A frozen teacher's bf16 passes on the CPU as one oneDNN graph (ours; PyTorch's
``torch.utils.mkldnn`` conversion, without its TorchScript).

Under bf16 autocast every convolution of a channels-last network casts its weights to bf16,
has oneDNN reorder the input and the weights into its blocked layout, and hands a bf16
NHWC tensor to the next module, which reorders it again. oneDNN's own tensors
(``Tensor.to_mkldnn``) stay in the blocked layout from the first convolution to the last
layer, and the weights are reordered once, ahead. Measured on this project's CPU
(``benchmarks/precision.py``, results/precision.json): a resnet20 teacher's cache build takes
0.45 of the fp32 build this way against 0.53 folded under autocast; a resnet8 teacher 0.48, an
mnist_cnn teacher 0.47.
The values are bf16 convolutions either way; only the rounding differs (the start-up check of
``teacher_precision`` compares the graph with the fp32 teacher, as for autocast).

:func:`onednn_graph` converts a copy: every ``nn.Conv2d`` and ``nn.Linear`` (those exact
classes) becomes a module holding its weights reordered for oneDNN in bf16 (the bias stays
fp32, as ``torch.utils.mkldnn`` keeps it; a test finds the two conversions' logits equal bit for
bit), and the network's input goes in as a oneDNN tensor
and its output comes out as a dense fp32 tensor. Every other module runs as written on oneDNN
tensors (ReLU, residual additions, pooling, flattening and batch norm do). A network that
calls an operation oneDNN tensors lack (``view``, ``mean``, indexing) fails a trial pass on
two items and is not converted; the caller then runs autocast.

Only for a teacher whose students read nothing but its output: a hook on a module inside the
graph would see a oneDNN tensor. The copy is for inference: no gradients, no training; its
state dict holds the dense weights (the converted modules keep them as buffers), so a cache key
hashing it names the teacher's weights, and copies and pickles rebuild the oneDNN weights from
them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from distillscope.train.fold import fold_batchnorm

__all__ = ["OneDNNGraph", "bf16_runner", "onednn_graph"]


class _Packed(nn.Module):
    """A layer whose dense weights are buffers (its state) and whose oneDNN copies
    (``packed``, ``packed_bias``) are derived from them: rebuilt, not copied, by
    ``copy.deepcopy`` and pickling (oneDNN tensors have no storage to copy)."""

    weight: Tensor
    bias: Tensor | None

    def __init__(self, layer: nn.Conv2d | nn.Linear, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype
        # ``layer`` belongs to the private copy being converted: its tensors are taken over
        self.register_buffer("weight", layer.weight.detach())
        self.register_buffer("bias", None if layer.bias is None else layer.bias.detach())
        self._pack()

    def _pack(self) -> None:
        raise NotImplementedError

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        state.pop("packed", None)
        state.pop("packed_bias", None)
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        super().__setstate__(state)
        self._pack()


class _Conv2d(_Packed):
    """``nn.Conv2d`` with bf16 weights reordered for oneDNN once: ``torch.mkldnn_convolution``."""

    def __init__(self, conv: nn.Conv2d, dtype: torch.dtype) -> None:
        self.stride, self.padding = list(conv.stride), list(conv.padding)  # type: ignore[arg-type]
        self.dilation, self.groups = list(conv.dilation), conv.groups
        super().__init__(conv, dtype)  # weight (C_out, C_in/g, kh, kw)

    def _pack(self) -> None:
        self.packed = torch._C._nn.mkldnn_reorder_conv2d_weight(
            self.weight.to_mkldnn(self.dtype), self.padding, self.stride, self.dilation,
            self.groups,
        )  # fmt: skip
        self.packed_bias = None if self.bias is None else self.bias.float().to_mkldnn()

    def forward(self, x: Tensor) -> Tensor:
        return torch.mkldnn_convolution(
            x, self.packed, self.packed_bias, self.padding, self.stride, self.dilation, self.groups
        )


class _Linear(_Packed):
    """``nn.Linear`` with bf16 weights as a oneDNN tensor: ``mkldnn_linear``."""

    def _pack(self) -> None:
        self.packed = self.weight.to_mkldnn(self.dtype)  # (out, in)
        bias = self.bias if self.bias is not None else self.weight.new_zeros(len(self.weight))
        self.packed_bias = bias.float().to_mkldnn()

    def forward(self, x: Tensor) -> Tensor:
        return torch._C._nn.mkldnn_linear(x if x.is_mkldnn else x.to_mkldnn(), self.packed,
                                          self.packed_bias)  # fmt: skip


class OneDNNGraph(nn.Module):
    """A network whose convolutions and linear layers run on oneDNN tensors in ``dtype``:
    dense input in, dense fp32 output out (autocast off inside)."""

    def __init__(self, net: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.net = net
        self.dtype = dtype

    def forward(self, x: Tensor) -> Tensor:
        with torch.autocast("cpu", enabled=False):
            y = self.net(x.to(self.dtype).to_mkldnn())
        return (y.to_dense() if y.is_mkldnn else y).float()


def _convertible(model: nn.Module, sample: Tensor) -> bool:
    """CPU oneDNN present, image batches, a 2-D convolution, and every exact ``nn.Conv2d``
    with numeric zero padding."""
    convs = [m for m in model.modules() if type(m) is nn.Conv2d]
    return (
        torch.backends.mkldnn.is_available()
        and sample.device.type == "cpu"
        and sample.dim() == 4
        and bool(convs)
        and all(m.padding_mode == "zeros" and not isinstance(m.padding, str) for m in convs)
        and all(p.device.type == "cpu" for p in model.parameters())
    )


def _converted(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """An eval-mode copy of ``model`` with its exact ``nn.Conv2d`` / ``nn.Linear`` modules
    replaced by oneDNN ones at the same paths."""
    net = copy.deepcopy(model).eval().requires_grad_(False)
    for path, module in list(net.named_modules()):
        if type(module) is nn.Conv2d or type(module) is nn.Linear:
            parent, _, leaf = path.rpartition(".")
            make = _Conv2d if type(module) is nn.Conv2d else _Linear
            setattr(net.get_submodule(parent) if parent else net, leaf, make(module, dtype))  # type: ignore[arg-type]
    return net


def onednn_graph(
    model: nn.Module, sample: Tensor, dtype: torch.dtype = torch.bfloat16
) -> OneDNNGraph | None:
    """An eval-mode copy of ``model`` running as one oneDNN graph in ``dtype``, or ``None``
    when it cannot (no oneDNN, not the CPU, not image batches, no convolution, a padding mode
    oneDNN lacks, a CPU without bf16 oneDNN kernels, an operation that fails on oneDNN tensors
    in a trial pass on two items of ``sample``, or an output that is not a finite tensor of the
    original's shape). ``model`` itself is not changed (its modes are restored).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 2))
        >>> x = torch.randn(3, 1, 4, 4)
        >>> graph = onednn_graph(net, x)
        >>> graph(x).shape, graph(x).dtype
        (torch.Size([3, 2]), torch.float32)
        >>> bool((graph(x) - net(x)).abs().max() < 0.05)
        True
        >>> onednn_graph(nn.Sequential(nn.Flatten(), nn.Linear(16, 2)), x) is None
        True
    """
    if not _convertible(model, sample):
        return None
    modes = [m.training for m in model.modules()]
    try:
        graph = OneDNNGraph(_converted(model, dtype), dtype).eval()
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            want = model.eval()(sample[:2])
            got = graph(sample[:2])
    except Exception:  # noqa: BLE001 - no bf16 oneDNN on this CPU, or an operation without
        return None  # oneDNN tensors: not converted
    finally:
        for module, mode in zip(model.modules(), modes):
            module.training = mode
    if not isinstance(want, Tensor) or got.shape != want.shape or not torch.isfinite(got).all():
        return None
    return graph


def bf16_runner(
    model: nn.Module, keep: Sequence[str], sample: Tensor
) -> tuple[nn.Module, int, bool]:
    """The network a frozen teacher's bf16 passes run on, as a run makes it: ``model`` with its
    batch norms folded (:func:`~distillscope.train.fold.fold_batchnorm`, sparing ``keep``),
    as one oneDNN graph when nothing of it is read (``keep`` empty) and it converts; with the
    number of folded pairs and whether it is a graph.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten())
        >>> runner, folded, graph = bf16_runner(net, ["1"], torch.rand(2, 1, 5, 5))
        >>> folded, graph, runner is net
        (0, False, True)
    """
    folded, pairs = fold_batchnorm(model, keep)
    graph = None if keep else onednn_graph(folded, sample)
    return (folded, pairs, False) if graph is None else (graph, pairs, True)
