"""scikit-learn's handwritten digits (UCI optdigits test set): 1,797 grey 8x8 images, 10 classes.

Always available offline (the data ships with scikit-learn). Pixels (0..16) are scaled to
[0, 1] and normalised; the fixed split is stratified 80/20 with seed 0 (1,438 / 359 images).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.data.subsets import check_split, stratified_split
from distillscope.errors import ConfigError
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
def digits(split: str, root: str | None = None, size: int = 8) -> TensorDataset:
    """The digits in memory: inputs ``(N, 1, 8, 8)`` normalised with :data:`MEAN`, :data:`STD`.

    Args:
        split: ``"train"`` (1,438 images) or ``"test"`` (359).
        root: Ignored (the data ships with scikit-learn); accepted so every dataset takes it.
        size: Side of the images: 8 (the originals) or larger, resized bilinearly in pixel space
            (e.g. 28 to distil a 28x28 Fashion-MNIST teacher on digits: "KD on unrelated
            images", paper 001 4.3). The normalisation constants stay those of the 8x8 images.

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
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise ConfigError(f"digits.size={size!r} is invalid; use an integer >= 8 (8: original)")
    pixels = torch.from_numpy(bunch.images[idx].astype(np.float32) / 16.0)  # (N, 8, 8) in [0, 1]
    pixels = pixels.unsqueeze(1)  # (N, 1, 8, 8)
    if size != 8:
        pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False)
        pixels = pixels.clamp(0.0, 1.0)  # (N, 1, size, size)
    inputs = (pixels - MEAN) / STD
    info = DatasetInfo(
        name="digits",
        num_classes=10,
        input_shape=(1, size, size),
        class_names=[str(d) for d in range(10)],
        categories={k: list(v) for k, v in CATEGORIES.items()},
        mean=(MEAN,),
        std=(STD,),
        pixel_range=(0.0, 1.0),
    )
    return TensorDataset(inputs, targets[idx], info)
