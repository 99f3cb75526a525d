"""generate_concepts: a Broden folder that BrodenData reads back, exact masks, statistics,
determinism, annotated flags, and refusals that leave nothing on disk."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from distillscope.data import concepts
from distillscope.data.broden import BrodenData
from distillscope.data.concepts import CATEGORIES, COLOURS, generate_concepts
from distillscope.errors import ConfigError


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    """Every background kind, up to 3 objects, some of them Fashion-MNIST-like items."""
    items = np.zeros((3, 28, 28), dtype=np.uint8)
    items[:, 4:24, 8:20] = 200  # a block standing in for a garment
    labels = np.array([0, 5, 9])
    out = tmp_path_factory.mktemp("gen") / "concepts"
    return generate_concepts(out, n_images=24, image_size=32, seed=3, fashion_items=(items, labels))


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    """One object per image on black: every non-black pixel is the object."""
    out = tmp_path_factory.mktemp("gen") / "plain"
    return generate_concepts(
        out, n_images=30, image_size=32, seed=0, max_objects=1, backgrounds=["plain"]
    )


def read_all(root: Path):
    data = BrodenData(root)
    batches = list(data.batches(64))
    return data, {
        f: torch.cat([getattr(b, f) for b in batches])
        for f in ("images", "pixels", "scalars", "annotated", "index")
    }


def rows_of(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def test_reads_back_with_every_category(mixed):
    data, b = read_all(mixed)
    assert len(data) == 24 and b["index"].tolist() == list(range(24))
    assert data.categories == list(CATEGORIES)
    assert data.image_size == data.seg_size == (32, 32)
    assert b["images"].shape == (24, 3, 32, 32) and b["pixels"].shape[1] == data.pixel_depth == 5
    assert {"circle", "border", "red", "brick", "coffee", "Sandal"} <= set(data.labels)
    assert len(BrodenData(mixed, split="val")) == 24 // 5  # every fifth image
    # every label has the one category it is written in
    for row in rows_of(mixed / "label.csv"):
        category = row["category"].split("(")[0]
        assert data.label_category[int(row["number"])] == CATEGORIES.index(category)
    present = set(b["pixels"].unique().tolist()) | set(b["scalars"].unique().tolist())
    names = {data.labels[k] for k in present}
    assert {"T-shirt/top", "Sandal", "Ankle boot"} & names  # items were pasted


def test_masks_are_the_painted_pixels(plain):
    data, b = read_all(plain)
    obj = data.categories.index("object")
    object_ids = torch.nonzero(data.label_category == obj)[:, 0]
    object_layer = torch.isin(b["pixels"], object_ids).any(1)  # (N, S, S)
    painted = b["images"].amax(1) > 0  # the background is black, no paint is
    assert torch.equal(object_layer, painted)
    circles = 0
    for n in range(len(data)):
        ids = b["pixels"][n].unique().tolist()
        if data.labels.index("circle") not in ids:
            continue
        circles += 1
        ys, xs = torch.nonzero(object_layer[n], as_tuple=True)
        top, left, size = int(ys.min()), int(xs.min()), int(ys.max() - ys.min() + 1)
        centre = top + size / 2, left + size / 2
        yy, xx = torch.meshgrid(torch.arange(32) + 0.5, torch.arange(32) + 0.5, indexing="ij")
        disc = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= (size / 2) ** 2
        assert torch.equal(object_layer[n], disc)
    assert circles >= 1
    colour = data.categories.index("color")
    for name, rgb in COLOURS.items():  # a colour's mask holds exactly that colour
        where = (b["pixels"] == data.labels.index(name)).any(1)  # (N, S, S)
        if where.any():
            pixels = (b["images"].permute(0, 2, 3, 1)[where] * 255).round()
            assert torch.equal(pixels, torch.tensor(rgb).float().expand_as(pixels))
            assert data.label_category[data.labels.index(name)] == colour


def test_parts_split_objects_and_mark_borders(plain):
    data, b = read_all(plain)
    top, bottom, border = (data.labels.index(n) for n in ("top-half", "bottom-half", "border"))
    objects = torch.isin(b["pixels"], torch.nonzero(data.label_category == 0)[:, 0]).any(1)
    halves = torch.isin(b["pixels"], torch.tensor([top, bottom])).any(1)
    assert torch.equal(halves, objects)  # the halves tile each object
    edge = (b["pixels"] == border).any(1)  # (N, S, S)
    inside = objects.clone()
    for dy in range(-2, 3):  # an object pixel whose 5x5 neighbourhood is all object
        for dx in range(-2, 3):
            inside &= torch.roll(objects, (dy, dx), (1, 2))
    assert torch.equal(edge, objects & ~inside)
    for n in range(len(data)):
        ys = torch.nonzero((b["pixels"][n] == top).any(0))[:, 0]
        yb = torch.nonzero((b["pixels"][n] == bottom).any(0))[:, 0]
        assert ys.max() < yb.min()


def test_statistics_match_the_masks(mixed):
    data, b = read_all(mixed)
    frequency = torch.zeros(len(data.labels))
    coverage = torch.zeros(len(data.labels), dtype=torch.float64)
    for n in range(len(data)):
        counts = torch.bincount(b["pixels"][n].flatten(), minlength=len(data.labels))
        counts[0] = 0
        frequency += counts > 0
        coverage += counts / 32**2
        for label in b["scalars"][n][b["scalars"][n] > 0]:
            frequency[label] += 1
            coverage[label] += 1
    for row in rows_of(mixed / "label.csv"):
        k = int(row["number"])
        assert int(row["frequency"]) == frequency[k]
        assert float(row["coverage"]) == pytest.approx(float(coverage[k]), abs=1e-6)
    for category in CATEGORIES:
        for row in rows_of(mixed / f"c_{category}.csv"):
            assert float(row["coverage"]) == pytest.approx(
                float(coverage[int(row["number"])]), abs=1e-6
            )
    for row in rows_of(mixed / "category.csv"):
        ids = torch.nonzero(data.label_category == CATEGORIES.index(row["name"]))[:, 0]
        assert int(row["count"]) == len(ids) and int(row["frequency"]) == frequency[ids].sum()


def test_annotated_flags_match_the_labels(mixed):
    data, b = read_all(mixed)
    for n in range(len(data)):
        ids = set(b["pixels"][n].unique().tolist()) | set(b["scalars"][n].tolist())
        cats = {int(data.label_category[k]) for k in ids if k}
        flags = {c for c in range(len(CATEGORIES)) if b["annotated"][n, c]}
        assert flags == cats
    assert b["annotated"][:, CATEGORIES.index("scene")].any()
    assert not b["annotated"][:, CATEGORIES.index("scene")].all()


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_deterministic_for_a_seed(tmp_path):
    a = _files(generate_concepts(tmp_path / "a", n_images=6, image_size=16, seed=1))
    b = _files(generate_concepts(tmp_path / "b", n_images=6, image_size=16, seed=1))
    c = _files(generate_concepts(tmp_path / "c", n_images=6, image_size=16, seed=2))
    assert a == b and a["index.csv"] and a != c


def test_refuses_a_non_empty_folder_and_bad_parameters(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    with pytest.raises(ConfigError) as exc:
        generate_concepts(tmp_path / "full", n_images=2, image_size=16)
    assert "not an empty folder" in str(exc.value) and "\n" not in str(exc.value)
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["x"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(BrodenData(generate_concepts(empty, n_images=2, image_size=16))) == 2
    for kwargs in (
        {"n_images": 0},
        {"image_size": 8},
        {"backgrounds": ["sky"]},
        {"max_objects": True},
        {"fashion_items": (np.zeros((2, 28, 28)), [0, 10])},
    ):
        with pytest.raises(ConfigError):
            generate_concepts(tmp_path / "bad", **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "full"]


def test_an_error_midway_leaves_nothing(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(concepts, "_write_tables", fail)
    with pytest.raises(RuntimeError):
        generate_concepts(tmp_path / "out", n_images=3, image_size=16)
    assert list(tmp_path.iterdir()) == []
