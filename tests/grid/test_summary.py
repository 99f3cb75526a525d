"""The grid summary's statistics: mean, sample standard deviation and n over seeds."""

from __future__ import annotations

import math

import pytest

from distillscope.grid.summary import aggregate, mean_std, summary_csv


@pytest.mark.parametrize(
    ("values", "mean", "std", "n"),
    [
        ([0.8, 0.9, 1.0], 0.9, 0.1, 3),
        ([1, 2, 3, 4], 2.5, math.sqrt(5 / 3), 4),  # sum of squares 5, n - 1 = 3
        ([0.25, 0.75], 0.5, math.sqrt(0.125), 2),
        ([2.0, None, float("nan"), 4.0], 3.0, math.sqrt(2), 2),  # missing values do not count
        ([0.7], 0.7, None, 1),  # one seed: no spread
        ([None, float("nan")], None, None, 0),
        ([], None, None, 0),
    ],
)
def test_mean_std_golden_values(values, mean, std, n):
    got = mean_std(values)
    assert got["n"] == n
    assert got["mean"] == (None if mean is None else pytest.approx(mean, abs=1e-12))
    assert got["std"] == (None if std is None else pytest.approx(std, abs=1e-11))


def cell(cid, t, seed, value, status="done"):
    return {
        "id": cid,
        "labels": {"T": t, "seed": seed},
        "status": status,
        "values": {"accuracy": {"s/top1": value, "t/top1": 1.0}} if status == "done" else {},
    }


def test_aggregate_groups_by_every_axis_but_the_seed():
    records = [
        cell("a", "1", "0", 0.5),
        cell("b", "1", "1", 0.7),
        cell("c", "4", "0", 0.9),
        cell("d", "4", "1", None),  # a probe that gave no number
        cell("e", "4", "2", None, status="partial"),  # not finished: not counted
    ]
    groups = aggregate(records, "seed")
    assert [(g["id"], g["labels"], g["cells"], g["done"]) for g in groups] == [
        ("T=1", {"T": "1"}, ["a", "b"], 2),
        ("T=4", {"T": "4"}, ["c", "d", "e"], 2),
    ]
    assert groups[0]["values"]["accuracy"]["s/top1"] == {"mean": 0.6, "std": 0.141421356237, "n": 2}
    assert groups[1]["values"]["accuracy"]["s/top1"] == {"mean": 0.9, "std": None, "n": 1}
    assert groups[1]["values"]["accuracy"]["t/top1"] == {"mean": 1.0, "std": 0.0, "n": 2}


def test_without_a_seed_axis_every_cell_is_its_own_group():
    groups = aggregate([cell("a", "1", "0", 0.5), cell("b", "1", "1", 0.7)], None)
    assert [g["id"] for g in groups] == ["T=1,seed=0", "T=1,seed=1"]
    assert groups[0]["values"]["accuracy"]["s/top1"]["n"] == 1


def test_summary_csv_has_one_line_per_value():
    payload = {
        "grid": {"axes": [{"key": "T"}, {"key": "seed"}], "seed_axis": "seed"},
        "groups": aggregate([cell("a", "1", "0", 0.5), cell("b", "1", "1", 0.7)], "seed"),
    }
    lines = summary_csv(payload).splitlines()
    assert lines == [
        "T,probe,key,mean,std,n",
        "1,accuracy,s/top1,0.6,0.141421356237,2",
        "1,accuracy,t/top1,1.0,0.0,2",
    ]
