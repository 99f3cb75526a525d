"""Claim rules and verdicts: parsing, intervals over seeds, and verdicts that never overstate."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distillscope.claims.rule import interval, parse_rule, verdict
from distillscope.errors import ConfigError


def test_a_rule_is_a_signed_sum_of_measures_and_numbers() -> None:
    rule = parse_rule("a:x->y/vs_z - b:k + 0.25 - 1e-1 < 0")
    assert rule.terms == ((1, "a:x->y/vs_z"), (-1, "b:k"))
    assert rule.constant == pytest.approx(0.15)
    assert rule.direction == "<"
    assert rule.value({"a:x->y/vs_z": 1.0, "b:k": 0.5}) == pytest.approx(0.65)


def test_a_leading_minus_negates_the_first_measure() -> None:
    rule = parse_rule("-acc:kd + acc:ind > 0")
    assert rule.terms == ((-1, "acc:kd"), (1, "acc:ind"))


@pytest.mark.parametrize("value", [{"m:a": None}, {"m:a": float("nan")}, {}])
def test_a_missing_or_non_finite_measure_gives_no_value(value) -> None:
    assert parse_rule("m:a - 0.5 > 0").value(value) is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "is not a rule"),
        (3, "is not a rule"),
        ("acc:kd - acc:ind", "compares a sum with 0"),
        ("acc:kd - acc:ind > 0.5", "compares a sum with 0"),
        ("acc:kd >= 0", "compares a sum with 0"),
        ("acc:kd -acc:ind > 0", "is neither a number nor a measure"),
        ("kd - ind > 0", "is neither a number nor a measure"),
        ("0.5 - 0.2 > 0", "reads no measure"),
    ],
)
def test_bad_rules_get_one_line_errors(text, says) -> None:
    with pytest.raises(ConfigError, match=says) as err:
        parse_rule(text, "claims.x.rule")
    assert "\n" not in str(err.value) and "claims.x.rule" in str(err.value)


def test_interval_is_the_student_t_interval() -> None:
    iv = interval([1.0, 2.0, 3.0, None, float("inf")])
    assert (iv.n, iv.mean, iv.sd) == (3, 2.0, 1.0)
    half = 4.302652729911275 / math.sqrt(3)  # t_{0.975, 2}
    assert iv.low == pytest.approx(2.0 - half) and iv.high == pytest.approx(2.0 + half)


def test_one_seed_gives_no_interval_and_no_verdict() -> None:
    iv = interval([0.3])
    assert (iv.n, iv.mean, iv.sd, iv.low) == (1, 0.3, None, None)
    assert verdict(parse_rule("m:a > 0"), iv) == "inconclusive at 1 seeds"
    assert verdict(parse_rule("m:a > 0"), interval([])) == "inconclusive at 0 seeds"


def test_verdicts_follow_the_rule_direction() -> None:
    above, below = interval([0.1, 0.11, 0.12]), interval([-0.1, -0.11, -0.12])
    assert verdict(parse_rule("m:a > 0"), above) == "reproduced"
    assert verdict(parse_rule("m:a > 0"), below) == "not reproduced"
    assert verdict(parse_rule("m:a < 0"), below) == "reproduced"
    assert verdict(parse_rule("m:a < 0"), above) == "not reproduced"


def test_a_failing_control_keeps_a_claim_from_reproduced() -> None:
    rule, control = parse_rule("m:a > 0"), parse_rule("m:b > 0")
    holds = verdict(rule, interval([0.1, 0.11, 0.12]), [(control, interval([0.2, 0.21, 0.2]))])
    crosses = verdict(rule, interval([0.1, 0.11, 0.12]), [(control, interval([0.2, -0.2, 0.1]))])
    assert holds == "reproduced"
    assert crosses == "inconclusive at 3 seeds"


finite = st.floats(-1.0, 1.0, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(st.lists(finite, min_size=0, max_size=8), st.sampled_from([">", "<"]))
def test_never_reproduced_when_the_interval_crosses_zero(values, direction) -> None:
    iv = interval(values)
    out = verdict(parse_rule(f"m:a {direction} 0"), iv)
    if iv.low is None or iv.low <= 0 <= iv.high:
        assert out.startswith("inconclusive")
    expected_side = 1 if direction == ">" else -1
    if out == "reproduced":
        assert iv.side() == expected_side and (iv.low > 0 or iv.high < 0)
    if out == "not reproduced":
        assert iv.side() == -expected_side
