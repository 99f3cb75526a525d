"""I-FGSM, PGD-L2 and Carlini-Wagner L2 by their defining properties, and an attack-strength
check of our 10-step PGD against a 50-step margin-loss PGD on a small trained model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distillscope.attacks.carlini import cw_l2
from distillscope.attacks.gradient import fgsm, pgd
from distillscope.attacks.l2 import ifgsm, l2_norms, pgd_l2


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """An MLP trained on scikit-learn's 8x8 digits in [0, 1] (held-out 300 images)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)  # (1797, 64)
    y = torch.tensor(d.target)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(net(x[:1497]), y[:1497]).backward()
        opt.step()
    net.eval().zero_grad(set_to_none=True)
    return net, x[1497:], y[1497:]


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (net(x).argmax(1) == y).float().mean().item()


def test_ifgsm_stays_in_the_ball_and_range_and_beats_fgsm(trained):
    net, x, y = trained
    assert accuracy(net, x, y) > 0.9
    eps = 0.1
    adv = ifgsm(net, x, y, eps, bounds=(0.0, 1.0))
    assert (adv - x).abs().amax() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert accuracy(net, adv, y) <= accuracy(net, fgsm(net, x, y, eps, (0.0, 1.0)), y)
    assert accuracy(net, adv, y) < accuracy(net, x, y) - 0.2


def test_pgd_l2_stays_in_the_l2_ball_and_range_and_repeats_with_a_seed(trained):
    net, x, y = trained
    eps = 1.0

    def run(seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return pgd_l2(net, x, y, eps, eps / 4, bounds=(0.0, 1.0), generator=g)

    adv = run(0)
    assert (l2_norms(adv - x) <= eps + 1e-5).all()
    assert adv.min() >= 0 and adv.max() <= 1
    assert torch.equal(adv, run(0)) and not torch.equal(adv, run(1))
    assert accuracy(net, adv, y) < accuracy(net, x, y) - 0.2
    assert all(p.grad is None for p in net.parameters())


def test_cw_finds_a_smaller_l2_perturbation_than_pgd_l2_at_the_same_success(trained):
    net, x, y = trained
    x, y = x[:100], y[:100]
    right = (net(x).argmax(1) == y).detach()
    x, y = x[right], y[right]
    eps = 2.0
    pgd_adv = pgd_l2(net, x, y, eps, eps / 4, steps=20, bounds=(0.0, 1.0),
                     generator=torch.Generator().manual_seed(0))  # fmt: skip
    cw_adv = cw_l2(net, x, y, bounds=(0.0, 1.0), steps=100, search_steps=6, c0=1.0)
    with torch.no_grad():
        both = (net(pgd_adv).argmax(1) != y) & (net(cw_adv).argmax(1) != y)
    assert both.float().mean() > 0.8  # the same successes
    cw_norm, pgd_norm = l2_norms(cw_adv - x)[both], l2_norms(pgd_adv - x)[both]
    assert cw_norm.mean() < 0.8 * pgd_norm.mean()
    assert cw_adv.min() >= 0 and cw_adv.max() <= 1


def test_cw_on_a_linear_model_reaches_near_the_analytic_minimum():
    """For f(x) = Wx, the smallest L2 step across the boundary of two classes is |margin| /
    ||w_y - w_j||; CW cannot beat it and should come close (unbounded box made wide)."""
    torch.manual_seed(0)
    net = nn.Linear(6, 2, bias=False)
    x = torch.rand(20, 6) * 0.2 + 0.4
    y = net(x).argmax(1).detach()
    w = net.weight.detach()
    normal = (w[0] - w[1]).norm()
    minimum = (net(x)[:, 0] - net(x)[:, 1]).abs().detach() / normal  # (20,)
    adv = cw_l2(net, x, y, bounds=(-10.0, 10.0), steps=300, search_steps=8, c0=1.0)
    norms = l2_norms(adv - x)
    fooled = net(adv).argmax(1) != y
    assert fooled.all()
    assert (norms >= minimum - 1e-4).all() and (norms <= 1.15 * minimum + 1e-3).all()


def _margin_pgd(net, x, y, eps, steps):
    """A stronger reference: PGD on the CW margin loss, many steps, step eps / 10."""
    x0, adv = x, x.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        z = net(adv)
        true = z.gather(1, y[:, None])[:, 0]
        other = z.scatter(1, y[:, None], float("-inf")).amax(1)
        (grad,) = torch.autograd.grad((other - true).sum(), adv)
        adv = adv.detach() + eps / 10 * grad.sign()
        adv = (x0 + (adv - x0).clamp(-eps, eps)).clamp(0, 1)
    return adv.detach()


def test_our_10_step_pgd_is_about_as_strong_as_a_50_step_margin_pgd(trained):
    net, x, y = trained
    eps = 0.05
    ours = pgd(net, x, y, eps, eps / 4, steps=10, bounds=(0.0, 1.0),
               generator=torch.Generator().manual_seed(0))  # fmt: skip
    strong = _margin_pgd(net, x, y, eps, 50)
    left_ours, left_strong = accuracy(net, ours, y), accuracy(net, strong, y)
    assert left_ours < accuracy(net, x, y) - 0.1  # it does attack
    assert left_ours <= left_strong + 0.05, (left_ours, left_strong)


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pgd_l2_random_start_is_a_random_radius_along_a_random_direction(dtype) -> None:
    # steps=0 returns the start: x + eps * r * d / |d|, d ~ N(0, I) then r ~ U[0, 1) per
    # sample, both from the caller's generator (random_start on by default)
    x = torch.rand(6, 4, generator=torch.Generator().manual_seed(1), dtype=dtype)
    y = torch.zeros(6, dtype=torch.long)
    net = small_net().to(dtype)
    start = pgd_l2(net, x, y, 0.5, 0.1, steps=0, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    d = torch.randn(x.shape, generator=g, dtype=dtype)
    r = torch.rand(6, generator=g, dtype=dtype)
    expected = x + 0.5 * r[:, None] * d / d.norm(dim=1, keepdim=True)
    assert start.dtype == dtype
    torch.testing.assert_close(start, expected)
    clipped = pgd_l2(net, x, y, 0.5, 0.1, steps=0, bounds=(0.0, 1.0),
                     generator=torch.Generator().manual_seed(3))  # fmt: skip
    torch.testing.assert_close(clipped, expected.clamp(0.0, 1.0))
    torch.manual_seed(5)
    free = pgd_l2(net, x, y, 0.5, 0.1, steps=0)
    torch.manual_seed(5)
    d, r = torch.randn(x.shape, dtype=dtype), torch.rand(6, dtype=dtype)
    torch.testing.assert_close(free, x + 0.5 * r[:, None] * d / d.norm(dim=1, keepdim=True))


def test_pgd_l2_takes_10_steps_by_default_and_projects_onto_the_ball() -> None:
    x = torch.rand(6, 4, generator=torch.Generator().manual_seed(1))
    y = torch.arange(6) % 3
    net = small_net()
    default = pgd_l2(net, x, y, 0.3, 0.05, random_start=False)
    assert torch.equal(default, pgd_l2(net, x, y, 0.3, 0.05, steps=10, random_start=False))
    assert not torch.equal(default, pgd_l2(net, x, y, 0.3, 0.05, steps=11, random_start=False))
    # one step of 0.5 from x: the unit gradient step is projected back to |delta| = 0.3
    one = pgd_l2(net, x, y, 0.3, 0.5, steps=1, random_start=False)
    torch.testing.assert_close(l2_norms(one - x), torch.full((6,), 0.3))
    small = pgd_l2(net, x, y, 0.3, 0.1, steps=1, random_start=False)  # inside: unchanged
    torch.testing.assert_close(l2_norms(small - x), torch.full((6,), 0.1))


def test_ifgsm_is_pgd_from_the_clean_input_with_step_eps_over_k() -> None:
    x = torch.rand(6, 4, generator=torch.Generator().manual_seed(1))
    y = torch.arange(6) % 3
    net = small_net()
    expected = pgd(net, x, y, 0.2, 0.2 / 5, steps=5, random_start=False)
    assert torch.equal(ifgsm(net, x, y, 0.2), expected)
    given = pgd(net, x, y, 0.2, 0.07, steps=2, random_start=False, bounds=(0.0, 1.0))
    assert torch.equal(ifgsm(net, x, y, 0.2, steps=2, step_size=0.07, bounds=(0.0, 1.0)), given)
