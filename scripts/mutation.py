"""Mutation testing on demand: mutmut on chosen modules, each against its own tests only.

A mutant is a copy of a module with one small change (``<`` for ``<=``, ``- 1`` for ``+ 1``, a
default flipped, a line dropped). A test suite that pins the module's behaviour fails on it (the
mutant is *killed*); a mutant that passes every test *survived*: either the tests miss a
behaviour, or the change is *equivalent* (no input can tell it from the original), which a
person decides and records in ``scripts/mutation_equivalents.toml``.

Each module runs in a scratch copy of the repository (under ``.mutation/``, removed afterwards)
with only its targeted test files (:data:`TARGETS`), so a score says what *those* tests pin.
The summary (default ``benchmarks/results/mutation.json``; modules not run keep their entry)
holds per module: mutants, killed, survived, timeout, other (no tests, suspicious, segfault),
equivalent (survivors listed by hand), the score ``(killed + timeout) / (mutants -
equivalent)``, the wall time, and every unexplained survivor with its diff. Run through
``scripts/mutation.sh``, which installs the tool; ``docs/testing.md`` says how to read it.

Usage: ``scripts/mutation.sh [MODULE ...] [--out PATH] [--workers N] [--keep]``, MODULE as
``functional/agreement.py``; none: every module of :data:`TARGETS`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENTS = ROOT / "scripts" / "mutation_equivalents.toml"
OUT = ROOT / "benchmarks" / "results" / "mutation.json"
#: The tool and the version the summary's numbers come from (scripts/mutation.sh installs it).
TOOL = "mutmut==3.8.1"

#: Module (under src/distillscope) -> the test files that target it, and only those.
TARGETS: dict[str, list[str]] = {
    "functional/soft_targets.py": [
        "tests/functional/test_soft_targets.py",
        "tests/functional/test_loss_maths.py",
    ],
    "functional/similarity.py": ["tests/functional/test_similarity.py"],
    "functional/agreement.py": ["tests/functional/test_agreement.py"],
    "functional/entropy.py": ["tests/functional/test_entropy.py"],
    "functional/logit.py": ["tests/functional/test_loss_maths.py"],
    "functional/attention.py": [
        "tests/functional/test_attention.py",
        "tests/functional/test_loss_maths.py",
    ],
    "functional/feature_transfer.py": [
        "tests/functional/test_feature_transfer.py",
        "tests/functional/test_loss_maths.py",
        "tests/distill/test_overhaul.py",
    ],
    "functional/feature_maps.py": ["tests/distill/test_comparisons.py"],
    "functional/inheritance.py": ["tests/distill/test_inheritance.py"],
    "functional/relation.py": [
        "tests/functional/test_loss_maths.py",
        "tests/functional/test_relation.py",
    ],
    "functional/boundary.py": ["tests/functional/test_boundary.py"],
    "functional/calibration.py": ["tests/functional/test_calibration.py"],
    "functional/cka.py": ["tests/functional/test_cka.py"],
    "functional/dissection.py": ["tests/functional/test_dissection.py"],
    "functional/explanation_metrics.py": ["tests/functional/test_explanation_metrics.py"],
    "functional/five_band.py": ["tests/functional/test_five_band.py"],
    "functional/roar.py": ["tests/functional/test_roar.py"],
    "functional/token_attribution.py": ["tests/functional/test_token_attribution.py"],
    "functional/views.py": ["tests/functional/test_views.py"],
    "functional/active_subspace.py": ["tests/functional/test_landscape_maths.py"],
    "functional/weight_noise.py": ["tests/functional/test_landscape_maths.py"],
    "attacks/gradient.py": ["tests/attacks/test_gradient.py"],
    "attacks/deepfool.py": ["tests/attacks/test_deepfool.py"],
    "attacks/l2.py": ["tests/attacks/test_l2.py"],
    "attacks/carlini.py": ["tests/attacks/test_l2.py"],
    "attacks/temperature.py": ["tests/attacks/test_temperature.py"],
    "train/checkpoint.py": ["tests/train/test_checkpoint.py"],
}

#: mutmut's exit-code verdicts folded into the summary's columns.
_COLUMN = {"killed": "killed", "survived": "survived", "timeout": "timeout"}
_MUTANT_LINE = re.compile(r"^[-+](?![-+]{2} )")


@dataclass(frozen=True)
class Equivalent:
    """A survivor a person judged equivalent: no input tells it from the original."""

    module: str
    mutant: str
    diff: str
    why: str


def changed_lines(diff: str) -> list[str]:
    """The removed and added lines of a unified diff (file headers left out), stripped.

    Example:
        >>> changed_lines("--- a.py\\n+++ a.py\\n@@ -1 +1 @@\\n-    x = 1\\n+    x = 2\\n")
        ['-x = 1', '+x = 2']
    """
    return [line[0] + line[1:].strip() for line in diff.splitlines() if _MUTANT_LINE.match(line)]


def load_equivalents(path: Path = EQUIVALENTS) -> list[Equivalent]:
    """The hand-judged equivalent mutants of ``path`` (``[[equivalent]]`` tables)."""
    import tomllib  # Python 3.11+, as scripts/mutation.sh checks

    if not path.is_file():
        return []
    rows = tomllib.loads(path.read_text(encoding="utf-8")).get("equivalent", [])
    out = []
    for i, row in enumerate(rows):
        missing = {"module", "mutant", "diff", "why"} - row.keys()
        if missing:
            raise SystemExit(f"{path}: entry {i + 1} lacks {sorted(missing)}; add them")
        out.append(Equivalent(row["module"], row["mutant"], row["diff"], row["why"]))
    return out


def summarise(module: str, statuses: dict[str, str], diffs: dict[str, str]) -> dict[str, Any]:
    """One module's counts and survivors from mutmut's verdicts and the survivors' diffs."""
    counts = {"killed": 0, "survived": 0, "timeout": 0, "other": 0}
    for status in statuses.values():
        counts[_COLUMN.get(status, "other")] += 1
    survived = [
        {"mutant": name, "diff": changed_lines(diffs.get(name, ""))}
        for name, status in sorted(statuses.items())
        if status == "survived"
    ]
    return {"mutants": len(statuses), **counts, "survived_all": survived}


def apply_equivalents(module: str, entry: dict[str, Any], equivalents: list[Equivalent]) -> None:
    """Set ``entry``'s equivalent count, score and unexplained survivors from the hand list.

    An equivalent counts only while it still survives with the same changed lines (ids move
    when the module is edited); one that no longer matches is reported as stale.

    Example:
        >>> eq = [Equivalent("m.py", "a__mutmut_2", "-x = 1\\n+x = 1.0", "same value")]
        >>> entry = summarise("m.py", {"a__mutmut_1": "killed", "a__mutmut_2": "survived"},
        ...                   {"a__mutmut_2": "--- m.py\\n+++ m.py\\n-x = 1\\n+x = 1.0"})
        >>> apply_equivalents("m.py", entry, eq)
        >>> entry["mutants"], entry["killed"], entry["equivalent"], entry["score"]
        (2, 1, 1, 1.0)
        >>> apply_equivalents("m.py", entry, [])
        >>> entry["score"], entry["survivors"]
        (0.5, [{'mutant': 'a__mutmut_2', 'diff': ['-x = 1', '+x = 1.0']}])
    """
    mine = {e.mutant: e for e in equivalents if e.module == module}
    applied, survivors = [], []
    for row in entry["survived_all"]:
        listed = mine.get(row["mutant"])
        if listed is not None and changed_lines(listed.diff) == row["diff"]:
            applied.append(row["mutant"])
        else:
            survivors.append(row)
    scored = entry["mutants"] - len(applied)
    detected = entry["killed"] + entry["timeout"]
    entry.update(
        equivalent=len(applied),
        score=round(detected / scored, 4) if scored else None,
        score_raw=round(detected / entry["mutants"], 4) if entry["mutants"] else None,
        survivors=survivors,
        equivalents_applied=applied,
        equivalents_stale=sorted(set(mine) - set(applied)),
    )


def _pyproject(module: str, tests: list[str]) -> str:
    """The scratch copy's pyproject: the repository's pytest settings and mutmut's."""
    import tomllib

    pytest = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    ini = dict(pytest["ini_options"])
    ini["addopts"] = "--strict-markers -p no:cacheprovider"
    ini.pop("testpaths", None)
    mutmut = {
        "source_paths": ["src"],
        "only_mutate": [f"src/distillscope/{module}"],
        "pytest_add_cli_args_test_selection": tests,
        "process_isolation": "fork",  # fast; OMP_NUM_THREADS=1 keeps torch fork-safe
        "use_git_change_detection": False,
    }
    lines = ["[tool.pytest.ini_options]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in ini.items()]
    lines += ["", "[tool.mutmut]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in mutmut.items()]
    return "\n".join(lines) + "\n"


def _mutmut(args: list[str], cwd: Path, env: dict[str, str], log: Path | None = None) -> str:
    out = subprocess.run(
        [sys.executable, "-c", "from mutmut.__main__ import cli; cli()", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if log is not None:
        log.write_text(out.stdout + out.stderr)
    if out.returncode != 0:
        tail = (out.stdout + out.stderr).strip().splitlines()[-15:]
        raise SystemExit(f"mutmut {' '.join(args)} failed in {cwd}:\n" + "\n".join(tail))
    return out.stdout


def run_module(module: str, workers: int, scratch: Path, keep: bool) -> dict[str, Any]:
    """Run mutmut on ``module`` (under src/distillscope) in a scratch copy; its summary."""
    from mutmut.stats import status_by_exit_code

    tests = TARGETS[module]
    work = scratch / module.replace("/", "-").removesuffix(".py")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "src", work / "src", ignore=ignore)
    shutil.copytree(ROOT / "tests", work / "tests", ignore=ignore)
    (work / "pyproject.toml").write_text(_pyproject(module, tests))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # mutmut puts mutants/src first on sys.path itself (a PYTHONPATH entry made before the
    # folder exists would be cached as missing, and the unmutated package imported instead)
    env["PYTHONPATH"] = os.environ.get("MUTATION_TOOLS", "")
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    start = time.perf_counter()
    _mutmut(["run", "--max-children", str(workers)], work, env, work / "mutmut.log")
    seconds = time.perf_counter() - start
    meta = work / "mutants" / "src" / "distillscope" / f"{module}.meta"
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    statuses = {name: status_by_exit_code[code] for name, code in codes.items()}
    diffs = {
        name: _mutmut(["show", name], work, env).split("\n", 1)[-1]
        for name, status in statuses.items()
        if status == "survived"
    }
    summary = summarise(module, statuses, diffs)
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return {"tests": tests, "wall_time_s": round(seconds, 1), **summary}


def _commit() -> str:
    """The commit measured (``MUTATION_COMMIT`` for a snapshot outside git), ``+changes`` when
    src/ or tests/ differ from it."""
    if os.environ.get("MUTATION_COMMIT"):
        return os.environ["MUTATION_COMMIT"]

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return out.stdout.strip()

    if Path(git("rev-parse", "--show-toplevel") or "/nonexistent").resolve() != ROOT:
        return "unknown (not a git checkout; set MUTATION_COMMIT)"
    dirty = git("status", "--porcelain", "src", "tests")
    return git("rev-parse", "--short", "HEAD") + ("+changes" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="e.g. functional/agreement.py; none: all")
    parser.add_argument("--out", type=Path, default=OUT, help="the JSON summary to update")
    parser.add_argument("--workers", type=int, default=2, help="mutants tested at once")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copies")
    parser.add_argument(
        "--apply-only",
        action="store_true",
        help="run nothing: apply the equivalents list to the summary's last results again",
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers {args.workers}: use 1 or more")
    unknown = [m for m in args.modules if m not in TARGETS]
    if unknown:
        parser.error(f"unknown module {unknown[0]!r}; choose from {', '.join(TARGETS)}")
    scratch = ROOT / ".mutation" / "work"
    out_path = args.out if args.out.is_absolute() else Path.cwd() / args.out
    summary = json.loads(out_path.read_text()) if out_path.is_file() else {}
    summary.update({"tool": TOOL, "score": "(killed + timeout) / (mutants - equivalent)",
                    "score_raw": "(killed + timeout) / mutants"})  # fmt: skip
    summary.setdefault("modules", {})
    equivalents = load_equivalents()
    if args.apply_only:
        for module, entry in summary["modules"].items():
            apply_equivalents(module, entry, equivalents)
        _write(out_path, summary)
        print(f"summary: {out_path}")
        return 0
    for module in args.modules or list(TARGETS):
        print(f"mutation: {module} against {' '.join(TARGETS[module])}", flush=True)
        result = run_module(module, args.workers, scratch, args.keep)
        result["commit"] = _commit()
        apply_equivalents(module, result, equivalents)
        summary["modules"][module] = result
        print(
            f"  {result['mutants']} mutants: {result['killed']} killed, "
            f"{result['survived']} survived ({result['equivalent']} equivalent), "
            f"{result['timeout']} timeout, {result['other']} other; score {result['score']}; "
            f"{result['wall_time_s']} s",
            flush=True,
        )
        _write(out_path, summary)
    print(f"summary: {out_path}")
    return 0


def totals(modules: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per package (``functional/``, ``attacks/``, ``train/``): the summed counts and score of
    the modules in the summary.

    Example:
        >>> m = {"mutants": 10, "killed": 8, "timeout": 1, "survived": 1, "equivalent": 1}
        >>> totals({"attacks/a.py": m, "attacks/b.py": m})["attacks/"]["score"]
        1.0
    """
    keys = ("mutants", "killed", "timeout", "survived", "equivalent")
    out: dict[str, dict[str, Any]] = {}
    for module, entry in sorted(modules.items()):
        row = out.setdefault(module.split("/")[0] + "/", {"modules": 0, **dict.fromkeys(keys, 0)})
        row["modules"] += 1
        for key in keys:
            row[key] += entry[key]
    for row in out.values():
        detected = row["killed"] + row["timeout"]
        row["score"] = round(detected / (row["mutants"] - row["equivalent"]), 4)
        row["score_raw"] = round(detected / row["mutants"], 4)
    return out


def _write(path: Path, summary: dict[str, Any]) -> None:
    """Write ``summary`` to ``path`` through a temporary file and a rename."""
    summary["totals"] = totals(summary["modules"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    raise SystemExit(main())
