"""BrodenData on a hand-made miniature Broden folder: every batch field, resizing, subsets,
primary categories, and the hostile folders (each a one-line error)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distillscope.data.broden import BrodenData, nearest_resize, primary_categories
from distillscope.errors import ConfigError, DataError

N_LABELS = 300  # label 300 is stored as R = 44, G = 1: the green channel matters
NAMES = {
    1: "sky",
    2: "person",
    3: "wheel",
    4: "head",
    5: "beach",
    6: "street",
    7: "striped",
    300: "door",
}
# per category: label -> (frequency, coverage); "wheel" is an object and a part, mostly a part
CODES = {
    "object": {1: (1, 0.5), 2: (2, 0.375), 3: (1, 0.25), 300: (1, 0.25)},
    "part": {3: (2, 0.375), 4: (3, 2.0625)},
    "scene": {5: (2, 2.0), 6: (2, 2.0)},
}
MASKS = {
    "m0_obj.png": [[1, 1, 1, 1], [1, 1, 1, 1], [300, 300, 2, 2], [300, 300, 2, 2]],
    "m0_part1.png": [[0, 0, 0, 0], [0, 0, 0, 0], [3, 3, 0, 0], [3, 3, 0, 0]],
    "m0_part2.png": [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 4, 0], [0, 0, 0, 0]],
    "m1_obj.png": [[2, 2, 0, 0], [2, 2, 0, 0], [0, 0, 3, 3], [0, 0, 3, 3]],
    "m1_part.png": [[4, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 3]],
}
# index.csv: the category columns in another order than category.csv's (read by name)
HEADER = ["image", "split", "ih", "iw", "sh", "sw", "scene", "object", "part"]
ROWS = [
    ["img0.png", "train", "8", "8", "4", "4", "5", "m0_obj.png", "m0_part1.png;m0_part2.png"],
    ["img1.png", "val", "8", "8", "4", "4", "5;6", "m1_obj.png", "m1_part.png;4"],
    ["img2.png", "train", "8", "8", "4", "4", "", "", ""],  # no annotation: left out
    ["sub/img3.png", "train", "8", "8", "4", "4", "6", "", "4"],  # image-level part label
]


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def write_mask(path: Path, labels) -> None:
    labels = np.asarray(labels, dtype=np.int64)
    rgb = np.stack([labels % 256, labels // 256, np.zeros_like(labels)], -1).astype(np.uint8)
    Image.fromarray(rgb).save(path)


def image_pixels(k: int, size: int = 8) -> np.ndarray:
    return np.random.default_rng(k).integers(0, 256, (size, size, 3)).astype(np.uint8)


def build(root: Path) -> Path:
    """The miniature folder: 4 images (one without annotations), 3 categories, 300 labels."""
    (root / "images" / "sub").mkdir(parents=True)
    write_csv(
        root / "category.csv",
        ["name", "first", "last", "count", "frequency"],
        [["object", 1, 300, 4, 5], ["part", 3, 4, 2, 5], ["scene", 5, 6, 2, 4]],
    )
    labels = []
    for n in range(1, N_LABELS + 1):
        cats = [(c, codes[n][0]) for c, codes in CODES.items() if n in codes]
        labels.append(
            [
                n,
                NAMES.get(n, f"label{n}"),
                ";".join(f"{c}({f})" for c, f in cats),
                sum(f for _, f in cats),
                1.0,
                "",
            ]
        )
    write_csv(
        root / "label.csv", ["number", "name", "category", "frequency", "coverage", "syns"], labels
    )
    for category, codes in CODES.items():
        rows = [[k, n, NAMES[n], f, c] for k, (n, (f, c)) in enumerate(codes.items(), 1)]
        write_csv(
            root / f"c_{category}.csv", ["code", "number", "name", "frequency", "coverage"], rows
        )
    for k, row in enumerate(ROWS):
        Image.fromarray(image_pixels(k)).save(root / "images" / row[0])
    for name, labels in MASKS.items():
        write_mask(root / "images" / name, labels)
    write_csv(root / "index.csv", HEADER, ROWS)
    return root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return build(tmp_path / "broden")


def edit_index(root: Path, row: int, column: str, value: str) -> None:
    rows = [list(r) for r in ROWS]
    rows[row][HEADER.index(column)] = value
    write_csv(root / "index.csv", HEADER, rows)


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and text
    return text


def test_every_field_of_a_batch(root):
    data = BrodenData(root)
    assert len(data) == 3  # img2 has no annotation
    assert data.categories == ["object", "part", "scene"]
    assert data.labels[0] == "-" and len(data.labels) == N_LABELS + 1
    assert data.labels[3] == "wheel" and data.labels[300] == "door"
    assert (data.pixel_depth, data.scalar_width) == (3, 2)
    assert (data.image_size, data.seg_size) == ((8, 8), (4, 4))
    [batch] = list(data.batches(8))
    assert batch.index.tolist() == [0, 1, 3] and batch.index.dtype == torch.int64
    assert batch.images.dtype == torch.float32 and batch.images.shape == (3, 3, 8, 8)
    for b, k in enumerate([0, 1, 3]):
        expected = torch.from_numpy(image_pixels(k)).permute(2, 0, 1).float() / 255
        assert torch.equal(batch.images[b], expected)
    assert batch.pixels.dtype == torch.int64 and batch.pixels.shape == (3, 3, 4, 4)
    m = {name: torch.tensor(v) for name, v in MASKS.items()}
    assert torch.equal(
        batch.pixels[0], torch.stack([m["m0_obj.png"], m["m0_part1.png"], m["m0_part2.png"]])
    )
    # an integer entry beside a mask is a layer of that label everywhere
    assert torch.equal(
        batch.pixels[1], torch.stack([m["m1_obj.png"], m["m1_part.png"], torch.full((4, 4), 4)])
    )
    assert not batch.pixels[2].any()  # img3: image-level labels only, padded with 0 layers
    assert batch.pixels[0, 0, 2, 0] == 300  # R + 256 G
    assert batch.scalars.dtype == torch.int64
    assert batch.scalars.tolist() == [[5, 0], [5, 6], [4, 6]]  # category order: part, scene
    assert batch.annotated.dtype == torch.bool
    assert batch.annotated.tolist() == [[True, True, True], [True, True, True], [False, True, True]]


def test_primary_category_is_the_largest_coverage(root):
    data = BrodenData(root)
    expected = torch.full((N_LABELS + 1,), -1)
    expected[[1, 2, 300]] = 0  # object only
    expected[[3, 4]] = 1  # wheel: part coverage 0.375 beats object 0.25
    expected[[5, 6]] = 2
    assert torch.equal(data.label_category, expected) and data.label_category.dtype == torch.int64
    subset = BrodenData(root, categories=["scene", "object"])
    assert subset.categories == ["object", "scene"]  # category.csv's order
    expected = torch.full((N_LABELS + 1,), -1)
    expected[[1, 2, 3, 300]] = 0  # without part, wheel is an object
    expected[[5, 6]] = 1
    assert torch.equal(subset.label_category, expected)
    # ties go to the later category, as NetDissect-Lite's max over (coverage, index)
    assert primary_categories([{1: 0.5}, {1: 0.5}], 2).tolist() == [-1, 1]


def test_subset_of_categories(root):
    data = BrodenData(root, categories=["scene"])
    assert data.pixel_depth == 0 and data.scalar_width == 2
    [batch] = list(data.batches(4))
    assert batch.index.tolist() == [0, 1, 3]
    assert batch.pixels.shape == (3, 0, 4, 4)
    assert batch.scalars.tolist() == [[5, 0], [5, 6], [6, 0]]
    assert batch.annotated.tolist() == [[True], [True], [True]]
    objects = BrodenData(root, categories=["object"])
    assert len(objects) == 2 and objects.scalar_width == 0  # img3 has no object
    [batch] = list(objects.batches(4))
    assert batch.index.tolist() == [0, 1] and batch.scalars.shape == (2, 0)
    assert torch.equal(
        batch.pixels[:, 0],
        torch.stack([torch.tensor(MASKS["m0_obj.png"]), torch.tensor(MASKS["m1_obj.png"])]),
    )


def test_split_max_images_and_batch_order(root):
    assert [b.index.tolist() for b in BrodenData(root).batches(2)] == [[0, 1], [3]]
    assert [b.index.tolist() for b in BrodenData(root, split="val").batches(8)] == [[1]]
    assert [b.index.tolist() for b in BrodenData(root, max_images=2).batches(8)] == [[0, 1]]
    a, b = (next(BrodenData(root).batches(3)) for _ in range(2))
    assert all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("images", "pixels", "scalars"))
    with pytest.raises(ConfigError) as exc:
        BrodenData(root, split="test")
    assert "train, val" in one_line(exc)
    with pytest.raises(ConfigError):
        next(BrodenData(root).batches(0))


def test_images_resize_bilinearly_and_masks_by_nearest_neighbour(root):
    data = BrodenData(root, image_size=5, seg_size=8)
    [batch] = list(data.batches(8))
    assert batch.images.shape == (3, 3, 5, 5) and batch.pixels.shape == (3, 3, 8, 8)
    pil = np.asarray(Image.fromarray(image_pixels(0)).resize((5, 5), Image.BILINEAR)) / 255
    assert np.abs(batch.images[0].permute(1, 2, 0).numpy() - pil).max() < 1.5 / 255
    obj = np.asarray(MASKS["m0_obj.png"])
    assert np.array_equal(batch.pixels[0, 0].numpy(), obj.repeat(2, 0).repeat(2, 1))
    small = next(BrodenData(root, seg_size=(2, 4)).batches(1))
    assert np.array_equal(small.pixels[0, 0].numpy(), obj[1::2])  # rows at centres 1, 3
    # pixel centres: output i of n reads floor((i + 1/2) m / n)
    labels = torch.arange(5)[None, None].expand(1, 1, 5)  # (1, 1, 5)
    assert nearest_resize(labels, (1, 3))[0, 0].tolist() == [0, 2, 4]


def test_images_of_several_sizes_need_an_image_size(root):
    Image.fromarray(image_pixels(1, size=6)).save(root / "images" / "img1.png")
    rows = [list(r) for r in ROWS]
    rows[1][2:4] = ["6", "6"]
    write_csv(root / "index.csv", HEADER, rows)
    with pytest.raises(DataError) as exc:
        BrodenData(root)
    assert "image_size" in one_line(exc) and "6x6, 8x8" in str(exc.value)
    [batch] = list(BrodenData(root, image_size=(8, 8)).batches(3))
    assert batch.images.shape == (3, 3, 8, 8)


def test_unknown_category_lists_the_valid_ones(root):
    with pytest.raises(ConfigError) as exc:
        BrodenData(root, categories=["object", "colour"])
    assert "'colour'" in one_line(exc) and "object, part, scene" in str(exc.value)
    for bad in ("object", [], ["object", "object"]):
        with pytest.raises(ConfigError):
            BrodenData(root, categories=bad)
    for kwargs in ({"image_size": 0}, {"seg_size": (4,)}, {"max_images": 0}, {"split": 1}):
        with pytest.raises(ConfigError):
            BrodenData(root, **kwargs)


def _mask_as_jpeg(root: Path) -> None:
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / "images" / "m0_obj.png", "JPEG")


def _drop_label_column(root: Path) -> None:
    with open(root / "label.csv", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    write_csv(root / "label.csv", rows[0][:4], [r[:4] for r in rows[1:]])


def _code_beyond_labels(root: Path) -> None:
    write_csv(
        root / "c_part.csv",
        ["code", "number", "name", "frequency", "coverage"],
        [[1, 4, "head", 1, 0.1], [2, 301, "ghost", 1, 0.1]],
    )


def _label_gap(root: Path) -> None:
    with open(root / "label.csv", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    write_csv(root / "label.csv", rows[0], rows[1:7] + rows[8:])  # no label 7


def _symlink_out(root: Path) -> None:
    outside = root.parent / "outside.png"
    write_mask(outside, MASKS["m0_obj.png"])
    os.symlink(outside, root / "images" / "link.png")
    edit_index(root, 0, "object", "link.png")


HOSTILE = {
    "no index.csv": (lambda r: (r / "index.csv").unlink(), "index.csv is missing"),
    "no c_part.csv": (lambda r: (r / "c_part.csv").unlink(), "c_part.csv is missing"),
    "label.csv lacks a column": (_drop_label_column, "lacks the column(s) coverage"),
    "label numbers with a gap": (_label_gap, "lacks label 7"),
    "missing image": (lambda r: (r / "images" / "img1.png").unlink(), "img1.png is missing"),
    "missing mask": (lambda r: (r / "images" / "m0_part2.png").unlink(), "m0_part2.png is missing"),
    "mask not a PNG": (_mask_as_jpeg, "not a PNG"),
    "image-level id beyond label.csv": (
        lambda r: edit_index(r, 1, "scene", "5;301"),
        "label id 301 is beyond label.csv",
    ),
    "mask id beyond label.csv": (
        lambda r: write_mask(r / "images" / "m1_part.png", [[0] * 4] * 3 + [[0, 0, 0, 512]]),
        "label id 512",
    ),
    "c_ number beyond label.csv": (_code_beyond_labels, "label id 301 is beyond label.csv"),
    "ih zero": (lambda r: edit_index(r, 0, "ih", "0"), "ih '0' is not an integer > 0"),
    "sw not a number": (lambda r: edit_index(r, 3, "sw", "4.5"), "sw '4.5' is not an integer"),
    "iw negative": (lambda r: edit_index(r, 2, "iw", "-8"), "iw '-8' is not an integer"),
    "image size differs from ih": (lambda r: edit_index(r, 0, "ih", "9"), "ih x iw says 9x8"),
    "mask size differs from sh": (lambda r: edit_index(r, 1, "sh", "5"), "sh x sw says 5x4"),
    "image path with ..": (lambda r: edit_index(r, 0, "image", "../img0.png"), "not a file inside"),
    "absolute mask path": (
        lambda r: edit_index(r, 1, "object", str(r / "images" / "m1_obj.png")),
        "not a file inside",
    ),
    "mask path with ..": (
        lambda r: edit_index(r, 0, "part", "m0_part1.png;sub/../../x.png"),
        "not a file inside",
    ),
    "symlink out of images/": (_symlink_out, "a link to a file outside"),
    "short row": (lambda r: write_csv(r / "index.csv", HEADER, [ROWS[0][:5]]), "fields"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_folders_give_one_line(root, case):
    damage, message = HOSTILE[case]
    damage(root)
    with pytest.raises(DataError) as exc:
        BrodenData(root)
    assert message in one_line(exc), str(exc.value)


def test_a_missing_folder(tmp_path):
    with pytest.raises(DataError) as exc:
        BrodenData(tmp_path / "nowhere")
    assert "does not exist" in one_line(exc)
