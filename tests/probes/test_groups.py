"""group_gap: accuracy per group, worst group, gap, agreement per group."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.errors import ConfigError
from distillscope.probes import create_probe
from distillscope.probes.base import ProbeData, Roles

INFO = DatasetInfo("g", 2, (2,), ["a", "b"], pixel_range=None)


class Fixed(nn.Module):
    """Predicts class 1 iff x0 > 0 (``flip``: the opposite)."""

    def __init__(self, flip: bool = False) -> None:
        super().__init__()
        self.flip = flip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        one = (x[:, 0] > 0) ^ self.flip
        return torch.stack([(~one).float(), one.float()], 1)


def data() -> ProbeData:
    # 8 items: x0 sign gives the label for the first 6; the last 2 are labelled against it
    x = torch.tensor([[-1.0, 0], [1, 0], [-1, 0], [1, 0], [-1, 0], [1, 0], [-1, 0], [1, 0]])
    y = torch.tensor([0, 1, 0, 1, 0, 1, 1, 0])
    groups = torch.tensor([0, 1, 0, 1, 1, 0, 1, 0])  # group == label: majority for 0..3, 6, 7
    return ProbeData(TensorDataset(x, y, INFO, groups=groups), INFO)


def test_majority_and_minority_accuracy_worst_gap_and_agreement():
    models = {"t": Fixed(), "s": Fixed(flip=True)}
    roles = Roles(teachers=["t"], students=["s"], teacher_of={"s": "t"})
    v = create_probe("group_gap").run(models, data(), roles).values
    # majority: items 0-3, 6, 7 -> t right on 0-3 (4 of 6); minority: items 4, 5 -> t right on both
    assert v["t/majority"] == pytest.approx(4 / 6) and v["t/minority"] == 1.0
    assert v["t/worst"] == pytest.approx(4 / 6) and v["t/gap"] == pytest.approx(1 / 3)
    assert v["s/majority"] == pytest.approx(2 / 6) and v["s/minority"] == 0.0
    assert v["t->s/majority"] == 0.0 and v["t->s/minority"] == 0.0  # always disagree


def test_dataset_groups_as_they_are():
    result = create_probe("group_gap", grouping="groups").run({"t": Fixed()}, data(),
                                                              Roles(teachers=["t"]))  # fmt: skip
    assert set(result.values) == {"t/group0", "t/group1", "t/worst", "t/gap"}
    assert result.params["group_sizes"] == {"group0": 4, "group1": 4}


def test_data_without_groups_is_skipped_and_bad_grouping_is_one_line():
    plain = ProbeData(TensorDataset(torch.zeros(4, 2), torch.zeros(4), INFO), INFO)
    result = create_probe("group_gap").run({"t": Fixed()}, plain, Roles(teachers=["t"]))
    assert result.values == {} and "no groups" in result.params["skipped"]["group_gap"]
    with pytest.raises(ConfigError, match="group_gap.grouping"):
        create_probe("group_gap", grouping="colour")


def test_groups_named_by_the_data_are_reported_by_name():
    named = DatasetInfo("g", 2, (2,), ["a", "b"], pixel_range=None, group_names=("land", "water"))
    base = data().dataset
    probe_data = ProbeData(TensorDataset(base.inputs, base.targets, named, groups=base.groups),
                           named)  # fmt: skip
    result = create_probe("group_gap", grouping="groups").run(
        {"t": Fixed()}, probe_data, Roles(teachers=["t"])
    )
    assert set(result.values) == {"t/land", "t/water", "t/worst", "t/gap"}
    assert result.params["group_sizes"] == {"land": 4, "water": 4}
