"""Packaged configs: found by name from any directory, a local file first, identities unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from distillscope.cli import main
from distillscope.config import dump_config, load_config
from distillscope.config_files import (
    CONFIG_DIR,
    describe,
    find_config,
    packaged_configs,
    reproduce_dir,
)
from distillscope.errors import ConfigError
from distillscope.grid.expand import load_grid
from distillscope.identity import digest, without_locations
from distillscope.plan import load_plan_splits, resolve_plan, run_identity, teacher_identity

REPO = Path(__file__).resolve().parents[2]
#: The same content must keep these, wherever it is read from. First computed by the code before
#: configs moved into the package (commit d11735a), from configs/<file>; the digests were
#: recomputed once when train.channels_last and train.compile entered the schema (a new result
#: field enters every identity by design), the grid directory name did not change.
QUICKSTART_CONFIG_DIGEST = "9f4d03165dba74fe8336a25101834ad4"
SWEEP_GRID_DIR = "toy-temperature-sweep-grid-3ac0c7f5d8"
TOY_TEACHER_KEYS = {  # toy2d-temperature.yaml, train.epochs=1, runtime {"fixed": 1}
    "FT_temp1": "94773aa3d490e437",
    "RT_temp1": "b7ce8c3f0561a64d",
    "FT_tempT": "181ae0789ef48351",
    "RT_tempT": "3eae5ede762e79c5",
}
TOY_RUN_DIGEST = "6b0dee7c9ac8efe47a72eafe64be7fd6"


def test_the_repository_configs_folder_is_the_packaged_tree() -> None:
    assert (REPO / "configs").resolve() == CONFIG_DIR
    assert (REPO / "configs" / "quickstart.yaml").is_file()


def test_packaged_configs_are_named_by_path_without_yaml_and_exclude_claims() -> None:
    names = packaged_configs()
    assert {"quickstart", "methods/dkd", "reproduce/what-transfers/domains"} <= set(names)
    assert not [n for n in names if n.startswith("reproduce/claims")]
    assert names["methods/dkd"] == CONFIG_DIR / "methods" / "dkd.yaml"
    assert (reproduce_dir() / "claims" / "paper-003.yaml").is_file()


def test_every_packaged_config_says_what_it_is_in_its_first_line() -> None:
    assert [n for n, p in packaged_configs().items() if not describe(p)] == []


def test_describe_takes_the_first_comment_line(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("\n#   Two teachers  \n# second\nname: a\n")
    (tmp_path / "b.yaml").write_text("name: b\n# late comment\n")
    assert describe(tmp_path / "a.yaml") == "Two teachers"
    assert describe(tmp_path / "b.yaml") == ""


@pytest.mark.parametrize(
    "name", ["methods/dkd", "methods/dkd.yaml", "configs/methods/dkd.yaml", Path("methods/dkd")]
)
def test_a_packaged_name_resolves_from_any_directory(name, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_config(name) == CONFIG_DIR / "methods" / "dkd.yaml"


def test_a_local_file_always_wins(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quickstart.yaml").write_text("name: mine\n")
    assert find_config("quickstart") == Path("quickstart.yaml")
    assert find_config("quickstart.yaml") == Path("quickstart.yaml")
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "dkd").write_text("name: bare\n")
    assert find_config("methods/dkd") == Path("methods/dkd")


def test_an_unknown_name_is_one_line_with_the_closest_names(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        find_config("method/dkd")
    assert "'method/dkd' not found" in str(err.value)
    assert "methods/dkd" in str(err.value) and "--list-configs" in str(err.value)
    assert "\n" not in str(err.value)


def test_list_configs_prints_names_and_descriptions(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--list-configs"]) == 0
    lines = capsys.readouterr().out.splitlines()
    quick = next(line for line in lines if line.startswith("quickstart "))
    assert quick.split(None, 1)[1] == describe(CONFIG_DIR / "quickstart.yaml")
    assert len(lines) == len(packaged_configs())
    assert main(["list", "configs", "methods/d*"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert names == ["methods/dkd", "methods/dml"]


def test_the_packaged_quickstart_keeps_the_identity_it_had_at_the_repository_root() -> None:
    cfg = load_config(find_config("quickstart"))
    assert digest(without_locations(dump_config(cfg))) == QUICKSTART_CONFIG_DIGEST


def test_a_packaged_grid_keeps_its_directory_name_and_a_copy_has_the_same(tmp_path) -> None:
    packaged = find_config("reproduce/toy-temperature-sweep")
    copy = shutil.copy(packaged, tmp_path / "elsewhere.yaml")
    assert load_grid(packaged).directory().name == SWEEP_GRID_DIR
    assert load_grid(copy).directory().name == SWEEP_GRID_DIR
    assert [c.id for c in load_grid(copy).cells] == [c.id for c in load_grid(packaged).cells]


def test_a_copy_of_a_packaged_config_has_the_same_run_and_teacher_identities(tmp_path) -> None:
    packaged = find_config("toy2d-temperature")
    copy = shutil.copy(packaged, tmp_path / "mine.yaml")
    rt = {"fixed": 1}
    found = {}
    for path in (packaged, copy):
        plan = resolve_plan(load_config(path, ["train.epochs=1"]))
        splits = load_plan_splits(plan)
        keys = {n: digest(teacher_identity(m, splits, rt), 16)
                for n, m in plan.members.items() if m.role == "teacher"}  # fmt: skip
        found[str(path)] = (digest(run_identity(plan, splits, rt)), keys)
    assert list(found.values()) == [(TOY_RUN_DIGEST, TOY_TEACHER_KEYS)] * 2
