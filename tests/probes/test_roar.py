"""The DiffROAR probe: a saliency on the discriminative pixels scores high and one on the noise
low, every cell is cached and reused, and bad settings fail in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.errors import ConfigError
from distillscope.probes import create_probe
from distillscope.probes.base import ProbeData, Roles
from distillscope.probes.roar import fresh_copy

INFO = DatasetInfo("signal", 2, (1, 4, 4), ["neg", "pos"], mean=(0.0,), std=(1.0,))
SIGNAL = torch.zeros(4, 4, dtype=torch.bool)
SIGNAL[:2, :2] = True  # the class is in the top-left 2x2 block: a quarter of the pixels


def signal_data(n: int = 240) -> TensorDataset:
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    x = torch.randn(n, 1, 4, 4, generator=gen) * 0.5
    x[:, 0, :2, :2] += (2.0 * y - 1.0).view(n, 1, 1) * 2.0  # +2 for pos, -2 for neg
    return TensorDataset(x, y, INFO)


class Linear(nn.Module):
    """Logits linear in the pixels, weights only on ``where``: its saliency is ``where``."""

    def __init__(self, where: torch.Tensor) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 2)
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.bias.zero_()
            self.fc.weight[1] = where.flatten().float()
            self.fc.weight[0] = -where.flatten().float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **params: object) -> object:
    monkeypatch.setenv("DISTILLSCOPE_CACHE", str(tmp_path / "cache"))
    models = {"good": Linear(SIGNAL), "bad": Linear(~SIGNAL)}
    probe = create_probe("diffroar", fractions=[0.25], epochs=5, lr=0.1, batch_size=32,
                         max_samples=240, **params)  # fmt: skip
    return probe.run(models, ProbeData(signal_data(), INFO), Roles(teachers=[]))


def test_saliency_on_the_signal_scores_high_and_on_the_noise_low(tmp_path, monkeypatch) -> None:
    result = run(tmp_path, monkeypatch)
    good, bad = result.values["good"], result.values["bad"]
    # good: top-k removes the signal (chance), bottom-k only noise (learnable)
    assert good > 0.3 and bad < -0.3, result.values
    assert result.series["good/top"][0] < 0.7 < result.series["good/bottom"][0]
    assert result.values["good/0.25"] == good  # one share: the mean is that share's score


def test_cells_are_cached_and_reused(tmp_path, monkeypatch) -> None:
    first = run(tmp_path, monkeypatch)
    again = run(tmp_path, monkeypatch)
    assert first.params["reused"] == 0 and again.params["reused"] == 4  # 2 models x top/bottom
    assert again.values == first.values
    for cell in (tmp_path / "cache" / "diffroar").iterdir():
        cell.write_text("{broken")  # a damaged cell is computed again
    assert run(tmp_path, monkeypatch).values == first.values


def test_a_fresh_copy_has_the_architecture_and_new_weights() -> None:
    model = Linear(SIGNAL)
    fresh = fresh_copy(model, 3)
    assert type(fresh) is Linear and not torch.equal(fresh.fc.weight, model.fc.weight)
    assert torch.equal(fresh_copy(model, 3).fc.weight, fresh.fc.weight)  # seeded


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"fractions": []}, r"^diffroar\.fractions is empty"),
        ({"fractions": [1.0]}, r"^diffroar\.fractions\[0\]=1\.0 is out of range"),
        ({"seeds": []}, r"^diffroar\.seeds is empty"),
        ({"train_share": 1}, r"^diffroar\.train_share=1 is out of range"),
        ({"epochs": 0}, r"^diffroar\.epochs=0 is invalid"),
    ],
)
def test_bad_settings_fail_with_one_line(params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        create_probe("diffroar", **params)
    assert "\n" not in str(info.value)


def test_models_it_audits_are_named_for_the_start_up_check() -> None:
    assert create_probe("diffroar", models=["kd"]).models_named() == {"models": ["kd"]}
