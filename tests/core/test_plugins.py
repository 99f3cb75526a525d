"""Plugins: imported once, refused in one line, and their source in every identity that reuses."""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path

import pytest

from distillscope import plugins
from distillscope.cli import main
from distillscope.config import load_config_dict
from distillscope.errors import ConfigError
from distillscope.grid.expand import expand_grid
from distillscope.plan import load_plan_splits, resolve_plan, run_identity, teacher_identity
from distillscope.plugins import code_digests, load_plugin, unload_plugin
from distillscope.registry import DATASETS, LOSSES, PROBES, TEXT_DATASETS
from tests.core.plugin_parts import CONFIG, PLUGIN, isolated_registries, write_plugin

__all__ = ["isolated_registries"]  # the fixture, used by name
pytestmark = pytest.mark.usefixtures("isolated_registries")
RT = {"fixed": 1}


def sha(*parts: tuple[str, bytes]) -> str:
    """The digest written out independently: name, NUL, length, NUL, bytes, per file."""
    h = hashlib.sha256()
    for rel, data in parts:
        h.update(f"{rel}\0{len(data)}\0".encode() + data)
    return h.hexdigest()


def test_a_path_plugin_registers_once_and_records_its_entries_and_source(tmp_path) -> None:
    path = write_plugin(tmp_path)
    plugin = load_plugin(str(path))
    assert plugin.name == "t_plugin"
    assert set(plugin.entries) == {("dataset", "t_stripes"), ("loss", "t_margin"),
                                   ("probe", "t_confidence")}  # fmt: skip
    assert plugin.digest == sha(("t_plugin.py", path.read_bytes()))
    assert load_plugin(str(path)) is plugin  # unchanged: not imported again
    assert "t_margin" in LOSSES and "t_confidence" in PROBES and "t_stripes" in DATASETS


def test_an_edited_plugin_runs_again_without_a_duplicate(tmp_path) -> None:
    path = write_plugin(tmp_path)
    first = load_plugin(str(path))
    path.write_text(PLUGIN.replace("OFFSET = 0.0", "OFFSET = 1.0"))
    second = load_plugin(str(path))
    assert second.digest != first.digest and second.entries == first.entries
    ds = DATASETS.create("t_stripes", split="train")
    assert float(ds.inputs.min()) >= 1.0  # the new code runs


def test_a_plugin_package_hashes_every_file(tmp_path, monkeypatch) -> None:
    pkg = tmp_path / "t_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from t_pkg import parts  # noqa\n")
    (pkg / "parts.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    plugin = load_plugin("t_pkg")
    expected = sha(("__init__.py", (pkg / "__init__.py").read_bytes()),
                   ("parts.py", (pkg / "parts.py").read_bytes()))  # fmt: skip
    assert plugin.name == "t_pkg" and plugin.digest == expected
    assert ("loss", "t_margin") in plugin.entries
    assert code_digests([("loss", "t_margin")]) == {"t_pkg": expected}  # entry -> its package


def test_a_plugin_that_fails_to_import_is_one_line_and_leaves_nothing(tmp_path) -> None:
    path = write_plugin(tmp_path, text=PLUGIN + "\nraise RuntimeError('boom')\n")
    before = set(LOSSES.names()), set(DATASETS.names())
    with pytest.raises(ConfigError) as err:
        load_plugin(str(path))
    line = str(err.value)
    assert "\n" not in line and str(path) in line and "RuntimeError: boom" in line
    assert "fix the module, or drop the plugin" in line
    assert (set(LOSSES.names()), set(DATASETS.names())) == before  # rolled back
    write_plugin(tmp_path)  # fixed: imports cleanly now
    assert ("loss", "t_margin") in load_plugin(str(path)).entries


def test_a_plugin_taking_a_registered_name_is_refused_and_rolled_back(tmp_path) -> None:
    text = PLUGIN.replace('register_probe("t_confidence")', 'register_probe("accuracy")')
    path = write_plugin(tmp_path, text=text)
    with pytest.raises(ConfigError) as err:
        load_plugin(str(path))
    assert str(err.value).startswith(
        f"plugin {str(path)!r} registers probe 'accuracy', which "
        "distillscope already registered; give it another name"
    )
    assert "@register_probe('t_plugin_accuracy')" in str(err.value)
    assert "t_margin" not in LOSSES and "t_stripes" not in DATASETS
    assert LOSSES.factory("kd").__module__.startswith("distillscope.")


def test_a_text_dataset_of_a_failed_plugin_is_forgotten(tmp_path) -> None:
    text = (
        "from distillscope.registry import register_text_dataset\n"
        "@register_text_dataset('t_text')\ndef t_text(split, root=None): ...\nraise ValueError\n"
    )
    with pytest.raises(ConfigError):
        load_plugin(str(write_plugin(tmp_path, text=text)))
    assert "t_text" not in TEXT_DATASETS and "t_text" not in DATASETS


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("missing/t_none.py", "no .py file at 'missing/t_none.py'"),
        ("t_no_such_module_xyz", "no module named 't_no_such_module_xyz'"),
        ("", "expected a module name or the path of a .py file"),
    ],
)
def test_a_plugin_that_is_not_there_is_one_line(spec, needle) -> None:
    with pytest.raises(ConfigError) as err:
        load_plugin(spec)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_installed_entry_points_are_imported_with_the_registries(tmp_path, monkeypatch) -> None:
    write_plugin(tmp_path, "t_ep_plugin.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = importlib.metadata.EntryPoint("lab", "t_ep_plugin", plugins.ENTRY_POINT_GROUP)
    monkeypatch.setattr(plugins.importlib.metadata, "entry_points", lambda group: [ep])
    monkeypatch.setitem(plugins._state, "entry_points", "no")
    plugins.import_registries()
    assert "t_margin" in LOSSES and plugins._LOADED["t_ep_plugin"].spec == "t_ep_plugin"
    broken = importlib.metadata.EntryPoint("bad", "t_ep_missing_xyz", plugins.ENTRY_POINT_GROUP)
    monkeypatch.setattr(plugins.importlib.metadata, "entry_points", lambda group: [broken])
    monkeypatch.setitem(plugins._state, "entry_points", "no")
    with pytest.raises(ConfigError, match="entry point 'bad' of the installed package"):
        plugins.import_registries()


def test_code_digests_are_empty_for_distillscope_code_alone() -> None:
    used = [("loss", "kd"), ("model", "mlp_full"), ("dataset", "toy2d-ring"), ("probe", "x")]
    assert code_digests(used) == {}


def test_an_entry_defined_without_a_source_file_never_matches_another_process() -> None:
    namespace: dict = {}
    exec(PLUGIN, namespace)  # as typed into an interactive session: no file
    found = code_digests([("loss", "t_margin")])
    assert list(found) == ["builtins"] and found["builtins"].startswith("no source file: ")
    assert code_digests([("loss", "t_margin")]) == found  # stable within the process


def _identities(config: dict) -> tuple[str, dict[str, str]]:
    from distillscope.identity import digest

    plan = resolve_plan(load_config_dict(config))
    splits = load_plan_splits(plan)
    teachers = {n: digest(teacher_identity(m, splits, RT), 16)
                for n, m in plan.members.items() if m.role == "teacher"}  # fmt: skip
    return digest(run_identity(plan, splits, RT)), teachers


def test_same_name_other_content_changes_the_run_and_the_teacher_that_uses_it(tmp_path) -> None:
    path = write_plugin(tmp_path)
    config = {**CONFIG, "plugins": [str(path)]}
    run_a, teachers_a = _identities(config)
    assert _identities(config) == (run_a, teachers_a)  # unchanged code: the same identities
    path.write_text(PLUGIN.replace("self.beta * gap", "self.beta * gap * 2"))  # same names
    run_b, teachers_b = _identities(config)
    assert run_b != run_a
    assert teachers_b != teachers_a  # the teacher trains on the plugin's dataset


def test_a_teacher_of_distillscope_code_keeps_its_key_when_a_student_plugin_changes(
    tmp_path,
) -> None:
    loss_only = (
        PLUGIN.split('@register_dataset("t_stripes")')[0]
        + PLUGIN.split("return TensorDataset(x + OFFSET, y, info)\n")[1]
    )
    path = write_plugin(tmp_path, text=loss_only)
    config = {**CONFIG, "plugins": [str(path)], "data": {"name": "toy2d-ring"}}
    config["probes"] = {"accuracy": {}}
    run_a, teachers_a = _identities(config)
    path.write_text(loss_only.replace("self.beta * gap", "self.beta * gap * 2"))
    run_b, teachers_b = _identities(config)
    assert run_b != run_a and teachers_b == teachers_a
    unload_plugin(str(path))
    without = {**config, "plugins": [], "students": {"independent": {"loss": "ce"}}}
    plain = {**config, "students": {"independent": {"loss": "ce"}}}
    plain.pop("plugins")
    assert _identities(without) == _identities(plain)  # an empty list is no plugin at all


def test_an_edited_plugin_gives_a_grid_a_new_directory(tmp_path) -> None:
    path = write_plugin(tmp_path)
    raw = {**CONFIG, "plugins": [str(path)], "grid": {"seed": [0, 1]}}
    plain = {**CONFIG, "data": {"name": "toy2d-ring"}, "grid": {"seed": [0, 1]}}
    plain["students"] = {"independent": {"loss": "ce"}}
    plain["probes"] = {"accuracy": {}}
    plain_key = expand_grid(plain).key
    key = expand_grid(raw).key
    path.write_text(PLUGIN.replace("OFFSET = 0.0", "OFFSET = 0.5"))
    assert expand_grid(raw).key != key
    assert expand_grid(plain).key == plain_key


def test_cli_plugin_joins_the_configs_own_list(tmp_path, monkeypatch, capsys) -> None:
    import yaml

    a, b = write_plugin(tmp_path, "t_a.py"), write_plugin(tmp_path, "t_b.py", "X = 1\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**CONFIG, "plugins": [str(a)], "train": {"epochs": 0}}))
    monkeypatch.chdir(tmp_path)
    code = main(["run", str(cfg), "--plugin", str(b), "--plugin", str(a)])
    err = capsys.readouterr().err
    assert code == 2 and "train.epochs" in err  # refused by the schema, after the plugins
    assert not (tmp_path / "runs").exists()
    from distillscope.cli import _with_plugins

    assert _with_plugins(str(cfg), [], [str(b)])[-1] == f'plugins=["{a}", "{b}"]'


def test_cli_refuses_a_broken_plugin_in_one_line_and_writes_nothing(tmp_path, capsys) -> None:
    bad = write_plugin(tmp_path, "t_bad.py", "import t_surely_missing_module\n")
    code = main(["run", "--plugin", str(bad), "--output-dir", str(tmp_path / "runs")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert f"plugin {str(bad)!r} failed to import (ModuleNotFoundError" in lines[0]
    assert not (tmp_path / "runs").exists()
    assert main(["run", "--resume", str(tmp_path), "--plugin", str(bad)]) == 2
    assert "drop --plugin" in capsys.readouterr().err


def test_list_shows_a_plugins_names(tmp_path, capsys) -> None:
    path = write_plugin(tmp_path)
    assert main(["list", "losses", "t_*", "--plugin", str(path)]) == 0
    assert capsys.readouterr().out.split() == ["t_margin"]


def test_a_path_is_relative_to_the_working_directory(tmp_path, monkeypatch) -> None:
    write_plugin(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert load_plugin("t_plugin.py").name == "t_plugin"
    assert Path("t_plugin.py").is_file()
