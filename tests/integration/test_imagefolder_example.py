"""configs/examples/imagefolder.yaml runs on a user's tree found through $DISTILLSCOPE_DATA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from distillscope.cli import main

pytestmark = pytest.mark.integration

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "examples" / "imagefolder.yaml"
#: The smoke-test overrides of docs/smoke-test.md, and tiny images.
SMOKE = [
    "train.epochs=1",
    "teacher.train.epochs=1",
    "train.max_batches=2",
    "data.params.image_size=16",
    "probes={accuracy: {}, agreement: {}}",
    "progress=false",
]


def write_images(folder: Path, classes: list[str], per_class: int) -> None:
    for k, name in enumerate(classes):
        (folder / name).mkdir(parents=True)
        for j in range(per_class):
            colour = (60 * k + 20 * j, 100, 255 - 60 * k)
            Image.new("RGB", (24, 20), colour).save(folder / name / f"{j}.png")


def test_the_example_runs_on_a_tree_under_distillscope_data(tmp_path, monkeypatch, capsys):
    tree = tmp_path / "data" / "my-images"  # the config's relative root, under the data folder
    write_images(tree / "train", ["ant", "bee", "cat"], per_class=4)
    write_images(tree / "test", ["ant", "bee", "cat"], per_class=2)
    monkeypatch.setenv("DISTILLSCOPE_DATA", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)  # no ./my-images here
    code = main(["run", str(CONFIG), *SMOKE, "--output-dir", str(tmp_path / "runs")])
    out, err = capsys.readouterr()
    assert code == 0, err
    results = json.loads((Path(out.strip().splitlines()[-1]) / "results.json").read_text())
    assert results["dataset"]["class_names"] == ["ant", "bee", "cat"]
    assert results["dataset"]["source"] == str(tree / "train")
    assert set(results["models"]) == {"teacher", "independent", "kd"}
    assert 0.0 <= results["probes"]["accuracy"]["values"]["kd/top1"] <= 1.0
    assert "no separate held-out" not in err  # train/ and test/: a real held-out split
