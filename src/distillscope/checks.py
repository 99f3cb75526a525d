"""Validation of user-given parameters: one-line :class:`ConfigError` naming the parameter,
the value and the valid range. Used by losses and probes alike."""

from __future__ import annotations

import math
from collections.abc import Iterable

from torch import nn

from distillscope.errors import ConfigError

__all__ = ["check_choice", "check_int", "check_module_key", "check_positive", "check_range"]


def check_choice(owner: str, value: object, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``, else :class:`ConfigError` naming ``owner``.

    Example:
        >>> check_choice("ie_ft.split", "random", ("natural", "random"))
        'random'
    """
    options = tuple(choices)
    if not isinstance(value, str) or value not in options:
        raise ConfigError(f"{owner}={value!r} is invalid; use one of {', '.join(options)}")
    return value


def check_range(
    name: str,
    value: float,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a float if it lies in the interval, else raise :class:`ConfigError`.

    Args:
        name: Parameter name used in the message, e.g. ``"kd.temperature"``.
        value: The value to check; bools and non-numbers are rejected.
        low: Lower bound of the valid interval.
        high: Upper bound of the valid interval.
        low_open: Exclude ``low`` itself.
        high_open: Exclude ``high`` itself.

    Returns:
        ``value`` converted to ``float``.

    Raises:
        ConfigError: One line naming the parameter, the value and the valid range.

    Example:
        >>> check_range("alpha", 0.5, 0.0, 1.0)
        0.5
        >>> check_range("temperature", -1, 0.0, low_open=True)
        Traceback (most recent call last):
        ...
        distillscope.errors.ConfigError: temperature=-1 is out of range; use a value in (0, inf)
    """
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    interval = interval.replace("[-inf", "(-inf").replace("inf]", "inf)")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name}={value!r} is not a number; use a value in {interval}")
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if math.isnan(value) or below or above:
        raise ConfigError(f"{name}={value!r} is out of range; use a value in {interval}")
    return float(value)


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` if it is an integer ``>= minimum``, else :class:`ConfigError` naming ``name``.

    Example:
        >>> check_int("accuracy.topk", 5)
        5
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name}={value!r} is invalid; use an integer >= {minimum}")
    return value


def check_positive(name: str, value: object) -> float:
    """``value`` as a float if it is a finite number ``> 0``, else :class:`ConfigError`.

    Example:
        >>> check_positive("adversarial.eps", 0.3)
        0.3
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ConfigError(f"{name}={value!r} is invalid; use a finite number > 0")
    return float(value)


def check_module_key(name: str, key: str) -> str:
    """``name`` if it can key a network inside torch (an ``nn.ModuleDict`` entry): no ``.`` and
    not an attribute of :class:`torch.nn.Module` (``half``, ``train``, ``to``, ...), else a
    one-line :class:`ConfigError` naming ``key``.

    Example:
        >>> check_module_key("kd", "students.kd")
        'kd'
    """
    if "." in name:
        raise ConfigError(
            f"config key {key!r}: {name!r} has a '.', which names of networks may not have; use "
            f"'_' (e.g. {name.replace('.', '_')!r})"
        )
    if hasattr(nn.Module, name):
        raise ConfigError(
            f"config key {key!r}: {name!r} is the name of a torch.nn.Module attribute; choose "
            f"another name (e.g. {name + '_kd'!r})"
        )
    return name
