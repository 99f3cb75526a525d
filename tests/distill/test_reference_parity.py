"""Parity with the reference implementations named in each term's docstring (issue 18).

Each reference's computation is written out here from the formula read in its code (RepDistiller
for CC, CRD's sampler and SP's layer; the FT authors' code and torchdistill for FT; the Tf-KD
authors' code for Tf-KD_reg) and compared with our term on identical inputs and weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn

from distillscope.contracts import Batch, Outputs
from distillscope.distill import create_loss
from distillscope.distill.base import BindContext
from distillscope.errors import ConfigError
from distillscope.functional.feature_transfer import factor_transfer_loss
from distillscope.functional.relation import contrast_draws
from distillscope.models.resnet_cifar import ResNetCifar

CONFIGS = Path(__file__).parents[2] / "configs" / "methods"
PAIRED = {"student_layer": "s", "teacher_layer": "t"}


def randn(seed: int, *shape: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def bound(name: str, s: Tensor, t: Tensor, labels: Tensor | None = None, **params: object):
    """``name`` bound on features ``s`` / ``t`` (as the trainer would, labels included)."""
    term = create_loss(name, **PAIRED, **params)
    b = s.shape[0]
    batch = Batch(torch.zeros(b, 1), torch.zeros(b, dtype=torch.long), torch.arange(b))
    student, teacher = Outputs(torch.zeros(b, 3), {"s": s}), Outputs(torch.zeros(b, 3), {"t": t})
    n = b if labels is None else len(labels)
    term.bind(BindContext(nn.Identity(), nn.Identity(), batch, student, teacher, n, 3, labels))
    return term.double(), student, teacher, batch


# --------------------------------------------------------------------------------------- cc
def repdistiller_cc(f_s: Tensor, f_t: Tensor, lin_s: nn.Linear, lin_t: nn.Linear) -> Tensor:
    """RepDistiller's CC: ``LinearEmbed`` heads (a linear layer on the flattened feature, no
    normalisation) and ``Correlation``: ``mean_i sum_k |d_i| * |d_i+1|`` of ``d = e_s - e_t``."""
    e_s = f_s.reshape(len(f_s), -1) @ lin_s.weight.T + lin_s.bias
    e_t = f_t.reshape(len(f_t), -1) @ lin_t.weight.T + lin_t.bias
    delta = (e_s - e_t).abs()
    return (delta[:-1] * delta[1:]).sum(dim=1).mean()


def test_cc_default_is_repdistillers_loss_on_the_same_heads() -> None:
    s, t = randn(0, 6, 10), randn(1, 6, 12)
    term, student, teacher, batch = bound("cc", s, t)
    assert term.dim == 128 and term.normalize is False  # RepDistiller: feat_dim 128, LinearEmbed
    ours = term(student, teacher, batch)["loss"]
    assert ours.item() == pytest.approx(
        repdistiller_cc(s, t, term.embed_s.linear, term.embed_t.linear).item(), rel=1e-12
    )


def test_cc_normalize_is_ours_and_normalises_the_embeddings() -> None:
    s, t = randn(0, 6, 10), randn(1, 6, 12)
    term, student, teacher, batch = bound("cc", s, t, normalize=True)
    e_s = F.normalize(term.embed_s.linear(s), dim=1)
    e_t = F.normalize(term.embed_t.linear(t), dim=1)
    delta = (e_s - e_t).abs()
    expected = (delta[:-1] * delta[1:]).sum(1).mean()
    ours = term(student, teacher, batch)["loss"]
    assert ours.item() == pytest.approx(expected.item(), rel=1e-12)
    reference = repdistiller_cc(s, t, term.embed_s.linear, term.embed_t.linear)
    assert reference.item() > 5 * ours.item()  # the departure of issue 18: far smaller


# -------------------------------------------------------------------------------------- crd
def repdistiller_negatives(labels: list[int]) -> dict[int, set[int]]:
    """RepDistiller's ``CIFAR100InstanceSample``: ``cls_negative[c]``, every item of the other
    classes, from which the ``k`` negatives of a sample of class ``c`` are drawn."""
    return {c: {i for i, y in enumerate(labels) if y != c} for c in set(labels)}


LABELS = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 3, 0])  # 12 items, 4 classes
INDEX = torch.tensor([0, 4, 5, 9, 11])


def test_crd_default_sampler_is_repdistillers_exact_mode() -> None:
    negatives = repdistiller_negatives(LABELS.tolist())
    torch.manual_seed(0)
    for _ in range(50):
        k = 8  # = the pool of classes 0 (12 - 4 items), so without replacement: all of it
        draws = contrast_draws(INDEX, len(LABELS), k, labels=LABELS)  # the default sampler
        assert draws.shape == (len(INDEX), 1 + k)
        assert draws[:, 0].tolist() == INDEX.tolist()  # exact: the positive is the item itself
        for row, i in zip(draws.tolist(), INDEX.tolist()):
            pool = negatives[int(LABELS[i])]
            assert set(row[1:]) <= pool  # never the sample's class, never the sample
            if len(pool) >= k:  # np.random.choice(cls_negative, k, replace=False)
                assert len(set(row[1:])) == k
    # fewer other-class items than k: with replacement, still only other classes
    draws = contrast_draws(INDEX, len(LABELS), 30, labels=LABELS)
    for row, i in zip(draws.tolist(), INDEX.tolist()):
        assert set(row[1:]) <= negatives[int(LABELS[i])]


def test_crd_exact_draws_reach_every_other_class_item_uniformly() -> None:
    torch.manual_seed(1)
    index = torch.tensor([0])  # class 0: 8 items of other classes
    counts = torch.zeros(len(LABELS))
    for _ in range(2000):
        counts += torch.bincount(contrast_draws(index, 12, 2, labels=LABELS)[0, 1:], minlength=12)
    other = LABELS != 0
    assert counts[~other].sum() == 0
    share = counts[other] / counts.sum()  # 1/8 each
    assert torch.allclose(share, torch.full_like(share, 1 / 8), atol=0.02)


def test_crd_relax_mode_draws_the_positive_from_the_samples_class() -> None:
    torch.manual_seed(2)
    seen = set()
    for _ in range(200):
        draws = contrast_draws(INDEX, len(LABELS), 4, sampler="relax", labels=LABELS)
        assert (LABELS[draws[:, 0]] == LABELS[INDEX]).all()
        assert (LABELS[draws[:, 1:]] != LABELS[INDEX].unsqueeze(1)).all()
        seen.add(int(draws[0, 0]))
    assert seen == {0, 3, 6, 11}  # any item of class 0, the sample itself included


def test_crd_uniform_sampler_is_ours_and_the_old_draw() -> None:
    torch.manual_seed(3)
    draws = contrast_draws(INDEX, 12, 500, sampler="uniform")
    torch.manual_seed(3)
    old = torch.randint(0, 12, (len(INDEX), 501))  # the draw before issue 18
    old[:, 0] = INDEX
    assert torch.equal(draws, old)
    assert (LABELS[draws[:, 1:]] == LABELS[INDEX].unsqueeze(1)).any()  # own class included


def test_crd_term_draws_with_the_training_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    from distillscope.distill import contrastive

    seen: list[Tensor] = []

    def spy(*args: object, **kwargs: object) -> Tensor:
        draws = contrast_draws(*args, **kwargs)  # type: ignore[arg-type]
        seen.append(draws)
        return draws

    monkeypatch.setattr(contrastive, "contrast_draws", spy)
    s, t = randn(0, 12, 5), randn(1, 12, 7)
    term, student, teacher, _ = bound("crd", s, t, LABELS, negatives=4)
    assert term.sampler == "exact" and torch.equal(term.labels, LABELS)
    assert "labels" not in term.state_dict()  # rebuilt by every bind, not checkpointed
    batch = Batch(torch.zeros(5, 1), LABELS[INDEX], INDEX)
    sub = (Outputs(student.logits[:5], {"s": s[:5]}), Outputs(teacher.logits[:5], {"t": t[:5]}))
    for _ in range(20):
        term(*sub, batch)
    for draws in seen:
        assert draws[:, 0].tolist() == INDEX.tolist()
        assert (LABELS[draws[:, 1:]] != LABELS[INDEX].unsqueeze(1)).all()


def test_crd_class_samplers_refuse_without_labels_or_with_one_class() -> None:
    s, t = randn(0, 4, 5), randn(1, 4, 7)
    with pytest.raises(ConfigError, match="sampler: uniform"):
        bound("crd", s, t)
    with pytest.raises(ConfigError, match="one class"):
        bound("crd", s, t, torch.zeros(4, dtype=torch.long))
    term = bound("crd", s, t, sampler="uniform")[0]  # ours needs no labels
    assert term.sampler == "uniform"


# --------------------------------------------------------------------------------------- sp
def repdistiller_sp(f_s: Tensor, f_t: Tensor) -> Tensor:
    """RepDistiller's ``Similarity``: ``G = f f^T`` of the flattened feature, rows L2-normalised,
    ``sum((G_t - G_s)^2) / B^2``."""
    b = len(f_s)
    g_s = F.normalize(f_s.reshape(b, -1) @ f_s.reshape(b, -1).T)
    g_t = F.normalize(f_t.reshape(b, -1) @ f_t.reshape(b, -1).T)
    return ((g_t - g_s) ** 2).sum() / (b * b)


@pytest.mark.parametrize("path", ["sp.yaml", "compare.yaml"])
def test_sp_configs_tap_the_last_stages_map_as_repdistiller(path: str) -> None:
    spec = yaml.safe_load((CONFIGS / path).read_text())["students"]["sp"]["loss"]["sp"]
    # RepDistiller's train_student.py applies SP to feat[-2]: the last stage's map before pooling
    last_stage = ResNetCifar(num_classes=10, depth=8).feature_layers[-2]
    assert last_stage == "layer3"
    assert spec == {"weight": 3000, "student_layer": last_stage, "teacher_layer": last_stage}


def test_sp_on_feature_maps_is_repdistillers_loss() -> None:
    s, t = randn(0, 5, 4, 3, 3), randn(1, 5, 8, 2, 2)
    out = create_loss("sp", **PAIRED)(Outputs(torch.zeros(5, 3), {"s": s}),
                                      Outputs(torch.zeros(5, 3), {"t": t}), None)  # fmt: skip
    assert out["loss"].item() == pytest.approx(repdistiller_sp(s, t).item(), rel=1e-12)


# --------------------------------------------------------------------------------------- ft
def test_ft_loss_is_the_ft_authors_and_torchdistills_not_repdistillers() -> None:
    code_s, code_t = randn(0, 4, 6, 3, 3), randn(1, 4, 6, 3, 3)
    ours = factor_transfer_loss(code_s, code_t)
    # the authors: nn.L1Loss()(FT(s), FT(t)) with FT(x) = F.normalize(x.view(B, -1))
    authors = nn.L1Loss()(F.normalize(code_s.view(4, -1)), F.normalize(code_t.view(4, -1)))
    # torchdistill's FTLoss(p=1, reduction='mean'): x / ||x|| of the flattened outputs, l1 mean
    flat_s, flat_t = code_s.flatten(1), code_t.flatten(1)
    torchdistill = F.l1_loss(flat_s / flat_s.norm(dim=1, keepdim=True),
                             flat_t / flat_t.norm(dim=1, keepdim=True))  # fmt: skip
    # RepDistiller's FactorTransfer (p1 = 2, p2 = 1): the factor is the channel mean of x^2
    rep = lambda x: F.normalize(x.pow(2).mean(1).view(len(x), -1))  # noqa: E731
    repdistiller = (rep(code_s) - rep(code_t)).abs().mean()
    assert ours.item() == pytest.approx(authors.item(), rel=1e-12)
    assert ours.item() == pytest.approx(torchdistill.item(), rel=1e-12)
    assert ours.item() != pytest.approx(repdistiller.item(), rel=1e-3)  # as the docstring says


# ------------------------------------------------------------------------------------ tf_kd
def authors_tf_kd_reg(z: Tensor, y: Tensor, alpha: float, t: float, m: float) -> Tensor:
    """The authors' ``loss_kd_regularization``: ``p_d`` with 0.99 on the true class and the
    rest spread over the other ``K - 1``; ``(1 - alpha) CE + alpha * m * KLDivLoss()`` of
    ``log_softmax(z)`` against ``softmax(p_d / T)``, ``KLDivLoss()`` averaging every element."""
    k = z.shape[1]
    p_d = torch.full_like(z, (1 - 0.99) / (k - 1))
    for i in range(len(y)):
        p_d[i, y[i]] = 0.99
    target = F.softmax(p_d / t, dim=1)
    kl = (target * (target.log() - F.log_softmax(z, dim=1))).mean()
    return (1 - alpha) * F.cross_entropy(z, y) + alpha * kl * m


def test_tf_kd_defaults_are_the_authors_resnet18_setting() -> None:
    term = create_loss("tf_kd")
    # experiments/base_experiments/base_resnet18/params.json of the authors' repository
    assert (term.alpha, term.temperature, term.multiplier) == (0.1, 20.0, 100.0)
    assert term.correct_prob == 0.99
    z, y = randn(0, 6, 10) * 3, torch.tensor([0, 3, 9, 3, 1, 5])
    ours = term(Outputs(z), None, Batch(torch.zeros(6, 1), y, torch.arange(6)))["loss"]
    assert ours.item() == pytest.approx(authors_tf_kd_reg(z, y, 0.1, 20.0, 100.0).item(), rel=1e-12)
