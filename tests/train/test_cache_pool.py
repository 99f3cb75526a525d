"""The cache pool's build batch: 128 on the CPU, and the rows do not depend on it."""

from __future__ import annotations

import pytest
import torch

from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.distill import build_loss
from distillscope.models import create_model
from distillscope.train import cache_pool
from distillscope.train.cache_pool import CachePool, build_batch
from distillscope.train.teacher_cache import TeacherCache


def image_data(n: int) -> TensorDataset:
    """``n`` random 1x28x28 images in 3 classes."""
    g = torch.Generator().manual_seed(0)
    info = DatasetInfo("noise28", 3, (1, 28, 28), ["a", "b", "c"])
    return TensorDataset(torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % 3, info)


def test_build_batch_is_128_on_the_cpu_and_512_elsewhere() -> None:
    assert build_batch(torch.device("cpu")) == 128
    assert build_batch(torch.device("cuda")) == 512
    assert build_batch(torch.device("meta")) == 512


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_pool_builds_at_the_cpu_batch_with_the_rows_of_a_build_at_512(
    precision: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch moved from 512 to 128 on the CPU (faster); the stored rows are the same bit
    for bit, so no run's numbers moved."""
    data = image_data(300)  # three batches of 128 (the last one short)
    torch.manual_seed(0)
    teacher = create_model("resnet8", num_classes=3, in_channels=1)
    batches: list[int] = []
    build = TeacherCache.build

    def spy(*args, **kwargs) -> TeacherCache:
        batches.append(kwargs["batch_size"])
        return build(*args, **kwargs)

    monkeypatch.setattr(cache_pool.TeacherCache, "build", spy)
    pool = CachePool(64, torch.device("cpu"), progress=False)
    cache = pool.get("kd", "auto", "teacher", teacher, data, [build_loss({"kd": {}})], precision)
    assert cache is not None and batches == [128]
    at_512 = build(teacher, data, 512, "cpu", progress=False, precision=precision)
    assert torch.equal(cache.logits, at_512.logits)
