"""The feature, relation and logit-variant methods against golden values recomputed from their
formulas in numpy (``tests/fixtures/make_golden_methods.py``), plus gradients and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from distillscope.contracts import Batch, Outputs
from distillscope.distill import create_loss
from distillscope.distill.base import BindContext
from distillscope.errors import ConfigError, TrainingError

GOLDEN = json.loads((Path(__file__).parents[1] / "fixtures" / "golden_methods.json").read_text())
IN = GOLDEN["inputs"]


def tensor(key: str) -> torch.Tensor:
    return torch.tensor(IN[key], dtype=torch.float64)


def batch() -> Batch:
    y = torch.tensor(IN["y"])
    return Batch(torch.zeros(len(y), 1), y, torch.arange(len(y)))


def outputs(kind: str) -> tuple[Outputs, Outputs]:
    s = tensor(f"s_{kind}").requires_grad_()
    logits = torch.zeros(s.shape[0], 5, dtype=torch.float64)
    return Outputs(logits, {"s": s}), Outputs(logits, {"t": tensor(f"t_{kind}")})


PAIRED = {"student_layer": "s", "teacher_layer": "t"}
LISTED = {"student_layers": ["s"], "teacher_layers": ["t"]}
CASES = [("sp", PAIRED, "vec"), ("rkd", PAIRED, "vec"), ("pkt", PAIRED, "vec"),
         ("at", LISTED, "map"), ("nst", LISTED, "map")]  # fmt: skip


@pytest.mark.parametrize(("name", "params", "kind"), CASES)
def test_feature_and_relation_terms_match_the_golden_values(name, params, kind) -> None:
    term = create_loss(name, **params)
    student, teacher = outputs(kind)
    out = term(student, teacher, batch())
    golden = GOLDEN[name]
    expected = golden["loss"] if isinstance(golden, dict) else golden
    assert out["loss"].item() == pytest.approx(expected, rel=1e-9, abs=1e-12)
    if name == "rkd":
        assert out["rkd/distance"].item() == pytest.approx(golden["distance"], rel=1e-9)
        assert out["rkd/angle"].item() == pytest.approx(golden["angle"], rel=1e-9)
    out["loss"].backward()
    grad = student.features["s"].grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize(("normalize", "key"), [(False, "cc"), (True, "cc_normalize")])
def test_cc_matches_the_golden_value_with_fixed_embeddings(normalize, key) -> None:
    term = create_loss("cc", dim=3, normalize=normalize, **PAIRED).double()
    student, teacher = outputs("vec")
    ctx = BindContext(nn.Identity(), nn.Identity(), batch(), student.detach(), teacher, 4, 5)
    term.bind(ctx)
    term.double()
    e = IN["embed"]
    with torch.no_grad():
        for head, side in ((term.embed_s, "s"), (term.embed_t, "t")):
            head.linear.weight.copy_(torch.tensor(e[f"w_{side}"], dtype=torch.float64))
            head.linear.bias.copy_(torch.tensor(e[f"b_{side}"], dtype=torch.float64))
    out = term(student, teacher, batch())
    assert out["loss"].item() == pytest.approx(GOLDEN[key], rel=1e-9)
    out["loss"].backward()
    assert term.embed_t.linear.weight.grad is not None  # both heads train with the student


@pytest.mark.parametrize("name", ["dkd", "tf_kd"])
def test_logit_variants_match_the_golden_values(name) -> None:
    z_s = tensor("z_s").requires_grad_()
    out = create_loss(name)(Outputs(z_s), Outputs(tensor("z_t")), batch())
    for part, value in GOLDEN[name].items():
        key = "loss" if part == "loss" else f"{name}/{part}"
        assert out[key].item() == pytest.approx(value, rel=1e-9), part
    out["loss"].backward()
    assert torch.isfinite(z_s.grad).all() and z_s.grad.abs().sum() > 0


def test_dkd_warms_up_over_steps_and_counts_only_training_steps() -> None:
    term = create_loss("dkd", warmup_steps=4).double()
    args = (Outputs(tensor("z_s")), Outputs(tensor("z_t")), batch())
    full = GOLDEN["dkd"]
    distill = full["tckd"] + 8.0 * full["nckd"]
    seen = [term(*args)["loss"].item() for _ in range(5)]
    expected = [full["ce"] + min((i + 1) / 4, 1.0) * distill for i in range(5)]
    assert seen == pytest.approx(expected, rel=1e-9)
    term.eval()
    term(*args)
    assert int(term.steps) == 5  # evaluation does not advance the warm-up
    assert "steps" in term.state_dict()  # saved with the student's checkpoint


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("at", {"student_layers": "layer1", "teacher_layers": ["layer1"]}, "valid list"),
        ("at", {"student_layers": ["a", "b"], "teacher_layers": ["a"]}, "2 student layers"),
        ("nst", {"student_layers": [], "teacher_layers": []}, "not a list"),
        ("rkd", {**PAIRED, "angle_weight": -1}, "angle_weight"),
        ("tf_kd", {"correct_prob": 1.0}, "correct_prob"),
        ("dkd", {"temperature": 0}, "temperature"),
        ("cc", {**PAIRED, "dim": 0}, "dim"),
        ("cc", {**PAIRED, "normalize": "yes"}, "normalize"),
        ("crd", {**PAIRED, "sampler": "random"}, "sampler"),
    ],
)
def test_bad_parameters_are_one_config_error(name, params, match) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        create_loss(name, **params)
    assert "\n" not in str(info.value)


def test_at_refuses_vectors_at_bind() -> None:
    term = create_loss("at", **LISTED)
    s, t = Outputs(torch.zeros(2, 5), {"s": torch.zeros(2, 8)}), outputs("map")[1]
    ctx = BindContext(nn.Identity(), nn.Identity(), batch(), s, t, 4, 5)
    with pytest.raises(ConfigError, match="compares feature maps"):
        term.bind(ctx)


def test_relation_terms_need_two_samples() -> None:
    one = Outputs(torch.zeros(1, 5), {"s": torch.ones(1, 4)})
    with pytest.raises(TrainingError, match="two or more"):
        create_loss("sp", **PAIRED)(one, Outputs(torch.zeros(1, 5), {"t": torch.ones(1, 3)}),
                                    batch())  # fmt: skip


def test_crd_nce_matches_the_golden_value() -> None:
    from distillscope.distill.contrastive import nce_loss

    g = GOLDEN["crd_nce"]
    loss = nce_loss(torch.tensor(g["scores"], dtype=torch.float64), g["n"])
    assert loss.item() == pytest.approx(g["loss"], rel=1e-9)


def crd_bound(
    n: int = 40, negatives: int = 16384, **params: object
) -> tuple[nn.Module, Outputs, Outputs, Batch]:
    term = create_loss("crd", negatives=negatives, **params, **PAIRED)
    gen = torch.Generator().manual_seed(0)
    student = Outputs(torch.zeros(4, 5), {"s": torch.randn(4, 6, generator=gen)})
    teacher = Outputs(torch.zeros(4, 5), {"t": torch.randn(4, 9, generator=gen)})
    b = Batch(torch.zeros(4, 1), torch.tensor([0, 1, 2, 3]), torch.tensor([3, 17, 0, 39]))
    labels = torch.arange(n) % 5  # five classes of n / 5 items
    term.bind(BindContext(nn.Identity(), nn.Identity(), b, student, teacher, n, 5, labels))
    return term, student, teacher, b


def test_crd_banks_are_sized_by_the_training_set_and_move_in_training_only() -> None:
    term, student, teacher, b = crd_bound()
    assert term.bank_student.shape == (40, 128) and term.bank_teacher.shape == (40, 128)
    assert term.k == 39  # 16384 negatives clamped to N - 1
    before = term.bank_student.clone()
    term.eval()
    term(student, teacher, b)
    assert torch.equal(before, term.bank_student) and float(term.z_student) < 0
    term.train()
    out = term(student, teacher, b)
    moved = (term.bank_student != before).any(1)
    assert moved.nonzero().flatten().tolist() == [0, 3, 17, 39]  # exactly the batch's rows
    assert torch.allclose(term.bank_student[moved].norm(dim=1), torch.ones(4))
    assert float(term.z_student) > 0 and float(term.z_teacher) > 0  # fixed by the first batch
    assert {"crd/student", "crd/teacher"} <= set(out) and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert term.embed_s.linear.weight.grad.abs().sum() > 0
    assert {"bank_student", "bank_teacher", "z_student"} <= set(term.state_dict())


def test_crd_refuses_an_index_outside_its_bank() -> None:
    term, student, teacher, b = crd_bound()
    b.index[0] = 40
    with pytest.raises(TrainingError, match="memory bank holds 40 items"):
        term(student, teacher, b)


def test_vid_is_the_gaussian_nll_with_variances_sized_at_bind() -> None:
    term = create_loss("vid", **LISTED)
    student, teacher = outputs("map")
    term.bind(BindContext(nn.Identity(), nn.Identity(), batch(), student.detach(), teacher, 4, 5))
    term.double()
    assert [p.shape for p in term.log_scales] == [(2,)]  # one variance per teacher channel
    for conv in term.means[0]:
        if isinstance(conv, nn.Conv2d):
            assert conv.in_channels in (3, 2) and conv.out_channels == 2
    with torch.no_grad():
        term.means[0][-1].weight.zero_()  # mu(s) = 0: the loss is the teacher's NLL alone
    out = term(student, teacher, batch())
    assert out["loss"].item() == pytest.approx(GOLDEN["vid_zero_mean"], rel=1e-6)
    out["loss"].backward()
    assert term.log_scales[0].grad.abs().sum() > 0  # the variances are learned


def test_ft_factor_distance_matches_the_golden_value() -> None:
    from distillscope.distill.factor import factor

    from_maps = tensor("s_map")[:, :2]
    pooled = torch.nn.functional.avg_pool2d(tensor("t_map"), 2)
    got = (factor(from_maps) - factor(pooled)).abs().mean()
    assert got.item() == pytest.approx(GOLDEN["ft_factor_l1"], rel=1e-9)


def test_ft_pretrains_then_freezes_the_paraphraser_and_trains_the_translator() -> None:
    from distillscope.data.base import DatasetInfo, TensorDataset, iter_batches
    from distillscope.distill import build_loss
    from distillscope.models.taps import FeatureTap
    from distillscope.train.bind import bind_loss
    from distillscope.train.stage import prepare_loss

    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                            nn.Linear(4 * 8 * 8, 3))  # fmt: skip
    student = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(),
                            nn.Linear(2 * 8 * 8, 3))  # fmt: skip
    info = DatasetInfo("tiny", 3, (1, 8, 8), ["a", "b", "c"])
    data = TensorDataset(torch.randn(32, 1, 8, 8), torch.arange(32) % 3, info)

    loss = build_loss({"ft": {"student_layer": "1", "teacher_layer": "1",
                              "paraphraser_epochs": 5, "paraphraser_lr": 0.01}})  # fmt: skip
    bind_loss(loss, student, teacher, data, device="cpu")
    ft = loss["ft"]
    assert ft.translator[-2].out_channels == 2  # k = 0.5 of the teacher's 4 channels
    batches = list(iter_batches(data, 8))
    with FeatureTap(teacher, ["1"], detach=True) as tap:
        teacher(batches[0].inputs)
        t = tap.features["1"]
    before = torch.nn.functional.mse_loss(ft.decoder(ft.encoder(t)), t).item()
    prepare_loss(loss, student, teacher, batches)  # the paraphraser's stage, then prepare
    after = torch.nn.functional.mse_loss(ft.decoder(ft.encoder(t)), t).item()
    assert after < before  # the paraphraser learned to reconstruct the teacher's map
    assert not any(p.requires_grad for p in ft.encoder.parameters())
    assert all(p.requires_grad for p in ft.translator.parameters())


def test_ab_boundary_loss_matches_the_golden_value_and_connectors_come_from_bind() -> None:
    from distillscope.distill.attention import boundary_loss

    s = tensor("s_map")[:, :2]
    t = torch.nn.functional.avg_pool2d(tensor("t_map"), 2)
    assert boundary_loss(s, t, 1.0).item() == pytest.approx(GOLDEN["ab_boundary"], rel=1e-9)
    term = create_loss("ab", student_layers=["s", "s"], teacher_layers=["t", "t"])
    student, teacher = outputs("map")
    term.bind(BindContext(nn.Identity(), nn.Identity(), batch(), student.detach(), teacher, 4, 5))
    assert [c[0].in_channels for c in term.connectors] == [3, 3]
    assert [c[0].out_channels for c in term.connectors] == [2, 2]
    out = term.double()(student, teacher, batch())
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and student.features["s"].grad.abs().sum() > 0
