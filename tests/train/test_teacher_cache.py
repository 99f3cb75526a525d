"""The teacher cache: outputs computed once, looked up by dataset index."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from distillscope.contracts import Batch
from distillscope.errors import CheckpointError, ConfigError, ModelError
from distillscope.train.checkpoint import save_model
from distillscope.train.teacher_cache import TeacherCache, cache_allowed
from tests.train.tiny_train_parts import TinyNet, make_data


def batch_of(data, index: list[int]) -> Batch:
    idx = torch.tensor(index)
    return Batch(data.inputs[idx], data.targets[idx], idx)


def test_cache_equals_running_the_teacher_in_eval_mode() -> None:
    data = make_data(30)
    teacher = TinyNet(dropout=0.5)
    teacher.train()
    cache = TeacherCache.build(teacher, data, batch_size=7, device="cpu", progress=False)
    assert teacher.training  # mode restored
    batch = batch_of(data, [29, 3, 3, 17, 0])
    teacher.eval()
    with torch.no_grad():
        expected = teacher(batch.inputs)
    got = cache.outputs(batch).logits
    assert cache.logits.shape == (30, 3)
    assert torch.allclose(got, expected, atol=1e-6)


def test_cached_features_match_hooks_and_bad_path_fails() -> None:
    data = make_data(12)
    teacher = TinyNet().eval()
    cache = TeacherCache.build(teacher, data, 5, "cpu", feature_paths=["act"], progress=False)
    batch = batch_of(data, [4, 11])
    with torch.no_grad():
        hidden = F.relu(teacher.fc1(batch.inputs))  # (2, 16)
    assert torch.allclose(cache.outputs(batch).features["act"], hidden, atol=1e-6)
    with pytest.raises(ModelError, match="no module 'fc3'.*valid paths: ") as err:
        TeacherCache.build(teacher, data, 5, "cpu", feature_paths=["fc3"], progress=False)
    listed = str(err.value).split("valid paths: ")[1]  # close matches first (models.taps)
    assert all(path in listed for path in ("fc1", "act", "drop", "fc2"))


def test_cached_tensors_work_in_autograd_losses() -> None:
    data = make_data(8)
    cache = TeacherCache.build(TinyNet(), data, 4, "cpu", progress=False)
    student_logits = torch.zeros(8, 3, requires_grad=True)
    target = F.softmax(cache.outputs(batch_of(data, list(range(8)))).logits, 1)
    F.kl_div(F.log_softmax(student_logits, 1), target, reduction="batchmean").backward()
    assert not cache.logits.is_inference() and student_logits.grad is not None


def test_augmented_data_is_cached_without_augmentation() -> None:
    data = make_data(10, augmented=True)
    teacher = TinyNet().eval()
    cache = TeacherCache.build(teacher, data, 4, "cpu", progress=False)
    with torch.no_grad():
        clean = teacher(data.inputs)
    assert torch.allclose(cache.logits, clean, atol=1e-6)


def test_cache_allowed_rules() -> None:
    assert cache_allowed(make_data(4))
    assert not cache_allowed(make_data(4, augmented=True))
    assert cache_allowed(make_data(4, augmented=True), frozen=True)


def test_save_load_roundtrip(tmp_path: Path) -> None:
    data = make_data(9)
    cache = TeacherCache.build(TinyNet(), data, 4, "cpu", feature_paths=["fc1"], progress=False)
    cache.save(tmp_path / "cache.safetensors")
    back = TeacherCache.load(tmp_path / "cache.safetensors")
    assert torch.equal(back.logits, cache.logits)
    assert torch.equal(back.features["fc1"], cache.features["fc1"])


def test_loading_a_model_file_as_cache_fails(tmp_path: Path) -> None:
    save_model(tmp_path / "m.safetensors", TinyNet())
    with pytest.raises(CheckpointError, match="no teacher cache in it"):
        TeacherCache.load(tmp_path / "m.safetensors")


def test_check_rejects_other_dataset_and_missing_features() -> None:
    cache = TeacherCache.build(TinyNet(), make_data(9), 4, "cpu", progress=False)
    with pytest.raises(ConfigError, match="holds 9 items but the training set has 10"):
        cache.check(make_data(10))
    with pytest.raises(ConfigError, match="teacher feature 'act'.*feature_paths=\\['act'\\]"):
        cache.check(make_data(9), ["act"])


def test_check_rejects_a_cache_of_other_data_of_the_same_size(tmp_path: Path) -> None:
    data = make_data(9)
    other = make_data(9)
    other.inputs[8] += 1.0  # one item changed
    cache = TeacherCache.build(TinyNet(), data, 4, "cpu", progress=False)
    cache.check(data)
    with pytest.raises(ConfigError, match="built on other data"):
        cache.check(other)
    cache.save(tmp_path / "cache.safetensors")  # the record survives a save and a load
    back = TeacherCache.load(tmp_path / "cache.safetensors")
    assert back.data == cache.data == data.fingerprint()
    with pytest.raises(ConfigError, match="built on other data"):
        back.check(other)
    back.to("cpu").check(data)
