"""``distillscope reproduce``: declarations checked before anything runs, verdicts computed from
the grid cells' values, claims.json / claims.md written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from distillscope.claims import list_claims, load_claims, reproduce
from distillscope.claims.reproduce import seed_values
from distillscope.cli import main
from distillscope.errors import ConfigError

REPO_REPRODUCE = Path(__file__).resolve().parents[2] / "configs" / "reproduce"


def tiny_config(tmp_path: Path) -> dict:
    return {
        "name": "tiny-claims",
        "output_dir": str(tmp_path / "runs"),
        "device": "cpu",
        "data": {"name": "toy2d-ring"},
        "train": {"epochs": 1, "batch_size": 64, "optimizer": "adam", "lr": 0.01, "max_batches": 2},
        "teacher": {"model": {"name": "mlp_reduced"}},
        "student": {"name": "mlp_reduced"},
        "students": {"independent": {"loss": "ce"}, "kd": {"loss": "kd"}},
        "probe_defaults": {"max_samples": 32, "batch_size": 32},
        "probes": {"accuracy": {}, "agreement": {}},
    }


def declare(root: Path, claims: dict, paper: str = "900", config: dict | None = None) -> Path:
    (root / "claims").mkdir(parents=True, exist_ok=True)
    (root / "tiny.yaml").write_text(yaml.safe_dump(config or tiny_config(root)))
    doc = {"paper": paper, "title": "A tiny paper", "claims": claims}
    (root / "claims" / f"paper-{paper}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return root


def claim(**over) -> dict:
    base = {
        "config": "tiny.yaml",
        "statement": "KD agrees more",
        "paper_value": "+1",
        "rule": "agreement:teacher->kd - agreement:teacher->independent > 0",
    }
    return {**base, **over}


@pytest.mark.parametrize("paper", ["000", "001", "002", "003"])
def test_the_shipped_declarations_load(paper) -> None:
    declared = load_claims(REPO_REPRODUCE, paper)  # rules parse, configs exist and run the probes
    assert declared.claims and all(c.statement and c.paper_value for c in declared.claims.values())
    assert paper in list_claims(REPO_REPRODUCE)


@pytest.mark.parametrize(
    ("claims", "says"),
    [
        ({"c": claim(rule="agreement:kd > 1")}, "compares a sum with 0"),
        ({"c": claim(rule="task:kd/top1 > 0")}, "reads probe 'task', which tiny.yaml does not run"),
        ({"c": claim(config="../tiny.yaml")}, "inside the reproduce folder"),
        ({"c": claim(config="missing.yaml")}, "not found"),
        ({"c": claim(colour="red")}, "Extra inputs are not permitted"),
        ({"Bad_ID": claim()}, "lower-case words"),
        ({"c": claim(controls={"ctl": "nonsense"})}, "controls.ctl"),
    ],
)
def test_bad_declarations_fail_in_one_line_before_anything_runs(tmp_path, claims, says) -> None:
    root = declare(tmp_path, claims)
    ran = []
    with pytest.raises(ConfigError, match=says) as err:
        reproduce("900", root=root, run_grid=lambda c, s: ran.append(c), output_dir=tmp_path)
    assert "\n" not in str(err.value) and ran == []
    assert not (tmp_path / "reproduce-900").exists()


def test_unknown_paper_claim_or_seed_count_are_refused(tmp_path) -> None:
    root = declare(tmp_path, {"c": claim()})
    never = lambda c, s: pytest.fail("ran")  # noqa: E731
    with pytest.raises(ConfigError, match="papers with claims: 900"):
        reproduce("001", root=root, run_grid=never)
    with pytest.raises(ConfigError, match="has no claim 'x'; its claims: c"):
        reproduce("900", ["x"], root=root, run_grid=never)
    with pytest.raises(ConfigError, match="seeds"):
        reproduce("900", root=root, seeds=1, run_grid=never)


def fake_grid(tmp_path: Path, per_seed: dict[int, dict[str, dict[str, float]]]) -> Path:
    grid = tmp_path / "grid"
    grid.mkdir()
    cells = [
        {"id": f"seed={s}", "labels": {"seed": str(s)}, "status": "done", "values": v}
        for s, v in per_seed.items()
    ]
    cells.append({"id": "seed=9", "labels": {"seed": "9"}, "status": "failed", "values": {}})
    summary = {"grid": {"seed_axis": "seed"}, "cells": cells}
    (grid / "grid.json").write_text(json.dumps(summary))
    return grid


def agreement(kd: float, ind: float) -> dict[str, dict[str, float]]:
    return {"agreement": {"teacher->kd": kd, "teacher->independent": ind}}


def test_verdicts_are_computed_from_the_seeds_values(tmp_path) -> None:
    root = declare(
        tmp_path / "r",
        {
            "kd-agrees": claim(),
            "kd-agrees-less": claim(
                rule="agreement:teacher->kd - agreement:teacher->independent < 0",
                controls={"big": "agreement:teacher->kd - 0.5 > 0"},
            ),
            "typo": claim(rule="agreement:teacher->kdd - 0.5 > 0", departures="toy data"),
        },
    )
    grid = fake_grid(
        tmp_path, {0: agreement(0.90, 0.85), 1: agreement(0.91, 0.86), 2: agreement(0.92, 0.86)}
    )
    calls = []

    def run_grid(config: Path, seeds: list[int]) -> Path:
        calls.append((config.name, seeds))
        return grid

    out = reproduce("900", root=root, seeds=3, run_grid=run_grid, output_dir=tmp_path / "out")
    assert calls == [("tiny.yaml", [0, 1, 2])]  # one grid per config, shared by its claims
    payload = json.loads((out / "claims.json").read_text())
    by_id = {c["id"]: c for c in payload["claims"]}
    assert by_id["kd-agrees"]["verdict"] == "reproduced"
    assert by_id["kd-agrees"]["per_seed"] == {"0": 0.05, "1": 0.05, "2": 0.06}
    assert by_id["kd-agrees"]["mean"] == pytest.approx(0.053333, abs=1e-6)
    assert by_id["kd-agrees-less"]["verdict"] == "not reproduced"
    assert by_id["kd-agrees-less"]["controls"]["big"]["holds"] is True
    assert by_id["typo"]["verdict"] == "inconclusive at 0 seeds"
    assert by_id["typo"]["missing"] == ["agreement:teacher->kdd"]
    page = (out / "claims.md").read_text()
    assert "| kd-agrees | KD agrees more (paper: +1) |" in page and "| reproduced |" in page
    assert page.count("which departs from the paper's") == 1  # only the claim that says so
    html = (out / "report.html").read_text()
    assert '<span class="verdict reproduced">reproduced</span>' in html
    assert '<span class="verdict not-reproduced">not reproduced</span>' in html
    assert 'href="../../grid/report.html"' in html  # relative: the folder can move with runs
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0 and (out / "report.html").read_text() == html


def test_a_grid_varying_more_than_the_seed_is_refused(tmp_path) -> None:
    grid = tmp_path / "g"
    grid.mkdir()
    cell = {"id": "T=1,seed=0", "labels": {"T": "1", "seed": "0"}, "status": "done", "values": {}}
    (grid / "grid.json").write_text(json.dumps({"grid": {"seed_axis": "seed"}, "cells": [cell]}))
    with pytest.raises(ConfigError, match=r"varies more than the seed \(T\)"):
        seed_values(grid)


@pytest.mark.integration
def test_cli_reproduce_runs_grids_over_seeds_and_reuses_them(tmp_path, capsys) -> None:
    root = declare(tmp_path / "repro", {"kd-agrees": claim()})
    out = tmp_path / "out"
    args = ["reproduce", "900", "--configs", str(root), "--seeds", "2", "--output-dir", str(out)]
    with pytest.raises(SystemExit):  # argparse's own exit code 2
        main([*args, "--no-such-flag"])
    assert main(args) == 0
    page = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert page == out / "reproduce-900" / "claims.md"
    payload = json.loads((page.parent / "claims.json").read_text())
    (rec,) = payload["claims"]
    assert set(rec["per_seed"]) == {"0", "1"} and rec["n"] == 2
    assert rec["verdict"] in {"reproduced", "not reproduced", "inconclusive at 2 seeds"}
    grid_dir = Path(rec["grid"])
    cells = sorted(p.name for p in (grid_dir / "cells").iterdir())
    assert len(cells) == 2
    stamps = {p: p.stat().st_mtime_ns for p in grid_dir.glob("cells/*/results.json")}
    assert main(args) == 0  # finished cells are reused, not run again
    assert {p: p.stat().st_mtime_ns for p in grid_dir.glob("cells/*/results.json")} == stamps
    assert json.loads((page.parent / "claims.json").read_text())["claims"] == payload["claims"]


def test_cli_list_and_errors(tmp_path, capsys) -> None:
    root = declare(tmp_path, {"kd-agrees": claim()})
    assert main(["reproduce", "--list", "--configs", str(root)]) == 0
    assert "900  A tiny paper" in capsys.readouterr().out
    assert main(["reproduce", "--configs", str(root)]) == 2
    assert main(["reproduce", "900", "--seeds", "1", "--configs", str(root)]) == 2
    assert main(["reproduce", "901", "--configs", str(root)]) == 2
    err = capsys.readouterr().err
    assert "no claims declared for paper '901'" in err
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    for out in (a_file, a_file / "below"):  # a traceback before: mkdir under a file
        assert main(["reproduce", "900", "--configs", str(root), "--output-dir", str(out)]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert "is a file, not a folder; pass --output-dir naming a writable folder" in line
    assert a_file.read_text() == "not a folder" and not list(tmp_path.glob("**/*grid*"))


@pytest.mark.parametrize("content", [b"\xff\xfe", b"- a\n- b\n", b"claims: [1, 2\n"])
def test_a_corrupted_claims_file_is_one_line(tmp_path, content) -> None:
    root = declare(tmp_path, {"c": claim()})
    (root / "claims" / "paper-900.yaml").write_bytes(content)
    with pytest.raises(ConfigError, match="claims file") as err:
        reproduce("900", root=root, run_grid=lambda c, s: pytest.fail("ran"))
    assert "\n" not in str(err.value)
