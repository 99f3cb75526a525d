"""SSKD (Xu et al. 2020; paper 000 B.4.4): golden values from
``tests/fixtures/make_golden_sskd.py`` (numpy, the authors' loss), the views contract through
the Trainer, the teacher head's stage, resume, and the inputs it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from distillscope.config_train import TrainConfig
from distillscope.contracts import Batch, Outputs, Views
from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.distill import build_loss, create_loss
from distillscope.distill.self_supervised import kept_by_error_level, rotated_views
from distillscope.errors import ConfigError
from distillscope.models import create_model
from distillscope.train.bind import bind_loss
from distillscope.train.trainer import Trainer

GOLDEN = json.loads((Path(__file__).parents[1] / "fixtures" / "golden_sskd.json").read_text())
INFO = DatasetInfo("toy", 10, (1, 12, 12), [str(i) for i in range(10)])


def t64(values: object) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def _set_head(head: nn.Module, w: dict) -> None:
    with torch.no_grad():
        head[0].weight.copy_(t64(w["w1"]))
        head[0].bias.copy_(t64(w["b1"]))
        head[2].weight.copy_(t64(w["w2"]))
        head[2].bias.copy_(t64(w["b2"]))


@pytest.mark.parametrize("which", [0, 1])
def test_sskd_matches_the_numpy_golden_values(which):
    case, params, expected = GOLDEN["case"], GOLDEN["params"][which], GOLDEN["expected"][which]
    term = create_loss("sskd", **params, student_layer="f", teacher_layer="f").double()
    d = len(case["s_feat"][0])
    term.student_head = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d)).double()
    term.teacher_head = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d)).double()
    _set_head(term.student_head, case["s_head"])
    _set_head(term.teacher_head, case["t_head"])
    student = Outputs(t64(case["s_logits"]), {"f": t64(case["s_feat"])})
    teacher = Outputs(t64(case["t_logits"]), {"f": t64(case["t_feat"])})
    views = Views(
        Outputs(t64(case["s_view_logits"]), {"f": t64(case["s_view_feat"])}),
        Outputs(t64(case["t_view_logits"]), {"f": t64(case["t_view_feat"])}),
    )
    n = len(case["targets"])
    batch = Batch(torch.zeros(n, 1), torch.tensor(case["targets"]), torch.arange(n))
    parts = term(student, teacher, batch, views=views)
    for key in ("ce", "kd", "tf", "ss"):
        assert parts[f"sskd/{key}"].item() == pytest.approx(expected[key], rel=1e-9, abs=1e-12)
    assert parts["loss"].item() == pytest.approx(expected["loss"], rel=1e-9)


def test_error_level_ranking_keeps_right_rows_and_the_best_ranked_wrong_ones():
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    truth = torch.tensor([1, 2, 0, 0])  # ranks: 0, 1 (tie broken stably), 0, 2
    assert kept_by_error_level(scores, truth, 0.0).tolist() == [0, 2]
    assert kept_by_error_level(scores, truth, 0.5).tolist() == [0, 1, 2]
    assert kept_by_error_level(scores, truth, 1.0).tolist() == [0, 1, 2, 3]


def test_rotated_views_are_view_major_rotations():
    x = torch.randn(2, 3, 5, 5)
    views = rotated_views(x)
    assert views.shape == (6, 3, 5, 5)
    assert torch.equal(views[3], torch.rot90(x[1], 2, dims=(1, 2)))  # view 1 (180), image 1


def data(n: int = 32) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 1, 12, 12, generator=g), torch.arange(n) % 10, INFO)


def models() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    return (
        create_model("resnet8", num_classes=10, in_channels=1),
        create_model("resnet8", num_classes=10, in_channels=1),
    )


def test_training_runs_the_views_and_freezes_the_trained_teacher_head():
    student, teacher = models()
    loss = build_loss({"sskd": {"head_epochs": 1}})
    tr = Trainer(student, loss, TrainConfig(epochs=1, batch_size=16), teacher=teacher,
                 progress=False)  # fmt: skip
    bind_loss(loss, student, teacher, data(), device="cpu")
    before = [p.clone() for p in loss["sskd"].teacher_head.parameters()]
    record = tr.fit(data())[0]
    head = loss["sskd"].teacher_head
    assert not any(torch.equal(a, b) for a, b in zip(before, head.parameters()))  # trained
    assert not any(p.requires_grad for p in head.parameters())  # then frozen
    assert {"sskd/tf", "sskd/ss", "sskd/ss_acc"} <= set(record) and record["sskd/tf"] > 0


class Killed(Exception):
    pass


def _run(folder, kill_at: int | None, resume: bool) -> tuple[nn.Module, nn.Module]:
    """Two epochs of two steps; the loss's ``kill_at``-th call (bind's dry run first) raises."""
    student, teacher = models()
    loss = build_loss({"sskd": {"head_epochs": 1}})
    calls = [0]

    def count(module: nn.Module, args: object) -> None:
        calls[0] += 1
        if calls[0] == kill_at:
            raise Killed

    loss.register_forward_pre_hook(count)
    Trainer(student, loss, TrainConfig(epochs=2, batch_size=16), teacher=teacher,
            progress=False, checkpoint_dir=folder).fit(data(), resume=resume)  # fmt: skip
    return student, loss


def test_a_killed_sskd_run_resumes_identical(tmp_path):
    straight = _run(tmp_path / "a", None, False)
    with pytest.raises(Killed):
        _run(tmp_path / "b", 1 + 2 + 1, False)  # dry run, epoch 1, then epoch 2's first step
    resumed = _run(tmp_path / "b", None, True)
    for a, b in zip(straight, resumed):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    head = resumed[1]["sskd"].teacher_head
    assert not any(p.requires_grad for p in head.parameters())  # still frozen after resume


def test_non_square_inputs_are_refused_at_bind():
    flat_info = DatasetInfo("flat", 10, (1, 8, 12), [str(i) for i in range(10)])
    wide = TensorDataset(torch.randn(8, 1, 8, 12), torch.arange(8) % 10, flat_info)
    student, teacher = models()
    with pytest.raises(ConfigError, match="not square images"):
        bind_loss(build_loss({"sskd": {}}), student, teacher, wide, device="cpu", name="s")


@pytest.mark.parametrize(
    ("params", "needle"),
    [({"ss_ratio": 1.5}, "sskd.ss_ratio"), ({"tf_temperature": 0}, "sskd.tf_temperature"),
     ({"head_epochs": -1}, "sskd.head_epochs"), ({"kd_weight": -1}, "sskd.kd_weight")],
)  # fmt: skip
def test_bad_parameters_are_one_line(params, needle):
    with pytest.raises(ConfigError, match=needle):
        create_loss("sskd", **params)


def test_a_cache_without_the_features_the_bound_loss_reads_is_refused_before_training():
    """SSKD learns its layers at bind; a cache built from the unbound loss lacks them."""
    from distillscope.train.teacher_cache import TeacherCache

    student, teacher = models()
    cache = TeacherCache.build(teacher, data(), 16, "cpu", progress=False)  # logits only
    trainer = Trainer(student, build_loss({"sskd": {}}), TrainConfig(epochs=1, batch_size=16),
                      teacher=teacher, teacher_cache=cache, progress=False)  # fmt: skip
    with pytest.raises(ConfigError, match="holds only"):
        trainer.fit(data())
