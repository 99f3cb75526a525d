"""A claim's rule and its verdict over seeds: a computation, never prose.

A rule is a signed sum of measures compared with zero, written as text in a claim's
declaration::

    accuracy:kd/top1 - accuracy:independent/top1 > 0

Each measure is ``<probe>:<value key>`` of a run's ``results.json`` (``probes.<probe>.values``);
a plain number may stand in a sum (``cam_similarity:teacher:kd/share - 0.5 > 0``). Per seed the
sum is one number ``d_i``; over ``n`` seeds the rule gets the mean, the sample standard
deviation and the two-sided 95% Student-t interval ``mean +- t_{0.975, n-1} * sd / sqrt(n)``.

The verdict (:func:`verdict`):

* **reproduced** when the interval lies wholly on the rule's side of zero **and** every control
  of the claim does the same;
* **not reproduced** when the interval lies wholly on the other side;
* otherwise **inconclusive at n seeds** (the interval crosses zero, fewer than two seeds have a
  value, or the claim holds but a control does not).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from distillscope.errors import ConfigError

__all__ = [
    "LEVEL",
    "Interval",
    "Rule",
    "interval",
    "parse_rule",
    "verdict",
]

#: Confidence level of the intervals.
LEVEL = 0.95
REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
# a measure: probe name, a colon, then the value key (no spaces; may hold ':', '/', '->')
_MEASURE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*:\S+")


@dataclass(frozen=True)
class Rule:
    """``sum_j sign_j * term_j  (> | <)  0``.

    Attributes:
        text: The rule as written.
        terms: ``(sign, measure)`` pairs, ``sign`` +1 or -1.
        constant: The sum of the plain numbers, signs applied.
        direction: ``">"`` or ``"<"``: the side of zero the claim expects.
    """

    text: str
    terms: tuple[tuple[int, str], ...]
    constant: float
    direction: str

    @property
    def measures(self) -> list[str]:
        """The measures the rule reads, in order, without repeats."""
        return list(dict.fromkeys(m for _, m in self.terms))

    def value(self, values: Mapping[str, float | None]) -> float | None:
        """The rule's sum for one seed's ``{measure: value}``; ``None`` when one is missing or
        not finite."""
        total = self.constant
        for sign, measure in self.terms:
            v = values.get(measure)
            if v is None or not math.isfinite(float(v)):
                return None
            total += sign * float(v)
        return total


def parse_rule(text: str, where: str = "rule") -> Rule:
    """Parse ``"a - b + 0.5 > 0"``; a one-line :class:`ConfigError` names what is wrong.

    Example:
        >>> r = parse_rule("accuracy:kd/top1 - accuracy:independent/top1 > 0")
        >>> r.terms, r.direction
        (((1, 'accuracy:kd/top1'), (-1, 'accuracy:independent/top1')), '>')
        >>> round(r.value({"accuracy:kd/top1": 0.9, "accuracy:independent/top1": 0.85}), 6)
        0.05
    """
    example = "e.g. 'accuracy:kd/top1 - accuracy:independent/top1 > 0'"
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{where}={text!r} is not a rule; write {example}")
    m = re.fullmatch(r"\s*(.+?)\s*([<>])\s*0(?:\.0*)?\s*", text)
    if m is None:
        raise ConfigError(f"{where}={text!r}: a rule compares a sum with 0 by > or <; {example}")
    lhs, direction = m.group(1), m.group(2)
    tokens = re.split(r"\s+([+-])\s+", " " + lhs.strip())
    first = tokens[0].strip()
    pieces = [("+", first), *zip(tokens[1::2], (t.strip() for t in tokens[2::2]), strict=True)]
    terms: list[tuple[int, str]] = []
    constant = 0.0
    for op, token in pieces:
        sign = 1 if op == "+" else -1
        if token.startswith("-") and _NUMBER.fullmatch(token) is None:
            sign, token = -sign, token[1:]
        if _NUMBER.fullmatch(token):
            constant += sign * float(token)
        elif _MEASURE.fullmatch(token):
            terms.append((sign, token))
        else:
            raise ConfigError(
                f"{where}={text!r}: {token!r} is neither a number nor a measure "
                f"'<probe>:<value key>' (terms are separated by ' + ' or ' - '); {example}"
            )
    if not terms:
        raise ConfigError(f"{where}={text!r} reads no measure; {example}")
    return Rule(text.strip(), tuple(terms), constant, direction)


@dataclass(frozen=True)
class Interval:
    """Mean, spread and 95% interval of a rule's per-seed values.

    Attributes:
        n: Seeds with a value.
        mean: Their mean (``None`` when ``n == 0``).
        sd: Sample standard deviation (``None`` when ``n < 2``).
        low, high: The interval's ends (``None`` when ``n < 2``).
    """

    n: int
    mean: float | None
    sd: float | None
    low: float | None
    high: float | None

    def side(self) -> int:
        """+1 when the interval lies above zero, -1 below, 0 when it crosses or is unknown."""
        if self.low is None or self.high is None:
            return 0
        if self.low > 0:
            return 1
        if self.high < 0:
            return -1
        return 0


def interval(values: Sequence[float | None], level: float = LEVEL) -> Interval:
    """The Student-t interval of the finite ``values`` at ``level``.

    Example:
        >>> iv = interval([0.02, 0.03, 0.04])
        >>> round(iv.mean, 4), round(iv.sd, 4), round(iv.low, 4), round(iv.high, 4)
        (0.03, 0.01, 0.0052, 0.0548)
    """
    from scipy.stats import t

    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return Interval(0, None, None, None, None)
    mean = sum(xs) / n
    if n < 2:
        return Interval(1, mean, None, None, None)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(n, mean, sd, mean - half, mean + half)


def verdict(rule: Rule, main: Interval, controls: Sequence[tuple[Rule, Interval]] = ()) -> str:
    """The verdict of a claim from its rule's interval and its controls' (module docstring).

    Example:
        >>> r = parse_rule("accuracy:kd/top1 - 0.5 > 0")
        >>> verdict(r, interval([0.1, 0.12, 0.11]))
        'reproduced'
        >>> verdict(r, interval([0.1, -0.12, 0.11]))
        'inconclusive at 3 seeds'
        >>> verdict(r, interval([-0.1, -0.12, -0.11]))
        'not reproduced'
    """
    expected = 1 if rule.direction == ">" else -1
    side = main.side()
    if side == -expected:
        return NOT_REPRODUCED
    controls_hold = all(iv.side() == (1 if c.direction == ">" else -1) for c, iv in controls)
    if side == expected and controls_hold:
        return REPRODUCED
    return f"inconclusive at {main.n} seeds"
