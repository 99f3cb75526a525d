"""The gradient of a loss on B-cos dynamic weights w.r.t. the parameters (e2KD's double backward).

``W(x)`` is the input gradient with the dynamic factors held constant. A loss on it is a
function of the parameters through the linear maps *and* through the factors; the reference
here is that function differentiated by central differences in float64 (each ``W(x)`` taken
by a first-order gradient only, the same with detached factors), independent of how our layers
build the double backward. The old layers, which detached the factors, are emulated by
replacing :func:`dynamic_product` with a detached product: same ``W(x)``, another gradient.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillscope.functional.explanation_metrics import explanation_loss
from distillscope.models import bcos as bcos_models
from distillscope.models import bcos_layers, create_model
from distillscope.models.bcos_layers import (
    BcosConv2d,
    BcosEncode,
    BcosLinear,
    UncenteredBatchNorm2d,
    dynamic_product,
    explanation_mode,
)


def tiny_cnn() -> nn.Sequential:
    """Every CNN layer kind: B = 2 and B = 2.5, MaxOut, stride, an uncentred batch norm."""
    torch.manual_seed(0)
    return nn.Sequential(
        BcosEncode(),
        BcosConv2d(2, 3, kernel_size=3, padding=1),
        UncenteredBatchNorm2d(3),
        BcosConv2d(3, 4, kernel_size=3, stride=2, padding=1, max_out=2),
        BcosConv2d(4, 4, kernel_size=1, b=2.5),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        BcosLinear(4, 3),
    ).double()


def weights(net: nn.Module, x: Tensor, target: Tensor, create_graph: bool) -> Tensor:
    """``W(x)``: the target logits' gradient w.r.t. the encoded input, in explanation mode."""
    with explanation_mode(net):
        encoded = net[0](x)  # a leaf that requires a gradient
        logits = net[1:](encoded)
        chosen = logits.gather(1, target[:, None]).sum()
        (w,) = torch.autograd.grad(chosen, encoded, create_graph=create_graph)
    return w


def loss_gradient(net: nn.Module, x: Tensor, target: Tensor, goal: Tensor) -> Tensor:
    """The e2KD explanation loss's gradient w.r.t. the parameters, flattened (backward run
    after explanation mode is left, as in a training step)."""
    loss = explanation_loss(weights(net, x, target, create_graph=True), goal)
    grads = torch.autograd.grad(loss, list(net.parameters()))
    return torch.cat([g.flatten() for g in grads])


def finite_differences(net: nn.Module, x: Tensor, target: Tensor, goal: Tensor) -> Tensor:
    """Central differences of ``explanation_loss(W(x), goal)`` in every parameter."""
    h, out = 1e-6, []
    with torch.no_grad():
        for p in net.parameters():
            flat = p.view(-1)
            for i in range(flat.numel()):
                values = []
                for step in (h, -h):
                    flat[i] += step
                    with torch.enable_grad():
                        w = weights(net, x, target, create_graph=False)
                    values.append(explanation_loss(w, goal).item())
                    flat[i] -= step
                out.append((values[0] - values[1]) / (2 * h))
    return torch.tensor(out, dtype=torch.float64)


def detached_product(factor: Tensor, x: Tensor, owner: nn.Module, matmul: bool = False) -> Tensor:
    """The old layers: the factor detached (the same forward value and ``W(x)``)."""
    return factor.detach() @ x if matmul else factor.detach() * x


@pytest.fixture
def detached(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bcos_layers, "dynamic_product", detached_product)
    monkeypatch.setattr(bcos_models, "dynamic_product", detached_product)


def cnn_case() -> tuple[nn.Module, Tensor, Tensor, Tensor]:
    net = tiny_cnn().train()  # batch statistics: the norm's 1 / std depends on the parameters
    x = torch.rand(3, 1, 6, 6, dtype=torch.float64)
    target = torch.tensor([0, 2, 1])
    goal = torch.randn(3, 2, 6, 6, dtype=torch.float64)  # a teacher's W(x)
    return net, x, target, goal


def test_the_explanation_loss_gradient_keeps_the_dynamic_factors_as_differences_do():
    net, x, target, goal = cnn_case()
    ours = loss_gradient(net, x, target, goal)
    reference = finite_differences(net, x, target, goal)
    assert torch.allclose(ours, reference, rtol=1e-5, atol=1e-8)


def test_detached_factors_give_the_same_weights_but_another_gradient(detached):
    net, x, target, goal = cnn_case()
    old = loss_gradient(net, x, target, goal)
    reference = finite_differences(net, x, target, goal)
    assert not torch.allclose(old, reference, rtol=1e-2, atol=1e-4)
    assert F.cosine_similarity(old, reference, dim=0) < 0.99


@pytest.mark.parametrize("kind", ["cnn", "vit"])
def test_first_order_dynamic_weights_are_those_of_detached_factors(kind, monkeypatch):
    torch.manual_seed(0)
    if kind == "cnn":
        model = create_model("bcos_resnet8", num_classes=5, in_channels=1, width=4)
    else:
        model = create_model("bcos_vit_tiny", num_classes=5, input_size=8, dim=16, depth=1)
    x = torch.rand(4, 1, 8, 8)
    target = torch.tensor([0, 1, 4, 2])
    model.train()
    ours = model.dynamic_weights(x, target)
    logits = model(x)
    with explanation_mode(model):
        in_mode = model(x)
    monkeypatch.setattr(bcos_layers, "dynamic_product", detached_product)
    monkeypatch.setattr(bcos_models, "dynamic_product", detached_product)
    old = model.dynamic_weights(x, target)
    assert torch.allclose(ours, old, rtol=1e-6, atol=1e-7)
    assert torch.allclose(in_mode, logits, rtol=1e-6, atol=1e-6)  # forward values unchanged


def test_the_vit_explanation_gradient_reaches_attention_and_layer_norm_parameters(monkeypatch):
    """Attention and layer norm: a directional derivative against differences (float64)."""
    torch.manual_seed(0)
    model = create_model("bcos_vit_tiny", num_classes=3, input_size=8, dim=8, depth=1, heads=2)
    model = model.double().eval()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    target = torch.tensor([0, 2])
    goal = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    params = list(model.parameters())
    direction = [torch.randn_like(p) for p in params]

    def loss_at(t: float) -> float:
        with torch.no_grad():
            for p, d in zip(params, direction, strict=True):
                p.add_(t * d)
        value = explanation_loss(model.dynamic_weights(x, target), goal).item()
        with torch.no_grad():
            for p, d in zip(params, direction, strict=True):
                p.sub_(t * d)
        return value

    h = 1e-6
    reference = (loss_at(h) - loss_at(-h)) / (2 * h)

    def along(product) -> float:  # the directional derivative of our double backward
        monkeypatch.setattr(bcos_layers, "dynamic_product", product)
        monkeypatch.setattr(bcos_models, "dynamic_product", product)
        loss = explanation_loss(model.dynamic_weights(x, target, create_graph=True), goal)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        pairs = [(g, d) for g, d in zip(grads, direction, strict=True) if g is not None]
        return sum((g * d).sum() for g, d in pairs).item()

    assert along(dynamic_product) == pytest.approx(reference, rel=1e-5)
    assert along(detached_product) != pytest.approx(reference, rel=1e-2)


def test_a_backward_after_explanation_mode_is_the_ordinary_gradient():
    """The authors' training step: forward in explanation mode, backward after it."""
    torch.manual_seed(0)
    model = create_model("bcos_resnet8", num_classes=5, in_channels=1, width=4).train()
    x = torch.rand(4, 1, 8, 8)
    params = list(model.parameters())
    plain = torch.autograd.grad(model(x).pow(2).sum(), params)
    with explanation_mode(model):
        out = model(x)
        inside = torch.autograd.grad(out.pow(2).sum(), params, retain_graph=True)
    after = torch.autograd.grad(out.pow(2).sum(), params)
    for a, b in zip(after, plain, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    assert any(not torch.allclose(a, b, rtol=1e-2, atol=1e-4) for a, b in zip(inside, plain))
