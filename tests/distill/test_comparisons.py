"""ReviewKD and CAT-KD (the comparisons of e2KD, paper 001): golden values from
``tests/fixtures/make_golden_comparisons.py`` (numpy, from the papers' formulas), gradients,
determinism, parameter checks and the pairs they refuse at bind."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from distillscope.contracts import Batch, Outputs
from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.distill import build_loss, create_loss
from distillscope.distill.base import BindContext
from distillscope.distill.class_attention import ClassAttentionTransfer
from distillscope.distill.review import ReviewKD
from distillscope.errors import ConfigError, TrainingError
from distillscope.functional.feature_maps import cat_loss, hcl_loss
from distillscope.models import create_model
from distillscope.train.bind import bind_loss

GOLDEN = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "golden_comparisons.json").read_text()
)
STAGES = ["layer1", "layer2", "layer3", "pool"]


def t64(values: object) -> Tensor:
    return torch.tensor(values, dtype=torch.float64)


def batch_of(n: int) -> Batch:
    return Batch(torch.zeros(n, 1), torch.zeros(n, dtype=torch.long), torch.arange(n))


def context(
    student: Outputs, teacher: Outputs, num_train: int = 100, s_net=None, t_net=None
) -> BindContext:
    return BindContext(
        student=s_net if s_net is not None else nn.Identity(),
        teacher=t_net,
        batch=batch_of(len(student.logits)),
        student_outputs=student,
        teacher_outputs=teacher,
        num_train=num_train,
        num_classes=int(student.logits.shape[1]),
    )


# ---------------------------------------------------------------- golden values
def test_the_fixture_has_every_case() -> None:
    assert len(GOLDEN["hcl"]) == 3 and len(GOLDEN["cat_kd"]) == 4
    assert {"student", "teacher", "weights", "hcl", "warmup", "loss"} <= set(GOLDEN["reviewkd"])


@pytest.mark.parametrize("case", range(3))
def test_hcl_matches_golden(case: int) -> None:
    entry = GOLDEN["hcl"][case]
    student = [t64(x) for x in entry["student"]]
    teacher = [t64(x) for x in entry["teacher"]]
    assert hcl_loss(student, teacher).item() == pytest.approx(entry["loss"], rel=1e-12)


def golden_reviewkd() -> tuple[ReviewKD, Outputs, Outputs, Batch]:
    entry = GOLDEN["reviewkd"]
    paths = [f"s{i}" for i in range(len(entry["student"]))]
    t_paths = [f"t{i}" for i in range(len(entry["teacher"]))]
    student = Outputs(torch.zeros(3, 2), {p: t64(x) for p, x in zip(paths, entry["student"])})
    teacher = Outputs(torch.zeros(3, 2), {p: t64(x) for p, x in zip(t_paths, entry["teacher"])})
    term = ReviewKD(paths, t_paths, warmup_epochs=entry["warmup_epochs"])
    term.bind(context(student, teacher, num_train=entry["num_train"]))
    term.double()
    assert term.abfs is not None
    with torch.no_grad():
        for abf, weights in zip(term.abfs, entry["weights"]):
            abf.reduce[0].weight.copy_(t64(weights["reduce"])[:, :, None, None])
            abf.out[0].weight.copy_(t64(weights["out"]))
            if "att_w" in weights:
                abf.attention[0].weight.copy_(t64(weights["att_w"])[:, :, None, None])
                abf.attention[0].bias.copy_(t64(weights["att_b"]))
            else:
                assert abf.attention is None  # the deepest stage fuses nothing
    term.items_seen.fill_(entry["items_seen"])
    return term, student, teacher, batch_of(3)


def test_reviewkd_matches_golden() -> None:
    entry = GOLDEN["reviewkd"]
    term, student, teacher, batch = golden_reviewkd()
    out = term(student, teacher, batch)
    assert out["reviewkd/hcl"].item() == pytest.approx(entry["hcl"], rel=1e-10)
    assert out["reviewkd/warmup"].item() == pytest.approx(entry["warmup"])
    assert out["loss"].item() == pytest.approx(entry["loss"], rel=1e-10)


def golden_cat(case: int) -> tuple[ClassAttentionTransfer, Outputs, Outputs]:
    entry = GOLDEN["cat_kd"][case]
    s_feat, t_feat = t64(entry["student_features"]), t64(entry["teacher_features"])
    s_net, t_net = Head(s_feat.shape[1], 4).double(), Head(t_feat.shape[1], 4).double()
    with torch.no_grad():
        for net, key in ((s_net, "student"), (t_net, "teacher")):
            net.fc.weight.copy_(t64(entry[f"{key}_weight"]))
            net.fc.bias.copy_(t64(entry[f"{key}_bias"]))  # must not enter the CAMs
    student = Outputs(torch.zeros(2, 4), {"maps": s_feat})
    teacher = Outputs(torch.zeros(2, 4), {"maps": t_feat})
    term = ClassAttentionTransfer(
        "maps", "maps", resolution=entry["resolution"], normalize=entry["normalize"]
    )
    term.bind(context(student, teacher, s_net=s_net, t_net=t_net))
    term.double()
    return term, student, teacher


class Head(nn.Module):
    """A network's classifier alone (what CAT-KD reads besides the map)."""

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, classes)


@pytest.mark.parametrize("case", range(4))
def test_cat_kd_matches_golden(case: int) -> None:
    term, student, teacher = golden_cat(case)
    out = term(student, teacher, batch_of(2))
    assert out["loss"].item() == pytest.approx(GOLDEN["cat_kd"][case]["loss"], rel=1e-10)
    assert torch.equal(out["loss"], out["cat_kd/cat"])


# ------------------------------------------------------------ gradients, state
def test_reviewkd_backward_reaches_student_features_and_the_abfs() -> None:
    term, student, teacher, batch = golden_reviewkd()
    for x in student.features.values():
        x.requires_grad_()
    term(student, teacher, batch)["loss"].backward()
    for x in student.features.values():
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in term.parameters())
    assert all(x.grad is None for x in teacher.features.values())


def test_cat_kd_backward_reaches_student_map_and_classifier_only() -> None:
    term, student, teacher = golden_cat(0)
    student.features["maps"].requires_grad_()
    term(student, teacher, batch_of(2))["loss"].backward()
    grad = student.features["maps"].grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    head = term._student_head
    assert head is not None and head.module.weight.grad.abs().sum() > 0
    assert list(term.parameters()) == []  # the classifier belongs to the student
    assert list(term.state_dict()) == ["teacher_weight"]


def test_cat_kd_reads_the_students_classifier_live_and_deepcopy_shares_it() -> None:
    term, student, teacher = golden_cat(0)
    before = term(student, teacher, batch_of(2))["loss"].item()
    trial = copy.deepcopy(term)  # what the bind's dry run does
    assert trial._student_head is term._student_head
    assert trial.teacher_weight is not term.teacher_weight
    with torch.no_grad():
        term._student_head.module.weight.mul_(-1.0)  # type: ignore[union-attr]
    assert term(student, teacher, batch_of(2))["loss"].item() != pytest.approx(before)


def test_cat_kd_prepare_reads_the_trained_teachers_classifier() -> None:
    entry = GOLDEN["cat_kd"][0]
    s_feat, t_feat = t64(entry["student_features"]), t64(entry["teacher_features"])
    s_net, t_net = Head(3, 4), Head(2, 4)
    student = Outputs(torch.zeros(2, 4), {"maps": s_feat})
    teacher = Outputs(torch.zeros(2, 4), {"maps": t_feat})
    term = ClassAttentionTransfer("maps", "maps")
    term.bind(context(student, teacher, s_net=s_net, t_net=t_net))  # teacher not yet trained
    with torch.no_grad():
        t_net.fc.weight.add_(1.0)  # "training"
    assert not torch.equal(term.teacher_weight, t_net.fc.weight)
    other_student = Head(3, 4)
    term.prepare(other_student, t_net, [])
    assert torch.equal(term.teacher_weight, t_net.fc.weight)
    assert term._student_head is not None and term._student_head.module is other_student.fc
    with pytest.raises(TrainingError, match="pass the teacher network"):
        term.prepare(other_student, None, [])


def test_reviewkd_warmup_counts_training_items_in_epochs() -> None:
    term, student, teacher, _ = golden_reviewkd()  # num_train 10, warm-up over 4 epochs
    term.items_seen.zero_()
    factors = []
    for _ in range(6):
        factors.append(term(student, teacher, batch_of(3))["reviewkd/warmup"].item())
    # items before each call: 0 3 6 9 | 12 15 -> epochs 1 1 1 1 | 2 2
    assert factors == pytest.approx([0.25] * 4 + [0.5] * 2)
    term.eval()
    term(student, teacher, batch_of(3))
    assert term.items_seen.item() == 18  # evaluation does not advance the warm-up
    no_warmup, *_ = golden_reviewkd()
    no_warmup.warmup_epochs = 0.0
    assert no_warmup(student, teacher, batch_of(3))["reviewkd/warmup"].item() == 1.0


# -------------------------------------------------------- on real networks
def fmnist_like(n: int = 16) -> TensorDataset:
    gen = torch.Generator().manual_seed(0)
    info = DatasetInfo("fake", 10, (1, 28, 28), [str(i) for i in range(10)])
    return TensorDataset(torch.randn(n, 1, 28, 28, generator=gen), torch.arange(n) % 10, info)


def resnets() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    student = create_model("resnet8", num_classes=10, in_channels=1)
    teacher = create_model("resnet20", num_classes=10, in_channels=1)
    return student, teacher


def bound(spec: dict, seed: int = 0) -> nn.Module:
    loss = build_loss(spec)
    student, teacher = resnets()
    bind_loss(loss, student, teacher, fmnist_like(), device="cpu", seed=seed)
    return loss


def test_reviewkd_binds_abfs_sized_from_the_resnets_deterministically() -> None:
    spec = {"reviewkd": {"student_layers": STAGES, "teacher_layers": STAGES}}
    a, b, c = bound(spec), bound(spec), bound(spec, seed=1)
    abfs = a["reviewkd"].abfs
    assert [abf.out[0].out_channels for abf in abfs] == [16, 32, 64, 64]  # teacher stages
    assert [abf.reduce[0].in_channels for abf in abfs] == [16, 32, 64, 64]  # student stages
    assert {abf.reduce[0].out_channels for abf in abfs} == {64}  # min(512, deepest)
    assert [abf.attention is None for abf in abfs] == [False, False, False, True]
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    assert a["reviewkd"].num_train == 16


def test_cat_kd_binds_to_the_resnets_classifiers() -> None:
    loss = bound({"cat_kd": {"student_layer": "layer3", "teacher_layer": "layer3"}})
    term = loss["cat_kd"]
    assert term.teacher_weight.shape == (10, 64)
    assert term._student_head_path == "fc" and term._teacher_head_path == "fc"


def one_line_config_error(spec: dict, match: str) -> str:
    with pytest.raises(ConfigError, match=match) as info:
        bound(spec)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_cat_kd_refuses_a_vector_where_a_map_is_needed_at_bind() -> None:
    spec = {"cat_kd": {"student_layer": "pool", "teacher_layer": "layer3"}}
    message = one_line_config_error(spec, r"student layer 'pool' gives a vector \(64,\)")
    assert "(C, H, W)" in message and "'student'" in message  # names the member


def test_cat_kd_refuses_a_map_the_classifier_does_not_pool() -> None:
    spec = {"cat_kd": {"student_layer": "layer2", "teacher_layer": "layer3"}}
    message = one_line_config_error(spec, r"classifier 'fc' maps 64 features .* 32 channels")
    assert message.startswith("'student'")  # names the member


def test_cat_kd_refuses_a_resolution_larger_than_the_map() -> None:
    spec = {"cat_kd": {"student_layer": "layer3", "teacher_layer": "layer3", "resolution": 8}}
    message = one_line_config_error(spec, r"cat_kd.resolution=8 exceeds the student's map 7x7")
    assert message.startswith("'student'")  # names the member


def test_reviewkd_refuses_a_vector_paired_with_a_map_at_bind() -> None:
    spec = {"reviewkd": {"student_layers": ["layer2", "pool"], "teacher_layers": STAGES[1:3]}}
    message = one_line_config_error(
        spec, r"student layer 'pool' gives a vector \(64,\) but teacher layer"
    )
    assert message.startswith("'student'")  # names the member


def test_reviewkd_refuses_layers_listed_deep_to_shallow() -> None:
    spec = {"reviewkd": {"student_layers": STAGES[::-1], "teacher_layers": STAGES[::-1]}}
    message = one_line_config_error(spec, "from shallow to deep")
    assert message.startswith("'student'")  # names the member


def test_a_feature_that_is_neither_map_nor_vector_is_refused() -> None:
    student = Outputs(torch.zeros(2, 3), {"tokens": torch.zeros(2, 5, 8)})
    teacher = Outputs(torch.zeros(2, 3), {"tokens": torch.zeros(2, 5, 8)})
    with pytest.raises(ConfigError, match=r"shape \(5, 8\); ReviewKD reads feature maps"):
        ReviewKD(["tokens"], ["tokens"]).bind(context(student, teacher))


def test_unbound_terms_say_so() -> None:
    student = Outputs(torch.zeros(2, 3), {"a": torch.zeros(2, 4, 3, 3)})
    with pytest.raises(TrainingError, match="reviewkd was not bound"):
        ReviewKD(["a"], ["a"])(student, student, batch_of(2))
    with pytest.raises(TrainingError, match="cat_kd was not bound"):
        ClassAttentionTransfer("a", "a")(student, student, batch_of(2))


# ------------------------------------------------------------ bad parameters
@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("reviewkd", {"student_layers": "layer1", "teacher_layers": ["layer1"]},
         r"reviewkd.student_layers='layer1' is "),  # the registry's type check, or ours
        ("reviewkd", {"student_layers": ["layer1", "layer2"], "teacher_layers": ["layer1"]},
         "reviewkd: 2 student layers but 1 teacher layers"),
        ("reviewkd", {"student_layers": ["a", "a"], "teacher_layers": ["b", "c"]},
         "names 'a' twice"),
        ("reviewkd", {"student_layers": ["a", "b"], "teacher_layers": ["c", "c"]},
         r"reviewkd.teacher_layers=\['c', 'c'\] names 'c' twice"),
        ("reviewkd", {"student_layers": [], "teacher_layers": []}, "is not a list"),
        ("reviewkd", {"student_layers": ["a"], "teacher_layers": [" b"]}, "not a module path"),
        ("reviewkd", {"student_layers": ["a"], "teacher_layers": ["b"], "warmup_epochs": -1},
         r"reviewkd.warmup_epochs=-1 is out of range"),
        ("reviewkd", {"student_layers": ["a"], "teacher_layers": ["b"], "max_mid_channels": 0},
         r"reviewkd.max_mid_channels=0 is invalid"),
        ("cat_kd", {"student_layer": "", "teacher_layer": "layer3"}, "not a module path"),
        ("cat_kd", {"student_layer": "a", "teacher_layer": "b", "resolution": 0},
         r"cat_kd.resolution=0 is invalid"),
        ("cat_kd", {"student_layer": "a", "teacher_layer": "b", "normalize": "yes"},
         r"cat_kd.normalize='yes' is invalid"),
        ("reviewkd", {"student_layers": ["a", 3], "teacher_layers": ["b", "c"]},
         r"reviewkd.student_layers=\['a', 3\] is invalid"),
        ("cat_kd", {"student_layer": "a", "teacher_layer": "b", "student_classifier": ""},
         "not a module path"),
    ],
)  # fmt: skip
def test_bad_parameters_are_one_config_error(name: str, params: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        create_loss(name, **params)
    assert "\n" not in str(info.value)


def test_a_classifier_path_that_is_not_linear_is_refused_at_bind() -> None:
    spec = {"cat_kd": {"student_layer": "layer3", "teacher_layer": "layer3",
                       "student_classifier": "pool"}}  # fmt: skip
    message = one_line_config_error(
        spec, r"cat_kd.student_classifier='pool' is a Sequential, not an nn.Lin"
    )
    assert message.startswith("'student'")  # names the member


def test_the_class_itself_checks_its_layer_lists() -> None:
    with pytest.raises(ConfigError, match=r"reviewkd.student_layers='layer1' is a single path"):
        ReviewKD("layer1", ["layer1"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"reviewkd.teacher_layers\[0\]=3 is not a module path"):
        ReviewKD(["a"], [3])  # type: ignore[list-item]


def test_cat_loss_defaults_pool_to_two_by_two_and_normalise() -> None:
    """``resolution=2, normalize=True`` (CAT-KD's settings), against a hand computation."""
    s = torch.arange(16.0, dtype=torch.float64).view(1, 1, 4, 4)
    t = torch.ones(1, 1, 4, 4, dtype=torch.float64)
    pooled = torch.tensor([2.5, 4.5, 10.5, 12.5], dtype=torch.float64)  # 2x2 block means
    ps, pt = pooled / pooled.norm(), torch.full((4,), 0.5, dtype=torch.float64)
    assert float(cat_loss(s, t)) == pytest.approx(float(((ps - pt) ** 2).mean()), rel=1e-12)


def test_hcl_loss_refuses_unpaired_or_empty_lists_in_one_exact_line() -> None:
    a = torch.zeros(1, 1, 2, 2)
    for student, teacher, counts in (([a, a], [a], "2 and 1"), ([], [], "0 and 0")):
        with pytest.raises(ValueError) as info:
            hcl_loss(student, teacher)
        assert str(info.value) == f"hcl_loss needs equally many maps, got {counts}"
