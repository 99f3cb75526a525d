"""The tests mirror the package: ``tests/<subpackage>/test_<module or behaviour>.py``."""

from __future__ import annotations

from pathlib import Path

import distillscope

TESTS = Path(__file__).resolve().parents[1]
PACKAGE = Path(distillscope.__file__).parent
#: Test folders that do not mirror a subpackage: top-level modules, whole runs, claims.
OWN = {"core", "integration", "fixtures"}


def test_test_folders_mirror_subpackages() -> None:
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert folders - OWN <= subpackages


def test_test_files_do_not_repeat_their_folder_in_their_name() -> None:
    # one style: tests/probes/test_shift.py, not test_shift_probes.py or test_probe_shift.py
    repeated = []
    for path in TESTS.glob("*/test_*.py"):
        folder = path.parent.name
        names = {folder, folder.removesuffix("s")}  # probes and probe, attacks and attack
        stem = path.stem.removeprefix("test_")
        words = stem.split("_")
        named = words[0] in names or words[-1] in names
        if folder not in OWN and named and stem not in names:
            repeated.append(path.relative_to(TESTS).as_posix())
    assert repeated == []


def test_every_test_folder_is_a_package() -> None:
    # unique module names per folder (tests.probes.test_registry vs tests.distill.test_registry)
    folders = [p for p in TESTS.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))]
    missing = [
        p.name for p in folders if p.name != "fixtures" and not (p / "__init__.py").is_file()
    ]
    assert missing == []
