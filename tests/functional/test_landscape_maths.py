"""Active directions of gradients and filter-normalised weight noise: constructed cases."""

from __future__ import annotations

import pytest
import torch

from distillscope.errors import ConfigError
from distillscope.functional.active_subspace import (
    active_count,
    active_directions,
    gradient_spectrum,
)
from distillscope.functional.weight_noise import curve_area, noise_direction


def orthogonal(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q  # (d, d)


def subspace_gradients(n: int, d: int, k: int, seed: int) -> torch.Tensor:
    """``(n, d)`` gradients spanning exactly a random k-dim subspace, with balanced weights."""
    g = torch.Generator().manual_seed(seed)
    coeffs = torch.randn(n, k, generator=g, dtype=torch.float64)
    return coeffs @ orthogonal(d, seed + 1)[:, :k].T


@pytest.mark.parametrize(("n", "d", "k"), [(200, 10, 3), (20, 64, 5), (50, 50, 1)])
def test_gradients_in_a_k_dim_subspace_have_k_active_directions(n: int, d: int, k: int) -> None:
    grads = subspace_gradients(n, d, k, seed=k)
    assert active_directions(grads, 0.999) == k
    spectrum = gradient_spectrum(grads)
    assert len(spectrum) == min(n, d)
    assert float(spectrum[k:].abs().max()) < 1e-10 * float(spectrum[0])


def test_spectrum_is_the_eigenvalues_of_the_second_moment_whichever_side_is_smaller() -> None:
    g = torch.Generator().manual_seed(0)
    for n, d in [(7, 12), (12, 7)]:
        grads = torch.randn(n, d, generator=g, dtype=torch.float64)
        full = torch.linalg.eigvalsh(grads.T @ grads / n).flip(0)[: min(n, d)]
        torch.testing.assert_close(gradient_spectrum(grads), full)


def test_count_is_invariant_to_rotation_order_and_scale() -> None:
    grads = subspace_gradients(100, 16, 4, seed=3)
    noisy = grads + 1e-3 * torch.randn(100, 16, generator=torch.Generator().manual_seed(9)).double()
    base = active_directions(noisy, 0.95)
    rotated = noisy @ orthogonal(16, 5)
    assert active_directions(rotated, 0.95) == base
    assert active_directions(noisy.flip(0), 0.95) == base
    assert active_directions(7.0 * noisy, 0.95) == base
    torch.testing.assert_close(gradient_spectrum(rotated), gradient_spectrum(noisy))


def test_count_golden_values_and_edges() -> None:
    lam = torch.tensor([5.0, 3.0, 2.0, 0.0])
    assert [active_count(lam, s) for s in (0.5, 0.8, 0.81, 1.0)] == [1, 2, 3, 3]
    assert active_count(torch.zeros(3), 0.9) == 0
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ConfigError, match="share"):
            active_count(lam, bad)


def test_feature_maps_are_flattened() -> None:
    grads = torch.zeros(10, 2, 3, 3, dtype=torch.float64)
    grads[:, 1, 0, 2] = torch.arange(1.0, 11.0)
    assert active_directions(grads, 0.99) == 1
    assert len(gradient_spectrum(grads)) == 10  # min(N = 10, D = 18)


def test_relative_noise_matches_each_filter_norm_and_spares_1d_parameters() -> None:
    g = torch.Generator().manual_seed(0)
    conv = torch.randn(4, 3, 3, 3, generator=g)
    linear = torch.randn(5, 8, generator=g) * torch.arange(1.0, 6.0)[:, None]
    bias = torch.randn(5, generator=g)
    d = noise_direction([conv, linear, bias], "relative", torch.Generator().manual_seed(1))
    torch.testing.assert_close(d[0].flatten(1).norm(dim=1), conv.flatten(1).norm(dim=1))
    torch.testing.assert_close(d[1].norm(dim=1), linear.norm(dim=1))
    assert torch.equal(d[2], torch.zeros(5))
    assert [t.dtype for t in d] == [torch.float32] * 3


def test_absolute_noise_is_standard_normal_and_seeded() -> None:
    w = [torch.zeros(200, 50), torch.zeros(100)]
    d = noise_direction(w, "absolute", torch.Generator().manual_seed(2))
    flat = torch.cat([t.flatten() for t in d])
    assert abs(float(flat.mean())) < 0.02 and abs(float(flat.std()) - 1.0) < 0.02
    again = noise_direction(w, "absolute", torch.Generator().manual_seed(2))
    assert all(torch.equal(a, b) for a, b in zip(d, again))
    with pytest.raises(ConfigError, match="noise"):
        noise_direction(w, "gaussian", torch.Generator())


def test_curve_area_golden_values() -> None:
    assert curve_area([0.0, 1.0], [2.0, 2.0]) == 0.0
    assert curve_area([0.0, 1.0], [1.0, 3.0]) == pytest.approx(1.0)  # triangle of height 2
    assert curve_area([0.0, 0.1, 0.3], [1.0, 2.0, 2.0]) == pytest.approx((0.05 + 0.2) / 0.3)
    with pytest.raises(ValueError):
        curve_area([0.0], [1.0])


def test_gradient_spectrum_of_one_gradient_in_float64() -> None:
    g = torch.tensor([[3.0, 4.0]])  # G = g g^T: eigenvalue |g|^2 = 25
    spectrum = gradient_spectrum(g)
    assert spectrum.dtype == torch.float64 and spectrum.tolist() == [25.0]
    with pytest.raises(ValueError, match="^gradient_spectrum needs at least one gradient$"):
        gradient_spectrum(torch.zeros(0, 2))


def test_active_count_with_a_small_total_and_an_exact_share() -> None:
    assert active_count(torch.tensor([0.4, 0.1]), 0.75) == 1  # a total below 1 is not flat
    assert active_count(torch.tensor([0.0, 0.0]), 0.5) == 0
    share = 0.5 / (1.0 - 1e-12)
    assert share * (1.0 - 1e-12) == 0.5  # so the first eigenvalue holds exactly the share
    assert active_count(torch.tensor([1.0, 1.0]), share) == 1


def test_curve_area_of_a_sweep_not_starting_at_zero_and_its_error() -> None:
    # rises 0.5 and 1 over two steps of 0.5, divided by the width 1.0
    assert curve_area([0.5, 1.0, 1.5], [1.0, 2.0, 2.0]) == pytest.approx(0.75)
    for sigmas, losses in (([0.0], [1.0]), ([0.0, 1.0], [1.0])):
        with pytest.raises(
            ValueError, match=r"^curve_area needs two or more \(sigma, loss\) points$"
        ):
            curve_area(sigmas, losses)


def test_noise_is_drawn_in_float64_and_rows_of_one_are_scaled_exactly() -> None:
    p = torch.tensor([[2.0], [-0.5], [3.0], [0.25]])  # rows of one weight: |d_row| is often < 1
    (absolute,) = noise_direction([p], "absolute", torch.Generator().manual_seed(4))
    draw = torch.randn(p.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert absolute.dtype == torch.float32 and torch.equal(absolute, draw.float())
    (relative,) = noise_direction([p.double()], "relative", torch.Generator().manual_seed(4))
    torch.testing.assert_close(relative.abs(), p.double().abs(), rtol=1e-12, atol=0)
    with pytest.raises(
        ConfigError, match=r"^noise='flat' is unknown; use one of relative, absolute$"
    ):
        noise_direction([p], "flat", torch.Generator())


def test_noise_of_float64_and_float32_weights_is_the_float64_draw() -> None:
    """The draw and the filter norms are float64 whatever the weights' dtype: a float64 weight
    gets the float64 draw itself, a float32 one the float64 result rounded once."""
    shape = (6, 40)
    draw = torch.randn(shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    (absolute,) = noise_direction(
        [torch.zeros(shape, dtype=torch.float64)], "absolute", torch.Generator().manual_seed(5)
    )
    assert absolute.dtype == torch.float64 and torch.equal(absolute, draw)
    w = torch.randn(shape, generator=torch.Generator().manual_seed(6)) * 0.1  # float32
    (relative,) = noise_direction([w], "relative", torch.Generator().manual_seed(5))
    scale = w.double().norm(dim=1) / draw.norm(dim=1)  # float64 norms
    assert relative.dtype == torch.float32
    assert torch.equal(relative, (draw * scale[:, None]).float())
