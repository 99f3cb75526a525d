"""Batch norm folding for the teacher's bf16 passes: the folded copy computes the original's
function (fp32, eval mode) with every module path kept, the original is untouched, and every
pair that folding would change the meaning of is left alone: a tapped conv, a conv read twice,
a module called twice, shared weights, batch norms without running statistics, subclasses that
compute something else, a network that does not trace."""

from __future__ import annotations

import copy

import torch
from torch import nn

from distillscope.models import create_model
from distillscope.models.taps import FeatureTap
from distillscope.train.fold import fold_batchnorm, foldable_pairs
from distillscope.train.precision import choose_teacher_precision


def trained_looking(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` with batch norm statistics and affine parameters away from their defaults
    (fresh ones fold to the identity and would hide a wrong formula)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                    m.bias.copy_(torch.rand(c, generator=g) - 0.5)
    return model.eval()


def test_a_folded_resnet_computes_the_same_function_and_keeps_its_paths() -> None:
    torch.manual_seed(0)
    net = trained_looking(create_model("resnet8", num_classes=10, in_channels=1))
    before = copy.deepcopy(net.state_dict())
    bns = [n for n, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)]
    folded, n = fold_batchnorm(net)
    assert n == len(bns) == 9  # every batch norm of resnet8 follows its own conv
    assert folded is not net
    modules = dict(folded.named_modules())
    assert set(modules) == {name for name, _ in net.named_modules()}  # every path stays
    assert all(isinstance(modules[b], nn.Identity) for b in bns)
    x = torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(folded(x), net(x), atol=1e-4, rtol=1e-4)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # untouched
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())


def test_the_formula_on_one_pair_with_and_without_a_conv_bias() -> None:
    for bias in (True, False):
        torch.manual_seed(1)
        net = trained_looking(nn.Sequential(nn.Conv2d(2, 3, 3, bias=bias), nn.BatchNorm2d(3)))
        folded, n = fold_batchnorm(net)
        conv, bn = net[0], net[1]
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (3,)
        b = conv.bias if bias else torch.zeros(3)
        assert n == 1
        assert torch.allclose(folded[0].weight, conv.weight * scale.view(3, 1, 1, 1))
        assert torch.allclose(folded[0].bias, (b - bn.running_mean) * scale + bn.bias)


def test_a_train_mode_model_gives_an_eval_copy_and_stays_in_train_mode() -> None:
    net = trained_looking(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))).train()
    folded, _ = fold_batchnorm(net)
    assert net.training and not folded.training


def test_kept_modules_keep_their_pair_and_tapped_paths_keep_their_values() -> None:
    torch.manual_seed(0)
    net = trained_looking(create_model("resnet8", num_classes=10, in_channels=1))
    keep = ["layer2.0.conv1", "layer2.0.bn2", "layer3"]  # a conv, a batch norm, a block
    folded, n = fold_batchnorm(net, keep)
    modules = dict(folded.named_modules())
    assert n == 7 and isinstance(modules["layer2.0.bn1"], nn.BatchNorm2d)
    assert isinstance(modules["layer2.0.bn2"], nn.BatchNorm2d)  # e.g. OFD reads its parameters
    assert isinstance(modules["layer3.0.bn2"], nn.Identity)  # inside a kept block: folded
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad(), FeatureTap(net, keep) as tap, FeatureTap(folded, keep) as tap2:
        net(x), folded(x)
        for path in keep:  # a folded batch norm's path hands on the same map
            assert torch.allclose(tap.features[path], tap2.features[path], atol=1e-4)


class TwoReaders(nn.Module):
    """The conv's output feeds its batch norm and a skip: folding would change the skip."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


class CalledTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.other, self.bn = nn.Conv2d(1, 1, 1), nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)) + self.bn(self.other(x))


class Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.twin, self.bn = nn.Conv2d(1, 1, 1), nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)
        self.twin.weight = self.conv.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)) + self.twin(x)


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: symbolic tracing fails
            return self.bn(self.conv(x))
        return x


class StandardisedConv(nn.Conv2d):
    """A conv subclass whose forward standardises its weights (as timm's StdConv2d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = (self.weight - self.weight.mean()) / (self.weight.std() + 1e-5)
        return self._conv_forward(x, w, self.bias)


class BatchNormRelu(nn.BatchNorm2d):
    """A batch norm subclass with its activation inside (as timm's BatchNormAct2d)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(super().forward(x))


class Leaf(torch.fx.Tracer):
    """A tracer that keeps every module a leaf, so subclasses reach the pair check itself."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return True


def test_pairs_whose_folding_would_change_the_function_are_left_alone(monkeypatch) -> None:
    no_stats = nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1, track_running_stats=False))
    subclassed = [
        nn.Sequential(StandardisedConv(1, 1, 1), nn.BatchNorm2d(1)),
        nn.Sequential(nn.Conv2d(1, 1, 1), BatchNormRelu(1)),
    ]
    for net in subclassed:
        assert foldable_pairs(net) == []
    monkeypatch.setattr(
        torch.fx, "symbolic_trace", lambda m: torch.fx.GraphModule(m, Leaf().trace(m))
    )
    for net in subclassed:  # even where the trace leaves the subclass as one call
        assert foldable_pairs(net) == []
    assert foldable_pairs(nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1))) == [("0", "1")]
    monkeypatch.undo()
    for net in (TwoReaders(), CalledTwice(), Shared(), Untraceable(), no_stats):
        assert foldable_pairs(net) == []
        folded, n = fold_batchnorm(net.eval())
        assert (folded, n) == (net, 0)  # nothing to fold: the model itself, no copy
    mixed = CalledTwice()
    mixed.extra = nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1))  # not called: no pair
    assert foldable_pairs(mixed) == []


def test_the_precision_check_runs_the_folded_network_it_will_use() -> None:
    torch.manual_seed(0)
    net = trained_looking(create_model("resnet8", num_classes=10, in_channels=1))
    folded, n = fold_batchnorm(net)
    x = torch.randn(64, 1, 28, 28)
    cpu = torch.device("cpu")
    chosen = choose_teacher_precision(net, x, cpu, "bf16", folded, n)
    assert chosen.precision == "bf16" and chosen.folded == 9 and chosen.items == 64
    broken = copy.deepcopy(folded)
    with torch.no_grad():
        broken.fc.bias.add_(100.0)  # a runner that is not the teacher: the check sees it
    auto = choose_teacher_precision(net, x, cpu, "auto", broken, n)
    assert auto.precision == "fp32" and auto.folded == 0 and auto.max_logit_error > 50
    assert net.training is False and folded.training is False
