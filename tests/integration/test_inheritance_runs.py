"""Paper 002's terms through the experiment: an IE-DML group of two resnet8 peers trains end to
end (each peer bound on its real peer at start-up), and an IE-DML student without a group or in
a group of three is refused in one line before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

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


def test_a_bf16_teacher_runs_folded_for_cached_and_live_students(tmp_path: Path, capsys) -> None:
    # teacher_precision bf16 (ours, see distillscope.train.fold): the resnet8 teacher's batch
    # norms fold into their convolutions for its students' passes, from its cache and live;
    # the check compares that folded bf16 network with the fp32 teacher, and both are recorded
    from distillscope.experiment import run_experiment

    # OFD reads the teacher's layer3.0.bn2 parameters for its margin: that pair stays unfolded
    ofd = {"ce": {}, "ofd": {"student_layers": ["layer3.0.preact"],
                             "teacher_layers": ["layer3.0.preact"],
                             "teacher_bns": ["layer3.0.bn2"]}}  # fmt: skip
    students = {"kd": {"loss": "kd"}, "live": {"loss": "kd", "teacher_cache": "off"},
                "ofd": {"loss": ofd}}  # fmt: skip
    cfg = config(tmp_path, students)
    cfg["teacher_precision"] = "bf16"
    run = run_experiment(cfg).path
    results = json.loads((run / "results.json").read_text())
    record = results["teacher_precision"]["teacher"]
    assert record["precision"] == "bf16" and record["folded"] == 8
    assert record["onednn"] is False  # OFD reads the teacher's modules: autocast, not a graph
    assert record["max_logit_error"] < 1.0 and record["agreement"] > 0.9
    for student in ("kd", "live", "ofd"):
        assert results["training"][student][0]["loss"] > 0
    err = capsys.readouterr().err
    assert err.count("bf16; 8 batch norms folded into their convolutions; bf16 agrees") == 1


@pytest.mark.skipif(
    not torch.backends.mkldnn.is_available() or not torch.ops.mkldnn._is_mkldnn_bf16_supported(),
    reason="this CPU has no bf16 oneDNN kernels",
)
def test_a_bf16_teacher_read_only_for_its_output_runs_as_one_onednn_graph(
    tmp_path: Path, capsys
) -> None:
    # KD students read the teacher's logits only: its folded copy runs as one oneDNN graph
    # (ours, distillscope.train.onednn), for the cache build and the live student alike
    from distillscope.experiment import run_experiment

    students = {"kd": {"loss": "kd"}, "live": {"loss": "kd", "teacher_cache": "off"}}
    cfg = config(tmp_path, students)
    cfg["teacher_precision"] = "bf16"
    run = run_experiment(cfg).path
    results = json.loads((run / "results.json").read_text())
    record = results["teacher_precision"]["teacher"]
    assert record["precision"] == "bf16" and record["folded"] == 9 and record["onednn"] is True
    assert 0 < record["max_logit_error"] < 1.0 and record["agreement"] > 0.9
    for student in ("kd", "live"):
        assert results["training"][student][0]["loss"] > 0
    err = capsys.readouterr().err
    assert err.count("9 batch norms folded into their convolutions; one oneDNN graph; bf16") == 1
    assert "Teacher passes (teacher)" in (run / "report.html").read_text()
    assert "one oneDNN graph" in (run / "report.html").read_text()
