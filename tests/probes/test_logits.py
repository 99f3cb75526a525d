"""The run's cache of clean logits: read back only for the same model, weights and batch."""

from __future__ import annotations

import torch
from torch import nn

from distillscope.probes.logits import LogitCache


class Counted(nn.Module):
    """A linear layer that counts its forward passes."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.linear = nn.Linear(3, 4)
        self.dropout = nn.Dropout(0.5)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.dropout(self.linear(x))


def batch(seed: int = 0) -> torch.Tensor:
    return torch.randn(5, 3, generator=torch.Generator().manual_seed(seed))


def test_a_batch_seen_before_is_read_back_without_a_forward_pass() -> None:
    cache, a, b, x = LogitCache(), Counted(0).eval(), Counted(1).eval(), batch()
    first = cache.logits({"a": a, "b": b}, "k", x)
    again = cache.logits({"b": b, "a": a}, "k", x)
    assert (a.calls, b.calls, cache.hits) == (1, 1, 2)
    assert list(again) == ["b", "a"]  # in the order asked
    with torch.no_grad():
        assert torch.equal(again["a"], a.linear(x)) and torch.equal(again["b"], first["b"])
    assert cache.nbytes == 2 * 5 * 4 * 4


def test_another_batch_key_is_computed() -> None:
    cache, a = LogitCache(), Counted().eval()
    cache.logits({"a": a}, "first", batch(0))
    z = cache.logits({"a": a}, "second", batch(1))["a"]
    assert a.calls == 2 and cache.hits == 0
    with torch.no_grad():
        assert torch.equal(z, a.linear(batch(1)))


def test_changed_weights_are_run_again() -> None:
    cache, a, x = LogitCache(), Counted().eval(), batch()
    before = cache.logits({"a": a}, "k", x)["a"]
    with torch.no_grad():
        a.linear.weight.add_(1.0)  # in place, like an optimizer step
    after = cache.logits({"a": a}, "k", x)["a"]
    assert a.calls == 2 and cache.hits == 0
    with torch.no_grad():
        assert torch.equal(after, a.linear(x)) and not torch.equal(after, before)
    cache.logits({"a": a}, "k", x)
    assert a.calls == 2 and cache.nbytes == 5 * 4 * 4  # the stale entry was replaced


def test_a_model_in_training_mode_is_never_kept() -> None:
    cache, a, x = LogitCache(), Counted(), batch()  # training mode: dropout is random
    cache.logits({"a": a}, "k", x)
    cache.logits({"a": a}, "k", x)
    assert a.calls == 2 and cache.hits == 0 and cache.nbytes == 0


def test_another_model_object_with_equal_weights_is_run() -> None:
    cache, x = LogitCache(), batch()
    a, twin = Counted(0).eval(), Counted(0).eval()
    cache.logits({"a": a}, "k", x)
    cache.logits({"a": twin}, "k", x)
    assert twin.calls == 1 and cache.hits == 0


def test_beyond_the_budget_logits_are_computed_and_not_kept() -> None:
    cache, a, x = LogitCache(budget_mb=0), Counted().eval(), batch()
    z = cache.logits({"a": a}, "k", x)["a"]
    cache.logits({"a": a}, "k", x)
    assert a.calls == 2 and cache.nbytes == 0
    with torch.no_grad():
        assert torch.equal(z, a.linear(x))


def test_changing_returned_logits_does_not_change_the_kept_ones() -> None:
    cache, a, x = LogitCache(), Counted().eval(), batch()
    cache.logits({"a": a}, "k", x)["a"].zero_()
    cache.logits({"a": a}, "k", x)["a"].fill_(7.0)
    with torch.no_grad():
        assert torch.equal(cache.logits({"a": a}, "k", x)["a"], a.linear(x))
