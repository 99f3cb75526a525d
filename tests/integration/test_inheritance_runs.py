"""Paper 002's terms through the experiment: an IE-DML group of two resnet8 peers trains end to
end (each peer bound on its real peer at start-up), and an IE-DML student without a group or in
a group of three is refused in one line before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distillscope.cli import main


def config(tmp_path: Path, students: dict) -> dict:
    return {
        "name": "ie",
        "seed": 0,
        "output_dir": str(tmp_path / "runs"),
        "teacher_store": str(tmp_path / "store"),
        "progress": False,
        "data": {"name": "digits"},
        "train": {"epochs": 1, "batch_size": 64, "optimizer": "sgd", "lr": 0.05},
        "teacher": {"model": {"name": "resnet8"}},
        "student": {"name": "resnet8"},
        "students": students,
        "probe_defaults": {"max_samples": 100},
        "probes": {"accuracy": {}},
    }


def run(tmp_path: Path, students: dict, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    import yaml

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config(tmp_path, students)))
    code = main(["run", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


IE = {"loss": {"ce": {}, "ie_dml": {"peer_layer": "layer2"}}}


def test_an_ie_dml_group_trains_both_peers(tmp_path: Path, capsys) -> None:
    # peer_layer layer2 (32 channels) differs from each network's own layer3: start-up binds
    # every peer on its real peer, and the training loop taps what the peer reads
    code, out, err = run(tmp_path, {"a": {**IE, "group": "g"}, "b": {**IE, "group": "g"}}, capsys)
    assert code == 0, err
    results = json.loads((Path(out.strip().splitlines()[-1]) / "results.json").read_text())
    for peer in ("a", "b"):
        row = results["training"][peer][0]
        assert row["ie_dml/rec"] > 0 and row["ie_dml/exp"] < 0


@pytest.mark.parametrize(
    ("students", "needle"),
    [
        ({"a": IE}, "'a': ie_dml learns from a peer; put two students with ie_dml in one group"),
        (
            {name: {**IE, "group": "g"} for name in ("a", "b", "c")},
            "ie_dml is defined for two networks (paper 002's IE-DML), but the group has 3",
        ),
    ],
)
def test_without_a_group_or_in_a_group_of_three_it_is_refused(
    tmp_path: Path, capsys, students: dict, needle: str
) -> None:
    code, _, err = run(tmp_path, students, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and needle in lines[0], err
    assert not (tmp_path / "runs").exists()
