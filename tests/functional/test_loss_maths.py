"""The loss maths moved into ``functional/`` (issue 17) is bit-identical to what the terms computed
inline before: each function against the old inline formula (written out here verbatim) and
against its term's output, on random inputs, values and gradients compared with ``torch.equal``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillscope.contracts import Batch, Outputs
from distillscope.distill import create_loss
from distillscope.distill.base import BindContext
from distillscope.functional import attention as fa
from distillscope.functional import feature_transfer as ff
from distillscope.functional import logit as fl
from distillscope.functional import relation as fr
from distillscope.functional.soft_targets import kd_loss

B, K = 6, 5
DTYPES = [torch.float32, torch.float64]


def rand(seed: int, *shape: int, dtype: torch.dtype = torch.float64, grad: bool = False) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(*shape, generator=g) * 2).to(dtype)
    return x.requires_grad_(grad)


def same(make_new, make_old, leaves: list[Tensor]) -> bool:
    """``make_new()`` and ``make_old()`` give equal values and equal gradients on ``leaves``
    (asserted here, element by element; ``True`` when they do)."""
    new, old = make_new(), make_old()
    news = new if isinstance(new, tuple) else (new,)
    olds = old if isinstance(old, tuple) else (old,)
    for a, b in zip(news, olds, strict=True):
        assert torch.equal(a, b)
    grads_new = torch.autograd.grad(sum(x.sum() for x in news), leaves)
    grads_old = torch.autograd.grad(sum(x.sum() for x in olds), leaves)
    for a, b in zip(grads_new, grads_old, strict=True):
        assert torch.equal(a, b)
    return True


def batch(y: Tensor) -> Batch:
    return Batch(torch.zeros(len(y), 1), y, torch.arange(len(y)))


# -------------------------------------------------------------------------- logit variants
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_bce_loss_is_the_old_inline_formula_and_the_term(dtype, smoothing) -> None:
    z = rand(0, B, K, dtype=dtype, grad=True)
    y = torch.randint(0, K, (B,), generator=torch.Generator().manual_seed(1))

    def old() -> Tensor:
        target = F.one_hot(y, K).to(z.dtype)
        if smoothing:
            target = target * (1.0 - smoothing) + smoothing / K
        return F.binary_cross_entropy_with_logits(z, target)

    assert same(lambda: fl.bce_loss(z, y, smoothing), old, [z])
    term = create_loss("bce", smoothing=smoothing)(Outputs(z), None, batch(y))["loss"]
    assert torch.equal(term, fl.bce_loss(z, y, smoothing))


@pytest.mark.parametrize("dtype", DTYPES)
def test_dkd_parts_are_the_old_inline_formula_and_the_term(dtype) -> None:
    z_s, z_t = rand(0, B, K, dtype=dtype, grad=True), rand(1, B, K, dtype=dtype)
    y, t = torch.randint(0, K, (B,), generator=torch.Generator().manual_seed(2)), 3.3

    def old() -> tuple[Tensor, Tensor]:
        gt = F.one_hot(y, z_s.shape[1]).to(torch.bool)
        p_s, p_t = F.softmax(z_s / t, dim=1), F.softmax(z_t / t, dim=1)
        b_s = torch.stack([(p_s * gt).sum(1), (p_s * ~gt).sum(1)], dim=1)
        b_t = torch.stack([(p_t * gt).sum(1), (p_t * ~gt).sum(1)], dim=1)
        tckd = F.kl_div(torch.log(b_s), b_t, reduction="sum") / z_s.shape[0] * t * t
        masked = gt.to(z_s.dtype) * 1000.0
        log_hat_s = F.log_softmax(z_s / t - masked, dim=1)
        hat_t = F.softmax(z_t / t - masked, dim=1)
        nckd = F.kl_div(log_hat_s, hat_t, reduction="sum") / z_s.shape[0] * t * t
        return tckd, nckd

    assert same(lambda: fl.dkd_parts(z_s, z_t, y, t), old, [z_s])
    out = create_loss("dkd", temperature=t)(Outputs(z_s), Outputs(z_t), batch(y))
    tckd, nckd = fl.dkd_parts(z_s, z_t, y, t)
    assert torch.equal(out["dkd/tckd"], tckd) and torch.equal(out["dkd/nckd"], nckd)


@pytest.mark.parametrize("dtype", DTYPES)
def test_virtual_teacher_kl_is_the_old_inline_formula_and_the_term(dtype) -> None:
    z = rand(0, B, K, dtype=dtype, grad=True)
    y = torch.randint(0, K, (B,), generator=torch.Generator().manual_seed(3))
    a, temp, m = 0.99, 20.0, 100.0  # the term's defaults

    def old() -> Tensor:
        p_d = torch.full_like(z, (1.0 - a) / (K - 1))
        p_d.scatter_(1, y.unsqueeze(1), a)
        target = F.softmax(p_d / temp, dim=1)
        return F.kl_div(F.log_softmax(z, dim=1), target, reduction="sum") / z.numel() * m

    assert same(lambda: fl.virtual_teacher_kl(z, y, temp, a, m), old, [z])
    out = create_loss("tf_kd")(Outputs(z), None, batch(y))
    assert torch.equal(out["tf_kd/virtual"], fl.virtual_teacher_kl(z, y, temp, a, m))


@pytest.mark.parametrize("peers", [1, 2, 3])
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_mutual_learning_kl_is_the_old_inline_formula_and_the_term(peers, temperature) -> None:
    z = rand(0, B, K, dtype=torch.float32, grad=True)
    others = [rand(10 + i, B, K, dtype=torch.float32) for i in range(peers)]
    t = temperature

    def old() -> Tensor:
        log_p = F.log_softmax(z / t, dim=1)
        kls = [
            F.kl_div(log_p, F.log_softmax(p / t, dim=1), reduction="batchmean", log_target=True)
            for p in others
        ]
        return torch.stack(kls).mean() * (t * t)

    assert same(lambda: fl.mutual_learning_kl(z, others, t), old, [z])
    y = torch.zeros(B, dtype=torch.long)
    out = create_loss("dml", temperature=t)(
        Outputs(z), None, batch(y), peers=[Outputs(p) for p in others]
    )
    assert torch.equal(out["dml/kl"], fl.mutual_learning_kl(z, others, t))


def test_dml_cannot_be_a_loop_over_kd_loss_with_two_or_more_peers() -> None:
    """Why DML keeps its own function: with one peer it equals ``kd_loss`` bit for bit, with two
    its value or its gradient rounds differently (T^2 after the mean; one shared log_softmax)."""
    z = rand(0, 8, 10, dtype=torch.float32, grad=True)
    others = [rand(20 + i, 8, 10, dtype=torch.float32) for i in range(2)]
    one = fl.mutual_learning_kl(z, others[:1], 4.0)
    assert torch.equal(one, kd_loss(z, others[0], 4.0))
    differs = 0
    for t in (1.0, 3.3, 4.0):
        a = fl.mutual_learning_kl(z, others, t)
        b = torch.stack([kd_loss(z, p, t) for p in others]).mean()
        (ga,), (gb,) = torch.autograd.grad(a, z), torch.autograd.grad(b, z)
        assert torch.allclose(a, b) and torch.allclose(ga, gb)  # the same maths ...
        differs += not (torch.equal(a, b) and torch.equal(ga, gb))  # ... not the same bits
    assert differs == 3


# -------------------------------------------------------------------------- relations
def _flat(x: Tensor) -> Tensor:
    return x.reshape(x.shape[0], -1)


def _old_pairwise(e: Tensor, eps: float = 1e-12) -> Tensor:
    sq = e.pow(2).sum(1)
    d2 = (sq.unsqueeze(0) + sq.unsqueeze(1) - 2 * e @ e.T).clamp_min(eps)
    d = d2.sqrt()
    return d * (1 - torch.eye(e.shape[0], dtype=d.dtype, device=d.device))


def _old_rkd(s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    s, t = _flat(s), _flat(t)

    def dist(e: Tensor) -> Tensor:
        d = _old_pairwise(e)
        return d / d[d > 0].mean()

    def angles(e: Tensor) -> Tensor:
        diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
        return torch.bmm(diff, diff.transpose(1, 2)).reshape(-1)

    return F.smooth_l1_loss(dist(s), dist(t)), F.smooth_l1_loss(angles(s), angles(t))


def _old_sp(s: Tensor, t: Tensor) -> Tensor:
    s, t = _flat(s), _flat(t)
    g_s = F.normalize(s @ s.T, dim=1)
    g_t = F.normalize(t @ t.T, dim=1)
    return (g_t - g_s).pow(2).sum() / (s.shape[0] ** 2)


def _old_pkt(s: Tensor, t: Tensor) -> Tensor:
    def cond(f: Tensor) -> Tensor:
        f = f / (f.norm(dim=1, keepdim=True) + 1e-7)
        k = (f @ f.T + 1.0) / 2.0
        return k / k.sum(dim=1, keepdim=True)

    s, t = _flat(s), _flat(t)
    p_s, p_t = cond(s), cond(t)
    return (p_t * torch.log((p_t + 1e-7) / (p_s + 1e-7))).mean()


RELATIONS = [
    ("sp", fr.similarity_preserving_loss, _old_sp, ("sp/sp",)),
    ("rkd", fr.rkd_parts, _old_rkd, ("rkd/distance", "rkd/angle")),
    ("pkt", fr.pkt_loss, _old_pkt, ("pkt/pkt",)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("name", "new", "old", "parts"), RELATIONS, ids=[r[0] for r in RELATIONS])
def test_relation_functions_are_the_old_inline_formulas_and_the_terms(
    name, new, old, parts, dtype
) -> None:
    s, t = rand(0, B, 7, dtype=dtype, grad=True), rand(1, B, 9, dtype=dtype)
    assert same(lambda: new(s, t), lambda: old(s, t), [s])
    term = create_loss(name, student_layer="s", teacher_layer="t")
    out = term(Outputs(s, {"s": s}), Outputs(s, {"t": t}), batch(torch.zeros(B, dtype=torch.long)))
    values = new(s, t)
    for part, value in zip(parts, values if isinstance(values, tuple) else (values,)):
        assert torch.equal(out[part], value)


def test_pairwise_distances_is_the_old_formula() -> None:
    e = rand(0, B, 4, grad=True)
    assert same(lambda: fr.pairwise_distances(e), lambda: _old_pairwise(e), [e])


def test_correlation_congruence_is_the_old_inline_formula_and_the_term() -> None:
    s, t = rand(0, B, 7, grad=True), rand(1, B, 9)
    term = create_loss("cc", student_layer="s", teacher_layer="t", dim=4).double()
    sample = Outputs(s.detach(), {"s": s.detach()})
    y = batch(torch.zeros(B, dtype=torch.long))
    ctx = BindContext(nn.Identity(), nn.Identity(), y, sample, Outputs(s, {"t": t}), B, K)
    term.bind(ctx)
    term.double()

    def old() -> Tensor:
        delta = (term.embed_s(s) - term.embed_t(t)).abs()
        return (delta[:-1] * delta[1:]).sum(1).mean()

    assert same(lambda: fr.correlation_congruence_loss(term.embed_s(s), term.embed_t(t)), old, [s])
    out = term(Outputs(s, {"s": s}), Outputs(s, {"t": t}), ctx.batch)
    assert torch.equal(out["cc/cc"], old())


def test_crd_pieces_are_the_old_inline_formulas() -> None:
    rows, v = rand(0, B, 4, 3, grad=True), rand(1, B, 3, grad=True)
    old_scores = lambda: torch.exp(torch.bmm(rows, v.unsqueeze(2)).squeeze(2) / 0.07)  # noqa: E731
    assert same(lambda: fr.contrast_scores(rows, v, 0.07), old_scores, [rows, v])
    scores = fr.contrast_scores(rows, v, 0.07).detach().requires_grad_() / 50.0

    def old_nce() -> Tensor:
        k, noise = scores.shape[1] - 1, (scores.shape[1] - 1) / 10
        pos, neg = scores[:, 0], scores[:, 1:]
        log_d1 = torch.log(pos / (pos + noise + 1e-7))
        log_d0 = torch.log(noise / (neg + noise + 1e-7))
        assert k == 3
        return -(log_d1.sum() + log_d0.sum()) / scores.shape[0]

    assert torch.equal(fr.nce_loss(scores, 10), old_nce())
    bank, new = rand(2, B, 3), rand(3, B, 3)
    moved = bank * 0.5 + new * (1 - 0.5)
    expected = moved / moved.norm(dim=1, keepdim=True).clamp_min(1e-12)
    assert torch.equal(fr.memory_update(bank, new, 0.5), expected)


# -------------------------------------------------------------------------- feature maps
def _maps(dtype: torch.dtype) -> tuple[list[Tensor], list[Tensor]]:
    s = [rand(0, B, 3, 4, 4, dtype=dtype, grad=True), rand(1, B, 4, 2, 2, dtype=dtype, grad=True)]
    t = [rand(2, B, 5, 4, 4, dtype=dtype), rand(3, B, 6, 2, 2, dtype=dtype)]
    return s, t


def _old_attention(f: Tensor, p: float) -> Tensor:
    return F.normalize(f.abs().pow(p).mean(1).reshape(f.shape[0], -1), dim=1)


def _old_mmd(s: Tensor, t: Tensor) -> Tensor:
    s = F.normalize(s.flatten(2), dim=2)
    t = F.normalize(t.flatten(2), dim=2)

    def k(a: Tensor, b: Tensor) -> Tensor:
        return torch.bmm(a, b.transpose(1, 2)).pow(2).mean()

    return k(t, t) + k(s, s) - 2 * k(s, t)


def _old_boundary(s: Tensor, t: Tensor, margin: float) -> Tensor:
    off = ((s > -margin) & (t <= 0)).to(s.dtype)
    on = ((s <= margin) & (t > 0)).to(s.dtype)
    return ((s + margin) ** 2 * off + (s - margin) ** 2 * on).sum()


@pytest.mark.parametrize("dtype", DTYPES)
def test_attention_and_nst_are_the_old_inline_formulas_and_the_terms(dtype) -> None:
    s, t = _maps(dtype)
    for p in (2.0, 3.0):
        old = lambda p=p: torch.stack(  # noqa: E731
            [(_old_attention(a, p) - _old_attention(b, p)).pow(2).mean() for a, b in zip(s, t)]
        ).sum()
        assert same(lambda p=p: fa.attention_transfer_loss(s, t, p), old, s)
    assert same(
        lambda: fa.nst_loss(s, t),
        lambda: torch.stack([_old_mmd(a, b) for a, b in zip(s, t)]).sum(),
        s,
    )
    layers = {"student_layers": ["s0", "s1"], "teacher_layers": ["t0", "t1"]}
    student = Outputs(s[0], {"s0": s[0], "s1": s[1]})
    teacher = Outputs(s[0], {"t0": t[0], "t1": t[1]})
    y = batch(torch.zeros(B, dtype=torch.long))
    assert torch.equal(create_loss("at", **layers)(student, teacher, y)["loss"],
                       fa.attention_transfer_loss(s, t))  # fmt: skip
    assert torch.equal(create_loss("nst", **layers)(student, teacher, y)["loss"], fa.nst_loss(s, t))


@pytest.mark.parametrize("dtype", DTYPES)
def test_vid_nll_is_the_old_inline_formula(dtype) -> None:
    t = rand(0, B, 5, 3, 3, dtype=dtype)
    mean = rand(1, B, 5, 3, 3, dtype=dtype, grad=True)
    scale = rand(2, 5, dtype=dtype, grad=True)

    def old() -> Tensor:
        var = (F.softplus(scale) + 1e-5).view(1, -1, 1, 1)
        return (0.5 * ((t - mean) ** 2 / var + torch.log(var))).mean()

    assert same(lambda: fa.vid_nll(t, mean, scale, 1e-5), old, [mean, scale])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("margin", [1.0, 0.5])
def test_ab_loss_is_the_old_inline_formula(dtype, margin) -> None:
    s, t = _maps(dtype)
    t = [x[:, : a.shape[1]] for x, a in zip(t, s)]  # connectors map to the teacher's channels

    def old() -> Tensor:
        n = len(s)
        losses = [2.0 ** (i - n + 1) * _old_boundary(a, b, margin) / a.shape[0]
                  for i, (a, b) in enumerate(zip(s, t))]  # fmt: skip
        return torch.stack(losses).sum() * 3.0 / 1000.0

    assert same(lambda: fa.ab_loss(s, t, margin), old, s)
    assert torch.equal(fa.boundary_loss(s[0], t[0], margin), _old_boundary(s[0], t[0], margin))


def test_same_size_pools_the_larger_map_by_area() -> None:
    s, t = torch.rand(1, 2, 8, 8), torch.rand(1, 3, 4, 4)
    a, b = fa.same_size(s, t)
    assert torch.equal(a, F.adaptive_avg_pool2d(s, (4, 4))) and b is t
    a, b = fa.same_size(t, s)
    assert a is t and torch.equal(b, F.adaptive_avg_pool2d(s, (4, 4)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_factor_transfer_loss_is_the_old_inline_formula(dtype) -> None:
    code_s = rand(0, B, 2, 4, 4, dtype=dtype, grad=True)
    code_t = rand(1, B, 2, 4, 4, dtype=dtype)

    def old() -> Tensor:
        with torch.no_grad():
            f_t = F.normalize(code_t.reshape(B, -1), dim=1)
        f_s = F.normalize(code_s.reshape(B, -1), dim=1)
        return (f_s - f_t).abs().mean()

    assert same(lambda: ff.factor_transfer_loss(code_s, code_t), old, [code_s])


def test_the_moved_functions_reject_unpaired_lists() -> None:
    a = torch.rand(2, 1, 2, 2)
    for fn in (fa.attention_transfer_loss, fa.nst_loss):
        with pytest.raises(ValueError, match="equally many maps"):
            fn([a, a], [a])
    with pytest.raises(ValueError, match="equally many maps"):
        fa.ab_loss([], [], 1.0)


def test_the_logit_functions_raise_no_warning_and_size_one_hots_from_the_logits() -> None:
    # softmax without an explicit dim warns (implicit dimension choice); targets that miss the
    # last class must still give K-wide one-hots
    import warnings

    z_s, z_t = rand(0, 4, 5), rand(1, 4, 5)
    y = torch.tensor([0, 1, 1, 2])  # classes 3 and 4 absent
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parts = [
            fl.bce_loss(z_s, y),
            *fl.dkd_parts(z_s, z_t, y, 4.0),
            fl.virtual_teacher_kl(z_s, y, 4.0, 0.9, 1.0),
            fl.mutual_learning_kl(z_s, [z_t], 3.0),
            fl.binary_kl(z_s, z_t, F.one_hot(y, 5).bool()),
        ]
    assert all(torch.isfinite(p).all() for p in parts)
    expected = F.binary_cross_entropy_with_logits(z_s, F.one_hot(y, 5).double())
    torch.testing.assert_close(fl.bce_loss(z_s, y), expected)  # smoothing 0 by default
