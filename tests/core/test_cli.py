"""The command line: exit codes, one-line errors, nothing written on bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import save_file

from distillscope.cli import main

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("distillscope: error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        (["bogus.key=1"], ["unknown config key 'bogus'"]),
        (["train.epochs=-3"], ["train.epochs", "-3"]),
        (["student.name=no_such_net"], ["unknown model 'no_such_net'", "mnist_cnn"]),
        (["students.kd.loss=nope"], ["unknown loss 'nope'", "kd"]),
        (["probes.nope={}"], ["unknown probe 'nope'"]),
    ],
)
def test_config_errors_exit_2_and_write_nothing(tmp_path, capsys, overrides, needles):
    out_dir = tmp_path / "runs"
    code, out, err = run_cli(["run", QUICKSTART, *overrides, "--output-dir", str(out_dir)], capsys)
    assert_user_error(code, err, *needles)
    assert not out_dir.exists()
    assert out == ""


def test_missing_data_exits_2_with_install_hint(tmp_path, capsys):
    out_dir = tmp_path / "runs"
    code, _, err = run_cli(
        ["run", QUICKSTART, "--data-root", str(tmp_path / "no-data"), "--output-dir", str(out_dir)],
        capsys,
    )
    assert_user_error(code, err, "Fashion-MNIST not found", "apt-get install dataset-fashion-mnist")
    assert not out_dir.exists()


TINY = """
data: {name: toy2d-ring}
train: {epochs: 1}
teacher: {model: {name: mlp_full}}
student: {name: mlp_reduced}
students: {independent: {loss: ce}}
probes: {accuracy: {}}
"""


def tiny(tmp_path: Path, *extra: str) -> list[str]:
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    return [
        "run",
        str(cfg),
        "--output-dir",
        str(tmp_path / "runs"),
        "--no-progress",
        *extra,
    ]


def test_wrong_feature_path_exits_2(tmp_path, capsys):
    code, _, err = run_cli(
        tiny(tmp_path, "student.name=torchvision:resnet18", "student.params={cam_layer: layer9}"),
        capsys,
    )
    assert_user_error(code, err, "layer9")
    assert not (tmp_path / "runs").exists()


def test_corrupt_teacher_checkpoint_exits_2(tmp_path, capsys):
    bad = tmp_path / "teacher.safetensors"
    bad.write_bytes(b"\x00\x01 definitely not safetensors")
    code, _, err = run_cli(tiny(tmp_path, f"teacher.checkpoint={bad}"), capsys)
    assert_user_error(code, err, str(bad), "not a valid checkpoint")
    assert not (tmp_path / "runs").exists()


def test_mismatched_teacher_checkpoint_exits_2(tmp_path, capsys):
    import torch

    wrong = tmp_path / "wrong.safetensors"
    save_file({"weight": torch.zeros(3)}, str(wrong))
    code, _, err = run_cli(tiny(tmp_path, f"teacher.checkpoint={wrong}"), capsys)
    assert_user_error(code, err, str(wrong))


def test_missing_config_file_exits_2(tmp_path, capsys):
    code, _, err = run_cli(["run", str(tmp_path / "nope.yaml")], capsys)
    assert_user_error(code, err, "not found")


def test_report_on_a_non_run_exits_2(tmp_path, capsys):
    code, _, err = run_cli(["report", str(tmp_path)], capsys)
    assert_user_error(code, err, "results.json")


def test_resume_on_a_non_run_exits_2(tmp_path, capsys):
    code, _, err = run_cli(["run", "--resume", str(tmp_path)], capsys)
    assert_user_error(code, err, "not a run directory")


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("models", ["mnist_cnn", "resnet20", "mlp_full", "torchvision:<name>"]),
        ("losses", ["ce", "kd", "label_smoothing", "pseudo_soft", "soft_targets"]),
        ("probes", ["accuracy", "adherence", "adversarial", "agreement", "class_similarity"]),
        ("datasets", ["digits", "fashion-mnist", "toy2d-ring"]),
    ],
)
def test_list(capsys, kind, expected):
    code, out, _ = run_cli(["list", kind], capsys)
    assert code == 0
    names = out.split()
    assert set(expected) <= set(names)


def test_list_pattern_filters(capsys):
    code, out, _ = run_cli(["list", "models", "resnet*"], capsys)
    assert code == 0 and out.split() and all(n.startswith("resnet") for n in out.split())


def test_python_dash_m_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "distillscope", "--version"], capture_output=True, text=True
    )
    assert proc.returncode == 0
    assert proc.stdout.strip() == __import__("distillscope").__version__


def test_a_reader_that_leaves_early_gets_no_traceback() -> None:
    """`distillscope list ... | head -1`: the reader has gone when the listing is written (its end
    of the pipe is closed before the process starts); exit 0, nothing on stderr."""
    code = (
        "import sys; from distillscope.cli import main; sys.exit(main(['run', '--list-configs']))"
    )
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], stdout=write_end, stderr=subprocess.PIPE, timeout=120
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 0 and proc.stderr == b"", proc.stderr.decode()
