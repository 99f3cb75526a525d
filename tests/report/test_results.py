"""Reading results.json: every problem is a one-line UserError naming the file and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distillscope.errors import UserError
from distillscope.report import load_results, render_report

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "results_small.json"
VALID = {"schema": 1, "run": {"name": "r"}, "models": {"t": {"role": "teacher"}}}


def write(run_dir: Path, content: bytes | object) -> None:
    data = content if isinstance(content, bytes) else json.dumps(content).encode()
    (run_dir / "results.json").write_bytes(data)


def assert_one_line_with_fix(err: pytest.ExceptionInfo[UserError], path: Path) -> None:
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(str(path / "results.json"))
    assert "re-run `distillscope run" in message


def test_fixture_loads_with_nan_and_null_values(tmp_path):
    write(tmp_path, FIXTURE.read_bytes())
    results = load_results(tmp_path)
    values = results["probes"]["adversarial"]["values"]
    assert values["independent/fgsm_strong"] is None
    assert values["teacher/pgd_strong"] != values["teacher/pgd_strong"]  # NaN


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "file not found"),
        (b"{not json", "not valid JSON (Expecting property name"),
        (b"\xff\xfe\x00", "not UTF-8 text"),
        ([1, 2], "expected a JSON object, got list"),
        ({**VALID, "schema": 2}, "schema 2 is not supported (expected 1)"),
        ({"schema": 1, "run": {}}, "key 'models' is missing"),
        ({**VALID, "probes": []}, "key 'probes' must be an object"),
        ({**VALID, "models": {"t": "teacher"}}, "models.t must be an object"),
        ({**VALID, "training": {"t": {"epoch": 1}}}, "training.t must be a list of objects"),
        ({**VALID, "probes": {"p": {"values": {"t/a": "high"}}}}, "probes.p.values['t/a']"),
        ({**VALID, "probes": {"p": {"values": {}, "series": {"t": 1}}}}, "series['t'] must be"),
        ({**VALID, "probes": {"p": {"values": {}, "params": []}}}, "probes.p.params must be"),
        ({**VALID, "probes": {"p": {}}}, "probes.p: expected an object with a 'values' object"),
    ],
)
def test_bad_results_are_a_one_line_user_error(tmp_path, content, needle):
    if content is not None:
        write(tmp_path, content)
    with pytest.raises(UserError) as err:
        load_results(tmp_path)
    assert needle in str(err.value)
    assert_one_line_with_fix(err, tmp_path)


def test_missing_run_directory_is_a_user_error_and_nothing_is_written(tmp_path):
    missing = tmp_path / "no-such-run"
    with pytest.raises(UserError, match="file not found") as err:
        render_report(missing)
    assert_one_line_with_fix(err, missing)
    assert not missing.exists()


def test_corrupt_results_write_no_report(tmp_path):
    write(tmp_path, b'{"schema": 1, "run": ')
    with pytest.raises(UserError):
        render_report(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_optional_sections_may_be_absent(tmp_path):
    write(tmp_path, VALID)
    assert load_results(tmp_path) == VALID
