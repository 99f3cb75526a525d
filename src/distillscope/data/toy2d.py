"""The 2-D toy dataset of paper 004 (section 5.1): two Gaussian blobs inside a noisy ring.

Recipe (the constants of the authors' published 1,200-point file, checked against it in
``tests/data/test_toy2d.py``):

- class 0: ``n_per_blob`` points ~ N((-1, -1.5), diag(0.6^2, 0.6^2));
- class 1: ``n_per_blob`` points ~ N((1, 1.1), diag(0.8^2, 0.7^2));
- class 2, the ring of radius 4: ``x0 = linspace(-4, 4, ring_points / 2)`` taken twice, with
  ``x1 = +sqrt(16 - x0^2) + e`` for the upper half and ``x1 = -sqrt(16 - x0^2) + e`` for the
  lower half, ``e ~ N(0, noise^2)``; the noise is vertical, so the ring is thicker at its sides.

Points are listed class by class, as in the file. Train and test are a stratified 80/20 split of
one generated set, so they never share a point.
"""

from __future__ import annotations

import numpy as np
import torch

from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.data.subsets import check_split, stratified_split
from distillscope.errors import ConfigError
from distillscope.registry import register_dataset

#: (mean, std) per axis of the two blobs, classes 0 and 1.
BLOBS = (((-1.0, -1.5), (0.6, 0.6)), ((1.0, 1.1), (0.8, 0.7)))
#: Radius of the ring (class 2).
RING_RADIUS = 4.0
#: Fraction of each class held out for the test split.
TEST_FRACTION = 0.2


def toy2d_ring_arrays(
    n_per_blob: int = 300, ring_points: int = 600, noise: float = 0.4, data_seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Generate the full toy set (both splits together).

    Args:
        n_per_blob: Points in each of the two blobs (classes 0 and 1).
        ring_points: Points on the ring (class 2); half on the upper, half on the lower arc.
        noise: Std of the vertical Gaussian noise on the ring.
        data_seed: Seed of the generator (numpy ``default_rng``).

    Returns:
        ``X`` float64 ``(N, 2)`` and ``y`` int64 ``(N,)``, N = 2 * n_per_blob + ring_points.

    Example:
        >>> X, y = toy2d_ring_arrays()
        >>> X.shape, np.bincount(y).tolist()
        ((1200, 2), [300, 300, 600])
    """
    if int(n_per_blob) < 1 or int(ring_points) < 2 or int(ring_points) % 2 or noise < 0:
        raise ConfigError(
            f"toy2d-ring needs n_per_blob >= 1 (got {n_per_blob}), an even ring_points >= 2 "
            f"(got {ring_points}) and noise >= 0 (got {noise})"
        )
    rng = np.random.default_rng(data_seed)
    parts = [rng.normal(mean, std, size=(int(n_per_blob), 2)) for mean, std in BLOBS]
    half = int(ring_points) // 2
    x0 = np.linspace(-RING_RADIUS, RING_RADIUS, half)  # (half,)
    arc = np.sqrt(np.clip(RING_RADIUS**2 - x0**2, 0.0, None))  # (half,)
    for sign in (1.0, -1.0):
        parts.append(np.stack([x0, sign * arc + rng.normal(0.0, noise, half)], axis=1))
    X = np.concatenate(parts)  # (N, 2)
    y = np.repeat([0, 1, 2], [int(n_per_blob), int(n_per_blob), 2 * half]).astype(np.int64)
    return X, y


@register_dataset("toy2d-ring")
def toy2d_ring(
    split: str,
    root: str | None = None,
    n_per_blob: int = 300,
    ring_points: int = 600,
    noise: float = 0.4,
    data_seed: int = 0,
) -> TensorDataset:
    """The toy ring in memory: inputs ``(N, 2)`` float32, not normalised (see module docstring).

    Args:
        split: ``"train"`` (80% of each class) or ``"test"`` (the other 20%).
        root: Ignored (the data is generated).
        n_per_blob: Points in each blob before the split.
        ring_points: Points on the ring before the split.
        noise: Std of the ring's noise.
        data_seed: Seed of the generator and of the split.

    Example:
        >>> ds = toy2d_ring("test")
        >>> len(ds), ds.info.categories
        (240, {'blobs': [0, 1], 'ring': [2]})
    """
    train = check_split(split)
    X, y = toy2d_ring_arrays(n_per_blob, ring_points, noise, data_seed)
    targets = torch.from_numpy(y)
    train_idx, test_idx = stratified_split(targets, TEST_FRACTION, seed=data_seed)
    idx = train_idx if train else test_idx
    info = DatasetInfo(
        name="toy2d-ring",
        num_classes=3,
        input_shape=(2,),
        class_names=["lower blob", "upper blob", "ring"],
        categories={"blobs": [0, 1], "ring": [2]},
        mean=None,
        std=None,
        pixel_range=None,
    )
    return TensorDataset(torch.from_numpy(X[idx.numpy()]).float(), targets[idx], info)
