"""results.json: one module makes, writes, reads and checks it; the run directory uses it."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import torch

import distillscope
from distillscope.report import RESULTS_FILE as REPORT_RESULTS_FILE
from distillscope.results import (
    RESULTS_FILE,
    SCHEMA_VERSION,
    build_results,
    check_results,
    load_results,
    results_path,
    write_results,
)
from distillscope.rundir import RunDir


class _Data:
    def __init__(self, n: int, info: SimpleNamespace) -> None:
        self.n, self.info = n, info

    def __len__(self) -> int:
        return self.n


def _member(name: str, role: str, **kw):
    return SimpleNamespace(
        name=name,
        role=role,
        spec=SimpleNamespace(name=kw.pop("arch", "mlp")),
        train=SimpleNamespace(temperature=kw.pop("T", 1)),
        teacher=kw.pop("teacher", None),
        loss=kw.pop("loss", {"ce": {}}),
        reused=kw.pop("reused", False),
        group=kw.pop("group", None),
        seed=kw.pop("seed", None),
        history=kw.pop("history", []),
    )


def _payload(members) -> dict:
    info = SimpleNamespace(name="toy", source="here", num_classes=3, class_names=("a", "b", "c"),
                           input_shape=(2,))  # fmt: skip
    splits = SimpleNamespace(
        train=_Data(10, info),
        test=_Data(4, info),
        member_train={"kd": _Data(5, SimpleNamespace(name="other"))},
    )
    return build_results(
        config={"name": "r", "seed": 7, "x": [1]},
        members=members,
        parameters={"teacher": 30, "kd": 12, "b": 11},
        splits=splits,
        probes={"accuracy": {"values": {"kd": 0.5}, "series": {}, "params": {}}},
        duration=1.23456,
        device="cpu",
        config_file=None,
        digest="d1",
        identity={"data": {"train": "f", "test": "g"}, "runtime": {}},
    )


def test_the_payload_has_the_schema_layout_and_member_extras_only_where_they_apply():
    members = [
        _member("teacher", "teacher", arch="resnet8", reused=True, loss={"ce": {}}),
        _member(
            "kd",
            "student",
            teacher="teacher",
            loss={"kd": {}},
            T=4,
            seed=3,
            history=[{"epoch": 1, "loss": math.nan}],
        ),  # fmt: skip
        _member("b", "student", teacher="teacher", seed=7),  # the run's seed: not repeated
    ]
    out = _payload(iter(members))  # any iterable: it is read twice
    assert list(out) == ["schema", "run", "config", "identity", "dataset", "models", "training",
                         "probes"]  # fmt: skip
    assert out["schema"] == SCHEMA_VERSION == 1
    run = out["run"]
    assert (run["name"], run["seed"], run["duration_s"], run["config_file"]) == ("r", 7, 1.23, None)
    assert run["distillscope_version"] == distillscope.__version__
    assert run["torch_version"] == torch.__version__
    assert out["identity"] == {"digest": "d1", "data": {"train": "f", "test": "g"}, "runtime": {}}
    assert out["dataset"]["fingerprints"] == {"train": "f", "test": "g"}
    assert (out["dataset"]["n_train"], out["dataset"]["n_test"]) == (10, 4)
    teacher, kd, b = (out["models"][k] for k in ("teacher", "kd", "b"))
    assert teacher["loss"] is None and teacher["reused"] is True and teacher["params"] == 30
    assert kd["train_temperature"] == 4.0 and isinstance(kd["train_temperature"], float)
    assert kd["data"] == {"name": "other", "n_train": 5} and kd["seed"] == 3
    assert "data" not in b and "seed" not in b and b["params"] == 11
    assert list(out["training"]) == ["teacher", "kd", "b"]
    check_results(out)


def test_written_file_is_read_back_and_the_run_directory_uses_the_same_file(tmp_path):
    out = _payload([_member("kd", "student", history=[{"epoch": 1, "loss": math.nan}])])
    (tmp_path / "a").mkdir()
    path = write_results(tmp_path / "a", out)
    assert path == results_path(tmp_path / "a") == tmp_path / "a" / RESULTS_FILE
    assert RESULTS_FILE == REPORT_RESULTS_FILE == "results.json"
    text = path.read_text()
    assert text == json.dumps(out, indent=1, allow_nan=True) and "NaN" in text
    back = load_results(tmp_path / "a")
    assert back["models"] == out["models"] and math.isnan(back["training"]["kd"][0]["loss"])
    rd = RunDir(tmp_path / "b")
    rd.path.mkdir()
    rd.write_results(out)
    assert rd.results == results_path(rd.path)
    assert rd.results.read_bytes() == path.read_bytes()
