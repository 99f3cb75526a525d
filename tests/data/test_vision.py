"""CIFAR-10, ImageFolder trees and the batch augmentation."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from distillscope.cli import main
from distillscope.config import load_config_dict
from distillscope.data import iter_batches, load_dataset
from distillscope.data.vision import CIFAR10_MEAN, CIFAR10_STD, RandomCropFlip
from distillscope.errors import DataError
from distillscope.splits import load_splits


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv("DISTILLSCOPE_DATA", raising=False)


# --- CIFAR-10 -----------------------------------------------------------------------------


def test_cifar10_missing_data_names_the_folder_and_the_fix(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", root=str(tmp_path))
    msg = str(err.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg
    assert "--data-root" in msg and "download=true" in msg and "\n" not in msg


def test_cifar10_corrupt_folder_is_a_data_error(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(DataError, match="cannot load CIFAR-10"):
        load_dataset("cifar10", "test", root=str(tmp_path))


def write_fake_cifar(folder: Path, n: int = 6) -> dict[str, np.ndarray]:
    """Tiny pickled batches in torchvision's layout: rows of 3072 bytes, channel-major."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": list(range(n))}, f)
        written[name] = data
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["c"] * 10}, f)
    return written


def test_cifar10_layout_and_normalisation(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    written = write_fake_cifar(tmp_path / "cifar-10-batches-py")
    test = load_dataset("cifar10", "test", root=str(tmp_path), augment=True)
    assert test.inputs.shape == (6, 3, 32, 32) and not test.augmented
    pixels = written["test_batch"].reshape(6, 3, 32, 32).astype(np.float32) / 255
    mean = np.array(CIFAR10_MEAN, dtype=np.float32)[:, None, None]
    std = np.array(CIFAR10_STD, dtype=np.float32)[:, None, None]
    np.testing.assert_allclose(test.inputs.numpy(), (pixels - mean) / std, atol=1e-5)
    assert test.targets.tolist() == list(range(6))
    train = load_dataset("cifar10", root=str(tmp_path / "cifar-10-batches-py"), augment=True)
    assert len(train) == 30 and train.augmented
    assert train.info.categories["vehicles"] == [0, 1, 8, 9]


# --- ImageFolder --------------------------------------------------------------------------


def write_tree(folder: Path, classes: dict[str, int], size: int = 12) -> None:
    for k, (name, count) in enumerate(classes.items()):
        (folder / name).mkdir(parents=True)
        for j in range(count):
            value = 40 * k + 10 * j
            Image.new("RGB", (size, size), (value, 0, 255 - value)).save(folder / name / f"{j}.png")
    (folder / "notes.txt").write_text("not an image")


def test_imagefolder_with_split_folders(tmp_path):
    write_tree(tmp_path / "train", {"cat": 3, "dog": 2})
    write_tree(tmp_path / "val", {"cat": 1, "dog": 1})
    train = load_dataset("imagefolder", "train", root=str(tmp_path), image_size=8)
    test = load_dataset("imagefolder", "test", root=str(tmp_path), image_size=8)
    assert len(train) == 5 and len(test) == 2
    assert train.info.class_names == ["cat", "dog"] and train.info.input_shape == (3, 8, 8)
    assert train.targets_tensor().tolist() == [0, 0, 0, 1, 1]
    x, y, i = train[4]
    assert x.shape == (3, 8, 8) and y == 1 and i == 4
    # a constant image normalises to (value / 255 - mean) / std per channel
    expected = (torch.tensor([50 / 255, 0.0, 205 / 255]) - torch.tensor(train.info.mean)) / (
        torch.tensor(train.info.std)
    )
    torch.testing.assert_close(x.mean((1, 2)), expected, atol=2e-2, rtol=0)
    batch = next(iter_batches(train, 4))
    assert batch.inputs.shape == (4, 3, 8, 8) and batch.index.tolist() == [0, 1, 2, 3]


def test_imagefolder_flat_tree_and_subset(tmp_path):
    write_tree(tmp_path, {"a": 4, "b": 4, "c": 4})
    ds = load_dataset("imagefolder", "test", root=str(tmp_path), image_size=4, per_class=2)
    assert len(ds) == 6 and torch.bincount(ds.targets_tensor()).tolist() == [2, 2, 2]
    assert ds[5][2] == 5


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DataError, match="needs a root"):
        load_dataset("imagefolder")
    with pytest.raises(DataError, match="not a folder"):
        load_dataset("imagefolder", root=str(tmp_path / "missing"))
    write_tree(tmp_path / "train", {"cat": 1})
    with pytest.raises(DataError, match="no test/ or val/"):
        load_dataset("imagefolder", "test", root=str(tmp_path))
    write_tree(tmp_path / "test", {"cat": 1, "cow": 1})
    with pytest.raises(DataError, match="lacks: cow"):
        load_dataset("imagefolder", "test", root=str(tmp_path))


def test_imagefolder_finds_its_tree_through_distillscope_data(tmp_path, monkeypatch):
    """docs/install.md: $DISTILLSCOPE_DATA names the folder holding one's data, so a relative
    root is looked for there when the working directory has no such folder, and no root at all
    means $DISTILLSCOPE_DATA is the tree."""
    data, cwd = tmp_path / "data", tmp_path / "cwd"
    write_tree(data / "flowers" / "train", {"rose": 2, "tulip": 1})
    write_tree(data / "flowers" / "test", {"rose": 1, "tulip": 1})
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    with pytest.raises(DataError, match="imagefolder root flowers is not a folder"):
        load_dataset("imagefolder", root="flowers", image_size=4)
    monkeypatch.setenv("DISTILLSCOPE_DATA", str(data))
    train = load_dataset("imagefolder", root="flowers", image_size=4)
    assert train.info.class_names == ["rose", "tulip"] and len(train) == 3
    assert train.info.source == str(data / "flowers" / "train")
    # a folder of that name in the working directory comes first
    write_tree(cwd / "flowers", {"daisy": 1, "iris": 1})
    assert load_dataset("imagefolder", root="flowers", image_size=4).info.class_names == [
        "daisy",
        "iris",
    ]
    monkeypatch.setenv("DISTILLSCOPE_DATA", str(data / "flowers"))
    assert len(load_dataset("imagefolder", "test", image_size=4)) == 2  # no root: the tree
    with pytest.raises(DataError, match=r"looked in: nope, .*flowers/nope"):
        load_dataset("imagefolder", root="nope", image_size=4)


def test_a_run_reads_an_imagefolder_under_distillscope_data(tmp_path, monkeypatch):
    write_tree(tmp_path / "data" / "shapes" / "train", {"a": 2, "b": 2})
    write_tree(tmp_path / "data" / "shapes" / "test", {"a": 1, "b": 1})
    monkeypatch.setenv("DISTILLSCOPE_DATA", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    cfg = load_config_dict({"data": {"name": "imagefolder", "root": "shapes",
                                     "params": {"image_size": 4}}})  # fmt: skip
    splits = load_splits(cfg)
    assert (len(splits.train), len(splits.test)) == (4, 2)


def folder_config(root: Path) -> dict:
    return {"data": {"name": "imagefolder", "root": str(root), "params": {"image_size": 4}}}


def test_a_flat_imagefolder_run_warns_that_it_holds_out_the_training_images(tmp_path, capsys):
    write_tree(tmp_path / "flat", {"a": 2, "b": 2})
    splits = load_splits(load_config_dict(folder_config(tmp_path / "flat")))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "warning" in line]
    assert len(lines) == 1 and "training images" in lines[0], err
    assert splits.test.shares_training_images and not splits.train.shares_training_images
    # split folders: no warning
    write_tree(tmp_path / "split" / "train", {"a": 2, "b": 2})
    write_tree(tmp_path / "split" / "test", {"a": 1, "b": 1})
    splits = load_splits(load_config_dict(folder_config(tmp_path / "split")))
    assert "warning" not in capsys.readouterr().err and not splits.test.shares_training_images


@pytest.mark.parametrize(
    ("trees", "split"),
    [
        ({"": {"only": 3}}, "train"),  # flat, one class folder
        ({"train": {"a": 2, "b": 2}, "test": {"a": 2}}, "test"),  # held-out split of one class
    ],
)
def test_a_split_of_one_class_is_refused_before_anything_is_written(tmp_path, capsys, trees, split):
    for sub, classes in trees.items():
        write_tree(tmp_path / "data" / sub, classes)
    cfg = {
        **folder_config(tmp_path / "data"),
        "name": "one",
        "teacher": {"model": {"name": "mlp"}},
        "student": {"name": "mlp"},
        "students": {"independent": {"loss": "ce"}},
        "teacher_store": str(tmp_path / "store"),
        "progress": False,
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    code = main(["run", str(tmp_path / "c.yaml"), "--output-dir", str(tmp_path / "out")])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, lines
    assert f"the {split} split of imagefolder (data) holds one class only" in lines[0]
    assert "at least 2 classes" in lines[0]
    assert not (tmp_path / "out").exists() and not (tmp_path / "store").exists()


# --- RandomCropFlip -----------------------------------------------------------------------


def test_crop_without_padding_or_flip_is_identity():
    x = torch.randn(4, 3, 5, 5)
    assert torch.equal(RandomCropFlip(0)(x), x)


def test_every_output_is_a_shifted_possibly_flipped_window():
    torch.manual_seed(0)
    x = torch.randn(64, 2, 6, 6)
    out = RandomCropFlip(2, flip=True, fill=(-5.0, -7.0))(x)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    padded[:, 0][padded[:, 0] == 0] = -5.0
    padded[:, 1][padded[:, 1] == 0] = -7.0
    flips, shifts = 0, set()
    for b in range(64):
        windows = {
            (dy, dx, f): padded[b, :, dy : dy + 6, dx : dx + 6].flip(-1) if f else
            padded[b, :, dy : dy + 6, dx : dx + 6]
            for dy in range(5) for dx in range(5) for f in (False, True)
        }  # fmt: skip
        match = [key for key, w in windows.items() if torch.equal(w, out[b])]
        assert match, f"image {b} is not a window of its padded input"
        flips += match[0][2]
        shifts.add(match[0][:2])
    assert 16 < flips < 48 and len(shifts) > 10


def test_augmentation_follows_the_global_seed():
    aug = RandomCropFlip(4, flip=True, fill=(0.0, 0.0, 0.0))
    x = torch.randn(8, 3, 16, 16)
    torch.manual_seed(3)
    a = aug(x)
    torch.manual_seed(3)
    assert torch.equal(aug(x), a)
    assert not torch.equal(aug(x), a)
