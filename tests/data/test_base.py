"""The batch loader's sharding for data-parallel ranks (``iter_batches(shard=...)``)."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DistributedSampler

from distillscope.data.base import (
    DatasetInfo,
    DistillDataset,
    TensorDataset,
    iter_batches,
    rank_share,
    share_weight,
)

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
