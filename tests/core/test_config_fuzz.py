"""Config fuzzing: random mutations of the shipped configs either start or fail cleanly.

Each example takes a shipped config, shrinks it (one epoch of one batch, a handful of probe
samples, a small data subset), applies one random mutation (a wrong type, a missing or extra
key, an out-of-range number, an odd name) and runs the CLI up to the point where the run
directory is created and training would start (``Experiment._run`` is replaced by a stand-in that
records the call). The promise under test:

- every check passes: exit 0 and the run directory holds the resolved ``config.yaml``, or
- exit 2, exactly one ``distillscope: error:`` line, no traceback, and nothing left on disk.

Whole runs of mutated configs cost minutes each on a CPU; what happens after the start is covered
by the end-to-end tests (``tests/integration``), including a run of one shrunk shipped config
(:func:`test_a_shrunk_shipped_config_runs_to_the_end`). Derandomised: the same examples each time.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from distillscope.cli import main
from distillscope.experiment import Experiment

CONFIGS = sorted(
    p
    for p in (Path(__file__).resolve().parents[2] / "configs").rglob("*.yaml")
    if "claims" not in p.parent.parts  # claim declarations, not run configs
)

ODD_NAMES = ["", "../x", "a/b", ".hidden", "-dash", "x", "points", "a" * 300, "ünï", "a b", "con"]
WRONG_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(-3, 3), max_size=2),
)


def shrink(cfg: dict[str, Any]) -> dict[str, Any]:
    """The same config, made cheap: one batch of one epoch, few probe samples, small data."""
    cfg = copy.deepcopy(cfg)
    cfg["progress"] = False
    cfg["train"] = {**(cfg.get("train") or {}), "epochs": 1, "max_batches": 1}
    for section in ("teachers", "students"):
        for spec in (cfg.get(section) or {}).values():
            if isinstance(spec, dict) and isinstance(spec.get("train"), dict):
                spec["train"].pop("epochs", None)
    if isinstance(cfg.get("teacher"), dict) and isinstance(cfg["teacher"].get("train"), dict):
        cfg["teacher"]["train"].pop("epochs", None)
    data = cfg.setdefault("data", {})
    if data.get("name", "fashion-mnist") != "toy2d-ring":
        for key in ("train_fraction", "test_fraction"):
            data.pop(key, None)
        data["train_per_class"], data["test_per_class"] = 4, 2
    cfg["probe_defaults"] = {"batch_size": 64, "max_samples": 16}
    probes = cfg.get("probes") or {}
    for name, params in list(probes.items()):
        params = dict(params or {})
        params.pop("max_samples", None)
        if name == "decision_map":
            params["resolution"] = 12
        if name == "adversarial":
            params.pop("sweep", None)
        if name == "adherence":
            params.update({"max_samples": 4, "ig_steps": 4})
        probes[name] = params
    return cfg


def paths_of(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a nested mapping (list items included)."""
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += paths_of(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += paths_of(value, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    source = draw(st.sampled_from(CONFIGS))
    cfg = shrink(yaml.safe_load(source.read_text()))
    kind = draw(st.sampled_from(["replace", "delete", "extra", "rename", "number"]))
    paths = paths_of(cfg)
    path = draw(st.sampled_from(paths))
    parent = cfg
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if kind == "replace":
        parent[last] = draw(WRONG_VALUES)
    elif kind == "delete" and isinstance(parent, dict):
        del parent[last]
    elif kind == "extra" and isinstance(parent, dict):
        parent[draw(st.text(min_size=1, max_size=8))] = draw(WRONG_VALUES)
    elif kind == "rename":
        section = draw(st.sampled_from(["name", "students", "teachers"]))
        odd = draw(st.sampled_from(ODD_NAMES))
        if section == "name":
            cfg["name"] = odd
        elif cfg.get(section):
            old = draw(st.sampled_from(sorted(cfg[section])))
            cfg[section][odd] = cfg[section].pop(old)
    elif kind == "number":
        parent[last] = draw(st.sampled_from([0, -1, -0.5, 1e9, 2**63, 1e-12, 3.5]))
    return {"source": source.name, "kind": kind, "path": path, "config": cfg}


@pytest.mark.skipif(not CONFIGS, reason="no shipped configs")
@settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: report the example as found
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated())
def test_mutated_configs_start_or_fail_with_one_line(example: dict[str, Any]) -> None:
    started: list[Path] = []

    def stand_in(self: Experiment, members: Any, splits: Any, start: float) -> Any:
        started.append(self.run_dir.path)
        return self.run_dir

    with tempfile.TemporaryDirectory() as tmp, _patched(Experiment, "_run", stand_in):
        tmp_path = Path(tmp)
        cfg_file = tmp_path / "mutated.yaml"
        cfg_file.write_text(yaml.safe_dump(example["config"], allow_unicode=True))
        out = tmp_path / "out"
        err = io.StringIO()
        stdout = io.StringIO()
        old_cache = os.environ.get("DISTILLSCOPE_CACHE")
        os.environ["DISTILLSCOPE_CACHE"] = str(tmp_path / "cache")
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(stdout):
                code = main(["run", str(cfg_file), "--output-dir", str(out), "--no-progress"])
        finally:
            if old_cache is not None:
                os.environ["DISTILLSCOPE_CACHE"] = old_cache
        text = err.getvalue()
        where = f"{example['source']} {example['kind']} {example['path']}: {text[-500:]}"
        assert "Traceback" not in text, where
        assert code in (0, 2), where
        errors = [line for line in text.splitlines() if line.startswith("distillscope: error:")]
        if code == 2:
            assert len(errors) == 1, where
            leftovers = list(out.iterdir()) if out.exists() else []
            assert leftovers == [], where
        else:
            assert errors == [], where
            (run_dir,) = list(out.iterdir())
            if "grid" in example["config"]:  # a grid: every cell started inside its folder
                assert started and all(p.is_relative_to(run_dir) for p in started), where
                assert all((p / "config.yaml").is_file() for p in started), where
            else:
                assert started == [run_dir] and (run_dir / "config.yaml").is_file(), where


@contextlib.contextmanager
def _patched(owner: Any, name: str, value: Any) -> Any:
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


@pytest.mark.integration
def test_a_shrunk_shipped_config_runs_to_the_end(tmp_path: Path) -> None:
    source = Path(__file__).resolve().parents[2] / "configs" / "toy2d-temperature.yaml"
    cfg = shrink(yaml.safe_load(source.read_text()))
    cfg["students"] = dict(list(cfg["students"].items())[:2])
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        code = main(["run", str(cfg_file), "--output-dir", str(tmp_path / "out"), "--no-progress"])
    assert code == 0
    (run_dir,) = list((tmp_path / "out").iterdir())
    assert (run_dir / "results.json").is_file() and (run_dir / "report.html").is_file()
