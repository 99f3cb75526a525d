"""scikit-learn's handwritten digits (UCI optdigits test set): 1,797 grey 8x8 images, 10 classes.

Always available offline (the data ships with scikit-learn). Pixels (0..16) are scaled to
[0, 1] and normalised; the fixed split is stratified 80/20 with seed 0 (1,438 / 359 images).
"""

from __future__ import annotations

import numpy as np
import torch

from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.data.subsets import check_split, stratified_split
from distillscope.registry import register_dataset

#: Pixel mean and std of the training split in [0, 1], computed once from it
#: (``x[train].mean()``, ``x[train].std()`` with the split below) and fixed here.
MEAN = 0.3057
STD = 0.3760
#: Fraction of each class held out for the test split, and the split's seed.
TEST_FRACTION = 0.2
SPLIT_SEED = 0
#: Categories by the shape of the glyph, for the class-similarity probe.
CATEGORIES = {"round": [0, 6, 8, 9], "straight": [1, 4, 7], "curved": [2, 3, 5]}


@register_dataset("digits")
def digits(split: str, root: str | None = None) -> TensorDataset:
    """The digits in memory: inputs ``(N, 1, 8, 8)`` normalised with :data:`MEAN`, :data:`STD`.

    Args:
        split: ``"train"`` (1,438 images) or ``"test"`` (359).
        root: Ignored (the data ships with scikit-learn); accepted so every dataset takes it.

    Example:
        >>> ds = digits("test")
        >>> len(ds), tuple(ds.inputs.shape[1:]), ds.info.num_classes
        (359, (1, 8, 8), 10)
    """
    from sklearn.datasets import load_digits

    train = check_split(split)
    bunch = load_digits()
    targets = torch.as_tensor(bunch.target, dtype=torch.long)  # (1797,)
    train_idx, test_idx = stratified_split(targets, TEST_FRACTION, seed=SPLIT_SEED)
    idx = (train_idx if train else test_idx).numpy()
    pixels = bunch.images[idx].astype(np.float32) / 16.0  # (N, 8, 8) in [0, 1]
    inputs = torch.from_numpy((pixels - MEAN) / STD).unsqueeze(1)  # (N, 1, 8, 8)
    info = DatasetInfo(
        name="digits",
        num_classes=10,
        input_shape=(1, 8, 8),
        class_names=[str(d) for d in range(10)],
        categories={k: list(v) for k, v in CATEGORIES.items()},
        mean=(MEAN,),
        std=(STD,),
        pixel_range=(0.0, 1.0),
    )
    return TensorDataset(inputs, targets[idx], info)
