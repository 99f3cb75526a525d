from __future__ import annotations

import pytest

from distillscope.errors import ConfigError
from distillscope.registry import Registry, check_params


def make() -> Registry:
    reg = Registry("thing")

    @reg.register("alpha")
    def alpha(x: int = 1) -> int:
        return x * 10

    @reg.register("beta")
    class Beta:
        def __init__(self, y: int = 2, **rest):
            self.y, self.rest = y, rest

    @reg.register_prefix("ext")
    def ext(name: str, **params):
        return (name, params)

    return reg


def test_create_and_params():
    reg = make()
    assert reg.create("alpha", x=3) == 30
    assert reg.create("beta", y=5, z=1).rest == {"z": 1}
    assert reg.create("ext:foo", a=1) == ("foo", {"a": 1})


def test_duplicate_key_raises():
    reg = make()
    with pytest.raises(ValueError, match="already registered"):
        reg.register("alpha")(lambda: None)


def test_unknown_name_lists_choices():
    with pytest.raises(ConfigError, match=r"unknown thing 'gamma'; valid choices: alpha, beta"):
        make().create("gamma")


def test_unknown_prefix_and_param():
    reg = make()
    with pytest.raises(ConfigError, match="unknown thing prefix 'nope'"):
        reg.create("nope:x")
    with pytest.raises(
        ConfigError, match=r"unknown parameter 'q' for thing 'alpha'; valid parameters: x"
    ):
        reg.create("alpha", q=1)


def test_list_filters_with_fnmatch():
    reg = make()
    assert reg.list("a*") == ["alpha"]
    assert reg.list() == ["alpha", "beta"]
    assert "ext:<name>" in reg.names()
    assert "ext:anything" in reg and "gamma" not in reg


def test_check_params_accepts_known():
    def f(a: int, *, b: int = 0) -> int:
        return a + b

    check_params(f, {"a": 1, "b": 2}, "f")
    with pytest.raises(ConfigError):
        check_params(f, {"c": 1}, "f")
