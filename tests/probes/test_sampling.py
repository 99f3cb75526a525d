"""The shared sample choice, batching and eval-mode handling of every probe."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distillscope.checks import check_int, check_positive
from distillscope.data.base import DistillDataset
from distillscope.errors import ConfigError, DataError
from distillscope.probes.base import ProbeData
from distillscope.probes.sampling import (
    evaluating,
    forward_all,
    probe_batches,
    probe_logits,
    probe_samples,
    sample_indices,
)
from distillscope.probes.task import AccuracyProbe


def test_sample_indices_are_a_seeded_prefix_without_repeats() -> None:
    a = sample_indices(100, 10, seed=1)
    assert len(set(a.tolist())) == 10
    assert torch.equal(
        sample_indices(100, 20, seed=1)[:10], a
    )  # more samples extend, not reshuffle
    assert not torch.equal(sample_indices(100, 10, seed=2), a)
    assert len(sample_indices(5, 10, seed=0)) == 5


def test_probe_batches_cover_the_chosen_samples_in_order(point_data) -> None:
    probe = AccuracyProbe(batch_size=4, max_samples=10, seed=7)
    batches = list(probe_batches(probe, point_data))
    assert [len(b) for b in batches] == [4, 4, 2]
    idx = sample_indices(30, 10, seed=7)
    got = torch.cat([b.inputs for b in batches])
    torch.testing.assert_close(got, point_data.dataset.inputs[idx])


def test_lazy_datasets_give_the_same_samples(point_data) -> None:
    class Lazy(DistillDataset):  # a dataset not held in memory
        info = point_data.info

        def __len__(self) -> int:
            return len(point_data.dataset)

        def __getitem__(self, i):
            return point_data.dataset[i]

    lazy = ProbeData(Lazy(), point_data.info)
    eager = probe_samples(point_data, 10, 3)
    view = probe_samples(lazy, 10, 3)
    torch.testing.assert_close(torch.stack([view[i][0] for i in range(10)]), eager.inputs)


def test_empty_dataset_raises(point_data) -> None:
    empty = ProbeData(point_data.dataset.subset([]), point_data.info)
    with pytest.raises(DataError, match="empty"):
        probe_samples(empty, 10, 0)


def test_evaluating_sets_eval_and_restores_each_module() -> None:
    net = nn.Sequential(nn.Dropout(0.5), nn.Dropout(0.5))
    net.train()
    net[1].eval()
    with evaluating({"m": net}, ["m"], "cpu") as active:
        assert not any(m.training for m in active["m"].modules())
    assert [m.training for m in net.modules()] == [True, True, False]


def test_parameter_checks() -> None:
    assert check_int("x", 3) == 3
    assert check_positive("x", 2) == 2.0
    for bad in (0, 1.5, True, "3"):
        with pytest.raises(ConfigError, match="x="):
            check_int("x", bad)
    for bad in (0, -1.0, float("inf"), float("nan"), None):
        with pytest.raises(ConfigError, match="x="):
            check_positive("x", bad)


def test_progress_bar_counts_the_probe_batches(image_data, capsys) -> None:
    from distillscope.probes import create_probe
    from distillscope.probes.sampling import probe_batches

    probe = create_probe("accuracy", batch_size=10, max_samples=24)
    assert len(list(probe_batches(probe, image_data))) == 3
    assert "accuracy" not in capsys.readouterr().err  # off by default
    probe.progress = True
    assert len(list(probe_batches(probe, image_data))) == 3
    assert "accuracy" in capsys.readouterr().err


def test_probe_logits_are_the_forward_pass_read_back_for_the_same_batches(point_data) -> None:
    torch.manual_seed(0)
    net = nn.Linear(2, 3).eval()
    calls = []
    net.register_forward_hook(lambda *_: calls.append(1))
    probe = AccuracyProbe(batch_size=4, max_samples=10, seed=7)
    first = list(probe_logits(probe, point_data, {"net": net}))
    assert len(calls) == 3  # batches of 4, 4, 2
    for (batch, logits), plain in zip(first, probe_batches(probe, point_data), strict=True):
        assert torch.equal(batch.inputs, plain.inputs)
        assert torch.equal(logits["net"], forward_all({"net": net}, plain.inputs)["net"])
    calls.clear()
    more = AccuracyProbe(batch_size=4, max_samples=30, seed=7)  # same first 10 samples, then more
    again = [z["net"] for _, z in probe_logits(more, point_data, {"net": net})]
    assert len(calls) == 6 and point_data.logits.hits == 2  # batches 1-2 read, 3 (of 4) and 4-8 run
    assert all(torch.equal(a, b["net"]) for a, (_, b) in zip(again[:2], first[:2], strict=True))
    calls.clear()
    list(probe_logits(AccuracyProbe(batch_size=4, max_samples=10, seed=8), point_data,
                      {"net": net}))  # fmt: skip
    assert len(calls) == 3  # another seed draws other samples


def test_probe_logits_of_augmented_data_are_never_reused(point_data) -> None:
    net = nn.Linear(2, 3).eval()
    point_data.dataset.augmented = True  # random per read: each probe sees other inputs
    probe = AccuracyProbe(batch_size=8, max_samples=16)
    for _ in range(2):
        list(probe_logits(probe, point_data, {"net": net}))
    assert point_data.logits.hits == 0 and point_data.logits.nbytes == 0
