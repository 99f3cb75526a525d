"""FGSM and PGD: budget, bounds, determinism, strength, and gradient masking (paper 004)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distillscope.attacks import TemperatureScaled, fgsm, fgsm_sweep, pgd


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3)).eval()


def data(seed: int = 0, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)


def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return F.cross_entropy(model(x), y).item()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def saturated_linear(scale: float) -> nn.Linear:
    """z = scale * (-x0, x0): class 0 left of x0 = 0, class 1 right of it."""
    net = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]) * scale)
    return net.eval()


def separated_points() -> tuple[torch.Tensor, torch.Tensor]:
    """40 points with |x0| in [0.1, 0.25]: every one within eps = 0.3 of the boundary x0 = 0."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(40) % 2
    x0 = (0.1 + 0.15 * torch.rand(40, generator=g)) * (2 * y - 1)
    return torch.stack([x0, torch.randn(40, generator=g)], 1), y


def test_fgsm_moves_every_coordinate_by_exactly_eps_when_unbounded() -> None:
    x, y = data()
    delta = fgsm(mlp(), x, y, eps=0.05) - x
    torch.testing.assert_close(delta.abs(), torch.full_like(x, 0.05))


def test_fgsm_follows_the_sign_of_the_loss_gradient() -> None:
    x, y = data()
    net = mlp()
    xg = x.clone().requires_grad_(True)
    F.cross_entropy(net(xg), y, reduction="sum").backward()
    torch.testing.assert_close(fgsm(net, x, y, eps=0.1), x + 0.1 * xg.grad.sign())


def test_fgsm_clamps_to_bounds_only_where_needed() -> None:
    x, y = data()
    x[:, 0] = 0.0  # at the lower bound
    x[:, 1] = 0.5  # far from both bounds
    out = fgsm(mlp(), x, y, eps=0.1, bounds=(0.0, 1.0))
    assert out.min() >= 0.0 and out.max() <= 1.0
    torch.testing.assert_close((out[:, 1] - 0.5).abs(), torch.full((64,), 0.1))


def test_fgsm_sweep_gives_fgsm_at_each_budget_from_one_gradient() -> None:
    x, y = data()
    net = mlp()
    calls = []
    net.register_forward_hook(lambda *_: calls.append(1))
    budgets = [0.01, 0.05, 0.3]
    swept = fgsm_sweep(net, x, y, budgets, bounds=(0.0, 1.0))
    assert len(calls) == 1  # one forward (and backward) pass for every budget
    for eps, x_adv in zip(budgets, swept, strict=True):
        assert torch.equal(x_adv, fgsm(net, x, y, eps, bounds=(0.0, 1.0)))  # bit for bit
    assert fgsm_sweep(net, x, y, []) == []


@pytest.mark.parametrize("random_start", [True, False])
def test_pgd_stays_in_the_eps_ball_and_the_bounds(random_start) -> None:
    x, y = data()
    g = torch.Generator().manual_seed(0)
    out = pgd(mlp(), x, y, 0.1, 0.03, 10, random_start, (0.0, 1.0), g)
    assert (out - x).abs().max() <= 0.1 + 1e-6
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_pgd_is_deterministic_for_a_seeded_generator() -> None:
    x, y = data()
    net = mlp()

    def run(seed: int) -> torch.Tensor:
        return pgd(net, x, y, 0.1, 0.025, 3, True, None, torch.Generator().manual_seed(seed))

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_pgd_is_at_least_as_strong_as_fgsm_and_hurts_accuracy() -> None:
    x, y = data(n=256)
    net = mlp()
    g = torch.Generator().manual_seed(0)
    x_pgd = pgd(net, x, y, eps=0.3, step_size=0.075, steps=10, generator=g)
    x_fgsm = fgsm(net, x, y, eps=0.3)
    assert loss(net, x_pgd, y) >= loss(net, x_fgsm, y) - 1e-6
    assert loss(net, x_fgsm, y) > loss(net, x, y)
    assert accuracy(net, x_pgd, y) < accuracy(net, x, y)


def test_pgd_with_zero_steps_and_no_random_start_returns_the_input() -> None:
    x, y = data()
    assert torch.equal(pgd(mlp(), x, y, 0.1, 0.025, steps=0, random_start=False), x)


def test_attacks_leave_no_parameter_gradient() -> None:
    x, y = data()
    net = mlp()
    fgsm(net, x, y, 0.1)
    pgd(net, x, y, 0.1, 0.025, 2, generator=torch.Generator().manual_seed(0))
    assert all(p.grad is None for p in net.parameters())


def test_high_temperature_model_masks_gradients_from_weak_but_not_strong_attacks() -> None:
    # Logits 1000 x0 with |x0| >= 0.1: margins >= 200 saturate the softmax, so the cross-entropy
    # gradient underflows to exactly 0 and the weak attack cannot move. Dividing by T = 100
    # (the training temperature) leaves margins >= 2 and a usable gradient (paper 004, 5.2.2).
    x, y = separated_points()
    hot = saturated_linear(1000.0)
    assert accuracy(hot, x, y) == 1.0
    weak = fgsm(hot, x, y, eps=0.3)
    strong = fgsm(TemperatureScaled(hot, 100.0), x, y, eps=0.3)
    assert torch.equal(weak, x)
    assert accuracy(hot, weak, y) == 1.0
    assert accuracy(hot, strong, y) == 0.0
    weak_pgd = pgd(hot, x, y, 0.3, 0.075, 10, random_start=False)
    strong_pgd = pgd(TemperatureScaled(hot, 100.0), x, y, 0.3, 0.075, 10, random_start=False)
    assert accuracy(hot, weak_pgd, y) == 1.0
    assert accuracy(hot, strong_pgd, y) == 0.0


def test_the_same_model_at_temperature_one_is_not_masked() -> None:
    x, y = separated_points()
    cool = saturated_linear(10.0)  # margins 2..5: unsaturated
    assert accuracy(cool, fgsm(cool, x, y, eps=0.3), y) == 0.0


def test_pgd_random_start_is_uniform_in_the_eps_ball_around_x() -> None:
    # steps=0 returns the start itself: x + (2U - 1) eps, U ~ U[0, 1) from the caller's generator
    x, y = data(n=512)
    start = pgd(mlp(), x, y, 0.1, 0.025, steps=0, generator=torch.Generator().manual_seed(7))
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(start, x + (2 * u - 1) * 0.1)
    delta = start - x  # the whole ball, both signs, centred
    assert -0.1 <= delta.min() < -0.099 and 0.099 < delta.max() <= 0.1
    assert abs(delta.mean().item()) < 0.005


def test_pgd_random_start_is_on_by_default_and_clipped_to_the_bounds() -> None:
    x, y = data()
    x[:, 0] = 0.0
    g = torch.Generator().manual_seed(1)
    start = pgd(mlp(), x, y, 0.1, 0.025, steps=0, bounds=(0.0, 1.0), generator=g)
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(start, (x + (2 * u - 1) * 0.1).clamp(0.0, 1.0))
    assert (start[:, 0] == 0.0).any() and (start[:, 0] > 0.0).any()


def test_pgd_without_a_generator_draws_from_torch_global_generator() -> None:
    x, y = data()
    net = mlp()
    torch.manual_seed(11)
    start = pgd(net, x, y, 0.1, 0.025, steps=0)
    torch.manual_seed(11)
    u = torch.rand(x.shape)
    torch.testing.assert_close(start, x + (2 * u - 1) * 0.1)


def test_pgd_steps_follow_the_gradient_sign_and_project_on_the_ball() -> None:
    # one step of 0.25 from the clean input: x + a sign(grad) projected to |.| <= eps = 0.1
    x, y = data()
    net = mlp()
    one = pgd(net, x, y, 0.1, 0.25, steps=1, random_start=False)
    xg = x.clone().requires_grad_(True)
    F.cross_entropy(net(xg), y, reduction="sum").backward()
    torch.testing.assert_close(one, x + 0.1 * xg.grad.sign())


def test_attack_results_are_detached() -> None:
    x, y = data()
    x.requires_grad_(True)
    net = mlp()
    g = torch.Generator().manual_seed(0)
    for out in (fgsm(net, x, y, 0.1), pgd(net, x, y, 0.1, 0.025, 2, generator=g),
                pgd(net, x, y, 0.1, 0.025, 0, generator=g)):  # fmt: skip
        assert not out.requires_grad and out.grad_fn is None
    assert x.grad is None and all(p.grad is None for p in net.parameters())


def test_a_sample_gets_its_own_step_whatever_the_batch() -> None:
    # Margin 101 in float32: the sample's loss gradient is ~3e-44, a subnormal number. The
    # attacks ascend the *summed* loss, so the gradient is not divided by the batch size (a mean
    # over 64 samples would round it to 0 and freeze the sample in a batch, not alone).
    net = saturated_linear(1.0)
    x = torch.tensor([[-50.5, 0.0]]).repeat(64, 1)
    y = torch.zeros(64, dtype=torch.long)
    alone = fgsm(net, x[:1], y[:1], eps=0.1)
    batch = fgsm(net, x, y, eps=0.1)
    assert alone[0, 0].item() == pytest.approx(-50.4)  # towards the boundary
    torch.testing.assert_close(batch, alone.expand(64, 2))
    steps = pgd(net, x, y, 0.1, 0.05, steps=2, random_start=False)
    torch.testing.assert_close(steps[:, 0], torch.full((64,), -50.4))


def test_pgd_random_start_in_float64_draws_float64_noise() -> None:
    x, y = data()
    x = x.double()
    net = mlp().double()
    start = pgd(net, x, y, 0.1, 0.025, steps=0, generator=torch.Generator().manual_seed(3))
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert start.dtype == torch.float64
    torch.testing.assert_close(start, x + (2 * u - 1) * 0.1, rtol=0, atol=1e-15)
