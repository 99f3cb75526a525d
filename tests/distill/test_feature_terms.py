"""AT, NST, FT, OFD, AB and VID against golden values recomputed from their papers' formulas
(``tests/fixtures/make_golden_feature.py``), plus gradients, determinism and bad parameters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from distillscope.contracts import Batch, Outputs
from distillscope.distill import build_loss, create_loss
from distillscope.distill.base import BindContext
from distillscope.errors import ConfigError, TrainingError
from distillscope.functional.feature import (
    ab_loss,
    at_loss,
    factor_loss,
    nst_loss,
    ofd_loss,
    ofd_margin,
    vid_nll,
)

GOLDEN = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "golden_feature.json").read_text()
)
REL = 1e-10  # float64 tensors against float64 numpy


def golden(key: str) -> float | list[float]:
    assert key in GOLDEN["expected"], f"golden value {key!r} missing; run make_golden_feature.py"
    return GOLDEN["expected"][key]


def inp(key: str, requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor(GOLDEN["inputs"][key], dtype=torch.float64, requires_grad=requires_grad)


def ctx_for(student: dict, teacher: dict, teacher_net: nn.Module | None = None) -> BindContext:
    batch = Batch(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long), torch.arange(2))
    s_out, t_out = Outputs(torch.zeros(2, 3), student), Outputs(torch.zeros(2, 3), teacher)
    return BindContext(nn.Identity(), teacher_net, batch, s_out, t_out, 2, 3)


def bound(name: str, student: dict, teacher: dict, teacher_net=None, **params):
    """Term ``name`` on pairs of the dicts' keys, bound on them under a fixed seed, in float64."""
    params.setdefault("student_layers", list(student))
    params.setdefault("teacher_layers", list(teacher))
    term = create_loss(name, **params)
    torch.manual_seed(0)
    term.bind(ctx_for(student, teacher, teacher_net))
    return term.double()


def run(term, student: dict, teacher: dict) -> dict[str, torch.Tensor]:
    batch = Batch(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long), torch.arange(2))
    return term(Outputs(torch.zeros(2, 3), student), Outputs(torch.zeros(2, 3), teacher), batch)


# --------------------------------------------------------------- functional against golden
@pytest.mark.parametrize("p", [2.0, 3.0])
def test_attention_transfer_matches_golden(p: float) -> None:
    s4, t4, t8 = inp("s4"), inp("t4"), inp("t8")
    assert at_loss(s4, t4, p).item() == pytest.approx(golden(f"at_p{p:g}"), rel=REL)
    assert at_loss(s4, t8, p).item() == pytest.approx(golden(f"at_p{p:g}_pooled"), rel=REL)


def test_nst_matches_golden() -> None:
    s4, t4, t8 = inp("s4"), inp("t4"), inp("t8")
    assert nst_loss(s4, t4).item() == pytest.approx(golden("nst"), rel=REL)
    assert nst_loss(s4, t8).item() == pytest.approx(golden("nst_pooled"), rel=REL)


def test_factor_loss_matches_golden() -> None:
    s4 = inp("s4")
    assert factor_loss(s4, inp("f4")).item() == pytest.approx(golden("ft"), rel=REL)
    assert factor_loss(s4, inp("f8")).item() == pytest.approx(golden("ft_pooled"), rel=REL)


def test_ofd_margin_matches_golden_in_both_branches() -> None:
    margin = ofd_margin(inp("gamma"), inp("beta"))
    assert margin.tolist() == pytest.approx(golden("ofd_margin"), rel=REL)
    assert margin[3].item() == pytest.approx(-3 * 0.3)  # P(x < 0) <= 0.001: -3 std


def test_ofd_partial_l2_matches_golden() -> None:
    margin = torch.tensor(golden("ofd_margin"), dtype=torch.float64)
    assert ofd_loss(inp("c4"), inp("t4"), margin).item() == pytest.approx(golden("ofd"), rel=REL)
    vector = ofd_loss(inp("sv"), inp("tv"), margin).item()
    assert vector == pytest.approx(golden("ofd_vector"), rel=REL)


@pytest.mark.parametrize("mu", [1.0, 0.5])
def test_ab_loss_matches_golden(mu: float) -> None:
    assert ab_loss(inp("c4"), inp("t4"), mu).item() == pytest.approx(
        golden(f"ab_mu{mu:g}"), rel=REL
    )
    vector = ab_loss(inp("sv"), inp("tv"), mu).item()
    assert vector == pytest.approx(golden(f"ab_mu{mu:g}_vector"), rel=REL)


def test_vid_nll_matches_golden() -> None:
    alpha = inp("alpha")
    assert vid_nll(inp("c4"), inp("t4"), alpha, 1e-5).item() == pytest.approx(
        golden("vid"), rel=REL
    )
    vector = vid_nll(inp("sv"), inp("tv"), alpha, 1e-5).item()
    assert vector == pytest.approx(golden("vid_vector"), rel=REL)


# ------------------------------------------------------------------------ terms on golden
def test_at_term_sums_its_pairs_and_logs_each() -> None:
    student, teacher = {"a": inp("s4"), "b": inp("s4")}, {"x": inp("t4"), "y": inp("t8")}
    out = run(bound("at", student, teacher), student, teacher)
    assert set(out) == {"loss", "at/a", "at/b"}
    assert out["at/a"].item() == pytest.approx(golden("at_p2"), rel=REL)
    assert out["at/b"].item() == pytest.approx(golden("at_p2_pooled"), rel=REL)
    assert out["loss"].item() == pytest.approx(golden("at_p2") + golden("at_p2_pooled"), rel=REL)
    p3 = run(bound("at", student, teacher, p=3), student, teacher)
    assert p3["at/a"].item() == pytest.approx(golden("at_p3"), rel=REL)


def test_nst_term_sums_its_pairs() -> None:
    student, teacher = {"a": inp("s4"), "b": inp("s4")}, {"x": inp("t4"), "y": inp("t8")}
    out = run(bound("nst", student, teacher), student, teacher)
    assert out["loss"].item() == pytest.approx(golden("nst") + golden("nst_pooled"), rel=REL)


def test_ft_term_is_the_factor_loss_of_its_translator_and_paraphraser() -> None:
    student, teacher = {"a": inp("s4")}, {"x": inp("t8")}
    term = create_loss("ft", student_layer="a", teacher_layer="x")
    term.bind(ctx_for(student, teacher))
    term.double()
    out = run(term, student, teacher)
    factor_t = term.paraphraser.encoder(teacher["x"])  # (2, 2, 8, 8): int(0.5 * 5) channels
    assert factor_t.shape == (2, 2, 8, 8)
    expected = factor_loss(term.translator(student["a"]), factor_t)
    assert out["ft/factor"].item() == pytest.approx(expected.item(), rel=REL)
    assert not any(p.requires_grad for p in term.paraphraser.parameters())  # frozen: P is fixed
    assert all(p.requires_grad for p in term.translator.parameters())


def teacher_with_bns() -> nn.Module:
    net = nn.Module()
    net.bn = nn.BatchNorm2d(5)
    with torch.no_grad():
        net.bn.weight.copy_(inp("gamma"))
        net.bn.bias.copy_(inp("beta"))
    return net


def test_ofd_term_reads_its_margin_from_the_named_batch_norm() -> None:
    student, teacher = {"a": inp("s4")}, {"x": inp("t4")}
    term = bound("ofd", student, teacher, teacher_with_bns(), teacher_bns=["bn"])
    assert term.margin(0).tolist() == pytest.approx(golden("ofd_margin"), rel=1e-6)


def test_ofd_and_ab_terms_weigh_pairs_by_stage_as_the_references() -> None:
    student = {"a": inp("s4"), "b": inp("sv")}
    teacher = {"x": inp("t4"), "y": inp("tv")}
    ofd = bound("ofd", student, teacher).train(False)
    out = run(ofd, student, teacher)
    conn = ofd.connectors
    first = ofd_loss(conn[0](student["a"]), teacher["x"], ofd.margin(0))
    second = ofd_loss(conn[1](student["b"]), teacher["y"], ofd.margin(1))
    assert out["ofd/a"].item() == pytest.approx(0.5 * first.item(), rel=REL)
    assert out["ofd/b"].item() == pytest.approx(second.item(), rel=REL)
    ab = bound("ab", student, teacher, margin=0.5).train(False)
    out = run(ab, student, teacher)
    first = ab_loss(ab.connectors[0](student["a"]), teacher["x"], 0.5)
    assert out["ab/a"].item() == pytest.approx(3 / 1000 * 0.5 * first.item(), rel=REL)
    assert out["loss"].item() == pytest.approx(out["ab/a"].item() + out["ab/b"].item(), rel=REL)


def test_connectors_are_1x1_conv_or_linear_then_batch_norm_sized_at_bind() -> None:
    student, teacher = {"a": inp("s4"), "b": inp("sv")}, {"x": inp("t8"), "y": inp("tv")}
    term = bound("ofd", student, teacher)
    conv, norm = term.connectors[0]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (3, 5, (1, 1))
    assert isinstance(norm, nn.BatchNorm2d) and conv.bias is None
    linear, norm = term.connectors[1]
    assert (linear.in_features, linear.out_features) == (5, 5)
    assert isinstance(norm, nn.BatchNorm1d)


def test_vid_term_starts_at_the_reference_variance_and_is_its_nll() -> None:
    student, teacher = {"a": inp("s4"), "b": inp("sv")}, {"x": inp("t8"), "y": inp("tv")}
    term = bound("vid", student, teacher)
    for var in term.variances():
        assert var.tolist() == pytest.approx([golden("vid_init_var")] * var.numel(), rel=1e-6)
    assert term.regressors[0][0].in_channels == 3 and term.regressors[0][-1].out_channels == 5
    out = run(term, student, teacher)
    pooled_t = torch.nn.functional.avg_pool2d(teacher["x"], 2)  # (2, 5, 4, 4)
    first = vid_nll(term.regressors[0](student["a"]), pooled_t, term.log_scales[0], 1e-5)
    assert out["vid/a"].item() == pytest.approx(first.item(), rel=REL)


# ------------------------------------------------------------ gradients and determinism
CASES = {
    "at": ({"a": "s4"}, {"x": "t8"}, {}),
    "nst": ({"a": "s4"}, {"x": "t4"}, {}),
    "ft": ({"a": "s4"}, {"x": "t4"}, {}),
    "ofd": ({"a": "s4", "b": "sv"}, {"x": "t8", "y": "tv"}, {}),
    "ab": ({"a": "s4", "b": "sv"}, {"x": "t4", "y": "tv"}, {}),
    "vid": ({"a": "s4", "b": "sv"}, {"x": "t4", "y": "tv"}, {}),
}


def case(name: str, requires_grad: bool = False):
    s_keys, t_keys, params = CASES[name]
    student = {k: inp(v, requires_grad) for k, v in s_keys.items()}
    teacher = {k: inp(v) for k, v in t_keys.items()}
    if name == "ft":
        params = {"student_layer": "a", "teacher_layer": "x"}
    else:
        params = {"student_layers": list(student), "teacher_layers": list(teacher), **params}
    return student, teacher, params


@pytest.mark.parametrize("name", sorted(CASES))
def test_backward_gives_finite_nonzero_grads_to_student_features(name: str) -> None:
    student, teacher, params = case(name, requires_grad=True)
    loss = build_loss({name: params})
    loss.bind(ctx_for(student, teacher), seed=0)
    out = run(loss.double(), student, teacher)
    assert torch.isfinite(out["loss"]) and out["loss"] > 0
    out["loss"].backward()
    for key, f in student.items():
        assert f.grad is not None and torch.isfinite(f.grad).all(), key
        assert f.grad.abs().sum() > 0, key
    assert out[f"{name}/loss"].dim() == 0


@pytest.mark.parametrize("name", sorted(CASES))
def test_binding_and_forward_are_deterministic(name: str) -> None:
    student, teacher, params = case(name)
    results = []
    for seed in (0, 0, 1):
        loss = build_loss({name: params})
        loss.bind(ctx_for(student, teacher), seed=seed)
        batch = Batch(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long), torch.arange(2))
        out = loss.double()(
            Outputs(torch.zeros(2, 3), student), Outputs(torch.zeros(2, 3), teacher), batch
        )
        results.append((loss.state_dict(), out["loss"].item()))
    (a, la), (b, lb), (c, lc) = results
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a) and la == lb
    if name not in {"at", "nst"}:  # owned modules: the run's seed enters their initial values
        assert any(not torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("name", sorted(CASES))
def test_unbound_or_teacherless_forward_is_a_training_error(name: str) -> None:
    student, teacher, params = case(name)
    term = create_loss(name, **params)
    batch = Batch(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long), torch.arange(2))
    with pytest.raises(TrainingError, match=f"{name!r} needs the teacher"):
        term(Outputs(torch.zeros(2, 3), student), None, batch)
    if name not in {"at", "nst"}:
        with pytest.raises(TrainingError, match="not bound"):
            term(Outputs(torch.zeros(2, 3), student), Outputs(torch.zeros(2, 3), teacher), batch)


# ------------------------------------------------------------------------ bad parameters
PAIRS = {"student_layers": ["layer2"], "teacher_layers": ["layer2"]}


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("at", {"student_layers": "layer2", "teacher_layers": ["layer2"]},
         r"at.student_layers='layer2' is invalid: .*list"),
        ("nst", {"student_layers": [], "teacher_layers": ["layer2"]}, "non-empty list"),
        ("vid", {"student_layers": ["a", "b"], "teacher_layers": ["a"]},
         "has 2 paths and vid.teacher_layers 1"),
        ("ofd", {"student_layers": ["a", "a"], "teacher_layers": ["a", "b"]}, "names 'a' twice"),
        ("ab", {"student_layers": [" a"], "teacher_layers": ["a"]}, "not a module path"),
        ("at", {**PAIRS, "p": 0}, r"at.p=0 is invalid"),
        ("ab", {**PAIRS, "margin": -1.0}, r"ab.margin=-1.0 is invalid"),
        ("ab", {**PAIRS, "stage1_epochs": -1}, r"ab.stage1_epochs=-1 is invalid"),
        ("vid", {**PAIRS, "eps": 0.0}, r"vid.eps=0.0 is out of range"),
        ("vid", {**PAIRS, "init_var": 1e-6}, r"vid.init_var=1e-06 is out of range"),
        ("ofd", {**PAIRS, "teacher_bns": ["bn1", "bn2"]}, "teacher_bns has 2 paths"),
        ("ofd", {**PAIRS, "teacher_bns": "bn1"}, "ofd.teacher_bns='bn1' is invalid"),
        ("ft", {"student_layer": "a", "teacher_layer": "b", "rate": 0}, r"ft.rate=0 is invalid"),
        ("ft", {"student_layer": "a", "teacher_layer": "b", "stage1_epochs": 0},
         r"ft.stage1_epochs=0 is invalid; use an integer >= 1"),
        ("ft", {"student_layer": ["a"], "teacher_layer": "b"},
         r"ft.student_layer=\['a'\] is invalid"),
    ],
)  # fmt: skip
def test_bad_parameters_are_one_line_config_errors(name: str, params: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        create_loss(name, **params)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_map_paired_with_a_vector_fails_at_bind_in_one_line(name: str) -> None:
    student, teacher = {"a": inp("sv")}, {"x": inp("t4")}
    if name == "ft":
        term = create_loss(name, student_layer="a", teacher_layer="x")
    else:
        term = create_loss(name, student_layers=["a"], teacher_layers=["x"])
    with pytest.raises(ConfigError, match=rf"{name} cannot pair student layer 'a' \(5,\)") as info:
        term.bind(ctx_for(student, teacher))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["at", "nst", "ft"])
def test_map_only_methods_refuse_two_vectors(name: str) -> None:
    student, teacher = {"a": inp("sv")}, {"x": inp("tv")}
    keys = (
        ("student_layer", "teacher_layer") if name == "ft" else ("student_layers", "teacher_layers")
    )
    values = ("a", "x") if name == "ft" else (["a"], ["x"])
    term = create_loss(name, **dict(zip(keys, values)))
    with pytest.raises(ConfigError, match="needs feature maps"):
        term.bind(ctx_for(student, teacher))


def test_token_sequences_are_refused_even_by_vector_methods() -> None:
    student, teacher = {"a": torch.zeros(2, 4, 5)}, {"x": torch.zeros(2, 4, 5)}
    term = create_loss("vid", student_layers=["a"], teacher_layers=["x"])
    with pytest.raises(ConfigError, match=r"\(4, 5\).*both vectors \(D,\)"):
        term.bind(ctx_for(student, teacher))


def test_ofd_teacher_bns_must_be_batch_norms_of_the_right_width() -> None:
    student, teacher = {"a": inp("s4")}, {"x": inp("t4")}
    net = teacher_with_bns()
    net.conv = nn.Conv2d(5, 5, 1)
    net.narrow = nn.BatchNorm2d(4)
    for path in ("conv", "narrow"):
        term = create_loss("ofd", student_layers=["a"], teacher_layers=["x"], teacher_bns=[path])
        with pytest.raises(ConfigError, match=rf"ofd.teacher_bns: '{path}' .* is not an affine"):
            term.bind(ctx_for(student, teacher, net))


def test_classes_built_directly_check_their_layer_lists_too() -> None:
    from distillscope.distill import AttentionTransfer, OverhaulFeatureDistillation

    with pytest.raises(ConfigError, match=r"is a single path; give a list, e.g. \['layer2'\]"):
        AttentionTransfer(student_layers="layer2", teacher_layers=["layer2"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="ofd.teacher_bns='bn' is not a list"):
        OverhaulFeatureDistillation(["a"], ["b"], teacher_bns="bn")  # type: ignore[arg-type]
