"""The dissection probe end to end on our generated concept data (generator -> Broden reader ->
probe): a planted unit that fires exactly on one colour's pixels is found as that colour's only
detector with IoU near 1, a unit of noise is no detector; sweeps, model inputs, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.data.broden import BrodenData
from distillscope.data.concepts import COLOURS, generate_concepts
from distillscope.errors import ConfigError, ModelError
from distillscope.probes import create_probe
from distillscope.probes.base import ProbeData, Roles
from distillscope.probes.dissection import model_inputs

SIZE = 32
INFO = DatasetInfo("rgb", 2, (3, SIZE, SIZE), ["a", "b"])  # no normalisation: inputs as stored
RED = torch.tensor(COLOURS["red"], dtype=torch.float64) / 255


class Detect(nn.Module):
    """Unit 0: exactly the red pixels (1 plus a sub-0.001 ramp that breaks ties), else 0;
    unit 1: a pseudo-random map of the pixel values, aligned with no concept."""

    def forward(self, x: Tensor) -> Tensor:
        red = ((x.double() - RED.view(1, 3, 1, 1)).abs().amax(1) < 0.5 / 255).double()
        ramp = torch.linspace(0, 1e-4, x.shape[-1] ** 2, dtype=torch.float64).view(x.shape[-2:])
        noise = torch.sin(x.double().sum(1) * 1e4 + 3.0 * torch.arange(x.shape[-1]).double())
        return torch.stack([red * (1 + ramp), noise], 1).float()  # (B, 2, H, W)


class Planted(nn.Module):
    cam_layer = "detect"

    def __init__(self) -> None:
        super().__init__()
        self.detect = Detect()
        self.head = nn.Linear(2, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.detect(x).mean((2, 3)))


@pytest.fixture(scope="module")
def concepts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_concepts(tmp_path_factory.mktemp("c") / "concepts", n_images=60,
                             image_size=SIZE, seed=0)  # fmt: skip


def red_share(root: Path) -> float:
    """The share of all positions painted red (pixel-level 'red' labels of the colour layer)."""
    data = BrodenData(root)
    red = data.labels.index("red")
    hits = total = 0
    for batch in data.batches(16):
        hits += int((batch.pixels == red).any(1).sum())
        total += batch.pixels[:, 0].numel()
    return hits / total


def run(concepts: Path, **params: object) -> object:
    probe = create_probe("dissection", concepts=str(concepts), batch_size=16, **params)
    data = ProbeData(TensorDataset(torch.zeros(2, *INFO.input_shape), torch.zeros(2), INFO), INFO)
    return probe.run({"planted": Planted()}, data, Roles(teachers=["planted"]))


def test_a_planted_unit_is_the_only_detector_of_its_concept(concepts: Path) -> None:
    share = red_share(concepts)
    assert 0.001 < share < 0.2
    result = run(concepts, quantile=share, iou_threshold=0.5)
    detectors = result.params["detectors"]["planted"]
    assert len(detectors) == 1
    unit, label, category, iou = detectors[0]
    assert (unit, label, category) == (0, "red", "color") and iou > 0.97
    assert result.values["planted"] == 1.0 and result.values["planted/unique"] == 1.0
    assert result.values["planted/color"] == 1.0 and result.values["planted/object"] == 0.0
    assert result.params["units"]["planted"] == 2


def test_the_sweeps_count_detectors_over_quantiles_and_iou_thresholds(concepts: Path) -> None:
    result = run(concepts, sweep=True)
    assert result.series["x/quantile"][:2] == [0.001, 0.002] and len(result.series["x/iou"]) == 5
    by_iou = result.series["planted/by_iou"]
    assert by_iou == sorted(by_iou, reverse=True)  # a higher IoU threshold never adds detectors
    assert len(result.series["planted/by_quantile"]) == 10


def test_concept_images_are_fed_as_the_models_training_data() -> None:
    info = DatasetInfo("g", 2, (1, 4, 4), ["a", "b"], mean=(0.5,), std=(0.25,))
    x = torch.zeros(1, 3, 8, 8)
    x[:, 1] = 1.0  # pure green
    out = model_inputs(x, info)
    assert out.shape == (1, 1, 4, 4)
    assert torch.allclose(out, torch.full_like(out, (0.587 - 0.5) / 0.25))


def test_the_generated_set_is_made_once_in_the_cache_and_reused(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DISTILLSCOPE_CACHE", str(tmp_path))
    probe = create_probe("dissection", concept_images=12, concept_size=16)
    first = probe.concept_data().root
    assert first.parent == tmp_path / "concepts" and len(probe.concept_data()) == 12
    stamp = (first / "index.csv").stat().st_mtime_ns
    assert probe.concept_data().root == first and (first / "index.csv").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("damage", ["truncate", "delete", "add", "manifest"])
def test_a_damaged_generated_set_is_generated_again_not_read(
    tmp_path, monkeypatch, capsys, damage: str
) -> None:
    monkeypatch.setenv("DISTILLSCOPE_CACHE", str(tmp_path))
    probe = create_probe("dissection", concept_images=12, concept_size=16)
    root = probe.concept_data().root
    index = (root / "index.csv").read_bytes()
    if damage == "truncate":
        (root / "index.csv").write_bytes(index[: len(index) // 2])
    elif damage == "delete":
        next((root / "images").glob("*_object.png")).unlink()
    elif damage == "add":
        (root / "images" / "extra.png").write_bytes(b"stray")
    else:
        (root / "manifest.json").unlink()
    capsys.readouterr()
    again = probe.concept_data()
    assert "damaged" in capsys.readouterr().err
    assert again.root == root and (root / "index.csv").read_bytes() == index
    assert not (root / "images" / "extra.png").exists() and len(again) == 12
    assert not [p for p in tmp_path.joinpath("concepts").iterdir() if p.name.startswith(".")]


def test_a_wrong_layer_or_folder_fails_at_start_up() -> None:
    models = {"planted": Planted()}
    with pytest.raises(ModelError, match="nolayer"):
        create_probe("dissection", layer="nolayer").check_models(models, Roles(["planted"]))
    with pytest.raises(ConfigError, match=r"^dissection.concepts='/no/such' is not a folder"):
        create_probe("dissection", concepts="/no/such").check_models(models, Roles(["planted"]))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"quantile": 0}, r"^dissection\.quantile=0 is out of range"),
        ({"iou_threshold": 1.5}, r"^dissection\.iou_threshold=1\.5 is out of range"),
        ({"images": "all"}, r"^dissection\.images='all' is invalid"),
        ({"concepts": " "}, r"^dissection\.concepts=' ' is not a folder"),
    ],
)
def test_bad_settings_fail_with_one_line(params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        create_probe("dissection", **params)
    assert "\n" not in str(info.value)


def test_unknown_categories_fail_at_start_up(concepts: Path) -> None:
    models, roles = {"planted": Planted()}, Roles(["planted"])
    with pytest.raises(ConfigError, match=r"names 'objects'; use some of object, part, color"):
        create_probe("dissection", categories=["objects"]).check_models(models, roles)
    probe = create_probe("dissection", concepts=str(concepts), categories=["sky"])
    with pytest.raises(ConfigError, match=r"names 'sky'; use some of object, part"):
        probe.check_models(models, roles)
    create_probe("dissection", concepts=str(concepts), categories=["color"]).check_models(
        models, roles
    )
