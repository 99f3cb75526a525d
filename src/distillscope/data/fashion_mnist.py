"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): 28x28 grey images of 10 kinds of clothing.

An explicit ``root`` argument is the only place searched (a wrong path is an error, not a silent
fallback). Otherwise the IDX files are searched, in order, in ``$DISTILLSCOPE_DATA``, the
Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``) and the download
cache ``~/.cache/distillscope/data``. In each place the files may sit directly, in a
``fashion-mnist/`` subfolder or in torchvision's ``FashionMNIST/raw/`` layout, gzipped or not.
Nothing is downloaded unless ``download=True``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.data.idx import read_idx
from distillscope.data.subsets import check_split
from distillscope.data.vision import CACHE_DIR, DATA_ENV, RandomCropFlip, normalised_tensor
from distillscope.errors import DataError
from distillscope.registry import register_dataset

log = logging.getLogger(__name__)

#: Where ``apt-get install dataset-fashion-mnist`` puts the files.
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
#: Subfolders searched inside each place (besides the place itself).
SUBDIRS = ("fashion-mnist", "FashionMNIST/raw")
#: (images, labels) file names of each split, without the optional ``.gz``.
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
#: Pixel mean and std of the 60,000 training images in [0, 1] (the usual constants).
MEAN = 0.2860
STD = 0.3530
CLASS_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
#: Coarse categories for the class-similarity probe (paper 000 4.1 uses ImageNet's).
CATEGORIES = {
    "tops": [0, 2, 4, 6],
    "footwear": [5, 7, 9],
    "trousers": [1],
    "dresses": [3],
    "bags": [8],
}


def search_places(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The places searched for the IDX files, in order (each also with :data:`SUBDIRS`)."""
    if root is not None:
        return [Path(root).expanduser()]
    places = []
    if os.environ.get(DATA_ENV):
        places.append(Path(os.environ[DATA_ENV]).expanduser())
    return places + [SYSTEM_DIR, CACHE_DIR]


def _find_in(folder: Path, split: str) -> tuple[Path, Path] | None:
    """``(images, labels)`` paths in ``folder``, plain files preferred over ``.gz``."""
    found = []
    for name in FILES[split]:
        candidates = [folder / name, folder / f"{name}.gz"]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            return None
        found.append(path)
    return found[0], found[1]


def find_files(split: str, root: str | os.PathLike[str] | None = None) -> tuple[Path, Path] | None:
    """The first ``(images, labels)`` pair of ``split`` in :func:`search_places`, or ``None``."""
    for place in search_places(root):
        for folder in (place, *(place / s for s in SUBDIRS)):
            paths = _find_in(folder, split)
            if paths is not None:
                return paths
    return None


def _download(train: bool) -> None:
    from torchvision.datasets import FashionMNIST

    try:
        FashionMNIST(str(CACHE_DIR), train=train, download=True)
    except (RuntimeError, OSError) as exc:
        raise DataError(
            f"downloading Fashion-MNIST into {CACHE_DIR} failed ({exc}); install it with "
            "`apt-get install dataset-fashion-mnist` instead"
        ) from exc


def read_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read and check one split: uint8 images ``(N, 28, 28)`` and labels ``(N,)`` in 0..9."""
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if images.dtype != np.uint8 or images.shape[1:] != (28, 28):
        raise DataError(
            f"{images_path} holds {images.dtype} images of {images.shape[1:]}, not uint8 28x28; "
            "replace it with the Fashion-MNIST file"
        )
    if labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{labels_path} has {labels.shape[0]} labels for {images.shape[0]} images in "
            f"{images_path}; the two files come from different datasets"
        )
    if labels.size and int(labels.max()) >= len(CLASS_NAMES):
        raise DataError(f"{labels_path} has label {int(labels.max())} outside 0..9")
    return images, labels


@register_dataset("fashion-mnist")
def fashion_mnist(
    split: str, root: str | None = None, augment: bool = False, download: bool = False
) -> TensorDataset:
    """Fashion-MNIST in memory: inputs ``(N, 1, 28, 28)`` normalised with :data:`MEAN`, :data:`STD`.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        root: A folder with the IDX files, searched before the other places (module docstring).
        augment: Random crop with padding 2 on the training split, applied per batch; the
            test split is never augmented.
        download: When the files are nowhere, download them with torchvision into
            ``~/.cache/distillscope/data``.
    """
    train = check_split(split)
    paths = find_files(split, root)
    if paths is None and download:
        _download(train)
        paths = find_files(split, root)
    if paths is None:
        places = ", ".join(str(p) for p in search_places(root))
        raise DataError(
            f"Fashion-MNIST not found in {places}; install it with "
            "`apt-get install dataset-fashion-mnist`, or pass --data-root / set "
            f"{DATA_ENV} to a folder with the IDX files (or give download=true where online)"
        )
    log.info("Fashion-MNIST %s from %s", split, paths[0].parent)
    images, labels = read_split(*paths)
    inputs = normalised_tensor(images[:, None], (MEAN,), (STD,))  # (N, 1, 28, 28)
    info = DatasetInfo(
        name="fashion-mnist",
        num_classes=10,
        input_shape=(1, 28, 28),
        class_names=list(CLASS_NAMES),
        categories={k: list(v) for k, v in CATEGORIES.items()},
        mean=(MEAN,),
        std=(STD,),
        pixel_range=(0.0, 1.0),
        source=str(paths[0].parent),
    )
    transform = RandomCropFlip(2, flip=False, fill=(-MEAN / STD,)) if augment and train else None
    return TensorDataset(inputs, torch.from_numpy(labels.astype(np.int64)), info, transform)
