"""The toy ring generator against the published reference file of paper 004."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from distillscope.data import load_dataset, toy2d_ring_arrays
from distillscope.errors import ConfigError

CSV = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "toy2d_ring.csv"


@pytest.fixture(scope="module")
def reference() -> tuple[np.ndarray, np.ndarray]:
    if not CSV.exists():
        pytest.skip(f"reference file {CSV} is not present (it lives in ../shared/data/)")
    table = np.genfromtxt(CSV, delimiter=",", skip_header=1)  # index, x0, x1, label
    return table[:, 1:3], table[:, 3].astype(np.int64)


def summary(X: np.ndarray, y: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """(mean, std, n) of each class's coordinates and of the ring's radius."""
    out = {f"class {c}": (X[y == c].mean(0), X[y == c].std(0, ddof=1), int((y == c).sum()))
           for c in range(3)}  # fmt: skip
    radius = np.hypot(*X[y == 2].T)
    out["ring radius"] = (radius.mean(), radius.std(ddof=1), radius.size)
    return out


def z_scores(ref: dict, gen: dict) -> dict[str, float]:
    """Largest |difference| / standard error, for the means and the stds of each summary."""
    z = {}
    for key, (m1, s1, n1) in ref.items():
        m2, s2, n2 = gen[key]
        z[f"{key} mean"] = float(np.max(np.abs(m1 - m2) / np.sqrt(s1**2 / n1 + s2**2 / n2)))
        se_std = np.sqrt(s1**2 / (2 * n1) + s2**2 / (2 * n2))
        z[f"{key} std"] = float(np.max(np.abs(s1 - s2) / se_std))
    return z


def test_default_set_matches_reference(reference):
    X_ref, y_ref = reference
    X, y = toy2d_ring_arrays()
    assert np.bincount(y).tolist() == np.bincount(y_ref).tolist() == [300, 300, 600]
    # the ring's x0 is deterministic: the same two linspaces as the reference
    np.testing.assert_allclose(X[y == 2, 0], X_ref[y_ref == 2, 0], atol=1e-12)
    z = z_scores(summary(X_ref, y_ref), summary(X, y))
    assert max(z.values()) < 3.5, z


def test_recipe_matches_reference_on_a_large_sample(reference):
    """A 40x larger sample pins the recipe: the error is then the reference's alone.

    A blob mean of (1, 1) instead of (1, 1.1), blob stds of 0.5 instead of 0.6, a ring noise of
    0.3 or 0.5, or a radius of 3.9 each push a z-score above 3 (the recipe's largest is < 2).
    """
    X_ref, y_ref = reference
    X, y = toy2d_ring_arrays(n_per_blob=20_000, ring_points=40_000)
    z = z_scores(summary(X_ref, y_ref), summary(X, y))
    assert max(z.values()) < 3.0, z


def test_reference_figures():
    X, y = toy2d_ring_arrays(n_per_blob=50_000, ring_points=100_000, data_seed=1)
    np.testing.assert_allclose(X[y == 0].mean(0), [-1.0, -1.5], atol=0.02)
    np.testing.assert_allclose(X[y == 1].std(0), [0.8, 0.7], atol=0.02)
    upper = X[(y == 2)][:50_000]
    residual = upper[:, 1] - np.sqrt(16 - upper[:, 0] ** 2)
    assert abs(residual.mean()) < 0.01 and abs(residual.std() - 0.4) < 0.01


def test_default_trains_on_the_whole_set_and_tests_on_a_fresh_draw():
    """Paper 004's protocol: train = all 1,200 points of the recipe; test = an independent draw."""
    train = load_dataset("toy2d-ring", "train")
    test = load_dataset("toy2d-ring", "test")
    X, y = toy2d_ring_arrays()
    assert torch.equal(train.inputs, torch.from_numpy(X).float())
    assert torch.equal(train.targets, torch.from_numpy(y))
    assert torch.bincount(test.targets).tolist() == [300, 300, 600]
    # the blobs are new points; the ring keeps the recipe's x0 grid with fresh vertical noise
    blobs = test.targets < 2
    assert not {tuple(r) for r in train.inputs[blobs].tolist()} & {
        tuple(r) for r in test.inputs[blobs].tolist()
    }
    ring = test.targets == 2
    assert torch.equal(test.inputs[ring, 0], train.inputs[ring, 0])
    assert not torch.equal(test.inputs[ring, 1], train.inputs[ring, 1])
    # the held-out draw follows the same recipe
    Xt, yt = test.inputs.double().numpy(), test.targets.numpy()
    z = z_scores(summary(X, y), summary(Xt, yt))
    assert max(z.values()) < 3.5, z
    again = load_dataset("toy2d-ring", "test")
    assert torch.equal(again.inputs, test.inputs)
    other = load_dataset("toy2d-ring", "test", data_seed=1)
    assert not torch.equal(other.inputs, test.inputs)
    # the held-out draw is not the training set of another data seed
    assert not torch.equal(load_dataset("toy2d-ring", "train", data_seed=1).inputs, test.inputs)


def test_split_holdout_is_disjoint_stratified_and_deterministic():
    train = load_dataset("toy2d-ring", "train", holdout="split")
    test = load_dataset("toy2d-ring", "test", holdout="split")
    assert torch.bincount(train.targets).tolist() == [240, 240, 480]
    assert torch.bincount(test.targets).tolist() == [60, 60, 120]
    rows = {tuple(r) for r in train.inputs.tolist()}
    assert not rows & {tuple(r) for r in test.inputs.tolist()}
    assert len(rows | {tuple(r) for r in test.inputs.tolist()}) == 1200
    again = load_dataset("toy2d-ring", "train", holdout="split")
    assert torch.equal(again.inputs, train.inputs) and torch.equal(again.targets, train.targets)
    other = load_dataset("toy2d-ring", "train", data_seed=1, holdout="split")
    assert not torch.equal(other.inputs, train.inputs)


def test_unknown_holdout_is_a_config_error():
    with pytest.raises(ConfigError, match="holdout='half'.*fresh, split"):
        load_dataset("toy2d-ring", "train", holdout="half")


def test_info_and_params():
    ds = load_dataset("toy2d-ring", "train", n_per_blob=10, ring_points=20, noise=0.0)
    assert ds.inputs.dtype == torch.float32 and ds.inputs.shape == (40, 2)  # all 2 * 10 + 20
    info = ds.info
    assert info.input_shape == (2,) and info.num_classes == 3 and not info.is_image
    assert info.pixel_range is None and info.mean is None and info.std is None
    assert info.categories == {"blobs": [0, 1], "ring": [2]}
    ring = ds.inputs[ds.targets == 2].double()
    torch.testing.assert_close(
        ring.norm(dim=1), torch.full((20,), 4.0, dtype=torch.float64), rtol=0, atol=1e-5
    )
    for bad in (dict(ring_points=7), dict(n_per_blob=0), dict(noise=-1.0)):
        with pytest.raises(ConfigError, match="toy2d-ring"):
            load_dataset("toy2d-ring", **bad)
