"""The 2-D toy dataset of paper 004 (section 5.1): two Gaussian blobs inside a noisy ring.

Recipe (the constants of the authors' published 1,200-point file, checked against it in
``tests/data/test_toy2d.py``):

- class 0: ``n_per_blob`` points ~ N((-1, -1.5), diag(0.6^2, 0.6^2));
- class 1: ``n_per_blob`` points ~ N((1, 1.1), diag(0.8^2, 0.7^2));
- class 2, the ring of radius 4: ``x0 = linspace(-4, 4, ring_points / 2)`` taken twice, with
  ``x1 = +sqrt(16 - x0^2) + e`` for the upper half and ``x1 = -sqrt(16 - x0^2) + e`` for the
  lower half, ``e ~ N(0, noise^2)``; the noise is vertical, so the ring is thicker at its sides.

Points are listed class by class, as in the file.

Splits (parameter ``holdout``):

- ``"fresh"`` (default, paper 004's protocol): the training split is the whole generated set
  (1,200 points by default), as the authors' code trains on all of its published file; the
  held-out split is a *second, independent draw* of the same recipe (generator seeded with
  ``[data_seed, 1]`` instead of ``data_seed``), of the same size. The authors' code has no
  toy test set (its accuracies and decision-map points are the training points); the fresh
  draw is ours, so that the probes (accuracy, attacks, the points on the decision maps)
  measure generalisation. The ring's ``x0`` grid is deterministic, so the held-out ring has the
  same ``x0`` values with fresh noise; the blobs are all new points.
- ``"split"``: one generated set, split 80/20 per class (seed ``data_seed``); train and test
  share no point and the model sees 80% of the recipe's points.
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
#: Fraction of each class held out for the test split when ``holdout="split"``.
TEST_FRACTION = 0.2
#: How the held-out split is made (see the module docstring); the first is the default.
HOLDOUTS = ("fresh", "split")
#: Draw number of the held-out set under ``holdout="fresh"`` (the training set is draw 0).
HOLDOUT_DRAW = 1


def toy2d_ring_arrays(
    n_per_blob: int = 300,
    ring_points: int = 600,
    noise: float = 0.4,
    data_seed: int = 0,
    draw: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate one toy set from the recipe.

    Args:
        n_per_blob: Points in each of the two blobs (classes 0 and 1).
        ring_points: Points on the ring (class 2); half on the upper, half on the lower arc.
        noise: Std of the vertical Gaussian noise on the ring.
        data_seed: Seed of the generator (numpy ``default_rng``).
        draw: Which independent draw for this ``data_seed``: 0 seeds the generator with
            ``data_seed`` (the training set, and the whole set for ``holdout="split"``),
            ``d > 0`` with the seed sequence ``[data_seed, d]``.

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
    rng = np.random.default_rng(data_seed if draw == 0 else [data_seed, draw])
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
    holdout: str = "fresh",
) -> TensorDataset:
    """The toy ring in memory: inputs ``(N, 2)`` float32, not normalised (see module docstring).

    Args:
        split: ``"train"`` or ``"test"``.
        root: Ignored (the data is generated).
        n_per_blob: Points in each blob of one draw (before the split for ``"split"``).
        ring_points: Points on the ring of one draw (before the split for ``"split"``).
        noise: Std of the ring's noise.
        data_seed: Seed of the generator (and of the 80/20 split for ``"split"``).
        holdout: ``"fresh"`` (default, paper 004's protocol): train on the whole generated set,
            test on a second independent draw of the recipe; ``"split"``: a stratified 80/20
            split of one generated set.

    Example:
        >>> len(toy2d_ring("train")), len(toy2d_ring("test"))  # both 1,200 points
        (1200, 1200)
        >>> ds = toy2d_ring("test", holdout="split")
        >>> len(ds), ds.info.categories
        (240, {'blobs': [0, 1], 'ring': [2]})
    """
    train = check_split(split)
    if holdout not in HOLDOUTS:
        raise ConfigError(
            f"toy2d-ring holdout={holdout!r} is invalid; use one of: {', '.join(HOLDOUTS)}"
        )
    if holdout == "fresh":
        draw = 0 if train else HOLDOUT_DRAW
        X, y = toy2d_ring_arrays(n_per_blob, ring_points, noise, data_seed, draw=draw)
        idx = torch.arange(len(y))
    else:
        X, y = toy2d_ring_arrays(n_per_blob, ring_points, noise, data_seed)
        train_idx, test_idx = stratified_split(torch.from_numpy(y), TEST_FRACTION, seed=data_seed)
        idx = train_idx if train else test_idx
    targets = torch.from_numpy(y)
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
