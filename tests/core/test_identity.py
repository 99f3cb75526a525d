"""Identities: complete by construction, one spelling per value, every byte of the data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from distillscope import files
from distillscope.config import ExperimentConfig, dump_config, load_config_dict
from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.identity import (
    CODE_KEYS,
    NOT_RESULT_KEYS,
    canonical,
    digest,
    first_difference,
    runtime,
    without_locations,
)

RAW = {
    "data": {"name": "toy2d-ring", "root": "/somewhere"},
    "teacher": {"model": {"name": "mlp"}, "data": {"root": "/else", "train_fraction": 0.5}},
    "student": {"name": "mlp"},
    "students": {"kd": {"loss": "kd", "temperature": 4, "data": {"root": "/x", "seed": 3}}},
}


def test_every_config_field_but_the_declared_ones_enters_the_identity() -> None:
    dumped = dump_config(load_config_dict(RAW))
    part = without_locations(dumped)
    declared = set(NOT_RESULT_KEYS) | set(CODE_KEYS)  # plugins: their source enters instead
    assert set(part) == set(ExperimentConfig.model_fields) - declared - {"teacher"}
    assert "root" not in part["data"] and part["data"]["name"] == "toy2d-ring"
    assert "root" not in part["teachers"]["teacher"]["data"]
    assert part["teachers"]["teacher"]["data"]["train_fraction"] == 0.5
    assert "root" not in part["students"]["kd"]["data"]
    assert part["students"]["kd"]["data"]["seed"] == 3


@pytest.mark.parametrize(
    "override",
    [
        "seed=1",
        "train.lr=0.02",
        "students.kd.temperature=8",
        "students.kd.data.seed=4",
        "teacher.data.train_fraction=0.25",
        "teacher_cache=off",
        "probe_defaults.max_samples=10",
        "probes.agreement={}",
        "train.channels_last=off",
        "train.compile=true",
    ],
)
def test_a_change_of_any_result_field_changes_the_digest(override: str) -> None:
    base = digest(without_locations(dump_config(load_config_dict(RAW))))
    changed = digest(without_locations(dump_config(load_config_dict(RAW, [override]))))
    assert changed != base


@pytest.mark.parametrize(
    "override",
    ["name=other", "output_dir=elsewhere", "progress=false", "data.root=/moved",
     "train.loader_workers=4", "students.kd.train={loader_workers: 2}"],
)  # fmt: skip
def test_where_and_how_output_shows_do_not_change_the_digest(override: str) -> None:
    base = digest(without_locations(dump_config(load_config_dict(RAW))))
    assert digest(without_locations(dump_config(load_config_dict(RAW, [override])))) == base


def test_one_spelling_per_value() -> None:
    assert canonical({"a": 4.0, "b": [1.0, 2.5], "c": True, "d": None}) == {
        "a": 4,
        "b": [1, 2.5],
        "c": True,
        "d": None,
    }
    assert digest({"T": 4}) == digest({"T": 4.0}) != digest({"T": 4.5})
    assert digest({"flag": True}) != digest({"flag": 1})  # a boolean is not a number
    assert digest({"x": float("nan")}) == digest({"x": float("nan")})  # not whole: kept
    assert digest({"x": float("inf")}) != digest({"x": float("-inf")})


def test_first_difference_names_the_field_including_one_sided_keys() -> None:
    assert first_difference({"a": 1}, {"a": 1}) is None
    assert first_difference({"a": {"b": 1}}, {"a": {"b": 1, "c": 2}}) == ("a.c", None, 2)
    assert first_difference({"a": [1, 2]}, {"a": [1, 3]}) == ("a.1", 2, 3)
    assert first_difference({"a": [1, 2]}, {"a": [1]}) == ("a", [1, 2], [1])
    assert first_difference(1, 2) == ("identity", 1, 2)


def test_runtime_records_what_changes_numbers() -> None:
    rt = runtime("cuda:1", threads=3)
    assert rt["device"] == "cuda" and rt["threads"] == 3 and rt["torch"] == torch.__version__
    assert runtime("cpu")["threads"] == torch.get_num_threads()


# --------------------------------------------------------------------------- data fingerprints


def dataset(n: int = 1000) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    info = DatasetInfo("toy", 3, (1, 4, 4), ["a", "b", "c"])
    groups = torch.arange(n) % 2
    return TensorDataset(torch.randn(n, 1, 4, 4, generator=g), torch.arange(n) % 3, info,
                         groups=groups)  # fmt: skip


@pytest.mark.parametrize("index", [0, 1, 500, 999])
def test_the_fingerprint_sees_every_input(index: int) -> None:
    a, b = dataset(), dataset()
    assert a.fingerprint() == b.fingerprint()
    b.inputs[index, 0, 2, 3] += 1e-6
    b._fingerprint = None
    assert a.fingerprint() != b.fingerprint()


def test_the_fingerprint_sees_targets_groups_and_metadata_but_not_the_folder() -> None:
    a = dataset()
    for change in (
        lambda d: d.targets.__setitem__(7, (d.targets[7] + 1) % 3),
        lambda d: d.groups.__setitem__(7, 1 - d.groups[7]),
        lambda d: setattr(d, "info", DatasetInfo("toy", 3, (1, 4, 4), ["a", "b", "z"])),
    ):
        b = dataset()
        change(b)
        assert a.fingerprint() != b.fingerprint()
    b = dataset()
    b.info = DatasetInfo("toy", 3, (1, 4, 4), ["a", "b", "c"], source="/moved/here")
    assert a.fingerprint() == b.fingerprint()


# --------------------------------------------------------------------------- file digests


def test_file_digests_are_read_once_and_again_when_a_file_changes(tmp_path, monkeypatch) -> None:
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.bin")
        paths[-1].write_bytes(bytes([i]) * 100)
    reads: list[str] = []
    real = files.file_digest
    monkeypatch.setattr(files, "file_digest", lambda p: reads.append(str(p)) or real(p))
    first = files.file_digests(paths)
    assert first == [real(p) for p in paths] and len(reads) == 3
    assert files.file_digests(paths) == first and len(reads) == 3  # remembered
    paths[1].write_bytes(b"\x01" * 99 + b"\x02")  # same size
    os.utime(paths[1], ns=(1, 1))  # another mtime
    again = files.file_digests(paths)
    assert len(reads) == 4 and again[1] != first[1] and again[0] == first[0]


def test_file_digests_work_without_a_writable_cache(tmp_path, monkeypatch) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv("DISTILLSCOPE_CACHE", str(blocked))
    path = tmp_path / "x.bin"
    path.write_bytes(b"abc")
    assert files.file_digests([path]) == [files.file_digest(path)]


def test_file_digests_name_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        files.file_digests([tmp_path / "missing.png"])


def test_a_damaged_digest_cache_is_read_around(tmp_path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / files.DIGEST_DB).write_bytes(b"not a database" * 100)
    monkeypatch.setenv("DISTILLSCOPE_CACHE", str(cache))
    path = tmp_path / "x.bin"
    path.write_bytes(b"abc")
    assert files.file_digests([path]) == [files.file_digest(path)]


def test_the_identity_version_is_in_every_runtime_and_names_the_change() -> None:
    from distillscope.identity import IDENTITY_VERSION, first_difference, runtime

    now = runtime("cpu", 2)
    assert now["identity_version"] == IDENTITY_VERSION >= 2
    older = {**now, "identity_version": 1}  # a run or teacher recorded before the maths changed
    assert first_difference(older, now) == ("identity_version", 1, IDENTITY_VERSION)


def test_a_teacher_loaded_from_a_file_enters_the_run_identity_by_its_bytes(tmp_path) -> None:
    """Same name, other content: a teacher checkpoint rewritten under the same path gives another
    identity (a resume or a grid re-run would otherwise take results made with the old
    weights); a copy of the same bytes under another name changes only the config's path."""
    from distillscope.plan import load_plan_splits, resolve_plan, run_identity

    ckpt = tmp_path / "teacher.safetensors"

    def identity_of(content: bytes) -> dict:
        ckpt.write_bytes(content)
        plan = resolve_plan(load_config_dict({**RAW, "teacher": {
            "model": {"name": "mlp"}, "checkpoint": str(ckpt)}}))  # fmt: skip
        return run_identity(plan, load_plan_splits(plan), {"fixed": 1})

    first = identity_of(b"weights one")
    assert first["checkpoint_files"] == {"teacher": files.file_digest(ckpt)}
    assert digest(identity_of(b"weights one")) == digest(first)
    second = identity_of(b"weights two")
    assert digest(second) != digest(first)
    assert first_difference(first, second)[0] == "checkpoint_files.teacher"


def test_bf16_teacher_passes_enter_the_identity_with_their_version_and_fp32_stays_as_it_was(
    monkeypatch,
) -> None:
    """A run asking for bf16 (or auto) teacher passes records what those passes compute
    (folded batch norms since version 2), so a cell or checkpoint made by the older bf16 code is
    never reused; an fp32 run's identity has no such field, so every fp32 record still matches."""
    import distillscope.plan as plan_module
    from distillscope.identity import TEACHER_PASSES_VERSION
    from distillscope.plan import load_plan_splits, resolve_plan, run_identity

    def identity_of(precision: str | None) -> dict:
        raw = {**RAW, **({"teacher_precision": precision} if precision else {})}
        plan = resolve_plan(load_config_dict(raw))
        return run_identity(plan, load_plan_splits(plan), {"fixed": 1})

    plain, fp32 = identity_of(None), identity_of("fp32")
    assert "teacher_passes" not in plain and digest(plain) == digest(fp32)
    for precision in ("bf16", "auto"):
        assert identity_of(precision)["teacher_passes"] == TEACHER_PASSES_VERSION >= 2
    now = identity_of("bf16")
    monkeypatch.setattr(plan_module, "TEACHER_PASSES_VERSION", 1)  # the code before the fold
    older = identity_of("bf16")
    assert first_difference(older, now) == ("teacher_passes", 1, TEACHER_PASSES_VERSION)
    assert digest(identity_of("fp32")) == digest(fp32)
