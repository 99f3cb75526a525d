"""DeepFool against its defining property: the minimal step to the nearest linear boundary."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distillscope.attacks import DEEPFOOL_OVERSHOOT, TemperatureScaled, deepfool

OVERSHOOT = 1 + DEEPFOOL_OVERSHOOT
PUSH = 1e-4  # DeepFool's constant added to |f'_l|


def linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    net = nn.Linear(weight.shape[1], weight.shape[0]).double()
    with torch.no_grad():
        net.weight.copy_(weight)
        net.bias.copy_(bias)
    return net.eval()


def correctly_classified(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(x).argmax(1)


def test_two_class_linear_model_gets_the_closed_form_minimal_perturbation() -> None:
    # f(x) = Wx + b, two classes: the boundary is |f_1 - f_0| / ||w_1 - w_0|| away along w_1 - w_0.
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(2, 6, generator=g, dtype=torch.float64), torch.randn(2, generator=g).double()
    net = linear(w, b)
    x = torch.randn(10, 6, generator=g, dtype=torch.float64)
    y = correctly_classified(net, x)
    x_adv = deepfool(net, x, y)
    r = x_adv - x  # (10, 6)
    sign = torch.where(y == 0, 1.0, -1.0).double()  # direction w_other - w_y
    direction = sign[:, None] * (w[1] - w[0])  # (10, 6)
    with torch.no_grad():
        gap = (net(x)[:, 1] - net(x)[:, 0]).abs()  # (10,)
    dist = gap / (w[1] - w[0]).norm()  # the minimal L2 perturbation
    expected = OVERSHOOT * (dist + PUSH / (w[1] - w[0]).norm())
    torch.testing.assert_close(r.norm(dim=1), expected)
    assert (r.norm(dim=1) >= dist).all() and (r.norm(dim=1) <= OVERSHOOT * dist + 1e-3).all()
    cos = torch.nn.functional.cosine_similarity(r, direction, dim=1)
    torch.testing.assert_close(cos, torch.ones(10, dtype=torch.float64))
    assert (correctly_classified(net, x_adv) != y).all()


def test_multi_class_linear_model_steps_to_the_nearest_facet() -> None:
    # Inside the convex region of class y, the nearest boundary is the closest facet hyperplane:
    # d = min_{k != y} |f_k - f_y| / ||w_k - w_y||, reached in one DeepFool step.
    g = torch.Generator().manual_seed(1)
    k, d, n = 5, 8, 16
    w, b = torch.randn(k, d, generator=g).double(), torch.randn(k, generator=g).double()
    net = linear(w, b)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = correctly_classified(net, x)
    with torch.no_grad():
        z = net(x)  # (n, k)
    diff_w = w[None] - w[y][:, None]  # (n, k, d)
    dist = (z - z.gather(1, y[:, None])).abs() / diff_w.norm(dim=2)  # (n, k)
    dist[torch.arange(n), y] = torch.inf
    d_min, nearest = dist.min(1)  # (n,)
    expected = OVERSHOOT * (d_min + PUSH / diff_w[torch.arange(n), nearest].norm(dim=1))
    x_adv = deepfool(net, x, y)
    norms = (x_adv - x).norm(dim=1)
    torch.testing.assert_close(norms, expected)
    assert (norms >= d_min).all() and (norms <= OVERSHOOT * d_min + 1e-3).all()
    assert (correctly_classified(net, x_adv) != y).all()


def tiny_mlp(seed: int = 0, classes: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, classes)).eval()


def test_batched_equals_one_sample_at_a_time() -> None:
    net = tiny_mlp()
    x = torch.randn(12, 5, generator=torch.Generator().manual_seed(2))
    y = torch.arange(12) % 4  # some start misclassified: they must stay unchanged
    whole = deepfool(net, x, y)
    single = torch.cat([deepfool(net, x[i : i + 1], y[i : i + 1]) for i in range(12)])
    torch.testing.assert_close(whole, single)
    fooled = correctly_classified(net, whole) != y
    assert fooled.all()  # a ReLU network is piecewise linear: 50 steps suffice here
    wrong_at_start = correctly_classified(net, x) != y
    assert wrong_at_start.any()
    torch.testing.assert_close(whole[wrong_at_start], x[wrong_at_start])


def test_bounds_keep_the_result_in_range_and_the_step_count_is_respected() -> None:
    net = tiny_mlp(3)
    x = torch.rand(20, 5, generator=torch.Generator().manual_seed(3))
    y = correctly_classified(net, x)
    x_adv = deepfool(net, x, y, bounds=(0.0, 1.0))
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert (x_adv != x).any()
    torch.testing.assert_close(deepfool(net, x, y, steps=0), x)


def test_vanishing_gradients_leave_the_input_unchanged() -> None:
    class Constant(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tensor([1.0, 0.0]).expand(len(x), 2) + 0 * x.sum(1, keepdim=True)

    x = torch.randn(3, 4)
    torch.testing.assert_close(deepfool(Constant(), x, torch.zeros(3, dtype=torch.long)), x)


@pytest.mark.parametrize("temperature", [10.0, 100.0])
def test_strong_form_differs_from_weak_only_by_the_push_constant(temperature: float) -> None:
    # A model trained at T has logits T times larger. DeepFool reads logits, not the softmax,
    # so f / T gives the same direction; only the 1e-4 push grows by T: the strong step is
    # (|g| + 1e-4) / ||a||^2 a, the weak one (|g| + 1e-4 / T) / ||a||^2 a for g = f / T.
    g = torch.Generator().manual_seed(4)
    w, b = torch.randn(2, 3, generator=g).double(), torch.randn(2, generator=g).double()
    hot = linear(w * temperature, b * temperature)
    x = torch.randn(8, 3, generator=g, dtype=torch.float64)
    y = correctly_classified(hot, x)
    weak = (deepfool(hot, x, y) - x).norm(dim=1)
    strong = (deepfool(TemperatureScaled(hot, temperature), x, y) - x).norm(dim=1)
    a = (w[1] - w[0]).norm()
    torch.testing.assert_close(
        strong - weak, OVERSHOOT * PUSH * (1 - 1 / temperature) / a * torch.ones_like(weak)
    )
    assert (strong > weak).all()  # the strong attack never needs less
