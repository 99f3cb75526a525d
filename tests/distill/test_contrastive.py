"""CRD's gather workspace: the same numbers as a fresh gather, and no silent reuse."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from distillscope.contracts import Batch, Outputs
from distillscope.distill import create_loss
from distillscope.distill.base import BindContext
from distillscope.distill.contrastive import ContrastiveRepresentation

N, B = 30, 6


def bound_crd(sampler: str) -> ContrastiveRepresentation:
    gen = torch.Generator().manual_seed(0)
    term = create_loss("crd", student_layer="s", teacher_layer="t", negatives=12, sampler=sampler)
    batch = Batch(torch.zeros(B, 1), torch.zeros(B, dtype=torch.long), torch.arange(B))
    student = Outputs(torch.zeros(B, 3), {"s": torch.randn(B, 5, generator=gen)})
    teacher = Outputs(torch.zeros(B, 3), {"t": torch.randn(B, 7, generator=gen)})
    labels = torch.arange(N) % 3  # three classes
    term.bind(BindContext(nn.Identity(), nn.Identity(), batch, student, teacher, N, 3, labels))
    return term


def fresh_gather(bank: Tensor, draws: Tensor, side: str) -> Tensor:
    return bank[draws]  # (B, 1+K, dim): what the term computed before its workspace


def step(term: nn.Module, seed: int) -> tuple[Tensor, ...]:
    """One training step's loss, its gradients and the banks after the step."""
    gen = torch.Generator().manual_seed(100 + seed)
    s = torch.randn(B, 5, generator=gen, requires_grad=True)
    t = torch.randn(B, 7, generator=gen)  # the teacher's side is detached
    index = torch.randperm(N, generator=gen)[:B]  # (B,)
    batch = Batch(torch.zeros(B, 1), torch.zeros(B, dtype=torch.long), index)
    torch.manual_seed(seed)  # the draws come from the global generator
    out = term(Outputs(torch.zeros(B, 3), {"s": s}), Outputs(torch.zeros(B, 3), {"t": t}), batch)
    params = list(term.parameters())
    grads = torch.autograd.grad(out["loss"], [s, *params])
    return (out["loss"].detach(), *grads, term.bank_student.clone(), term.bank_teacher.clone())


@pytest.mark.parametrize("sampler", ["exact", "uniform"])
def test_workspace_gives_the_fresh_gathers_loss_gradients_and_banks_bit_for_bit(
    sampler: str,
) -> None:
    ours = bound_crd(sampler)
    plain = copy.deepcopy(ours)
    plain._gather = fresh_gather  # type: ignore[method-assign]
    for seed in range(3):  # the workspace is reused from the second step on
        got, expected = step(ours, seed), step(plain, seed)
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            assert torch.equal(a, b)
    assert set(ours._rows) == {"z_student", "z_teacher"}
    assert ours._rows["z_student"].shape == (B * 13, 128)  # (B (1+K), dim)
    assert copy.deepcopy(ours)._rows == {}  # a copy leaves the workspace behind


def test_a_stale_graph_refuses_its_backward_and_eval_mode_frees_the_workspace() -> None:
    term = bound_crd("exact")
    first = step_loss(term, 0)
    step_loss(term, 1)  # overwrites the rows the first graph saved
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        first.backward()
    term.eval()
    assert term._rows == {}
    step_loss(term, 2)
    assert term._rows == {}  # eval passes gather afresh


def step_loss(term: nn.Module, seed: int) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    s, t = torch.randn(B, 5, generator=gen), torch.randn(B, 7, generator=gen)
    batch = Batch(torch.zeros(B, 1), torch.zeros(B, dtype=torch.long), torch.arange(B))
    out = term(Outputs(torch.zeros(B, 3), {"s": s}), Outputs(torch.zeros(B, 3), {"t": t}), batch)
    return out["loss"]
