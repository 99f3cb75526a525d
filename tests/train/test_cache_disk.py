"""Teacher caches on disk: the same rows as in memory, built once and reused, keyed by the
teacher's weights, the data and the features read, nothing half-written, damaged ones rebuilt."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from distillscope.contracts import Batch
from distillscope.train.cache_disk import disk_key, open_disk_cache
from distillscope.train.teacher_cache import TeacherCache
from tests.train.tiny_train_parts import TinyNet, make_data


class Counting(nn.Module):
    """A teacher that counts its forward passes."""

    def __init__(self) -> None:
        super().__init__()
        self.net = TinyNet(hidden=16, seed=2)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.net(x)


def expected(teacher: Counting, data) -> torch.Tensor:
    """The teacher's logits on the first 3 items, in eval mode (dropout off)."""
    teacher.net.eval()
    with torch.no_grad():
        return teacher.net(data.inputs[:3])


def disk(teacher: nn.Module, data, folder: Path, paths=("net.act",)) -> TeacherCache:
    return TeacherCache.on_disk(teacher, data, folder, batch_size=16, device="cpu",
                                feature_paths=list(paths), progress=False)  # fmt: skip


def batch(data, index: list[int]) -> Batch:
    idx = torch.tensor(index)
    return Batch(data.inputs[idx], data.targets[idx], idx)


def test_a_disk_cache_gives_the_rows_of_the_memory_cache(tmp_path: Path) -> None:
    data, teacher = make_data(50), Counting()
    memory = TeacherCache.build(teacher, data, 16, "cpu", ["net.act"], progress=False)
    on_disk = disk(teacher, data, tmp_path / "c")
    assert on_disk.folder == tmp_path / "c" and memory.folder is None
    for index in ([0, 1, 2], [49, 7, 7, 30]):
        a, b = memory.outputs(batch(data, index)), on_disk.outputs(batch(data, index))
        assert torch.equal(a.logits, b.logits)
        assert torch.equal(a.features["net.act"], b.features["net.act"])
    assert on_disk.data == data.fingerprint()
    on_disk.check(data, ["net.act"])  # covers the data and the features


def test_it_is_built_once_and_reused_without_running_the_teacher(tmp_path: Path) -> None:
    data, teacher = make_data(40), Counting()
    disk(teacher, data, tmp_path / "c")
    built = teacher.calls
    again = disk(teacher, data, tmp_path / "c")
    assert teacher.calls == built > 0  # opened, not rebuilt
    assert [p.name for p in tmp_path.iterdir()] == ["c"]  # no temporary folder left
    assert torch.allclose(again.logits[:3], expected(teacher, data), atol=1e-6)


def test_a_damaged_cache_is_built_again(tmp_path: Path) -> None:
    data, teacher = make_data(40), Counting()
    folder = tmp_path / "c"
    disk(teacher, data, folder)
    record = json.loads((folder / "cache.json").read_text())
    for damage in ("array", "record"):
        if damage == "array":
            (folder / record["arrays"]["logits"]).write_bytes(b"not numpy")
        else:
            (folder / "cache.json").write_text("{broken")
        assert open_disk_cache(folder) is None
        calls = teacher.calls
        rebuilt = disk(teacher, data, folder)
        assert teacher.calls > calls and open_disk_cache(folder) is not None
        assert torch.allclose(rebuilt.logits[:3], expected(teacher, data), atol=1e-6)


def test_the_key_follows_weights_data_and_features() -> None:
    a, b = TinyNet(hidden=16, seed=2), TinyNet(hidden=16, seed=3)
    base = disk_key(a, "data1", ["x"], [])
    assert base == disk_key(TinyNet(hidden=16, seed=2), "data1", ["x"], [])
    others = {
        disk_key(b, "data1", ["x"], []),
        disk_key(a, "data2", ["x"], []),
        disk_key(a, "data1", ["y"], []),
        disk_key(a, "data1", ["x"], ["e2kd(...)"]),
    }
    assert base not in others and len(others) == 4
