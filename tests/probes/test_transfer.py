"""adversarial_transfer (paper 003 4.2): a teacher's successful I-FGSM images on its students."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.errors import ConfigError
from distillscope.probes import create_probe
from distillscope.probes.base import ProbeData, Roles


def linear(w: list[list[float]]) -> nn.Linear:
    net = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor(w))
    return net


@pytest.fixture
def strip() -> ProbeData:
    """60 points with 0.05 <= |x0| <= 0.2 and |x1| >= 1: within eps 0.3 of x0 = 0 only."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 2
    x0 = (0.05 + 0.15 * torch.rand(60, generator=g)) * (2 * y - 1)
    x1 = (1 + torch.rand(60, generator=g)) * torch.where(torch.rand(60, generator=g) < 0.5, -1, 1)
    info = DatasetInfo("strip", 2, (2,), ["left", "right"], pixel_range=None)
    return ProbeData(TensorDataset(torch.stack([x0, x1], 1), y, info), info)


def models() -> dict[str, nn.Module]:
    teacher = linear([[-10.0, 0.0], [10.0, 0.0]])  # boundary x0 = 0
    return {
        "teacher": teacher,
        "distilled": copy.deepcopy(teacher),  # the same boundary: fooled by every success
        "independent": linear([[-10.0, -1.0], [10.0, 1.0]]),  # tilted: fooled less often
        "foreign": linear([[0.0, -10.0], [0.0, 10.0]]),  # boundary x1 = 0, out of reach
    }


ROLES = Roles(teachers=["teacher", "foreign"], independent=["independent"], students=["distilled"],
              teacher_of={"distilled": "teacher", "independent": "teacher"})  # fmt: skip


def test_the_teacher_s_images_fool_a_copy_always_and_a_foreign_source_never_succeeds(strip):
    probe = create_probe("adversarial_transfer", foreign="foreign", reverse=True)
    result = probe.run(models(), strip, ROLES)
    v = result.values
    assert v["teacher/success"] == 1.0  # every point is within eps of x0 = 0
    assert v["teacher->distilled"] == 1.0
    assert 0.0 < v["teacher->independent"] < 1.0
    assert v["foreign/success"] == 0.0 and "foreign->distilled" in result.params["skipped"]
    assert v["distilled->teacher"] == 1.0  # reverse: our addition
    assert result.params["n_successful"]["teacher"] == 60
    assert result.params["steps"] == 5 and result.params["eps"] == 0.3


def test_a_foreign_name_that_is_no_model_is_one_line(strip):
    probe = create_probe("adversarial_transfer", foreign="nope")
    with pytest.raises(ConfigError, match="'nope' is not a model of the run"):
        probe.run(models(), strip, ROLES)


def test_a_distilled_student_as_the_foreign_control_is_one_line(strip):
    probe = create_probe("adversarial_transfer", foreign="distilled")
    with pytest.raises(ConfigError, match="'distilled' is a distilled student.*did not learn"):
        probe.run(models(), strip, ROLES)


def test_no_pairs_is_skipped_with_a_reason(strip):
    result = create_probe("adversarial_transfer").run(models(), strip, Roles(teachers=["teacher"]))
    assert result.values == {} and "adversarial_transfer" in result.params["skipped"]


@pytest.mark.parametrize(
    ("params", "needle"),
    [({"eps": 0}, "adversarial_transfer.eps"), ({"steps": 0}, "adversarial_transfer.steps"),
     ({"foreign": ""}, "adversarial_transfer.foreign")],
)  # fmt: skip
def test_bad_parameters_are_one_line(params, needle):
    with pytest.raises(ConfigError, match=needle):
        create_probe("adversarial_transfer", **params)
