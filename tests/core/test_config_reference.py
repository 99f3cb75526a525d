"""docs/config.md is the config schema written out: current, complete, one row per key."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field

from distillscope.config import ExperimentConfig, load_config_dict
from distillscope.config_tree import model_in

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "config_reference.py"


def _script():
    spec = importlib.util.spec_from_file_location("config_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference():
    return _script()


def _keys_of(model: type[BaseModel], path: str) -> list[str]:
    """Every dotted key below ``model``, walked independently of the script."""
    keys = []
    for key, field in model.model_fields.items():
        at = f"{path}.{key}" if path else key
        inner = model_in(field.annotation, in_mappings=True)
        if inner is not None and getattr(field.annotation, "__origin__", None) is dict:
            at += ".<name>"  # a mapping of named sections: teachers.<name>
        keys.append(at)
        if inner is not None:
            keys += _keys_of(inner, at)
    return keys


def test_docs_config_md_is_current(reference):
    assert reference.TARGET == REPO / "docs" / "config.md"
    current = reference.TARGET.read_text(encoding="utf-8")
    assert current == reference.render(), (
        "docs/config.md is stale: run `python scripts/config_reference.py` and commit the result"
    )


def test_every_schema_key_has_a_row_with_a_meaning(reference):
    rows = {}
    for line in reference.render().splitlines():
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        if line.startswith("| `"):
            rows[cells[0].strip("`")] = cells
    for key in _keys_of(ExperimentConfig, ""):
        # written once: the teacher shorthand's keys are those of teachers.<name>, and a
        # student's own model and data have the keys of a teacher's
        key = re.sub(r"^teacher\.", "teachers.<name>.", key)
        key = re.sub(r"^students\.<name>\.(model|data)\.", r"teachers.<name>.\1.", key)
        assert key in rows, key
        assert rows[key][3], key  # a meaning
    assert rows["train.lr"][1:3] == ["float > 0", "`0.05`"]
    assert rows["teachers.<name>.model.name"][2] == "required"
    assert rows["students.<name>.train"][1] == "mapping of `train` keys"
    assert rows["grid_max_cells"][2] == "`100`"
    assert "students.<name>.<parameter>" in rows and "probes.<probe>.<parameter>" in rows


def test_the_documented_defaults_are_the_schema_defaults(reference):
    cfg = load_config_dict({}, names=False)
    text = reference.render()
    assert f"| `train.epochs` | int >= 1 | `{cfg.train.epochs}` |" in text
    assert f'| `data.name` | str | `"{cfg.data.name}"` |' in text
    assert '`{"name": "mnist_cnn"}`' in text and cfg.student.name == "mnist_cnn"


def test_types_read_as_a_user_types_them(reference):
    kind = reference._type
    assert kind(int | None) == "int or null"
    assert kind(Literal["a", "b"]) == "one of `a`, `b`"
    assert kind(dict[int, Annotated[float, Field(ge=0, le=1)]]) == (
        "mapping of int to float >= 0 and <= 1"
    )
    assert kind(list[int]) == "list of int"


def test_a_key_without_a_description_stops_the_script_naming_it(reference):
    class Undocumented(BaseModel):
        """A section.

        Attributes:
            known: Documented.
        """

        known: int = 1
        secret: int = 2

    assert reference._meaning(Undocumented, "known") == "Documented."
    with pytest.raises(SystemExit, match="config key 'secret' of Undocumented has no description"):
        reference._meaning(Undocumented, "secret")


def test_check_mode_reports_a_stale_file(reference, tmp_path, monkeypatch, capsys):
    stale = tmp_path / "config.md"
    stale.write_text("old\n")
    monkeypatch.setattr(reference, "TARGET", stale)
    monkeypatch.setattr(reference, "REPO", tmp_path)
    assert reference.main(["--check"]) == 1
    assert "config.md is stale; run `python scripts/config_reference.py`" in capsys.readouterr().err
    assert reference.main([]) == 0 and reference.main(["--check"]) == 0
    assert stale.read_text() == reference.render()
