"""The teacher's bf16 passes as one oneDNN graph (distillscope.train.onednn): the graph computes
the folded network's function to bf16 rounding with dense fp32 output, names the teacher's
weights in its state (so cache keys tell two teachers apart and never match the autocast
copy's), leaves the original as it was, and every network it cannot run is refused in a
trial, not half converted: a ``view``, a string padding, a padding mode, non-image inputs, no
convolution, an output that is not a tensor."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from distillscope.models import create_model
from distillscope.train.cache_disk import disk_key
from distillscope.train.fold import fold_batchnorm
from distillscope.train.onednn import OneDNNGraph, onednn_graph
from tests.train.test_fold import trained_looking

pytestmark = pytest.mark.skipif(
    not torch.backends.mkldnn.is_available() or not torch.ops.mkldnn._is_mkldnn_bf16_supported(),
    reason="this CPU has no bf16 oneDNN kernels",
)


def teacher(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return trained_looking(create_model("resnet8", num_classes=10, in_channels=1), seed)


def test_the_graph_computes_the_folded_teachers_function_in_bf16() -> None:
    net = teacher()
    before = copy.deepcopy(net.state_dict())
    folded, pairs = fold_batchnorm(net)
    x = torch.rand(16, 1, 28, 28)
    graph = onednn_graph(folded, x)
    assert isinstance(graph, OneDNNGraph) and pairs == 9
    with torch.no_grad():
        exact, low = net(x), graph(x)  # (16, 10) each
    assert low.dtype == torch.float32 and not low.is_mkldnn and low.shape == exact.shape
    assert 0 < (low - exact).abs().max() < 0.1  # bf16 rounding, not the fp32 values
    # bf16 autocast of the same folded network rounds differently, by the same order
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = folded(x).float()
    assert (autocast - exact).abs().max() < 0.1
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:FutureWarning")
def test_the_graph_equals_torch_utils_mkldnn_on_the_same_inputs() -> None:
    # the reference conversion it follows (torch.utils.mkldnn.to_mkldnn, bf16 weights, fp32
    # biases), which wraps its layers in TorchScript modules: the same bits
    from torch.utils.mkldnn import to_mkldnn

    folded, _ = fold_batchnorm(teacher())
    x = torch.rand(16, 1, 28, 28)
    graph = onednn_graph(folded, x)
    assert graph is not None
    reference = to_mkldnn(copy.deepcopy(folded), torch.bfloat16)  # its TorchScript warns
    with torch.no_grad():
        ours = graph(x)
        theirs = reference(x.to(torch.bfloat16).to_mkldnn()).to_dense().float()  # (16, 10)
    assert torch.equal(ours, theirs)


def test_the_graph_repeats_its_values_bit_for_bit() -> None:
    folded, _ = fold_batchnorm(teacher())
    x = torch.rand(32, 1, 28, 28)
    first, second = onednn_graph(folded, x), onednn_graph(folded, x)
    assert first is not None and second is not None
    with torch.no_grad():
        assert torch.equal(first(x), first(x)) and torch.equal(first(x), second(x))


def test_copies_and_pickles_rebuild_the_onednn_weights_from_the_dense_ones() -> None:
    x = torch.rand(8, 1, 28, 28)
    graph = onednn_graph(teacher(), x)
    assert graph is not None
    for again in (copy.deepcopy(graph), pickle.loads(pickle.dumps(graph))):
        with torch.no_grad():
            assert torch.equal(again(x), graph(x))
        assert again.state_dict().keys() == graph.state_dict().keys()


def test_the_original_keeps_its_modes_and_the_graph_does_not_train() -> None:
    net = teacher().train()
    graph = onednn_graph(net, torch.rand(4, 1, 28, 28))
    assert graph is not None
    assert all(m.training for m in net.modules())
    assert not any(p.requires_grad for p in graph.parameters())


def test_its_state_names_the_weights_so_cache_keys_tell_teachers_apart() -> None:
    x = torch.rand(4, 1, 28, 28)
    one, pairs = fold_batchnorm(teacher(0))
    graph = onednn_graph(one, x)
    assert graph is not None
    state = graph.state_dict()
    for path, value in one.state_dict().items():  # every dense weight, at the graph's path
        assert torch.equal(state[f"net.{path}"], value), path
    other = copy.deepcopy(one)
    with torch.no_grad():
        other.layer2[0].conv1.weight[0, 0, 0, 0] += 1e-3
    other_graph = onednn_graph(other, x)
    assert other_graph is not None
    keys = {disk_key(net, "data", [], []) for net in (graph, other_graph, one)}
    assert len(keys) == 3  # two graphs differ by one weight; the graph is not the folded copy


class ViewFlatten(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc = nn.Linear(2 * 26 * 26, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.fc(y.view(y.size(0), -1))  # view: oneDNN tensors have no strides


class TwoOutputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.conv(x)
        return y, y


@pytest.mark.parametrize(
    ("net", "x"),
    [
        (ViewFlatten(), torch.rand(2, 1, 28, 28)),
        (nn.Sequential(nn.Conv2d(1, 2, 3, padding="same"), nn.Flatten()), torch.rand(2, 1, 8, 8)),
        (
            nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect")),
            torch.rand(2, 1, 8, 8),
        ),
        (nn.Sequential(nn.Linear(8, 3)), torch.rand(2, 8)),  # not image batches
        (nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), torch.rand(2, 1, 8, 8)),  # no conv
        (TwoOutputs(), torch.rand(2, 1, 8, 8)),  # the graph returns one tensor
    ],
    ids=["view", "same-padding", "reflect-padding", "not-images", "no-conv", "tuple-output"],
)
def test_what_it_cannot_run_is_refused_whole(net: nn.Module, x: torch.Tensor) -> None:
    before = copy.deepcopy(net.state_dict())
    assert onednn_graph(net.train(), x) is None
    assert net.training and all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
