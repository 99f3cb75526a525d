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


def test_bounded_result_fools_the_model_close_to_the_unbounded_one() -> None:
    net = tiny_mlp(3)
    x = torch.rand(64, 5, generator=torch.Generator().manual_seed(3))
    y = correctly_classified(net, x)
    free = deepfool(net, x, y)
    bounded = deepfool(net, x, y, bounds=(0.0, 1.0))
    assert (correctly_classified(net, bounded) != y).all()
    assert bounded.min() >= 0.0 and bounded.max() <= 1.0
    inside = ((free >= 0) & (free <= 1)).all(1)  # (64,) clipping never needed
    assert 20 <= int(inside.sum()) <= 50
    torch.testing.assert_close(bounded[inside], free[inside])
    ratio = (bounded - x)[~inside].norm(dim=1) / (free - x)[~inside].norm(dim=1)
    assert ratio.median() < 1.1 and ratio.max() < 3.0  # clipped, but hardly longer


def reference_deepfool(net: nn.Module, x0: torch.Tensor, y: int, bounds: tuple[float, float]):
    """DeepFool (Algorithm 2) on one sample, unbatched, with the full Jacobian, clipping each
    iterate to ``bounds`` and taking the accumulated ``r`` back to the clipped point."""
    r_total, point = torch.zeros_like(x0), x0.clone()
    for _ in range(50):
        with torch.no_grad():
            f = net(point[None])[0]  # (K,)
        if f.argmax() != y:
            break
        jac = torch.autograd.functional.jacobian(lambda v: net(v[None])[0], point)  # (K, D)
        best = None
        for k in range(len(f)):
            if k == y:
                continue
            w_k, f_k = jac[k] - jac[y], f[k] - f[y]
            dist = f_k.abs() / w_k.norm()
            if best is None or dist < best[0]:
                best = (dist, f_k, w_k)
        _, f_l, w_l = best
        r_total = r_total + (f_l.abs() + PUSH) / w_l.norm() ** 2 * w_l
        point = (x0 + OVERSHOOT * r_total).clamp(*bounds)
        r_total = (point - x0) / OVERSHOOT
    return point


class TwoFacets(nn.Module):
    """Two classes, class 1 where both facets are positive: ``f_1 = min(l_1, l_2)``,
    ``f_0 = 0``, with ``l_1 = 4u + v - 4.3`` and ``l_2 = -u + 3v``. From ``(0.8, 0.1)`` the first
    step follows ``l_1`` to the right and is clipped at ``u = 1``; the next follows ``l_2``, back
    to the left."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.tensor([[4.0, 1.0], [-1.0, 3.0]], dtype=x.dtype)
        facets = x @ a.T + torch.tensor([-4.3, 0.0], dtype=x.dtype)  # (B, 2)
        return torch.stack([torch.zeros_like(facets[:, 0]), facets.min(1).values], 1)  # (B, 2)


@pytest.mark.parametrize("case", ["two_facets", "mlp"])
def test_bounded_steps_continue_from_the_clipped_point(case: str) -> None:
    # after a clipped step the next linearisation starts where the sample really is, and the
    # accumulated perturbation is the clipped one: a later step back into the range is not
    # eaten by an overshoot beyond it
    if case == "two_facets":
        net: nn.Module = TwoFacets()
        x = torch.tensor([[0.8, 0.1], [0.85, 0.05]], dtype=torch.float64)
    else:
        net = tiny_mlp(3).double()
        x = torch.rand(24, 5, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    y = correctly_classified(net, x)
    got = deepfool(net, x, y, bounds=(0.0, 1.0))
    expected = torch.stack(
        [reference_deepfool(net, x[i], int(y[i]), (0.0, 1.0)) for i in range(len(x))]
    )
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-9)
    assert (correctly_classified(net, got) != y).all()
    if case == "two_facets":  # clipped at u = 1 on the way, back inside at the end
        assert (got[:, 0] < 1.0).all()


def test_attack_results_are_detached() -> None:
    net = tiny_mlp()
    x = torch.rand(6, 5, generator=torch.Generator().manual_seed(5)).requires_grad_(True)
    y = correctly_classified(net, x)
    for out in (deepfool(net, x, y), deepfool(net, x, y, bounds=(0.0, 1.0))):
        assert not out.requires_grad and out.grad_fn is None
    assert all(p.grad is None for p in net.parameters())


def test_a_boundary_whose_gradient_has_unit_norm_is_reached() -> None:
    # f_1 - f_0 = x_0 - 0.5: ||w_1 - w_0|| = 1 exactly; from x_0 = 0.2 the step is 0.3 + 1e-4
    net = linear(torch.tensor([[0.0, 0.0], [1.0, 0.0]]), torch.tensor([0.0, -0.5]))
    x = torch.tensor([[0.2, 0.7]], dtype=torch.float64)
    x_adv = deepfool(net, x, torch.tensor([0]))
    expected = torch.tensor([[0.2 + OVERSHOOT * (0.3 + PUSH), 0.7]], dtype=torch.float64)
    torch.testing.assert_close(x_adv, expected)


def test_an_empty_batch_gives_an_empty_batch() -> None:
    x = torch.zeros(0, 5)
    out = deepfool(tiny_mlp(), x, torch.zeros(0, dtype=torch.long))
    assert out.shape == (0, 5)


def test_a_class_tied_with_the_true_one_is_no_boundary() -> None:
    # classes 0 and 1 share their weights (f'_1 = 0 and w_1 = 0: 0 / 0); class 2's boundary
    # f_2 - f_0 = x_0 - 0.5 is the one to cross
    w = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    net = linear(w, torch.tensor([0.0, 0.0, -0.5]))
    x = torch.tensor([[0.2, 0.3]], dtype=torch.float64)
    x_adv = deepfool(net, x, torch.tensor([0]))
    expected = torch.tensor([[0.2 + OVERSHOOT * (0.3 + PUSH), 0.3]], dtype=torch.float64)
    torch.testing.assert_close(x_adv, expected)
