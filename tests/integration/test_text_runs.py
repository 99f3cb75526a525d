"""Text end to end through the CLI: BERT-style teacher and students on the generated
sentiment-lexicon data, KD, the text probes and the token figure in the report; the run keeps
the tokenizer its token ids came from; image-only probes are refused at load."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from distillscope.cli import main
from distillscope.data import load_dataset
from distillscope.data.text import load_tokenizer


def config(tmp_path: Path, probes: dict) -> Path:
    bert = {"layers": 1, "hidden": 16, "heads": 2, "intermediate": 32}
    raw = {
        "name": "text",
        "output_dir": str(tmp_path / "runs"),
        "teacher_store": str(tmp_path / "store"),
        "progress": False,
        "data": {"name": "sentiment-lexicon", "params": {"n_train": 240, "n_test": 80}},
        "train": {"epochs": 1, "batch_size": 32, "optimizer": "adamw", "lr": 0.001},
        "teacher": {"model": {"name": "hf:bert", "params": {**bert, "layers": 2}}},
        "student": {"name": "hf:bert", "params": bert},
        "students": {
            "scratch": {"loss": "ce", "role": "independent"},
            "kd": {"loss": {"kd": {"temperature": 4.0, "alpha": 0.5}}},
        },  # fmt: skip
        "probe_defaults": {"max_samples": 60, "batch_size": 30},
        "probes": probes,
    }
    path = tmp_path / "text.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_text_run_distils_audits_and_keeps_its_tokenizer(tmp_path: Path, capsys) -> None:
    probes = {"accuracy": {}, "agreement": {}, "token_attribution": {"n_steps": 8}}
    code = main(["run", str(config(tmp_path, probes))])
    out, err = capsys.readouterr()
    assert code == 0, err
    run = Path(out.strip().splitlines()[-1])
    results = json.loads((run / "results.json").read_text())
    assert {"scratch/top1", "kd/top1"} <= set(results["probes"]["accuracy"]["values"])
    values = results["probes"]["token_attribution"]["values"]
    skipped = results["probes"]["token_attribution"]["params"].get("skipped", {})
    assert "kd" in values or "kd" in skipped  # scored, or a one-line reason (nothing correct)
    assert results["training"]["kd"][0]["kd/loss"] > 0
    data = load_dataset("sentiment-lexicon", "train", n_train=240, n_test=80)
    tokenizer = load_tokenizer(run)
    sentence = " ".join(data.info.vocab[int(i)] for i in data.inputs[0] if int(i) != 0)
    assert tokenizer.encode(sentence).ids == [int(i) for i in data.inputs[0] if int(i) != 0]
    html = (run / "report.html").read_text()
    assert "token_attribution" in html


def test_an_image_probe_on_text_data_is_refused_at_load(tmp_path: Path, capsys) -> None:
    code = main(["run", str(config(tmp_path, {"accuracy": {}, "adversarial": {}}))])
    _, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert "adversarial does not apply to text data (sentiment-lexicon)" in lines[0]
    assert not (tmp_path / "runs").exists()
