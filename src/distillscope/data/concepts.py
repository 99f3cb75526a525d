"""Synthetic concept images with exact masks, written as a Broden-format folder.

Ours, not Broden's: a stand-in for the Broden data of network dissection (Bau et al. 2017)
built from what this package has offline, read back by :class:`~distillscope.data.broden.
BrodenData` like a real Broden download. Every label is painted, so every mask is exact. An
image (``image_size`` square, black unless a background is drawn) holds:

- **scene** (image-level): a background patch cut from one of scikit-image's bundled colour
  photos (:data:`~distillscope.data.photos.COLOUR_PHOTOS`, each shrunk so its short side is
  twice the image), labelled with the photo's name; or a **texture** background; or a plain
  black one (no label);
- **object** (pixel-level): 1 to ``max_objects`` objects of side ``image_size/4 ..
  image_size/2`` at uniform places, each a drawn shape (:data:`SHAPES`, :func:`shape_mask`) or,
  when ``fashion_items`` is given, a Fashion-MNIST item's silhouette (grey value above 0.1
  after a bilinear resize, as :mod:`~distillscope.data.domain_shifts` masks items), named by
  its class. Later objects hide earlier ones; masks hold what is visible;
- **part** (pixel-level, two layers): layer 1 splits each object into its ``top-half`` and
  ``bottom-half`` (rows above / below the middle of its height), layer 2 marks its
  ``border`` (object pixels within :data:`BORDER` pixels, Chebyshev distance, of a pixel
  outside the shape), so one index cell names two masks;
- **color** (pixel-level): an object painted in one flat colour (:data:`COLOURS`, half the
  objects) gets that colour's label;
- **texture** (pixel-level): an object (the other half) or a background filled with a texture
  of :mod:`~distillscope.data.textures` (pattern :data:`~distillscope.data.textures.PATTERNS`,
  random tint) gets the pattern's label.

Each label belongs to one category; ``label.csv`` and the ``c_`` files carry each label's
frequency (images where it appears) and coverage (its pixel area in whole images; a scene
counts 1 per image), as Broden's ``joinseg.py`` counts them. Images and masks are lossless
PNGs (``images/0000.png``, ``images/0000_object.png``, ...); every fifth image is in split
``val``, the rest in ``train``. Everything follows from ``seed``. ``manifest.json`` lists the
SHA-256 of every other file, so :func:`verify_concepts` finds a set damaged after it was written.

Example:
    >>> shape_mask("diamond", 5).int().tolist()
    [[0, 0, 1, 0, 0], [0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0], [0, 0, 1, 0, 0]]
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from distillscope.data.broden import CATEGORY_COLUMNS, CODE_COLUMNS, INDEX_COLUMNS, LABEL_COLUMNS
from distillscope.data.domain_shifts import MASK_THRESHOLD
from distillscope.data.fashion_mnist import CLASS_NAMES
from distillscope.data.photos import COLOUR_PHOTOS, photo, random_patches
from distillscope.data.textures import PATTERNS, texture_patches
from distillscope.errors import ConfigError, quoted

__all__ = [
    "BACKGROUNDS",
    "CATEGORIES",
    "COLOURS",
    "PARTS",
    "SHAPES",
    "generate_concepts",
    "shape_mask",
    "verify_concepts",
]

#: Categories, in ``index.csv`` column order.
CATEGORIES = ("object", "part", "color", "texture", "scene")
#: Drawn object shapes (:func:`shape_mask`).
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")
#: Part labels: layer 1 (halves), layer 2 (border).
PARTS = ("top-half", "bottom-half", "border")
#: Flat paint colours, 8-bit RGB (no black: the plain background is black).
COLOURS = {
    "red": (230, 25, 25),
    "orange": (245, 130, 20),
    "yellow": (250, 225, 30),
    "green": (40, 170, 60),
    "blue": (30, 80, 230),
    "purple": (140, 50, 180),
    "pink": (250, 150, 200),
    "brown": (130, 80, 30),
    "white": (255, 255, 255),
    "grey": (128, 128, 128),
}
#: Background kinds drawn per image.
BACKGROUNDS = ("scene", "texture", "plain")
#: Width of an object's border part, pixels.
BORDER = 2
#: Smallest image side (objects of a quarter of it must still have a border and an inside).
MIN_SIZE = 16
#: The file listing every generated file's SHA-256 (:func:`verify_concepts`).
MANIFEST = "manifest.json"


def shape_mask(name: str, size: int) -> Tensor:
    """``(size, size)`` bool mask of a drawn shape, tested at pixel centres.

    With ``u, v = (index + 1/2) 2 / size - 1`` in ``(-1, 1)`` (``v`` down the rows): circle
    ``u^2 + v^2 <= 1``; square: every pixel; triangle (apex up) ``|u| <= (v + 1) / 2``; diamond
    ``|u| + |v| <= 1``; cross ``min(|u|, |v|) <= 1/3``; ring ``0.45 <= u^2 + v^2 <= 1``.
    """
    t = (torch.arange(size) + 0.5) * 2 / size - 1  # (size,)
    v, u = t[:, None], t[None, :]  # rows, columns
    r2 = u**2 + v**2  # (size, size)
    masks = {
        "circle": lambda: r2 <= 1,
        "square": lambda: torch.ones(size, size, dtype=torch.bool),
        "triangle": lambda: u.abs() <= (v + 1) / 2,
        "diamond": lambda: u.abs() + v.abs() <= 1,
        "cross": lambda: torch.minimum(u.abs(), v.abs()) <= 1 / 3,
        "ring": lambda: (r2 >= 0.45) & (r2 <= 1),
    }
    if name not in masks:
        raise ConfigError(f"unknown shape {quoted(name)}; use one of {', '.join(SHAPES)}")
    return masks[name]().expand(size, size).clone()


def generate_concepts(
    out_dir: str | Path,
    n_images: int = 200,
    image_size: int = 64,
    seed: int = 0,
    *,
    max_objects: int = 3,
    backgrounds: Sequence[str] = BACKGROUNDS,
    fashion_items: tuple[np.ndarray | Tensor, np.ndarray | Tensor] | None = None,
) -> Path:
    """Write ``n_images`` synthetic concept images as a Broden folder (module docstring).

    The folder is written under a temporary name beside ``out_dir`` (``.<name>.*.tmp``) and
    renamed at the end, so an error or a kill leaves nothing under ``out_dir``. Drawing runs on
    one thread (restored after): the tensors are tiny and more threads only wait on each other.

    Args:
        out_dir: The folder to create; it must not exist or be empty.
        n_images: Number of images.
        image_size: Side of the square images and masks (at least 16).
        seed: Seed of every draw (same seed, same bytes).
        max_objects: Most objects per image (1 to this many, uniformly).
        backgrounds: Background kinds drawn from, uniformly: some of :data:`BACKGROUNDS`.
        fashion_items: ``(images, labels)``: ``(N, 28, 28)`` Fashion-MNIST items (uint8, or
            floats in ``[0, 1]``) and their ``(N,)`` classes; half the objects are then items.

    Returns:
        ``out_dir``.

    Raises:
        ConfigError: ``out_dir`` is not empty, or a parameter is invalid.

    Example:
        >>> import tempfile
        >>> root = generate_concepts(Path(tempfile.mkdtemp()) / "c", n_images=3, image_size=16)
        >>> sorted(p.name for p in root.iterdir() if p.suffix == ".csv")[:4]
        ['c_color.csv', 'c_object.csv', 'c_part.csv', 'c_scene.csv']
    """
    out = Path(out_dir).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"out_dir {out} exists and is not an empty folder; pass a new folder")
    for name, value, low in (
        ("n_images", n_images, 1),
        ("image_size", image_size, MIN_SIZE),
        ("max_objects", max_objects, 1),
        ("seed", seed, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name}={value!r} is invalid; use an integer >= {low}")
    if isinstance(backgrounds, str) or not backgrounds or not set(backgrounds) <= set(BACKGROUNDS):
        raise ConfigError(
            f"backgrounds={quoted(backgrounds)} is invalid; use a non-empty list of "
            f"{', '.join(BACKGROUNDS)}"
        )
    items = _items(fashion_items)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # tiny tensors: more threads only wait on each other
        _write(tmp, n_images, image_size, seed, max_objects, tuple(backgrounds), items)
        _write_manifest(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)
        os.replace(tmp, out)  # replaces a missing or empty folder in one step
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        torch.set_num_threads(threads)
    return out


def verify_concepts(root: str | Path) -> str | None:
    """What is wrong with the generated concept set in ``root``, or ``None`` when every file
    is the one :func:`generate_concepts` wrote (its ``manifest.json``), nothing missing, nothing
    added.

    Example:
        >>> import tempfile
        >>> root = generate_concepts(Path(tempfile.mkdtemp()) / "c", n_images=2, image_size=16)
        >>> verify_concepts(root) is None
        True
        >>> (root / "images" / "0000.png").write_bytes(b"x")
        1
        >>> verify_concepts(root)
        'images/0000.png differs from what was generated'
    """
    folder = Path(root)
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
        if not isinstance(files, dict):
            raise TypeError(type(files).__name__)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"its {MANIFEST} is missing or unreadable ({type(exc).__name__})"
    present = _files(folder)
    for name in sorted(set(files) | set(present)):
        if name not in present:
            return f"{name} is missing"
        if name not in files:
            return f"{name} was not generated"
        if _sha256(folder / name) != files[name]:
            return f"{name} differs from what was generated"
    return None


def _files(folder: Path) -> list[str]:
    """Every file under ``folder`` but the manifest, as POSIX paths relative to it."""
    names = (p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir())
    return sorted(n for n in names if n != MANIFEST)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write_manifest(folder: Path) -> None:
    files = {name: _sha256(folder / name) for name in _files(folder)}
    text = json.dumps({"files": files}, sort_keys=True, indent=0)
    (folder / MANIFEST).write_text(text + "\n", encoding="utf-8")


def _items(fashion_items: tuple[object, object] | None) -> tuple[Tensor, Tensor] | None:
    """``(N, 28, 28)`` float items in ``[0, 1]`` and ``(N,)`` classes, checked."""
    if fashion_items is None:
        return None
    try:
        images, labels = (torch.as_tensor(np.asarray(a)) for a in fashion_items)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"fashion_items must be (images, labels) arrays ({exc})") from None
    images = images / 255.0 if images.dtype == torch.uint8 else images.float()
    if (
        images.dim() != 3
        or labels.shape != images.shape[:1]
        or not len(labels)
        or labels.dtype.is_floating_point
        or images.min() < 0
        or images.max() > 1
        or labels.min() < 0
        or labels.max() >= len(CLASS_NAMES)
    ):
        raise ConfigError(
            "fashion_items must be (N, H, W) images in uint8 or [0, 1] and N integer classes "
            f"0..{len(CLASS_NAMES) - 1} (e.g. fashion_mnist('test').inputs un-normalised)"
        )
    return images, labels.long()


@functools.cache
def _scene_photo(name: str, side: int) -> Tensor:
    """The colour photo ``name`` shrunk so its short side is ``2 * side``."""
    image = photo(name)  # (3, h, w)
    scale = 2 * side / min(image.shape[-2:])
    size = tuple(max(side, round(d * scale)) for d in image.shape[-2:])
    return F.interpolate(image[None], size=size, mode="bilinear", antialias=True)[0].clamp(0, 1)


class _Vocabulary:
    """Label numbers (1.. in category order) and their per-image statistics."""

    def __init__(self, names: dict[str, Sequence[str]], pixels: int) -> None:
        self.entries = [(c, n) for c in CATEGORIES for n in names[c]]
        self.number = {e: i + 1 for i, e in enumerate(self.entries)}
        self.frequency = [0] * (len(self.entries) + 1)
        self.coverage = [0.0] * (len(self.entries) + 1)
        self.pixels = pixels

    def __call__(self, category: str, name: str) -> int:
        return self.number[(category, name)]

    def count(self, layers: Tensor) -> None:
        """Add one image's ``(d, S, S)`` label layers (of one category) to the statistics."""
        counts = torch.bincount(layers.flatten(), minlength=len(self.frequency))
        for label in torch.nonzero(counts[1:])[:, 0].tolist():
            self.frequency[label + 1] += 1
            self.coverage[label + 1] += counts[label + 1].item() / self.pixels

    def count_scalar(self, label: int) -> None:
        self.frequency[label] += 1
        self.coverage[label] += 1.0


def _write(
    folder: Path,
    n: int,
    side: int,
    seed: int,
    max_objects: int,
    backgrounds: tuple[str, ...],
    items: tuple[Tensor, Tensor] | None,
) -> None:
    from PIL import Image

    objects = SHAPES + (tuple(CLASS_NAMES) if items is not None else ())
    names = {
        "object": objects,
        "part": PARTS,
        "color": tuple(COLOURS),
        "texture": PATTERNS,
        "scene": COLOUR_PHOTOS,
    }
    vocab = _Vocabulary(names, side * side)
    generator = torch.Generator().manual_seed(seed)
    (folder / "images").mkdir()
    width = max(4, len(str(n - 1)))
    rows = []
    for i in range(n):
        stem = f"{i:0{width}d}"
        image, maps, scene = _render(side, max_objects, backgrounds, items, vocab, generator)
        pixels = (image * 255).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(folder / "images" / f"{stem}.png")
        row = {
            "image": f"{stem}.png",
            "split": "val" if i % 5 == 4 else "train",
            "ih": side,
            "iw": side,
            "sh": side,
            "sw": side,
        }
        for category, layers in maps.items():
            kept = [(k, layer) for k, layer in enumerate(layers, 1) if layer.any()]
            files = [
                f"{stem}_{category}" + (f"_{k}" if len(layers) > 1 else "") + ".png"
                for k, _ in kept
            ]
            for file, (_, layer) in zip(files, kept):
                _save_mask(layer, folder / "images" / file)
            if kept:
                vocab.count(torch.stack([layer for _, layer in kept]))
            row[category] = ";".join(files)
        row["scene"] = str(scene) if scene else ""
        if scene:
            vocab.count_scalar(scene)
        rows.append(row)
    _write_tables(folder, rows, vocab)
    (folder / "README.txt").write_text(
        f"Synthetic concept images made by distillscope.data.concepts.generate_concepts("
        f"n_images={n}, image_size={side}, seed={seed}, max_objects={max_objects}, "
        f"backgrounds={list(backgrounds)}, fashion_items={'given' if items else None}).\n"
        "Broden-format files, not Broden's data: shapes, parts, colours, textures and scenes "
        "drawn with exact masks.\n",
        encoding="utf-8",
    )


def _render(
    side: int,
    max_objects: int,
    backgrounds: tuple[str, ...],
    items: tuple[Tensor, Tensor] | None,
    vocab: _Vocabulary,
    g: torch.Generator,
) -> tuple[Tensor, dict[str, list[Tensor]], int]:
    """One image ``(3, S, S)``, its label layers per pixel-level category, its scene label."""

    def draw(k: int) -> int:
        return int(torch.randint(0, k, (1,), generator=g))

    image = torch.zeros(3, side, side)
    obj, halves, border, colour, texture = (
        torch.zeros(side, side, dtype=torch.long) for _ in range(5)
    )
    scene = 0
    kind = backgrounds[draw(len(backgrounds))]
    if kind == "scene":
        name = COLOUR_PHOTOS[draw(len(COLOUR_PHOTOS))]
        image = random_patches(_scene_photo(name, side), 1, side, side, g)[0]
        scene = vocab("scene", name)
    elif kind == "texture":
        p = draw(len(PATTERNS))
        image = texture_patches(torch.tensor([p]), torch.rand(1, generator=g), side, side, g)[0]
        texture[:] = vocab("texture", PATTERNS[p])
    for _ in range(1 + draw(max_objects)):
        size = side // 4 + draw(side // 2 - side // 4 + 1)
        y, x = draw(side - size + 1), draw(side - size + 1)
        if items is not None and draw(2):
            k = draw(len(items[0]))
            grey = F.interpolate(
                items[0][k][None, None], size=(size, size), mode="bilinear", antialias=True
            )[0, 0]
            mask, name = grey > MASK_THRESHOLD, CLASS_NAMES[int(items[1][k])]
        else:
            name = SHAPES[draw(len(SHAPES))]
            mask = shape_mask(name, size)
        if draw(2):
            c = draw(len(COLOURS))
            fill = torch.tensor(list(COLOURS.values())[c]).float().view(3, 1, 1) / 255
            fill, colour_id, texture_id = fill.expand(3, size, size), c + 1, 0
        else:
            p = draw(len(PATTERNS))
            fill = texture_patches(torch.tensor([p]), torch.rand(1, generator=g), size, size, g)[0]
            colour_id, texture_id = 0, vocab("texture", PATTERNS[p])
        box = (slice(y, y + size), slice(x, x + size))
        image[:, box[0], box[1]][:, mask] = fill[:, mask]
        top, edge = _halves(mask), _border(mask)  # (size, size) bool each
        obj[box][mask] = vocab("object", name)
        halves[box][mask] = torch.where(
            top, vocab("part", "top-half"), vocab("part", "bottom-half")
        )[mask]
        border[box][mask] = (edge.long() * vocab("part", "border"))[mask]
        colour[box][mask] = vocab("color", list(COLOURS)[colour_id - 1]) if colour_id else 0
        texture[box][mask] = texture_id
    maps = {"object": [obj], "part": [halves, border], "color": [colour], "texture": [texture]}
    return image, maps, scene


def _halves(mask: Tensor) -> Tensor:
    """``(s, s)`` bool: rows above the middle of the mask's rows (the top half)."""
    rows = torch.nonzero(mask.any(1))[:, 0]
    if not len(rows):
        return torch.zeros_like(mask)
    middle = (rows[0] + rows[-1] + 1) / 2
    return (torch.arange(mask.shape[0]) < middle)[:, None].expand_as(mask)


def _border(mask: Tensor) -> Tensor:
    """``(s, s)`` bool: mask pixels within :data:`BORDER` pixels (Chebyshev) of the outside."""
    outside = F.pad((~mask).float()[None, None], (BORDER,) * 4, value=1.0)
    near = F.max_pool2d(outside, 2 * BORDER + 1, stride=1)[0, 0] > 0  # (s, s)
    return mask & near


def _save_mask(labels: Tensor, path: Path) -> None:
    """Write ``(S, S)`` label ids as an RGB PNG: ``R = id mod 256``, ``G = id // 256``."""
    from PIL import Image

    rgb = torch.stack([labels % 256, labels // 256, torch.zeros_like(labels)], -1)  # (S, S, 3)
    Image.fromarray(rgb.byte().numpy()).save(path)


def _write_tables(folder: Path, rows: list[dict], vocab: _Vocabulary) -> None:
    def table(name: str, columns: Sequence[str], records: list[dict]) -> None:
        with open(folder / name, "w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(columns), lineterminator="\n")
            writer.writeheader()
            writer.writerows(records)

    table("index.csv", INDEX_COLUMNS + CATEGORIES, rows)
    labels, categories = [], []
    for category in CATEGORIES:
        numbers = [vocab(c, n) for c, n in vocab.entries if c == category]
        codes = [
            {
                "code": code,
                "number": k,
                "name": vocab.entries[k - 1][1],
                "frequency": vocab.frequency[k],
                "coverage": f"{vocab.coverage[k]:.6f}",
            }
            for code, k in enumerate(numbers, 1)
        ]
        table(f"c_{category}.csv", CODE_COLUMNS, codes)
        categories.append(
            {
                "name": category,
                "first": min(numbers),
                "last": max(numbers),
                "count": len(numbers),
                "frequency": sum(vocab.frequency[k] for k in numbers),
            }
        )
    for k, (category, name) in enumerate(vocab.entries, 1):
        labels.append(
            {
                "number": k,
                "name": name,
                "category": f"{category}({vocab.frequency[k]})",
                "frequency": vocab.frequency[k],
                "coverage": f"{vocab.coverage[k]:.6f}",
                "syns": "",
            }
        )
    table("category.csv", CATEGORY_COLUMNS, categories)
    table("label.csv", LABEL_COLUMNS, labels)
