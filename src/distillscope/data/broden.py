"""Broden-format concept data: images with pixel-level and image-level concept labels.

The probe data of network dissection (Bau et al. 2017, "Network Dissection: Quantifying
Interpretability of Deep Visual Representations"), read as NetDissect-Lite's
``loader/data_loader.py`` reads it (``SegmentationData``). A Broden folder holds:

- ``index.csv``: ``image, split, ih, iw, sh, sw`` and one column per category. A category cell
  is empty or holds entries joined by ``;``; an entry is an integer (an **image-level** label:
  the whole image has it, e.g. a scene) or the name, under ``images/``, of a PNG mask whose
  pixel ``(R, G, B)`` holds the label ``R + 256 G`` (0: unlabelled). A cell of integers only is
  image-level; in a cell that names a mask, an integer entry is a layer of one label
  everywhere (both as NetDissect-Lite's ``resolve_segmentation``);
- ``category.csv`` (``name, first, last, count, frequency``): the categories, in column order;
- ``label.csv`` (``number, name, category, frequency, coverage, syns``): labels ``1..L``;
- ``c_<category>.csv`` (``code, number, name, frequency, coverage``): the labels of one
  category and their statistics there; ``coverage`` is the label's pixel area in units of
  whole images (an image-level label covers 1 per image);
- ``images/``: the images (any format Pillow reads) and the PNG masks.

A label's **primary category** is the category whose ``c_`` file gives it the largest
coverage, ``argmax_c coverage_c(label)`` (NetDissect-Lite's ``primary_categories_per_index``;
a tie goes to the category listed later, as there; a label of none of the chosen categories
has none, ``-1``). Images with no annotation in the chosen categories are left out, as
NetDissect-Lite's ``index_has_any_data`` leaves them out.

Every file is checked when :class:`BrodenData` is made: the tables and their columns, every
path (none may leave ``images/``), each kept image's size against ``ih x iw``, each mask (a PNG
of ``sh x sw`` whose labels are in ``label.csv``, decoded once for that). Images are resized
bilinearly (antialiased) to ``image_size``; label layers to ``seg_size`` by nearest neighbour
at pixel centres (:func:`nearest_resize`; NetDissect-Lite zooms with ``scipy.ndimage.zoom``,
whose grid differs by up to a pixel).

Example:
    >>> primary_categories([{1: 0.5, 2: 0.1}, {2: 0.3, 3: 0.0}], 5).tolist()
    [-1, 0, 1, 1, -1]
    >>> nearest_resize(torch.tensor([[[1, 2], [3, 4]]]), (4, 4))[0].tolist()
    [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from distillscope.errors import ConfigError, DataError, clipped, quoted

__all__ = [
    "CODE_COLUMNS",
    "CATEGORY_COLUMNS",
    "INDEX_COLUMNS",
    "LABEL_COLUMNS",
    "BrodenData",
    "ConceptBatch",
    "category_names",
    "nearest_resize",
    "primary_categories",
    "read_mask",
]

#: Columns of ``index.csv`` before the category columns.
INDEX_COLUMNS = ("image", "split", "ih", "iw", "sh", "sw")
#: Columns of ``category.csv``.
CATEGORY_COLUMNS = ("name", "first", "last", "count", "frequency")
#: Columns of ``label.csv``.
LABEL_COLUMNS = ("number", "name", "category", "frequency", "coverage", "syns")
#: Columns of each ``c_<category>.csv``.
CODE_COLUMNS = ("code", "number", "name", "frequency", "coverage")
#: What the end of an error line says when a folder is not Broden-format.
LAYOUT = (
    "a Broden folder holds index.csv, category.csv, label.csv, c_<category>.csv and images/ "
    "(docs/datasets.md, 'Broden-format concept data')"
)
_INT = re.compile(r"\d+")
#: ``category`` cells of ``label.csv``: ``object(123);part(4)``.
_CATEGORY_COUNT = re.compile(r"[^();]+\(\d+\)")


@dataclass(frozen=True)
class ConceptBatch:
    """One batch of concept data.

    Attributes:
        images: ``(B, 3, H, W)`` float32 in ``[0, 1]``, resized to ``image_size``.
        pixels: ``(B, D, S, S)`` int64 full label ids of each pixel-level layer (0: none),
            padded with zero layers to the dataset's :attr:`BrodenData.pixel_depth`.
        scalars: ``(B, E)`` int64 image-level label ids, padded with 0 to
            :attr:`BrodenData.scalar_width`.
        annotated: ``(B, n_categories)`` bool: the image's cell of that category is not empty.
        index: ``(B,)`` int64 rows of ``index.csv`` (0 = the first image).
    """

    images: Tensor
    pixels: Tensor
    scalars: Tensor
    annotated: Tensor
    index: Tensor


@dataclass(frozen=True)
class _Row:
    """A kept row of ``index.csv``: its number (0: the first image), where it is, its image,
    sizes and the chosen categories' cells."""

    number: int
    where: str
    image: str
    image_size: tuple[int, int]
    seg_size: tuple[int, int]
    cells: tuple[tuple[int | str, ...], ...]


def category_names(root: str | Path) -> list[str]:
    """The category names of the Broden folder ``root`` (its ``category.csv``), in order;
    a one-line DataError when the file is missing or unreadable."""
    path = Path(root).expanduser() / "category.csv"
    return [row["name"] for _, row in _read_table(path, CATEGORY_COLUMNS)]


def primary_categories(coverage: Sequence[Mapping[int, float]], n_labels: int) -> Tensor:
    """``(n_labels,)`` int64 primary category of each label: ``argmax_c coverage[c][label]``.

    Only categories that list a label compete for it; a tie goes to the later category
    (NetDissect-Lite's ``max`` over ``(coverage, c)`` pairs); a label no category lists gets -1.

    Args:
        coverage: Per category, label number -> coverage (``c_<category>.csv``).
        n_labels: Number of label ids, label 0 included.
    """
    best = torch.full((n_labels,), -1, dtype=torch.long)
    top = [-math.inf] * n_labels
    for c, labels in enumerate(coverage):
        for label, value in labels.items():
            if value >= top[label]:
                top[label], best[label] = value, c
    return best


def nearest_resize(labels: Tensor, size: tuple[int, int]) -> Tensor:
    """``(..., size[0], size[1])`` label maps resized by nearest neighbour at pixel centres.

    Output pixel ``i`` of ``n`` reads input pixel ``floor((i + 1/2) m / n)`` of ``m`` (PyTorch's
    ``nearest-exact``), on integers, so label ids are never blended.
    """
    h, w = labels.shape[-2:]
    rows = ((torch.arange(size[0]) * 2 + 1) * h) // (2 * size[0])  # (size[0],)
    cols = ((torch.arange(size[1]) * 2 + 1) * w) // (2 * size[1])  # (size[1],)
    return labels[..., rows[:, None], cols[None, :]]


def read_mask(path: Path) -> np.ndarray:
    """``(h, w)`` int64 labels ``R + 256 G`` of a Broden PNG mask (blue and alpha ignored).

    Raises:
        DataError: The file is missing, not a PNG or not an RGB(A) or palette image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.format != "PNG":
                raise DataError(
                    f"mask {path} is a {image.format} file, not a PNG; save masks as RGB PNGs "
                    "(label = R + 256 G), a lossy format changes the labels"
                )
            if image.mode not in ("RGB", "RGBA", "P"):
                raise DataError(
                    f"mask {path} is a {image.mode} PNG; save it as RGB (label = R + 256 G)"
                )
            rgb = np.asarray(image.convert("RGB"), dtype=np.int64)  # (h, w, 3)
    except FileNotFoundError:
        raise DataError(f"mask {path} is missing; restore it or remove it from index.csv") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(
            f"mask {path} cannot be read as a PNG ({clipped(' '.join(str(exc).split()))}); "
            "replace it with an RGB PNG (label = R + 256 G)"
        ) from None
    return rgb[..., 0] + 256 * rgb[..., 1]


class BrodenData:
    """A Broden-format folder, checked whole when made, read in batches (module docstring).

    Args:
        root: The folder holding ``index.csv``.
        categories: Categories to read (default: all of ``category.csv``); they keep
            ``category.csv``'s order.
        split: Keep only rows of this ``split`` (default: all).
        max_images: Keep only the first this many images (after the other filters).
        image_size: Side or ``(height, width)`` the images are resized to (default: as
            stored, which then must be one size).
        seg_size: Side or ``(height, width)`` of the label maps (default: the stored
            ``sh x sw``, which then must be one size).

    Attributes:
        root: The folder.
        categories: The chosen categories.
        labels: Label names by id; ``labels[0] == "-"`` (unlabelled).
        label_category: ``(L,)`` int64 primary category of each label (index into
            ``categories``; -1 for label 0 and labels of no chosen category).
        pixel_depth: ``D``, the most pixel-level layers of any image.
        scalar_width: ``E``, the most image-level labels of any image.
        image_size: ``(H, W)`` of the batches' images.
        seg_size: ``(S, S)`` of the batches' label maps.

    Raises:
        ConfigError: An unknown category, a bad split, size or ``max_images``.
        DataError: A missing or malformed file, column, path, size or label id.

    Example:
        >>> import tempfile
        >>> from distillscope.data.concepts import generate_concepts
        >>> root = generate_concepts(Path(tempfile.mkdtemp()) / "c", n_images=3, image_size=16)
        >>> data = BrodenData(root, categories=["object", "scene"], seg_size=8)
        >>> batch = next(data.batches(2))
        >>> tuple(batch.images.shape), tuple(batch.pixels.shape), batch.index.tolist()
        ((2, 3, 16, 16), (2, 1, 8, 8), [0, 1])
        >>> data.labels[0], data.categories[int(data.label_category[1])], data.labels[1]
        ('-', 'object', 'circle')
    """

    def __init__(
        self,
        root: str | Path,
        categories: Sequence[str] | None = None,
        split: str | None = None,
        max_images: int | None = None,
        image_size: int | tuple[int, int] | None = None,
        seg_size: int | tuple[int, int] | None = None,
    ) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(f"Broden folder {self.root} does not exist; {LAYOUT}")
        image_size, seg_size = _size(image_size, "image_size"), _size(seg_size, "seg_size")
        if max_images is not None and (
            isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1
        ):
            raise ConfigError(f"max_images={max_images!r} is invalid; use an integer >= 1 or None")
        if split is not None and not isinstance(split, str):
            raise ConfigError(f"split={split!r} is invalid; use a split name of index.csv or None")
        self.categories = self._choose(categories)
        self.labels = self._read_labels()
        coverage = [self._read_codes(c) for c in self.categories]
        self.label_category = primary_categories(coverage, len(self.labels))
        self._rows = self._read_index(split, max_images)
        for row in self._rows:
            self._check_files(row)
        self.image_size = image_size or _common([r.image_size for r in self._rows], "image")
        self.seg_size = seg_size or _common([r.seg_size for r in self._rows], "seg")
        self.pixel_depth = max(sum(len(c) for c in _pixel_cells(r)) for r in self._rows)
        self.scalar_width = max(len(_scalars(r)) for r in self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def batches(self, batch_size: int) -> Iterator[ConceptBatch]:
        """Batches of ``batch_size`` images (the last one smaller), in ``index.csv`` order."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r} is invalid; use an integer >= 1")
        for start in range(0, len(self._rows), batch_size):
            yield self._batch(self._rows[start : start + batch_size])

    # ---- reading one batch

    def _batch(self, rows: Sequence[_Row]) -> ConceptBatch:
        b = len(rows)
        images = torch.empty(b, 3, *self.image_size)
        pixels = torch.zeros(b, self.pixel_depth, *self.seg_size, dtype=torch.long)
        scalars = torch.zeros(b, self.scalar_width, dtype=torch.long)
        for i, row in enumerate(rows):
            images[i] = self._image(row)
            layers = self._layers(row)  # (d, S0, S1)
            pixels[i, : len(layers)] = layers
            ids = _scalars(row)
            scalars[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        annotated = torch.tensor([[bool(c) for c in r.cells] for r in rows], dtype=torch.bool)
        index = torch.tensor([r.number for r in rows], dtype=torch.long)
        return ConceptBatch(images, pixels, scalars, annotated, index)

    def _image(self, row: _Row) -> Tensor:
        from PIL import Image

        path = self._path(row.image, row.where)
        try:
            with Image.open(path) as image:
                rgb = np.asarray(image.convert("RGB"))  # (ih, iw, 3) uint8
        except (OSError, ValueError) as exc:
            raise DataError(
                f"image {path} cannot be read ({clipped(' '.join(str(exc).split()))}); "
                "replace it or remove its row from index.csv"
            ) from None
        x = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255  # (3, ih, iw)
        if tuple(x.shape[1:]) == self.image_size:
            return x
        return F.interpolate(
            x[None], size=self.image_size, mode="bilinear", align_corners=False, antialias=True
        )[0].clamp(0, 1)

    def _layers(self, row: _Row) -> Tensor:
        """``(d, S0, S1)`` label layers of the row's pixel-level cells, in category order."""
        layers = []
        for cell in _pixel_cells(row):
            for entry in cell:
                if isinstance(entry, int):
                    layers.append(torch.full(row.seg_size, entry, dtype=torch.long))
                else:
                    mask = self._mask(self._path(entry, row.where), row)
                    layers.append(torch.from_numpy(mask))
        if not layers:
            return torch.zeros(0, *self.seg_size, dtype=torch.long)
        stack = torch.stack(layers)  # (d, sh, sw)
        return stack if row.seg_size == self.seg_size else nearest_resize(stack, self.seg_size)

    # ---- checks at construction

    def _choose(self, categories: Sequence[str] | None) -> list[str]:
        path = self.root / "category.csv"
        names = []
        for line, row in _read_table(path, CATEGORY_COLUMNS):
            name = row["name"]
            if not name or name in names or name in INDEX_COLUMNS:
                raise DataError(
                    f"{path} line {line}: category name {quoted(name)} is empty, repeated or a "
                    f"column of index.csv ({', '.join(INDEX_COLUMNS)}); give each a new name"
                )
            names.append(name)
        if not names:
            raise DataError(f"{path} lists no category; {LAYOUT}")
        if categories is None:
            return names
        if isinstance(categories, str) or not isinstance(categories, Sequence) or not categories:
            raise ConfigError(
                f"categories={quoted(categories)} is invalid; use a non-empty list of "
                f"{', '.join(names)}"
            )
        unknown = [c for c in categories if c not in names]
        if unknown or len(set(categories)) != len(categories):
            what = f"unknown category {quoted(unknown[0])}" if unknown else "a repeated category"
            raise ConfigError(f"categories has {what}; use some of {', '.join(names)}")
        return [n for n in names if n in categories]

    def _read_labels(self) -> list[str]:
        path = self.root / "label.csv"
        names: dict[int, str] = {}
        for line, row in _read_table(path, LABEL_COLUMNS):
            where = f"{path} line {line}"
            number = _count(row["number"], f"{where}: number", positive=True)
            if number in names or not row["name"]:
                raise DataError(
                    f"{where}: label {number} is repeated or has no name; number labels 1..L "
                    "once each, with names"
                )
            if row["category"] and not all(
                _CATEGORY_COUNT.fullmatch(c) for c in row["category"].split(";")
            ):
                raise DataError(
                    f"{where}: category {quoted(row['category'])} is not of the form "
                    "'object(12);part(3)'; write each category with its image count"
                )
            names[number] = row["name"]
        missing = sorted(set(range(1, len(names) + 1)) - set(names))
        if missing:
            raise DataError(
                f"{path} numbers its labels up to {max(names)} but lacks label {missing[0]}; "
                f"number the {len(names)} labels 1..{len(names)}"
            )
        return ["-"] + [names[i] for i in range(1, len(names) + 1)]

    def _read_codes(self, category: str) -> dict[int, float]:
        """Label number -> coverage of one category's ``c_<category>.csv``."""
        path = self.root / f"c_{category}.csv"
        coverage: dict[int, float] = {}
        codes: set[int] = set()
        for line, row in _read_table(path, CODE_COLUMNS):
            where = f"{path} line {line}"
            code = _count(row["code"], f"{where}: code", positive=True)
            number = self._label_id(row["number"], f"{where}: number")
            _count(row["frequency"], f"{where}: frequency", positive=False)
            try:
                value = float(row["coverage"])
            except ValueError:
                value = math.nan
            if not math.isfinite(value) or value < 0:
                raise DataError(
                    f"{where}: coverage {quoted(row['coverage'])} is not a number >= 0; write "
                    "the label's pixel area in whole images"
                )
            if code in codes or number in coverage:
                raise DataError(
                    f"{where}: code {code} or label {number} is repeated; list each once"
                )
            codes.add(code)
            coverage[number] = value
        return coverage

    def _label_id(self, text: str, where: str) -> int:
        number = _count(text, where, positive=True)
        if number >= len(self.labels):
            raise DataError(
                f"{where}: label id {number} is beyond label.csv (labels "
                f"1..{len(self.labels) - 1}); add the label to label.csv or fix the id"
            )
        return number

    def _read_index(self, split: str | None, max_images: int | None) -> list[_Row]:
        path = self.root / "index.csv"
        table = _read_table(path, INDEX_COLUMNS + tuple(self.categories))
        if not table:
            raise DataError(f"{path} lists no image; {LAYOUT}")
        splits = {row["split"] for _, row in table}
        if split is not None and split not in splits:
            raise ConfigError(
                f"split={quoted(split)} is not in {path}; use one of {', '.join(sorted(splits))}"
            )
        rows = []
        for number, (line, row) in enumerate(table):
            where = f"{path} line {line}"
            sizes = [_count(row[k], f"{where}: {k}", positive=True) for k in INDEX_COLUMNS[2:]]
            _check_name(row["image"], f"{where}: image")
            cells = []
            for category in self.categories:
                entries: list[int | str] = []
                for entry in (e for e in row[category].split(";") if e):
                    if _INT.fullmatch(entry):
                        entries.append(self._label_id(entry, f"{where}: {category}"))
                    else:
                        _check_name(entry, f"{where}: {category}")
                        entries.append(entry)
                cells.append(tuple(entries))
            kept = any(cells) and (split is None or row["split"] == split)
            if kept and (max_images is None or len(rows) < max_images):
                rows.append(
                    _Row(
                        number,
                        where,
                        row["image"],
                        tuple(sizes[:2]),
                        tuple(sizes[2:]),
                        tuple(cells),
                    )
                )
        if not rows:
            raise DataError(
                f"{path} has no image annotated in {', '.join(self.categories)}"
                + (f" in split {quoted(split)}" if split else "")
                + "; choose other categories or another split"
            )
        return rows

    def _path(self, name: str, where: str) -> Path:
        """The file ``images/<name>``; a name that leaves ``images/`` (a symbolic link too)
        is refused."""
        base = self.root / "images"
        path = base / _check_name(name, where, base)
        if not path.resolve().is_relative_to(base.resolve()):
            raise DataError(
                f"{where}: path {quoted(name)} is a link to a file outside {base}; copy the "
                "file into images/ instead"
            )
        return path

    def _check_files(self, row: _Row) -> None:
        from PIL import Image, UnidentifiedImageError

        where = row.where
        path = self._path(row.image, where)
        try:
            with Image.open(path) as image:
                width, height = image.size
        except FileNotFoundError:
            raise DataError(
                f"{where}: image {path} is missing; restore it or remove the row"
            ) from None
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(
                f"{where}: image {path} cannot be read ({clipped(' '.join(str(exc).split()))}); "
                "replace it or remove the row"
            ) from None
        if (height, width) != row.image_size:
            raise DataError(
                f"{where}: image {path} is {height}x{width} but ih x iw says "
                f"{row.image_size[0]}x{row.image_size[1]}; fix ih/iw or the image"
            )
        for cell in row.cells:
            for entry in cell:
                if isinstance(entry, str):
                    self._mask(self._path(entry, where), row)

    def _mask(self, path: Path, row: _Row) -> np.ndarray:
        """The mask's ``(sh, sw)`` labels, checked against ``sh x sw`` and ``label.csv``."""
        where, mask = row.where, read_mask(path)
        if mask.shape != row.seg_size:
            raise DataError(
                f"{where}: mask {path} is {mask.shape[0]}x{mask.shape[1]} but sh x sw says "
                f"{row.seg_size[0]}x{row.seg_size[1]}; fix sh/sw or the mask"
            )
        top = int(mask.max())
        if top >= len(self.labels):
            raise DataError(
                f"{where}: mask {path} holds label id {top} (R + 256 G), beyond label.csv "
                f"(labels 1..{len(self.labels) - 1}); add the label to label.csv or fix the mask"
            )
        return mask


def _check_name(name: str, where: str, base: str | Path = "images") -> PurePosixPath:
    """``name`` as a relative path that stays inside ``images/`` (no ``..``, no root)."""
    pure = PurePosixPath(name)
    if (
        not name
        or "\\" in name
        or pure.is_absolute()
        or ".." in pure.parts
        or re.match(r"[A-Za-z]:", name) is not None
    ):
        raise DataError(
            f"{where}: path {quoted(name)} is not a file inside {base}; write paths "
            "relative to images/, without '..' or a leading '/'"
        )
    return pure


def _pixel_cells(row: _Row) -> list[tuple[int | str, ...]]:
    """The row's pixel-level cells: those that name at least one mask."""
    return [c for c in row.cells if any(isinstance(e, str) for e in c)]


def _scalars(row: _Row) -> list[int]:
    """The row's image-level labels: the entries of its integer-only cells, in category order."""
    return [e for c in row.cells if c and all(isinstance(e, int) for e in c) for e in c]


def _read_table(path: Path, columns: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """``(line, row)`` pairs of a CSV file that must have ``columns``."""
    if not path.is_file():
        raise DataError(f"{path} is missing; {LAYOUT}")
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [c for c in columns if c not in header]
            if missing:
                raise DataError(
                    f"{path} lacks the column(s) {', '.join(missing)}; its header must name "
                    f"{', '.join(columns)}"
                )
            rows = []
            for row in reader:
                if None in row or None in row.values():
                    raise DataError(
                        f"{path} line {reader.line_num} does not have the header's "
                        f"{len(header)} fields; quote values that hold commas"
                    )
                rows.append((reader.line_num, row))
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; save it as UTF-8 CSV") from None
    except csv.Error as exc:
        raise DataError(f"{path} is not valid CSV ({exc}); fix the file") from None
    return rows


def _count(text: str, where: str, positive: bool) -> int:
    """A decimal integer (``> 0`` if ``positive``, else ``>= 0``) of a table cell."""
    if not _INT.fullmatch(text) or (positive and int(text) == 0):
        bound = "> 0" if positive else ">= 0"
        raise DataError(f"{where} {quoted(text)} is not an integer {bound}; fix the cell")
    return int(text)


def _size(value: int | tuple[int, int] | None, name: str) -> tuple[int, int] | None:
    if value is None:
        return None
    pair = (value, value) if isinstance(value, int) else value
    if (
        not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair)
    ):
        raise ConfigError(
            f"{name}={value!r} is invalid; use an integer >= 1, (height, width) or None"
        )
    return int(pair[0]), int(pair[1])


def _common(sizes: list[tuple[int, int]], kind: str) -> tuple[int, int]:
    """The one stored size of every kept image (or mask); several sizes need a size passed."""
    found = sorted(set(sizes))
    if len(found) > 1:
        shown = ", ".join(f"{h}x{w}" for h, w in found[:4])
        raise DataError(
            f"the images' stored {kind} sizes differ ({shown}); pass {kind}_size= to resize "
            "them to one size"
        )
    return found[0]
