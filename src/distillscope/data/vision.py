"""Image datasets users have on disk (CIFAR-10, ImageFolder trees) and shared image helpers.

``cifar10`` is held in memory as normalised float tensors; ``imagefolder`` reads images lazily
through a ``DataLoader``. Neither downloads anything unless given ``download=True``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from distillscope.data.base import (
    DatasetInfo,
    DistillDataset,
    TensorDataset,
)
from distillscope.data.subsets import check_split
from distillscope.errors import ConfigError, DataError
from distillscope.files import file_digests
from distillscope.functional.views import colour_jitter, jitter_params
from distillscope.registry import register_dataset

log = logging.getLogger(__name__)

#: Environment variable naming a folder that holds datasets.
DATA_ENV = "DISTILLSCOPE_DATA"
#: Where ``download=True`` puts datasets.
CACHE_DIR = Path.home() / ".cache" / "distillscope" / "data"

#: Per-channel mean and std of the CIFAR-10 training images (pixels in [0, 1]). The std is the
#: true per-channel std; the often-copied (0.2023, 0.1994, 0.2010) is a per-image average.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip
#: Coarse categories for the class-similarity probe (paper 000 4.1 groups ImageNet classes).
CIFAR10_CATEGORIES = {"vehicles": [0, 1, 8, 9], "mammals": [3, 4, 5, 7], "birds": [2], "frogs": [6]}

#: ImageNet normalisation (torchvision's pretrained models).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalised_tensor(images: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 images ``(N, C, H, W)`` -> float32 tensor ``(pixels / 255 - mean) / std``."""
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))  # (N, C, H, W)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return x.mul_(1.0 / (255.0 * s)).sub_(m / s)


@dataclass
class CropFlipParams:
    """The random draw of one :class:`RandomCropFlip` call: per-image offsets and flips.

    Attributes:
        dy: ``(B,)`` row offset into the padded image, in ``[0, 2 * padding]``.
        dx: ``(B,)`` column offset.
        flipped: ``(B,)`` bool, flipped horizontally after the crop (all ``False`` without flip).
    """

    dy: Tensor
    dx: Tensor
    flipped: Tensor

    def to(self, device: str | object) -> CropFlipParams:
        return CropFlipParams(self.dy.to(device), self.dx.to(device), self.flipped.to(device))


class RandomCropFlip:
    """Random crop after padding, and optionally a horizontal flip, of a whole batch at once.

    The standard CIFAR augmentation (pad 4, crop back, flip with p = 0.5). Offsets and flips
    come from torch's global CPU RNG, so ``torch.manual_seed`` makes runs repeat. The draw and
    its application are separate (:meth:`sample`, :meth:`apply`), so anything tied to the image
    pixel by pixel (a frozen teacher explanation, paper 001 3.3) can be moved exactly as the
    image was, with its own padding value.

    Args:
        padding: Pixels added on every side before cropping back to the input size.
        flip: Flip each image horizontally with probability 0.5.
        fill: Value of the padding per channel, in normalised units; use the normalised value
            of a black pixel, ``-mean / std``.

    Example:
        >>> aug = RandomCropFlip(padding=2, flip=True, fill=(0.0,))
        >>> aug(torch.randn(5, 1, 8, 8)).shape
        torch.Size([5, 1, 8, 8])
    """

    def __init__(self, padding: int, flip: bool = False, fill: Sequence[float] = (0.0,)) -> None:
        self.padding = int(padding)
        self.flip = bool(flip)
        self.fill = tuple(float(f) for f in fill)

    def __call__(self, x: Tensor) -> Tensor:
        return self.apply(x, self.sample(x.shape[0], x.device))

    def sample(self, b: int, device: str | torch.device = "cpu") -> CropFlipParams:
        """Draw offsets and flips for ``b`` images (from torch's global CPU RNG)."""
        p = self.padding
        dy = torch.randint(0, 2 * p + 1, (b,)).to(device)  # (B,)
        dx = torch.randint(0, 2 * p + 1, (b,)).to(device)  # (B,)
        flipped = torch.rand(b) < 0.5 if self.flip else torch.zeros(b, dtype=torch.bool)
        return CropFlipParams(dy, dx, flipped.to(device))

    def apply(
        self, x: Tensor, params: CropFlipParams, fill: Sequence[float] | None = None
    ) -> Tensor:
        """Crop (and flip) ``x`` as ``params`` say.

        Args:
            x: ``(B, C, H, W)`` images, or ``(B, H, W)`` maps.
            params: A draw of :meth:`sample` for ``B`` images.
            fill: Padding value per channel (default: this augmentation's ``fill``; maps
                use ``(0.0,)``).
        """
        if x.dim() == 3:
            return self.apply(x[:, None], params, fill)[:, 0]
        b, c, h, w = x.shape
        p = self.padding
        values = self.fill if fill is None else tuple(fill)
        fill_t = torch.tensor(values, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        padded = fill_t.expand(b, c, h + 2 * p, w + 2 * p).clone()  # (B, C, H+2p, W+2p)
        padded[:, :, p : p + h, p : p + w] = x
        rows = params.dy[:, None] + torch.arange(h, device=x.device)  # (B, H)
        cols = params.dx[:, None] + torch.arange(w, device=x.device)  # (B, W)
        cols = torch.where(params.flipped[:, None], cols.flip(1), cols)  # (B, W)
        bi = torch.arange(b, device=x.device)[:, None, None, None]
        ci = torch.arange(c, device=x.device)[None, :, None, None]
        return padded[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]  # (B, C, H, W)

    def move(self, maps: Tensor, params: CropFlipParams, image_size: Sequence[int]) -> Tensor:
        """Move spatial maps of the images (a teacher's feature maps) as ``params`` moved the
        ``image_size`` images, at the maps' own resolution.

        A crop offset of ``d - padding`` image pixels is ``(d - padding) * h / H`` map pixels:
        each map is shifted by that amount with linear interpolation between its pixel centres
        (exact when the shift is a whole number of map pixels, as at the image's resolution),
        the uncovered border repeating the map's edge (a network's response to the padding is
        not known); a flip flips the map exactly. Maps from a network whose response moves with
        its input (convolutions, pooling) then match the network's maps of the moved images,
        to the interpolation at a fractional shift and to the border.

        Args:
            maps: ``(B, C, h, w)`` maps, row ``b`` of image ``b``.
            params: The images' draw (:meth:`sample`).
            image_size: ``(H, W)`` of the images the draw moved.

        Returns:
            ``(B, C, h, w)`` moved maps.

        Example:
            >>> aug = RandomCropFlip(padding=2, flip=True)
            >>> x = torch.arange(16.0).view(1, 1, 4, 4)  # a 4x4 map of 8x8 images: half scale
            >>> p = CropFlipParams(torch.tensor([4]), torch.tensor([2]), torch.tensor([True]))
            >>> aug.move(x, p, (8, 8))[0, 0, :, 0].tolist()  # one map row down, then flipped
            [7.0, 11.0, 15.0, 15.0]
        """
        b, c, h, w = maps.shape
        big_h, big_w = int(image_size[-2]), int(image_size[-1])
        dy = (params.dy.to(maps.device) - self.padding).to(maps.dtype) * (h / big_h)  # (B,)
        dx = (params.dx.to(maps.device) - self.padding).to(maps.dtype) * (w / big_w)  # (B,)
        out = _shift_axis(maps, dy, dim=2)
        out = _shift_axis(out, dx, dim=3)
        flipped = params.flipped.to(maps.device).view(b, 1, 1, 1)
        return torch.where(flipped, out.flip(3), out)  # (B, C, h, w)

    def __repr__(self) -> str:
        return f"RandomCropFlip(padding={self.padding}, flip={self.flip}, fill={self.fill})"


def _shift_axis(x: Tensor, shift: Tensor, dim: int) -> Tensor:
    """``out[..., k, ...] = x[..., k + shift_b, ...]`` along ``dim`` of ``(B, C, h, w)`` maps,
    linear between pixels, the edge repeated outside; ``shift`` is ``(B,)`` map pixels.
    A whole-number shift gives the pixels exactly (the other weight is exactly 0)."""
    n = x.shape[dim]
    pos = torch.arange(n, device=x.device, dtype=x.dtype)[None] + shift[:, None]  # (B, n)
    low = torch.floor(pos)
    frac = pos - low  # (B, n) in [0, 1)
    low = low.long()
    view = [x.shape[0], 1, 1, 1]
    view[dim] = n
    idx_lo = low.clamp(0, n - 1).view(view).expand_as(x)
    idx_hi = (low + 1).clamp(0, n - 1).view(view).expand_as(x)
    weight = frac.view(view)
    lo = x.gather(dim, idx_lo)
    hi = x.gather(dim, idx_hi)
    return torch.where(weight == 0, lo, lo * (1 - weight) + hi * weight)


class ColourJitter:
    """Colour jitter of a batch of normalised RGB images, as a training augmentation.

    Paper 003 4.3 trains its colour-invariant teacher with brightness, contrast and saturation
    factors ``1 +/- U[0, s]`` and a hue shift ``+/- U[0, s/2]`` (``s = 0.4``); the maths is
    :func:`distillscope.functional.views.colour_jitter` (the ``invariance`` probe's views), run
    in pixel space: un-normalise, jitter, clamp to ``[0, 1]``, normalise again. Draws come from
    torch's global CPU RNG, as :class:`RandomCropFlip`'s. Photometric only: maps tied to the
    image (frozen explanations) do not move.

    Args:
        strength: ``s`` in ``(0, 1]``.
        mean: Per-channel normalisation mean of the 3-channel inputs.
        std: Per-channel normalisation std.
    """

    def __init__(self, strength: float, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != 3 or len(std) != 3:
            raise ConfigError("colour jitter needs RGB images; use a 3-channel dataset")
        self.strength = float(strength)
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)

    def __call__(self, x: Tensor) -> Tensor:
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        pixels = (x * std + mean).clamp(0.0, 1.0)  # (B, 3, H, W)
        params = jitter_params(self.strength, torch.rand(x.shape[0], 4)).to(x.device)  # (B, 4)
        return (colour_jitter(pixels, params) - mean) / std

    def __repr__(self) -> str:
        return f"ColourJitter(strength={self.strength:g})"


def data_root(root: str | os.PathLike[str] | None) -> Path:
    """``root``, else ``$DISTILLSCOPE_DATA``, else the download cache."""
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return CACHE_DIR


@register_dataset("cifar10")
def cifar10(
    split: str, root: str | None = None, augment: bool = False, download: bool = False
) -> TensorDataset:
    """CIFAR-10 (Krizhevsky 2009) from torchvision's ``cifar-10-batches-py`` folder, in memory.

    Args:
        split: ``"train"`` (50,000 images) or ``"test"`` (10,000).
        root: Folder holding ``cifar-10-batches-py/``; defaults to ``$DISTILLSCOPE_DATA``, then
            ``~/.cache/distillscope/data``.
        augment: Random crop (padding 4) + horizontal flip on the training split, applied per
            batch; the test split is never augmented.
        download: Fetch the archive (170 MB) into ``root`` when it is missing.
    """
    from torchvision.datasets import CIFAR10

    train = check_split(split)
    base = data_root(root)
    if base.name == "cifar-10-batches-py":
        base = base.parent
    folder = base / "cifar-10-batches-py"
    if not folder.is_dir() and not download:
        raise DataError(
            f"CIFAR-10 not found in {folder}; pass --data-root (or set {DATA_ENV}) to the folder "
            "holding cifar-10-batches-py/, or add download=true to fetch it (170 MB)"
        )
    try:
        ds = CIFAR10(str(base), train=train, download=download)
    except (RuntimeError, OSError) as exc:
        raise DataError(
            f"cannot load CIFAR-10 from {folder}: {exc}; delete the folder and fetch it again "
            "with download=true"
        ) from exc
    inputs = normalised_tensor(ds.data.transpose(0, 3, 1, 2), CIFAR10_MEAN, CIFAR10_STD)
    info = DatasetInfo(
        name="cifar10",
        num_classes=10,
        input_shape=(3, 32, 32),
        class_names=list(CIFAR10_CLASSES),
        categories={k: list(v) for k, v in CIFAR10_CATEGORIES.items()},
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        source=str(folder),
    )
    fill = [-m / s for m, s in zip(CIFAR10_MEAN, CIFAR10_STD)]
    transform = RandomCropFlip(4, flip=True, fill=fill) if augment and train else None
    return TensorDataset(inputs, torch.as_tensor(ds.targets), info, transform)


class ImageFolderDataset(DistillDataset):
    """Images read from disk on access; items are ``(input, target, index)``.

    Args:
        samples: ``(path, class index)`` pairs.
        info: Dataset metadata.
        transform: Maps a PIL image to a normalised ``(C, H, W)`` tensor.
    """

    def __init__(
        self,
        samples: list[tuple[str, int]],
        info: DatasetInfo,
        transform: Callable[[Any], Tensor],
    ) -> None:
        self.samples = samples
        self.info = info
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Tensor, int, int]:
        from torchvision.datasets.folder import default_loader

        path, target = self.samples[i]
        try:
            image = default_loader(path)
        except (OSError, ValueError) as exc:  # PIL: unreadable, truncated or not an image
            raise DataError(
                f"image {path} cannot be read ({' '.join(str(exc).split())[:120]}); replace or "
                "remove it (a run stopped by it continues with `distillscope run --resume RUN_DIR`)"
            ) from None
        return self.transform(image), target, i

    def targets_tensor(self) -> Tensor:
        return torch.tensor([t for _, t in self.samples], dtype=torch.long)

    def _hash_content(self, h: Any) -> None:
        # every file's name and bytes (cheaper than decoding, and any change to either shows);
        # digests are remembered by path, size and mtime, so a second run only stats the files
        try:
            digests = file_digests([path for path, _ in self.samples])
        except OSError as exc:
            raise DataError(
                f"image {exc.filename} cannot be read ({exc.strerror}); replace or remove it"
            ) from None
        for (path, _), digest in zip(self.samples, digests):
            h.update(f"{os.path.basename(path)}:{digest}".encode())

    def subset(self, indices: Sequence[int] | Tensor) -> ImageFolderDataset:
        """A new dataset holding ``indices`` (re-indexed from 0)."""
        idx = torch.as_tensor(indices, dtype=torch.long).tolist()
        return ImageFolderDataset([self.samples[i] for i in idx], self.info, self.transform)


def _class_dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _scan(folder: Path, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    """``(path, class)`` for every image under ``folder/<class>/``, in sorted order."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    unknown = sorted(set(_class_dirs(folder)) - set(class_to_idx))
    if unknown:
        raise DataError(
            f"{folder} has class folders the training split lacks: {', '.join(unknown[:5])}; "
            "give both splits the same class folders"
        )
    samples = []
    for name, target in sorted(class_to_idx.items()):
        for dirpath, dirnames, filenames in os.walk(folder / name, followlinks=True):
            dirnames.sort()
            samples += [
                (os.path.join(dirpath, f), target)
                for f in sorted(filenames)
                if f.lower().endswith(IMG_EXTENSIONS)
            ]
    return samples


def imagefolder_root(root: str | os.PathLike[str] | None) -> Path:
    """The top folder of an ImageFolder tree, as ``data.root`` / ``--data-root`` names it.

    An absolute ``root`` is used as it is; a relative one is looked for in the working directory,
    then under ``$DISTILLSCOPE_DATA`` (the folder holding one's datasets); no ``root`` at all
    means ``$DISTILLSCOPE_DATA`` is the tree itself.

    Raises:
        DataError: No such folder, naming every place looked in and the fix.

    Example:
        >>> import tempfile
        >>> tmp = tempfile.TemporaryDirectory()
        >>> imagefolder_root(tmp.name) == Path(tmp.name)
        True
        >>> tmp.cleanup()
    """
    env = os.environ.get(DATA_ENV)
    if root is None:
        if not env:
            raise DataError(
                "imagefolder needs a root: pass --data-root, set data.root or set "
                f"{DATA_ENV}, naming a folder with <class>/ subfolders, or train/ and test/ "
                "(or val/) folders holding them"
            )
        places = [Path(env).expanduser()]
    else:
        given = Path(root).expanduser()
        places = [given]
        if env and not given.is_absolute():
            places.append(Path(env).expanduser() / given)
    for place in places:
        if place.is_dir():
            return place
    looked = ", ".join(str(p) for p in places)
    raise DataError(
        f"imagefolder root {places[0]} is not a folder (looked in: {looked}); pass an "
        f"existing folder, or a path relative to the working directory or to {DATA_ENV}"
    )


@register_dataset("imagefolder")
def imagefolder(
    split: str,
    root: str | None = None,
    image_size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    crop_ratio: float = 0.875,
) -> ImageFolderDataset:
    """An ImageFolder tree (``<class>/<image>``), e.g. ImageNet, read lazily.

    Layouts: ``root/train/<class>/...`` with ``root/test/`` (or ``root/val/``) for the test
    split; or ``root/<class>/...`` directly, used for both splits (the test split's
    ``shares_training_images`` is then set, and a run warns in one line). Classes are the training
    split's folder names, sorted. Images are converted to RGB, resized so the short side is
    ``image_size / crop_ratio``, centre-cropped to ``image_size`` and normalised.

    Args:
        split: ``"train"`` or ``"test"``.
        root: The tree's top folder; see :func:`imagefolder_root` for where it is looked for.
        image_size: Side of the square crop.
        mean: Per-channel normalisation mean (ImageNet's by default).
        std: Per-channel normalisation std (ImageNet's by default).
        crop_ratio: ``image_size`` over the resized short side; 0.875 is the usual ImageNet
            evaluation crop (256 -> 224), 1.0 resizes without cropping away a border.
    """
    from torchvision import transforms

    train = check_split(split)
    base = imagefolder_root(root)
    mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ConfigError(f"imagefolder mean {mean} and std {std} need 3 values, std > 0")
    if int(image_size) < 1 or not 0 < crop_ratio <= 1:
        raise ConfigError(
            f"imagefolder image_size={image_size} must be >= 1 and crop_ratio={crop_ratio} "
            "in (0, 1]"
        )
    if (base / "train").is_dir():
        class_root = base / "train"
        if train:
            folder = class_root
        else:
            found = [base / s for s in ("test", "val") if (base / s).is_dir()]
            if not found:
                raise DataError(f"{base} has train/ but no test/ or val/ folder; add one")
            folder = found[0]
    else:
        class_root = folder = base
        log.info("imagefolder: %s has no train/ folder; both splits read all of it", base)
    classes = _class_dirs(class_root)
    if not classes:
        raise DataError(f"{class_root} has no class folders; put images in <class>/ subfolders")
    samples = _scan(folder, {c: i for i, c in enumerate(classes)})
    if not samples:
        raise DataError(f"no images found under {folder}; expected <class>/<image>.png|jpg|...")
    size = int(image_size)
    transform = transforms.Compose(
        [
            transforms.Resize(round(size / crop_ratio)),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    info = DatasetInfo(
        name="imagefolder",
        num_classes=len(classes),
        input_shape=(3, size, size),
        class_names=classes,
        mean=mean,
        std=std,
        source=str(folder),
    )
    dataset = ImageFolderDataset(samples, info, transform)
    dataset.shares_training_images = not train and class_root == base  # flat: both splits alike
    return dataset
