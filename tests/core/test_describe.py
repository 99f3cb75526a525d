"""What a registered thing says about itself: `distillscope list KIND NAME --params`."""

from __future__ import annotations

import pytest

from distillscope.cli import main
from distillscope.describe import describe, doc_section, one_line, parameters, plain, summary
from distillscope.probes.base import Probe, ProbeParams
from distillscope.registry import LOSSES
from distillscope.validate import import_registries


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


class Base:
    """A base.

    Args:
        shared: Shared by every subclass. Second sentence.
    """

    def __init__(self, shared: int = 7) -> None:
        self.shared = shared


class Child(Base):
    """A child of :class:`~somewhere.Base`, with
    a summary on two lines. Then more.

    Args:
        size: Side of the images (e.g. ``28``). Paper 001 uses 28.
        mode: ``"a"`` or ``"b"``;
            continued on a second line.
        shared: See :class:`Base`.

    Returns:
        Nothing: not a parameter.
    """

    def __init__(self, size: int, mode: str = "a", shared: int = 7, **kwargs: object) -> None:
        super().__init__(shared)


def test_parameters_read_signature_defaults_and_the_first_sentence_of_each_entry() -> None:
    rows = {p.name: p for p in parameters(Child)}
    assert list(rows) == ["size", "mode", "shared"]  # **kwargs is no parameter
    assert (rows["size"].type, rows["size"].default) == ("int", "required")
    assert rows["size"].meaning == "Side of the images (e.g. `28`)."
    assert rows["mode"].default == '"a"'
    assert rows["mode"].meaning == '`"a"` or `"b"`; continued on a second line.'
    # "See X" defers to the base class's own words
    assert rows["shared"].meaning == "Shared by every subclass."
    assert summary(Child) == "A child of `Base`, with a summary on two lines."
    assert "Nothing" not in doc_section(Child, "Args")


def test_text_helpers() -> None:
    assert plain(":func:`~a.b.run` and ``x``") == "`run` and `x`"
    assert one_line("One. Two.") == "One."
    assert one_line("Uses e.g. this. And") == "Uses e.g. this."


def test_probe_parameters_include_the_shared_ones_with_the_base_defaults() -> None:
    import_registries()
    from distillscope.registry import PROBES

    rows = {p.name: p for p in parameters(PROBES.get("agreement"))}
    assert set(ProbeParams.__annotations__) <= set(rows)
    assert rows["max_samples"].default == "1000" == str(Probe().max_samples)
    assert rows["seed"].meaning.startswith("Seed of the sample choice")


def test_describe_marks_what_the_run_gives_and_says_where_parameters_go() -> None:
    import_registries()
    lines = describe("losses", "kd", LOSSES.get("kd"))
    assert (
        lines[0]
        == "kd: Knowledge distillation (Hinton et al. 2015; paper 000, eq. 1; paper 003, eq. 1)."
    )
    assert lines[1].split()[:3] == ["temperature", "float", "4.0"]
    assert lines[2].split()[:3] == ["alpha", "float", "0.5"]
    assert lines[-1].startswith("  set as students.<student>.<parameter> (with loss: kd)")


def test_list_params_on_the_command_line(capsys) -> None:
    code, out, err = run_cli(["list", "models", "resnet_cifar", "--params"], capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith("resnet_cifar: He et al.'s CIFAR ResNet")
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:-1]}
    assert rows["depth"][:2] == ["int", "20"] and rows["width"][:2] == ["int", "16"]
    assert rows["num_classes"][1:] == ["(from", "the", "run)"]
    assert "teachers.<teacher>.model.params.<parameter>" in lines[-1]


def test_list_params_of_an_adapter_model_and_a_pattern(capsys) -> None:
    code, out, _ = run_cli(["list", "models", "torchvision:resnet18", "--params"], capsys)
    assert code == 0 and out.startswith("torchvision:resnet18: A torchvision classification")
    assert "weights" in out and "\n  name " not in out  # the name is the part after the colon
    code, out, _ = run_cli(["list", "losses", "*kd", "--params"], capsys)
    blocks = out.strip().split("\n\n")  # one block per match, a blank line between
    assert code == 0 and [b.split(":")[0] for b in blocks] == LOSSES.list("*kd")
    assert len(blocks) >= 3  # cat_kd, kd, reviewkd, tf_kd


def test_list_adapter_patterns_and_no_match(capsys) -> None:
    # 'torchvision*' printed nothing: only plain names were matched, not the adapter forms
    code, out, _ = run_cli(["list", "models", "torchvision*"], capsys)
    assert (code, out) == (0, "torchvision:<name>\n")
    code, out, err = run_cli(["list", "losses", "zz*"], capsys)
    assert (code, out) == (0, "")
    assert err == "no losses match 'zz*'; `distillscope list losses` lists them all\n"


def test_list_params_of_an_unknown_name_is_a_one_line_error(capsys) -> None:
    code, out, err = run_cli(["list", "losses", "kdd", "--params"], capsys)
    assert code == 2 and out == ""
    assert err.startswith("distillscope: error: unknown loss 'kdd'; valid choices: ab, at")
    assert len(err.splitlines()) == 1
