"""The batch loader: sharding for data-parallel ranks (``iter_batches(shard=...)``), loader
workers and pinned batches."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DistributedSampler

from distillscope.data.base import (
    DatasetInfo,
    DistillDataset,
    TensorDataset,
    gather,
    iter_batches,
    rank_share,
    share_weight,
)
from distillscope.errors import ConfigError

INFO = DatasetInfo("toy", 2, (1,), ["a", "b"])


def numbered(n: int) -> TensorDataset:
    """Item ``i`` holds the value ``i`` (so inputs name their index)."""
    return TensorDataset(torch.arange(n, dtype=torch.float32)[:, None], torch.zeros(n), INFO)


class Listed(DistillDataset):
    """The same items behind ``__getitem__`` (the DataLoader path of iter_batches)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.info = INFO

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return torch.tensor([float(i)]), torch.tensor(0), i


def epoch(data: DistillDataset, batch: int, rank: int, ranks: int, seed: int = 4) -> list:
    generator = torch.Generator().manual_seed(seed)
    return [b.index.tolist() for b in iter_batches(data, batch, True, generator,
                                                   shard=(rank, ranks))]  # fmt: skip


@pytest.mark.parametrize(("n", "batch", "ranks"), [(48, 8, 2), (45, 8, 2), (50, 12, 4), (7, 6, 3)])
def test_every_item_is_seen_exactly_once_per_epoch_across_the_ranks(n, batch, ranks) -> None:
    shares = [epoch(numbered(n), batch, r, ranks) for r in range(ranks)]
    whole = epoch(numbered(n), batch, 0, 1)
    assert all(len(s) == len(whole) for s in shares)  # every rank steps as often
    for b, items in enumerate(whole):
        real = [i for r in range(ranks) for i in shares[r][b][: len(items[r::ranks])]]
        assert sorted(real) == sorted(items)  # the shares of batch b partition it


def test_shares_are_the_distributed_samplers_batches_of_the_same_order() -> None:
    n, batch, ranks = 48, 8, 2
    order = torch.randperm(n, generator=torch.Generator().manual_seed(4)).tolist()
    for rank in range(ranks):
        sampler = DistributedSampler(order, num_replicas=ranks, rank=rank, shuffle=False)
        dealt = [order[i] for i in sampler]  # order[rank::ranks]
        step = batch // ranks
        expected = [dealt[i : i + step] for i in range(0, len(dealt), step)]
        assert epoch(numbered(n), batch, rank, ranks) == expected


def test_the_dataloader_path_shards_like_the_in_memory_path() -> None:
    for rank in range(2):
        assert epoch(Listed(45), 8, rank, 2) == epoch(numbered(45), 8, rank, 2)
    rows = torch.tensor([5, 1, 3])
    assert [b.index.tolist() for b in iter_batches(Listed(9), 2, rows=rows)] == [[5, 1], [3]]
    assert [b.inputs[:, 0].tolist() for b in iter_batches(numbered(9), 2, rows=rows)] == [
        [5.0, 1.0],
        [3.0],
    ]


def test_a_rank_left_without_items_steps_on_a_stand_in_weighted_zero() -> None:
    assert rank_share(torch.tensor([3, 8]), 2, 3).tolist() == [3]
    assert share_weight(2, 2, 3) == 0.0
    # a short last batch of 5 over 2 ranks: 3 and 2 items, weighted so the mean is the batch's
    losses = torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0])  # per-item losses of the global batch
    mean_of_ranks = sum(share_weight(5, r, 2) * losses[r::2].mean() for r in range(2)) / 2
    assert mean_of_ranks.item() == pytest.approx(losses.mean().item())


def test_one_rank_gives_the_unsharded_batches() -> None:
    assert epoch(numbered(20), 6, 0, 1) == [
        b.index.tolist()
        for b in iter_batches(numbered(20), 6, True, torch.Generator().manual_seed(4))
    ]


def test_loader_workers_give_the_same_batches_in_the_same_order() -> None:
    def batches(workers: int) -> list:
        generator = torch.Generator().manual_seed(4)
        out = iter_batches(Listed(45), 8, True, generator, shard=(1, 2), workers=workers)
        return [(b.index.tolist(), b.inputs[:, 0].tolist()) for b in out]

    alone = batches(0)
    assert batches(2) == alone
    seen = [i for idx, _ in alone for i in idx]
    assert len(set(seen)) == len(seen) == 5 * 4 + 2  # rank 1's half of 5 batches of 8 and 1 of 5


def test_workers_refuse_a_dataset_that_augments_as_it_reads() -> None:
    data = Listed(8)
    data.augmented = True
    with pytest.raises(ConfigError, match=r"^train.loader_workers=2 with toy, which augments"):
        next(iter_batches(data, 4, workers=2))
    assert len(list(iter_batches(data, 4))) == 2  # in this process it draws as always


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_pinned_batches_need_cuda() -> None:
    with pytest.raises(ConfigError, match=r"^pinned batches need CUDA"):
        next(iter_batches(numbered(4), 2, pin_memory=True))


def test_gather_without_pinning_is_plain_indexing() -> None:
    values = torch.randn(6, 2, 3)
    idx = torch.tensor([4, 0, 4])
    assert torch.equal(gather(values, idx), values[idx])
