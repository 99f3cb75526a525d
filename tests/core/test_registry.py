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


def test_registration_sets_a_class_name_once_and_refuses_a_different_one():
    reg = Registry("widget")

    @reg.register("round")
    class Round:
        pass

    assert Round.name == "round"

    class Square:
        name = "box"

    with pytest.raises(ValueError, match="says name 'box' but is registered as 'square'"):
        reg.register("square")(Square)

    @reg.register("fn")
    def make() -> int:  # a function keeps no name attribute
        return 1

    assert not hasattr(make, "name")


def test_probes_take_the_shared_parameters_once_and_still_check_them():
    from distillscope.probes import create_probe
    from distillscope.registry import PROBES, accepted_params

    assert {"batch_size", "max_samples", "seed", "attacks"} <= accepted_params(
        PROBES.get("adversarial")
    )
    assert create_probe("adversarial", batch_size=8).batch_size == 8
    with pytest.raises(ConfigError, match="unknown parameter 'bogus' for probe 'adversarial'"):
        create_probe("adversarial", bogus=1)
    with pytest.raises(ConfigError, match=r"adversarial.max_samples='9' is invalid"):
        create_probe("adversarial", max_samples="9")
    with pytest.raises(ConfigError, match=r"accuracy.seed=True is invalid"):
        create_probe("accuracy", seed=True)
