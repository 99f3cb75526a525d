"""OFD against golden values recomputed from the paper's formulas
(``tests/fixtures/make_golden_feature.py``), plus gradients, determinism and bad parameters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from distillscope.contracts import Batch, Outputs
from distillscope.distill import OverhaulFeatureDistillation, build_loss, create_loss
from distillscope.distill.base import BindContext
from distillscope.errors import ConfigError, ModelError, TrainingError
from distillscope.functional.feature_transfer import match_spatial, ofd_loss, ofd_margin

GOLDEN = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "golden_feature.json").read_text()
)
REL = 1e-10  # float64 tensors against float64 numpy
BATCH = Batch(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long), torch.arange(2))


def golden(key: str) -> float | list[float]:
    assert key in GOLDEN["expected"], f"golden value {key!r} missing; run make_golden_feature.py"
    return GOLDEN["expected"][key]


def inp(key: str, requires_grad: bool = False) -> torch.Tensor:
    return torch.tensor(GOLDEN["inputs"][key], dtype=torch.float64, requires_grad=requires_grad)


def outputs(features: dict) -> Outputs:
    return Outputs(torch.zeros(2, 3), features)


def ctx_for(student: dict, teacher: dict, teacher_net: nn.Module | None = None) -> BindContext:
    return BindContext(nn.Identity(), teacher_net, BATCH, outputs(student), outputs(teacher), 2, 3)


def teacher_with_bns() -> nn.Module:
    """A stand-in teacher holding the golden batch-norm parameters, for a map and a vector."""
    net = nn.Module()
    net.bn_map, net.bn_vec = nn.BatchNorm2d(5), nn.BatchNorm1d(5)
    with torch.no_grad():
        for bn in (net.bn_map, net.bn_vec):
            bn.weight.copy_(inp("gamma"))
            bn.bias.copy_(inp("beta"))
    return net


# ------------------------------------------------------------------ functional vs golden
def test_margin_matches_golden_in_both_branches() -> None:
    margin = ofd_margin(inp("gamma"), inp("beta"))
    assert margin.tolist() == pytest.approx(golden("ofd_margin"), rel=REL)
    assert margin[0].item() == pytest.approx(-((2 / torch.pi) ** 0.5))  # N(0, 1): -sqrt(2/pi)
    assert margin[3].item() == pytest.approx(-3 * 0.3)  # P(x < 0) <= 0.001: -3 std
    assert (margin < 0).all()


def test_partial_l2_matches_golden_for_maps_and_vectors() -> None:
    margin = torch.tensor(golden("ofd_margin"), dtype=torch.float64)
    assert ofd_loss(inp("c4"), inp("t4"), margin).item() == pytest.approx(golden("ofd"), rel=REL)
    vector = ofd_loss(inp("sv"), inp("tv"), margin).item()
    assert vector == pytest.approx(golden("ofd_vector"), rel=REL)


def test_partial_l2_skips_a_student_below_a_non_positive_target_only() -> None:
    margin = torch.tensor([-1.0])
    t = torch.tensor([[-3.0], [-0.5], [2.0], [-0.5]])  # targets -1, -0.5, 2, -0.5
    s = torch.tensor([[-2.0], [-1.0], [3.0], [0.5]])
    # below its target (no loss), below (no loss), above a positive target, above a negative one
    assert ofd_loss(s, t, margin).item() == pytest.approx((1.0 + 1.0) / 4)


def test_match_spatial_pools_the_larger_map_per_axis() -> None:
    s, t = match_spatial(torch.ones(1, 2, 8, 4), torch.ones(1, 3, 4, 8))
    assert s.shape == (1, 2, 4, 4) and t.shape == (1, 3, 4, 4)


# ------------------------------------------------------------------------ term vs golden
def identity_connectors(term: OverhaulFeatureDistillation) -> None:
    """Connector weights set to the identity and batch norms to eval mode (mean 0, var 1)."""
    assert term.connectors is not None
    with torch.no_grad():
        for layer, _ in term.connectors:
            layer.weight.copy_(torch.eye(5).reshape(layer.weight.shape))
    term.eval()


def test_term_matches_golden_with_identity_connectors() -> None:
    student = {"a": inp("c4"), "b": inp("sv")}
    teacher = {"x": inp("t8"), "y": inp("tv")}
    term = create_loss(
        "ofd",
        student_layers=["a", "b"],
        teacher_layers=["x", "y"],
        teacher_bns=["bn_map", "bn_vec"],
    )
    term.bind(ctx_for(student, teacher, teacher_with_bns()))
    term.double()
    identity_connectors(term)
    assert term.margin(0).tolist() == pytest.approx(golden("ofd_margin"), rel=1e-6)
    out = term(outputs(student), outputs(teacher), BATCH)
    assert set(out) == {"loss", "ofd/a", "ofd/b"}
    # The margins were read from float32 batch norms: compare at float32 precision.
    assert out["ofd/a"].item() == pytest.approx(golden("ofd_term/map"), rel=1e-6)
    assert out["ofd/b"].item() == pytest.approx(golden("ofd_term/vector"), rel=1e-6)
    assert out["loss"].item() == pytest.approx(golden("ofd_term/loss"), rel=1e-6)


def test_connectors_are_1x1_conv_or_linear_then_batch_norm_sized_at_bind() -> None:
    student, teacher = (
        {"a": torch.zeros(2, 3, 8, 8), "b": inp("sv")},
        {"x": inp("t4"), "y": inp("tv")},
    )
    term = create_loss("ofd", student_layers=["a", "b"], teacher_layers=["x", "y"])
    term.bind(ctx_for(student, teacher))
    conv, norm = term.connectors[0]
    assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (3, 5, (1, 1))
    assert isinstance(norm, nn.BatchNorm2d) and conv.bias is None
    linear, norm = term.connectors[1]
    assert (linear.in_features, linear.out_features) == (5, 5) and isinstance(norm, nn.BatchNorm1d)
    assert term.weights == [0.5, 1.0]


# ------------------------------------------------------------ gradients and determinism
PAIRS = {"student_layers": ["a", "b"], "teacher_layers": ["x", "y"]}


def features(requires_grad: bool = False) -> tuple[dict, dict]:
    student = {"a": inp("c4", requires_grad), "b": inp("sv", requires_grad)}
    return student, {"x": inp("t8"), "y": inp("tv")}


def test_backward_gives_finite_nonzero_grads_to_student_features_only() -> None:
    student, teacher = features(requires_grad=True)
    teacher["x"].requires_grad_(True)
    loss = build_loss({"ofd": PAIRS})
    loss.bind(ctx_for(student, teacher), seed=0)
    out = loss.double()(outputs(student), outputs(teacher), BATCH)
    assert torch.isfinite(out["loss"]) and out["loss"] > 0
    out["loss"].backward()
    for key, f in student.items():
        assert f.grad is not None and torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0, key
    assert teacher["x"].grad is None  # the teacher is a fixed target


def test_binding_and_forward_are_deterministic_and_seeded() -> None:
    student, teacher = features()
    results = []
    for seed in (0, 0, 1):
        loss = build_loss({"ofd": PAIRS})
        loss.bind(ctx_for(student, teacher), seed=seed)
        out = loss.double()(outputs(student), outputs(teacher), BATCH)
        results.append((loss.state_dict(), out["loss"].item()))
    (a, la), (b, lb), (c, _) = results
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a) and la == lb
    assert any(not torch.equal(a[k], c[k]) for k in a)  # the run's seed enters the connectors


def test_unbound_or_teacherless_forward_is_a_training_error() -> None:
    student, teacher = features()
    term = create_loss("ofd", **PAIRS)
    with pytest.raises(TrainingError, match="'ofd' needs the teacher"):
        term(outputs(student), None, BATCH)
    with pytest.raises(TrainingError, match="ofd was not bound"):
        term(outputs(student), outputs(teacher), BATCH)


# ------------------------------------------------------------------------ bad parameters
@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"student_layers": "a", "teacher_layers": ["b"]}, r"ofd.student_layers='a' is invalid"),
        ({"student_layers": [], "teacher_layers": ["b"]}, "non-empty list"),
        ({"student_layers": ["a", "b"], "teacher_layers": ["a"]}, "ofd: 2 student layers but 1"),
        ({"student_layers": ["a", "a"], "teacher_layers": ["a", "b"]}, "names 'a' twice"),
        ({"student_layers": [" a"], "teacher_layers": ["a"]}, r"ofd.student_layers\[0\]=' a'"),
        ({"student_layers": ["a"], "teacher_layers": ["b"], "teacher_bns": ["c", "d"]},
         "teacher_bns has 2 paths"),
        ({"student_layers": ["a"], "teacher_layers": ["b"], "teacher_bns": "c"},
         "ofd.teacher_bns='c' is invalid"),
    ],
)  # fmt: skip
def test_bad_parameters_are_one_line_config_errors(params: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        create_loss("ofd", **params)
    assert "\n" not in str(info.value)


def test_the_class_built_directly_checks_its_lists_too() -> None:
    with pytest.raises(ConfigError, match=r"is a single path; give a list, e.g. \['a'\]"):
        OverhaulFeatureDistillation(student_layers="a", teacher_layers=["b"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("s", "t"), [((3, 5), (2, 5, 4, 4)), ((2, 5, 4, 4), (3, 5)), ((2, 4, 5), (2, 4, 5))]
)
def test_a_map_with_a_vector_or_token_sequences_fail_at_bind_in_one_line(s, t) -> None:
    term = create_loss("ofd", student_layers=["a"], teacher_layers=["x"])
    with pytest.raises(ConfigError, match="ofd cannot pair student layer 'a'") as info:
        term.bind(ctx_for({"a": torch.zeros(*s)}, {"x": torch.zeros(*t)}))
    assert "\n" not in str(info.value)


def test_teacher_bns_must_be_batch_norms_of_the_teacher_features_width() -> None:
    student, teacher = {"a": inp("c4")}, {"x": inp("t4")}
    net = teacher_with_bns()
    net.conv, net.narrow = nn.Conv2d(5, 5, 1), nn.BatchNorm2d(4)
    for path in ("conv", "narrow"):
        term = create_loss("ofd", student_layers=["a"], teacher_layers=["x"], teacher_bns=[path])
        with pytest.raises(ConfigError, match=rf"ofd.teacher_bns: '{path}' .* is not an affine"):
            term.bind(ctx_for(student, teacher, net))
    term = create_loss("ofd", student_layers=["a"], teacher_layers=["x"], teacher_bns=["bn9"])
    with pytest.raises(ModelError, match="no module 'bn9'"):
        term.bind(ctx_for(student, teacher, net))
