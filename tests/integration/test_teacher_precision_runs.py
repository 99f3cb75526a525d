"""A teacher's bf16 passes through the experiment (``teacher_precision: bf16``): folded for
cached and live students, with the pairs a loss reads left alone; as one oneDNN graph when the
students read only its output; a disk cache of the graph's outputs trains the students a memory
cache does, bit for bit, and the fp32 and bf16 caches of one teacher are two folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.integration.test_inheritance_runs import config

ONEDNN_BF16 = pytest.mark.skipif(
    not torch.backends.mkldnn.is_available() or not torch.ops.mkldnn._is_mkldnn_bf16_supported(),
    reason="this CPU has no bf16 oneDNN kernels",
)


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


@ONEDNN_BF16
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


@ONEDNN_BF16
def test_a_disk_cache_of_the_graph_trains_what_a_memory_cache_does(
    tmp_path: Path, monkeypatch
) -> None:
    # over teacher_cache_mb the graph's outputs go to a disk cache: the KD student trains bit
    # for bit as from the memory cache; an fp32 run of the same teacher gets its own folder
    from distillscope.experiment import run_experiment

    monkeypatch.setenv("DISTILLSCOPE_CACHE", str(tmp_path / "cache"))
    disk = tmp_path / "cache" / "teacher-caches"
    weights = {}
    for case, extra in {
        "memory": {"teacher_precision": "bf16"},
        "disk": {"teacher_precision": "bf16", "teacher_cache_mb": 0.001},
        "fp32 disk": {"teacher_cache_mb": 0.001},
    }.items():
        cfg = {**config(tmp_path, {"kd": {"loss": "kd"}}), **extra}
        run = run_experiment(cfg).path
        weights[case] = load_file(str(run / "models" / "kd.safetensors"))
        record = json.loads((run / "results.json").read_text()).get("teacher_precision", {})
        assert record.get("teacher", {}).get("onednn", False) is (case != "fp32 disk")
    assert all(torch.equal(weights["memory"][k], v) for k, v in weights["disk"].items())
    assert any(not torch.equal(weights["memory"][k], v) for k, v in weights["fp32 disk"].items())
    assert len([p for p in disk.iterdir() if (p / "cache.json").is_file()]) == 2
