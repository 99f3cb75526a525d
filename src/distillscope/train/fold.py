"""Batch norm folded into the convolution before it, for a frozen teacher's bf16 passes.

In eval mode a batch norm after a convolution is an affine map per channel, so the pair is one
convolution with rescaled weights (the standard inference rewrite; Jacob et al. 2018, 3.2):

    s = gamma / sqrt(running_var + eps)
    W' = W * s            (per output channel)
    b' = (b - running_mean) * s + beta

The folded network computes the same function up to float rounding and skips one pass over
every feature map. distillscope applies it only where numbers change anyway: a teacher whose
passes run in bf16 (``teacher_precision``), where the start-up check compares the folded bf16
teacher with the original fp32 one. fp32 passes never fold, so their results stay what they
were bit for bit. The experiment folds once per teacher and hands the copy to the trainer and
the cache; a program that calls ``Trainer`` or ``TeacherCache.build`` with bf16 itself passes
``fold_batchnorm(teacher, keep)[0]`` to get a run's numbers.

Pairs are found on a :func:`torch.fx.symbolic_trace` of the network: a ``BatchNorm2d`` call
whose only input is a ``Conv2d`` call that nothing else reads (those exact classes: a subclass,
such as a weight-standardised conv or a batch norm with its activation inside, may compute
something else). A network that does not trace,
a module called more than once, a conv whose weights other modules share, a batch norm without
running statistics, and a pair with either module in ``keep`` (a conv whose own output a loss
reads, a batch norm whose parameters a loss reads, as OFD's margin does) are left as they are.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["fold_batchnorm", "foldable_pairs"]


def foldable_pairs(model: nn.Module, keep: Iterable[str] = ()) -> list[tuple[str, str]]:
    """The ``(conv path, batch norm path)`` pairs of ``model`` that :func:`fold_batchnorm`
    folds (module paths as in ``named_modules``); none when the network does not trace.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU())
        >>> foldable_pairs(net)
        [('0', '1')]
        >>> foldable_pairs(net, keep=["0"])
        []
    """
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # noqa: BLE001 - any tracing failure means: do not fold
        return []
    modules = dict(model.named_modules())
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    owners = Counter(id(p) for m in model.modules() for p in m.parameters(recurse=False))
    kept = set(keep)
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or type(modules[node.target]) is not nn.BatchNorm2d:
            continue
        source = node.args[0] if node.args else None
        if not isinstance(source, torch.fx.Node) or source.op != "call_module":
            continue
        conv, bn = modules[source.target], modules[node.target]
        if (
            type(conv) is nn.Conv2d  # not a subclass: its forward may differ (weight standardising)
            and len(source.users) == 1
            and calls[source.target] == 1
            and calls[node.target] == 1
            and bn.running_mean is not None
            and source.target not in kept
            and node.target not in kept
            and all(owners[id(p)] == 1 for p in conv.parameters(recurse=False))
        ):
            pairs.append((str(source.target), str(node.target)))
    return pairs


def fold_batchnorm(model: nn.Module, keep: Iterable[str] = ()) -> tuple[nn.Module, int]:
    """An eval-mode copy of ``model`` with each :func:`foldable_pairs` pair folded (its batch
    norm replaced by ``nn.Identity``, so every module path stays), and the number of pairs.

    With nothing to fold, ``model`` itself comes back (no copy). The copy is for inference
    only: it no longer has the batch norms' statistics to update.

    Args:
        model: The network (its parameters are not changed).
        keep: Module paths that must stay as they are (tapped features, modules a loss reads:
            :meth:`~distillscope.distill.base.LossTerm.teacher_modules`).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).eval()
        >>> _ = net[1].running_mean.fill_(0.5)
        >>> folded, n = fold_batchnorm(net)
        >>> n, type(folded[1]).__name__
        (1, 'Identity')
        >>> x = torch.randn(1, 1, 5, 5)
        >>> torch.allclose(folded(x), net(x), atol=1e-6)
        True
    """
    pairs = foldable_pairs(model, keep)
    if not pairs:
        return model, 0
    folded = copy.deepcopy(model).eval()
    modules = dict(folded.named_modules())
    with torch.no_grad():
        for conv_path, bn_path in pairs:
            conv, bn = modules[conv_path], modules[bn_path]
            assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
            mean, var = bn.running_mean.double(), bn.running_var.double()  # (C,) each
            gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(mean)
            beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(mean)
            scale = gamma / torch.sqrt(var + bn.eps)  # (C,)
            bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(mean)
            weight = conv.weight.double() * scale.view(-1, *[1] * (conv.weight.dim() - 1))
            conv.weight.copy_(weight.to(conv.weight.dtype))
            new_bias = ((bias - mean) * scale + beta).to(conv.weight.dtype)  # (C,)
            if conv.bias is None:
                conv.bias = nn.Parameter(new_bias, requires_grad=conv.weight.requires_grad)
            else:
                conv.bias.copy_(new_bias)
            parent, _, leaf = bn_path.rpartition(".")
            setattr(modules[parent] if parent else folded, leaf, nn.Identity())
    return folded, len(pairs)
