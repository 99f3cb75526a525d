"""Key parsing, row order and number formatting shared by the report's tables and charts."""

from __future__ import annotations

import pytest

from distillscope.report.tables import (
    MISSING,
    format_value,
    group_series,
    order_rows,
    row_label,
    split_key,
    subject,
    value_table,
)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.91234, "0.9123"),
        (1.0, "1.0000"),
        (-0.0, "0.0000"),
        (0.0, "0.0000"),
        (0.000731, "7.310e-04"),
        (-2.5e-7, "-2.500e-07"),
        (12345.6, "12,346"),
        (3e20, "3.000e+20"),
        (272474, "272,474"),
        (7, "7"),
        (None, MISSING),
        (float("nan"), MISSING),
        (float("inf"), "∞"),
        (float("-inf"), "-∞"),
        (True, "true"),
        ("n/a", "n/a"),
    ],
)
def test_format_value(value, text):
    assert format_value(value) == text


def test_keys_split_into_row_and_metric():
    assert split_key("teacher->kd/kl") == ("teacher->kd", "kl")
    assert split_key("kd/fgsm/strong") == ("kd", "fgsm/strong")
    assert split_key("kd") == ("kd", "")
    assert subject("teacher->kd") == "kd" and subject("kd") == "kd"
    assert row_label("teacher->kd") == "teacher -> kd" and row_label("kd") == "kd"


def test_rows_follow_model_order_with_own_row_before_pairs_and_unknowns_last():
    models = ["t1", "t2", "ind", "kd"]
    rows = ["zeta", "t2->kd", "kd", "t1->kd", "alpha", "t1->ind", "t1"]
    assert order_rows(rows, models) == ["t1", "t1->ind", "kd", "t1->kd", "t2->kd", "zeta", "alpha"]
    assert order_rows(["kd", "kd"], models) == ["kd"]


def test_value_table_puts_models_in_rows_and_metrics_in_columns():
    values = {"kd/top1": 0.9, "t/top1": 0.95, "t/top5": 1.0, "t->kd": 0.8, "t->kd/kl": None}
    table = value_table(values, ["t", "kd"])
    assert table.rows == ["t", "kd", "t->kd"]
    assert table.columns == ["top1", "top5", "", "kl"]
    assert table.get("t", "top5") == 1.0
    assert table.get("kd", "top5") is None  # absent cell
    assert table.get("t->kd", "kl") is None  # recorded as missing


def test_series_group_by_metric_with_their_own_or_the_shared_x():
    series = {
        "x": [0.0, 0.5],
        "x/pgd": [0.1, 0.2, 0.3],
        "kd/pgd": [0.9, 0.5, 0.1],
        "t/pgd": [0.95, 0.6, 0.2],
        "kd/fgsm": [0.9, 0.7],
        "t->kd": [1.0, None],
    }
    groups = {g.metric: g for g in group_series(series, ["t", "kd"])}
    assert list(groups) == ["pgd", "fgsm", ""]
    assert groups["pgd"].x == [0.1, 0.2, 0.3]
    assert list(groups["pgd"].lines) == ["t", "kd"]
    assert groups["fgsm"].x == [0.0, 0.5]
    assert groups[""].lines == {"t->kd": [1.0, None]}
    assert group_series({"kd": [1.0]}, ["kd"])[0].x is None
