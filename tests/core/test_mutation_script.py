"""scripts/mutation.py: its table of targets stays valid and its summary counts honestly.

The mutation run itself (mutmut, minutes) is on demand, not in CI; these checks are not.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "mutation.py"


@pytest.fixture(scope="module")
def mutation():
    spec = importlib.util.spec_from_file_location("mutation_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules["mutation_script"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules["mutation_script"]


def test_every_target_module_and_test_file_exists(mutation) -> None:
    for module, tests in mutation.TARGETS.items():
        assert (ROOT / "src" / "distillscope" / module).is_file(), module
        assert tests, module
        for test in tests:
            assert (ROOT / test).is_file(), test
    named = ["functional/soft_targets.py", "functional/similarity.py", "functional/agreement.py",
             "functional/entropy.py", "attacks/gradient.py", "attacks/deepfool.py",
             "train/checkpoint.py"]  # fmt: skip
    assert set(named) <= set(mutation.TARGETS)


def test_the_equivalents_list_is_complete_and_names_known_modules(mutation) -> None:
    listed = mutation.load_equivalents()
    assert listed, "scripts/mutation_equivalents.toml lists no mutant"
    for entry in listed:
        assert entry.module in mutation.TARGETS, entry.mutant
        prefix = "distillscope." + entry.module.removesuffix(".py").replace("/", ".") + ".x"
        assert entry.mutant.startswith(prefix), entry.mutant
        lines = mutation.changed_lines(entry.diff)
        assert [line[0] for line in lines] == ["-", "+"], entry.mutant  # one line changed
        assert len(entry.why) > 20, entry.mutant
    names = [e.mutant for e in listed]
    assert len(names) == len(set(names))


def test_an_entry_without_its_reason_is_refused(mutation, tmp_path: Path) -> None:
    path = tmp_path / "eq.toml"
    path.write_text('[[equivalent]]\nmodule = "m.py"\nmutant = "x"\ndiff = "-a\\n+b"\n')
    with pytest.raises(SystemExit, match=r"entry 1 lacks \['why'\]; add them"):
        mutation.load_equivalents(path)


def test_score_leaves_out_only_equivalents_that_still_match(mutation) -> None:
    statuses = {"m.x_f__mutmut_1": "killed", "m.x_f__mutmut_2": "survived",
                "m.x_f__mutmut_3": "survived", "m.x_f__mutmut_4": "timeout",
                "m.x_f__mutmut_5": "no tests"}  # fmt: skip
    diffs = {
        "m.x_f__mutmut_2": "--- m.py\n+++ m.py\n@@ -1 +1 @@\n-    y = x + 1\n+    y = x - 1\n",
        "m.x_f__mutmut_3": "--- m.py\n+++ m.py\n-    return y\n+    return None\n",
    }
    entry = mutation.summarise("m.py", statuses, diffs)
    assert (entry["mutants"], entry["killed"], entry["survived"]) == (5, 1, 2)
    assert (entry["timeout"], entry["other"]) == (1, 1)
    same = mutation.Equivalent("m.py", "m.x_f__mutmut_2", "-y = x + 1\n+y = x - 1", "why " * 6)
    moved = mutation.Equivalent("m.py", "m.x_f__mutmut_3", "-y = x + 1\n+y = x - 1", "why " * 6)
    mutation.apply_equivalents("m.py", entry, [same, moved])
    assert entry["equivalent"] == 1 and entry["equivalents_applied"] == ["m.x_f__mutmut_2"]
    assert entry["equivalents_stale"] == ["m.x_f__mutmut_3"]  # another change under that id
    assert entry["survivors"] == [{"mutant": "m.x_f__mutmut_3",
                                   "diff": ["-return y", "+return None"]}]  # fmt: skip
    assert entry["score"] == pytest.approx((1 + 1) / (5 - 1))
