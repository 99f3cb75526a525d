"""End to end: config -> teachers -> students -> probes -> results.json -> report.html."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distillscope import run_experiment
from distillscope.cli import main
from distillscope.experiment import resume_experiment
from distillscope.train import trainer as trainer_module
from distillscope.train.checkpoint import stable

pytestmark = pytest.mark.integration

PROBES = {
    "accuracy": {},
    "agreement": {},
    "class_similarity": {},
    "adherence": {"max_samples": 16, "ig_steps": 8},
    "adversarial": {"max_samples": 64},
    "decision_map": {"resolution": 24},
}


def tiny_config(tmp_path: Path, **extra) -> dict:
    cfg = {
        "name": "tiny",
        "seed": 3,
        "output_dir": str(tmp_path / "runs"),
        "progress": False,
        "data": {"name": "toy2d-ring"},
        "train": {"epochs": 2, "batch_size": 64, "optimizer": "adam", "lr": 0.01},
        "teacher": {"model": {"name": "mlp_full"}, "train": {"epochs": 3}},
        "student": {"name": "mlp_reduced"},
        "students": {
            "independent": {"loss": "ce"},
            "kd": {"loss": "kd", "temperature": 4.0, "alpha": 0.9},
            "ls": {"loss": "label_smoothing", "alpha": 0.1},
        },
        "probe_defaults": {"max_samples": 120},
        "probes": PROBES,
    }
    cfg.update(extra)
    return cfg


def test_run_writes_a_complete_run_directory(tmp_path, capsys):
    cfg_path = tmp_path / "tiny.yaml"
    import yaml

    cfg_path.write_text(yaml.safe_dump(tiny_config(tmp_path)))
    code = main(["run", str(cfg_path), "students.kd.temperature=2"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    run = Path(out[-1])  # the last line printed is the run directory
    assert run.is_dir() and run.parent == tmp_path / "runs"
    for name in ("config.yaml", "results.json", "report.html", "metrics.jsonl"):
        assert (run / name).is_file(), name
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["students"]["kd"]["temperature"] == 2  # the resolved config, overrides applied
    results = json.loads((run / "results.json").read_text())
    models = ["teacher", "independent", "kd", "ls"]
    assert list(results["models"]) == models
    assert set(results["probes"]) == set(PROBES)
    acc = results["probes"]["accuracy"]["values"]
    for m in models:
        assert 0.0 <= acc[f"{m}/top1"] <= 1.0
        assert (run / "models" / f"{m}.safetensors").is_file()
        assert results["training"][m], m
    assert "teacher->kd" in results["probes"]["agreement"]["values"]
    for probe in results["probes"].values():
        assert "seed" in probe["params"]
    html = (run / "report.html").read_text()
    for m in models:
        assert m in html


def test_report_rerenders_from_results_only(tmp_path, capsys):
    run = run_experiment(tiny_config(tmp_path, probes={"accuracy": {}})).path
    first = (run / "report.html").read_bytes()
    for path in (run / "models").iterdir():
        path.unlink()
    (run / "report.html").unlink()
    assert main(["report", str(run)]) == 0
    assert (run / "report.html").read_bytes() == first


def test_teacher_is_stored_and_reused(tmp_path):
    cfg = tiny_config(tmp_path, probes={"accuracy": {}})
    first = run_experiment(cfg).path
    second = run_experiment(cfg).path
    r1 = json.loads((first / "results.json").read_text())
    r2 = json.loads((second / "results.json").read_text())
    assert r1["models"]["teacher"]["reused"] is False
    assert r2["models"]["teacher"]["reused"] is True
    w1 = load_file(str(first / "models" / "teacher.safetensors"))
    w2 = load_file(str(second / "models" / "teacher.safetensors"))
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    # metrics.jsonl of the second run holds no teacher epochs: it was not trained again
    rows = [json.loads(x) for x in (second / "metrics.jsonl").read_text().splitlines()]
    assert not [r for r in rows if r["model"] == "teacher"]
    assert r2["training"]["teacher"] == r1["training"]["teacher"]  # history kept with the store
    # a different teacher config is a different key
    cfg["teacher"]["train"]["epochs"] = 2
    third = json.loads((run_experiment(cfg).path / "results.json").read_text())
    assert third["models"]["teacher"]["reused"] is False
    forced = run_experiment(tiny_config(tmp_path, probes={"accuracy": {}}), retrain_teacher=True)
    assert (
        json.loads((forced.path / "results.json").read_text())["models"]["teacher"]["reused"]
        is False
    )


class Killed(Exception):
    pass


def test_killed_run_resumes_to_identical_weights(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path, probes={"accuracy": {}})
    cfg["train"]["epochs"] = 3
    whole = run_experiment(cfg).path

    # Kill the kd student during its third epoch, after two epochs were checkpointed.
    original = trainer_module.Trainer._train_epoch
    calls = {"n": 0}

    def dying(self, *args, **kwargs):
        if self.name == "kd":
            calls["n"] += 1
            if calls["n"] == 3:
                raise Killed
        return original(self, *args, **kwargs)

    monkeypatch.setattr(trainer_module.Trainer, "_train_epoch", dying)
    with pytest.raises(Killed):
        run_experiment(cfg)
    monkeypatch.setattr(trainer_module.Trainer, "_train_epoch", original)
    killed = max((tmp_path / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    assert not (killed / "results.json").exists()
    assert not (killed / "models" / "kd.safetensors").exists()

    resumed = resume_experiment(killed).path
    assert resumed == killed
    for name in ("teacher", "independent", "kd", "ls"):
        a = load_file(str(whole / "models" / f"{name}.safetensors"))
        b = load_file(str(resumed / "models" / f"{name}.safetensors"))
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    ra = json.loads((whole / "results.json").read_text())
    rb = json.loads((resumed / "results.json").read_text())
    assert ra["probes"]["accuracy"]["values"] == rb["probes"]["accuracy"]["values"]
    # the killed run reused the stored teacher; the resumed report still shows its curve
    assert rb["models"]["teacher"]["reused"] is True
    # (wall times are kept out of model files, so that identical runs give identical files)
    assert rb["training"]["teacher"] == stable(ra["training"]["teacher"])
    assert [r["epoch"] for r in rb["training"]["kd"]] == [1, 2, 3]


def test_temperature_toy_study_smoke(tmp_path):
    """Paper 004's flavours in miniature: T=1 and T=20 teachers, a defensively distilled student."""
    cfg = tiny_config(
        tmp_path,
        teacher=None,
        teachers={
            "FT_temp1": {"model": {"name": "mlp_full"}},
            "FT_tempT": {"model": {"name": "mlp_full"}, "train": {"temperature": 20}},
        },
        students={
            "FS_tempT_from_FT_tempT": {
                "loss": "soft_targets",
                "temperature": 20,
                "teacher": "FT_tempT",
                "train": {"temperature": 20},
            }
        },
        probes={"adversarial": {"max_samples": 60}, "decision_map": {"resolution": 20}},
    )
    run = run_experiment(cfg).path
    results = json.loads((run / "results.json").read_text())
    assert results["models"]["FT_tempT"]["train_temperature"] == 20
    assert results["models"]["FS_tempT_from_FT_tempT"]["teacher"] == "FT_tempT"
    values = results["probes"]["adversarial"]["values"]
    assert "FT_tempT/fgsm_strong" in values and "FT_temp1/fgsm" in values
    assert "FT_tempT" in results["probes"]["decision_map"]["images"]


def test_killed_run_with_a_hint_student_and_a_dml_group_resumes_identical(tmp_path, monkeypatch):
    """Owned modules (hint's regressor) and a group (DML peers) survive a kill bit for bit."""
    students = {
        "hint": {
            "loss": {"ce": {}, "hint": {"student_layer": "body.act1", "teacher_layer": "body.act1"}}
        },  # fmt: skip
        "dml_a": {"loss": "dml", "group": "mutual"},
        "dml_b": {"loss": "dml", "group": "mutual"},
    }
    cfg = tiny_config(tmp_path, probes={"accuracy": {}}, students=students)
    cfg["train"]["epochs"] = 3
    whole = run_experiment(cfg).path
    killed = None  # the run directory, once the first kill made it
    killers = {"hint": (trainer_module.Trainer, "_train_epoch"),
               "mutual": (trainer_module.Trainer, "_train_epoch")}  # fmt: skip
    for victim, (cls, method) in killers.items():
        original = getattr(cls, method)
        calls = {"n": 0}

        def dying(self, *args, _original=original, _victim=victim, _calls=calls, **kwargs):
            if self.name == _victim:
                _calls["n"] += 1
                if _calls["n"] == 3:  # during the third epoch, two checkpointed
                    raise Killed
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, method, dying)
        with pytest.raises(Killed):
            run_experiment(cfg) if victim == "hint" else resume_experiment(killed)
        monkeypatch.setattr(cls, method, original)
        if victim == "hint":
            killed = max((tmp_path / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    resumed = resume_experiment(killed).path
    for name in ("hint", "dml_a", "dml_b"):
        a = load_file(str(whole / "models" / f"{name}.safetensors"))
        b = load_file(str(resumed / "models" / f"{name}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    rb = json.loads((resumed / "results.json").read_text())
    assert rb["models"]["dml_a"]["group"] == "mutual"
    assert [r["epoch"] for r in rb["training"]["dml_b"]] == [1, 2, 3]
    assert rb["training"]["dml_a"][0]["dml/kl"] > 0


def test_teacher_features_are_cached_in_memory_on_disk_or_live_with_equal_students(
    tmp_path, capsys, monkeypatch
):
    """Within the budget the cache is in memory; over it, on disk (memory-mapped files, reused
    by the next run); with disk caches off, the teacher runs live. Memory and disk caches train
    bit-identical students."""
    students = {"hint": {"loss": {"ce": {}, "hint": {"student_layer": "body.act1",
                                                     "teacher_layer": "body.act1"}}}}  # fmt: skip
    monkeypatch.setenv("DISTILLSCOPE_CACHE", str(tmp_path / "cache"))
    disk = tmp_path / "cache" / "teacher-caches"
    weights, stamps = {}, []
    cases = {
        "memory": {"teacher_cache_mb": 64.0},
        "disk": {"teacher_cache_mb": 0.001},
        "disk again": {"teacher_cache_mb": 0.001},
        "live": {"teacher_cache_mb": 0.001, "teacher_cache_disk": False},
    }
    for case, extra in cases.items():
        cfg = tiny_config(tmp_path, probes={"accuracy": {}}, students=students, **extra)
        cfg["train"]["epochs"] = 1
        run = run_experiment(cfg).path
        weights[case] = load_file(str(run / "models" / "hint.safetensors"))
        err = capsys.readouterr().err
        if case == "memory":  # 1,200 points x (3 logits + 32 features) x 4 bytes: inside 64 MB
            said = "caching teacher teacher outputs and features body.act1 on 1200 training items"
            assert said in err
            assert "not caching" not in err and "on disk" not in err
        elif case.startswith("disk"):
            lines = [line for line in err.splitlines() if "on disk" in line]
            assert len(lines) == 1 and "teacher_cache_mb=0.001" in lines[0]
            stamps += [f.stat().st_mtime_ns for f in disk.glob("*/cache.json")]
        else:
            lines = [line for line in err.splitlines() if "not caching" in line]
            assert len(lines) == 1 and "the teacher runs live" in lines[0]
    assert len(list(disk.iterdir())) == 1  # nothing half-written beside the one cache
    assert len(stamps) == 2 and stamps[0] == stamps[1]  # built once, then reused
    for case in ("disk", "disk again"):
        assert all(torch.equal(weights["memory"][k], v) for k, v in weights[case].items())


def test_older_teacher_caches_make_room_within_the_budget(tmp_path, monkeypatch):
    """Two feature caches that fit alone but not together: the first is dropped for the second."""
    from distillscope.train import cache_pool as pool_module

    built: list[str] = []
    original = pool_module.TeacherCache.build

    def recording(*args, **kwargs):
        built.append(",".join(kwargs.get("feature_paths") or []))
        return original(*args, **kwargs)

    monkeypatch.setattr(pool_module.TeacherCache, "build", recording)
    hint = {"student_layer": "body.act1", "teacher_layer": "body.act1"}
    students = {
        "h1": {"loss": {"ce": {}, "hint": hint}},
        "h2": {"loss": {"ce": {}, "hint": {**hint, "teacher_layer": "body"}}},
        "h3": {"loss": {"ce": {}, "hint": hint}},
    }
    # each cache: 1,200 x (3 + 32) x 4 bytes = 168,000 bytes; the budget holds one
    cfg = tiny_config(tmp_path, probes={"accuracy": {}}, students=students,
                      teacher_cache_mb=0.2)  # fmt: skip
    cfg["train"]["epochs"] = 1
    run_experiment(cfg)
    assert built == ["body.act1", "body", "body.act1"]  # h3 rebuilds what h2's cache pushed out


def test_landscape_probes_run_from_the_cli_and_the_sharpness_curve_is_drawn(tmp_path, capsys):
    import yaml

    probes = {"active_neurons": {}, "sharpness": {"draws": 1, "sigmas": [0.1, 0.2]}}
    cfg = tiny_config(tmp_path, probes=probes, students={"kd": {"loss": "kd"}})
    cfg["train"]["epochs"] = 1
    cfg_path = tmp_path / "landscape.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(cfg_path)]) == 0
    run = Path(capsys.readouterr().out.strip().splitlines()[-1])
    results = json.loads((run / "results.json").read_text())
    for m in ("teacher", "kd"):
        assert results["probes"]["active_neurons"]["values"][m] >= 1
        assert len(results["probes"]["sharpness"]["series"][f"{m}/loss"]) == 3
    html = (run / "report.html").read_text()
    assert 'alt="sharpness series"' in html and 'alt="active_neurons series"' in html


def test_teacher_precision_auto_is_checked_said_and_recorded(tmp_path, capsys):
    students = {"kd": {"loss": "kd", "temperature": 4.0, "alpha": 0.9}}
    cfg = tiny_config(tmp_path, probes={"accuracy": {}}, students=students,
                      teacher_precision="auto")  # fmt: skip
    cfg["train"]["epochs"] = 1
    run = run_experiment(cfg).path
    err = capsys.readouterr().err
    record = json.loads((run / "results.json").read_text())["teacher_precision"]["teacher"]
    assert record["requested"] == "auto" and record["precision"] in ("bf16", "fp32")
    assert 0.0 <= record["agreement"] <= 1.0 and record["items"] == 512
    assert f"teacher teacher runs in {record['precision']} for its students" in err
    reason = "auto takes bf16 only at 99.9% agreement or more and a largest change of 0.05"
    assert (reason in err) is (record["precision"] == "fp32")  # a fallback says why
    plain = tiny_config(tmp_path, probes={"accuracy": {}}, students=students)
    plain["train"]["epochs"] = 1
    results = json.loads((run_experiment(plain).path / "results.json").read_text())
    assert "teacher_precision" not in results or all(
        r["precision"] == "fp32" for r in results["teacher_precision"].values()
    )
