"""docs/extending.md runs as written: its Python blocks top to bottom in a fresh directory, and
its command line on the files it shows (the plugin module and the config)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from distillscope.cli import main
from distillscope.plugins import REGISTRIES
from tests.core.plugin_parts import isolated_registries

__all__ = ["isolated_registries"]  # the fixture, used by name
pytestmark = pytest.mark.usefixtures("isolated_registries")
DOC = Path(__file__).resolve().parents[2] / "docs" / "extending.md"
#: What the page's plugin registers (a runner of every page's blocks may have run it already).
NAMES = {"dataset": ["stripes"], "loss": ["margin_kd"], "probe": ["confidence"]}


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def forget_page_names() -> None:
    for kind, names in NAMES.items():
        for name in names:
            if name in REGISTRIES[kind].names():
                REGISTRIES[kind].unregister(name)


def test_the_python_blocks_run_top_to_bottom(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    forget_page_names()
    namespace: dict = {"__name__": "extending_doc"}
    for code in blocks("python"):
        exec(compile(code, str(DOC), "exec"), namespace)  # noqa: S102 - our own docs
    values = namespace["results"]["probes"]["confidence"]["values"]
    assert set(values) == {"teacher/mean", "independent/mean", "margin/mean"}
    assert all(1 / 3 <= v <= 1 for v in values.values())  # a top-1 probability of 3 classes
    assert str(values) in capsys.readouterr().out


def test_the_command_line_runs_the_plugin_module_and_config_it_shows(tmp_path, monkeypatch,
                                                                      capsys) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    forget_page_names()
    plugin = blocks("python")[0]
    assert plugin.startswith("# my_plugin.py")
    Path("my_plugin.py").write_text(plugin)
    Path("stripes.yaml").write_text(blocks("yaml")[0])
    (command,) = [line for line in blocks("bash")[0].splitlines() if line.strip()]
    args = shlex.split(command)
    assert args[:2] == ["distillscope", "run"]
    assert main(args[1:]) == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    results = json.loads((run_dir / "results.json").read_text())
    assert results["models"]["margin"]["loss"] == {"margin_kd": {"beta": 0.5}}
    assert set(results["probes"]["confidence"]["values"]) == {
        "teacher/mean", "independent/mean", "margin/mean"}  # fmt: skip
    assert results["config"]["plugins"] == ["my_plugin.py"]
    identity = json.loads((run_dir / "identity.json").read_text())["identity"]
    assert list(identity["plugins"]) == ["my_plugin"]
