"""Fashion-MNIST: IDX reading, the search order, errors, normalisation, augmentation."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from distillscope.data import fashion_mnist as fm
from distillscope.data import load_dataset
from distillscope.data.idx import parse_idx, read_idx, write_idx
from distillscope.errors import DataError


@pytest.fixture(autouse=True)
def _no_real_places(monkeypatch, tmp_path):
    """Hide the machine's installed data and cache so only the test's files are found."""
    monkeypatch.delenv("DISTILLSCOPE_DATA", raising=False)
    monkeypatch.setattr(fm, "SYSTEM_DIR", tmp_path / "system")
    monkeypatch.setattr(fm, "CACHE_DIR", tmp_path / "cache")


def make_split(folder: Path, split: str, n: int, seed: int = 0, gz: bool = True) -> np.ndarray:
    """Write a tiny IDX split into ``folder``; returns the images written."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    suffix = ".gz" if gz else ""
    img_name, lbl_name = fm.FILES[split]
    write_idx(folder / f"{img_name}{suffix}", images)
    write_idx(folder / f"{lbl_name}{suffix}", labels)
    return images


@pytest.mark.parametrize("gz", [True, False])
def test_reads_tiny_idx_files_and_normalises(tmp_path, gz):
    images = make_split(tmp_path / "d", "train", 20, gz=gz)
    ds = load_dataset("fashion-mnist", "train", root=str(tmp_path / "d"))
    assert ds.inputs.shape == (20, 1, 28, 28) and ds.inputs.dtype == torch.float32
    expected = (images.astype(np.float32) / 255 - fm.MEAN) / fm.STD
    np.testing.assert_allclose(ds.inputs[:, 0].numpy(), expected, rtol=1e-5, atol=1e-5)
    assert ds.targets.tolist() == [i % 10 for i in range(20)]
    info = ds.info
    assert info.pixel_range == (0.0, 1.0) and info.mean == (0.2860,) and info.std == (0.3530,)
    assert info.class_names[0] == "T-shirt/top" and info.class_names[9] == "Ankle boot"
    assert sorted(c for cs in info.categories.values() for c in cs) == list(range(10))
    assert info.categories["footwear"] == [5, 7, 9]


def test_test_split_reads_t10k_files(tmp_path):
    make_split(tmp_path, "train", 20)
    make_split(tmp_path, "test", 10)
    assert len(load_dataset("fashion-mnist", "test", root=str(tmp_path))) == 10


def test_search_order_root_alone_else_env_then_system(tmp_path, monkeypatch):
    make_split(tmp_path / "root", "train", 11)
    make_split(tmp_path / "env" / "fashion-mnist", "train", 12)  # the subfolder form
    make_split(tmp_path / "system", "train", 13)
    monkeypatch.setenv("DISTILLSCOPE_DATA", str(tmp_path / "env"))
    assert len(load_dataset("fashion-mnist", root=str(tmp_path / "root"))) == 11
    with pytest.raises(DataError, match="nowhere"):  # an explicit root never falls back
        load_dataset("fashion-mnist", root=str(tmp_path / "nowhere"))
    assert len(load_dataset("fashion-mnist")) == 12
    monkeypatch.delenv("DISTILLSCOPE_DATA")
    assert len(load_dataset("fashion-mnist")) == 13


def test_torchvision_layout_in_cache_is_found(tmp_path):
    make_split(tmp_path / "cache" / "FashionMNIST" / "raw", "train", 14, gz=False)
    assert len(load_dataset("fashion-mnist")) == 14


def test_not_found_is_one_line_naming_places_and_fix(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("fashion-mnist")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("Fashion-MNIST not found in ")
    assert str(tmp_path / "system") in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "DISTILLSCOPE_DATA" in msg


def test_not_found_when_labels_missing(tmp_path):
    make_split(tmp_path, "train", 5)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="not found"):
        load_dataset("fashion-mnist", root=str(tmp_path))


@pytest.mark.parametrize(
    ("corrupt", "match"),
    [
        (lambda raw: b"\x00\x00\x08\x05" + raw[4:], "dimensions"),
        (lambda raw: b"\x12\x34" + raw[2:], "magic"),
        (lambda raw: raw[:-7], "bytes of data"),
        (lambda raw: raw[:6], "truncated"),
    ],
)
def test_corrupt_images_name_the_file(tmp_path, corrupt, match):
    make_split(tmp_path, "train", 5, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(DataError, match=match) as err:
        load_dataset("fashion-mnist", root=str(tmp_path))
    assert str(path) in str(err.value)


def test_broken_gzip_names_the_file(tmp_path):
    make_split(tmp_path, "train", 5)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(DataError, match="cannot read") as err:
        load_dataset("fashion-mnist", root=str(tmp_path))
    assert str(path) in str(err.value)


def test_label_count_mismatch_names_both_files(tmp_path):
    make_split(tmp_path, "train", 5)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(4, dtype=np.uint8))
    with pytest.raises(DataError, match="4 labels for 5 images"):
        load_dataset("fashion-mnist", root=str(tmp_path))


def test_idx_round_trip_of_other_dtypes(tmp_path):
    for dtype in (np.int16, np.int32, np.float32, np.float64):
        a = np.arange(24, dtype=dtype).reshape(2, 3, 4)
        write_idx(tmp_path / "a.gz", a)
        back = read_idx(tmp_path / "a.gz", ndim=3)
        assert back.dtype == dtype and np.array_equal(back, a)
    raw = gzip.decompress((tmp_path / "a.gz").read_bytes())
    assert raw[:4] == b"\x00\x00\x0e\x03"  # float64, 3 dimensions
    assert parse_idx(raw).shape == (2, 3, 4)


def test_augment_only_on_train_and_reproducible(tmp_path):
    make_split(tmp_path, "train", 30)
    make_split(tmp_path, "test", 10)
    train = load_dataset("fashion-mnist", root=str(tmp_path), augment=True)
    test = load_dataset("fashion-mnist", "test", root=str(tmp_path), augment=True)
    assert train.augmented and not test.augmented
    torch.manual_seed(0)
    a = train.transform(train.inputs)
    torch.manual_seed(0)
    b = train.transform(train.inputs)
    assert torch.equal(a, b) and not torch.equal(a, train.inputs)
    # padding is a black pixel in normalised units
    assert torch.isclose(a.min(), torch.tensor(-fm.MEAN / fm.STD))


REAL = Path("/usr/share/datasets/fashion-mnist")


def test_real_installed_data(monkeypatch):
    if not (REAL / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(
            f"Fashion-MNIST is not installed in {REAL} (apt-get install dataset-fashion-mnist)"
        )
    monkeypatch.setattr(fm, "SYSTEM_DIR", REAL)
    train = load_dataset("fashion-mnist", "train")
    test = load_dataset("fashion-mnist", "test")
    assert train.inputs.shape == (60000, 1, 28, 28) and len(test) == 10000
    assert torch.bincount(train.targets).tolist() == [6000] * 10
    assert torch.bincount(test.targets).tolist() == [1000] * 10
    # the constants are the training split's statistics
    assert abs(train.inputs.mean().item()) < 1e-3 and abs(train.inputs.std().item() - 1) < 1e-3
