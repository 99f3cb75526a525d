"""The calibration probe on models whose logits are known (golden values from numpy), its
reliability diagrams in the report, and its parameter check."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from distillscope.errors import ConfigError
from distillscope.probes import create_probe
from distillscope.probes.base import ProbeResult, Roles, with_directions
from distillscope.report import render_html
from tests.probes.tiny_probe_models import Logits, logit_data

K = 4
RNG = np.random.default_rng(0)
Z = RNG.normal(scale=2.0, size=(45, K))
Y = RNG.integers(0, K, size=45)
MODELS = {
    "t": Logits(torch.eye(K, dtype=torch.float64)),
    "s": Logits(3.0 * torch.eye(K, dtype=torch.float64)),  # same classes, more confident
}
ROLES = Roles(teachers=["t"], students=["s"], teacher_of={"s": "t"})


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def numpy_reliability(conf: np.ndarray, correct: np.ndarray, m: int) -> tuple[list, list, list]:
    """Per right-closed bin ((b - 1)/m, b/m]: count, accuracy, mean confidence (None if empty)."""
    counts, accs, confs = [], [], []
    for b in range(1, m + 1):
        inside = (conf > (b - 1) / m) & (conf <= b / m)
        counts.append(float(inside.sum()))
        accs.append(float(correct[inside].mean()) if inside.any() else None)
        confs.append(float(conf[inside].mean()) if inside.any() else None)
    return counts, accs, confs


def run(**params) -> ProbeResult:
    return create_probe("calibration", batch_size=8, **params).run(MODELS, logit_data(Z, Y), ROLES)


def test_values_and_reliability_series_match_numpy() -> None:
    result = run(n_bins=5)
    for name, scale in (("t", 1.0), ("s", 3.0)):
        p = softmax(scale * Z)
        conf, correct = p.max(1), p.argmax(1) == Y
        counts, accs, confs = numpy_reliability(conf, correct, 5)
        n = np.array(counts)
        gaps = [abs(a - c) for a, c in zip(accs, confs) if a is not None]
        ece = float(np.sum(n[n > 0] / 45 * np.array(gaps)))
        assert result.values[f"{name}/ece"] == pytest.approx(ece, rel=1e-10)
        assert result.values[f"{name}/nll"] == pytest.approx(-np.log(p[np.arange(45), Y]).mean())
        brier = ((p - np.eye(K)[Y]) ** 2).sum(1).mean()
        assert result.values[f"{name}/brier"] == pytest.approx(brier)
        assert result.values[f"{name}/accuracy"] == pytest.approx(correct.mean())
        assert result.values[f"{name}/confidence"] == pytest.approx(conf.mean())
        assert result.series[f"{name}/bin_count"] == counts
        assert result.series[f"{name}/bin_accuracy"] == pytest.approx(accs)
        assert result.series[f"{name}/bin_confidence"] == pytest.approx(confs)
        assert result.values[f"{name}/ece_mass"] >= 0
    assert result.series["x"] == pytest.approx([0.1, 0.3, 0.5, 0.7, 0.9])
    assert result.params["bin_edges"] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert result.params["n_samples"] == 45 and result.params["n_bins"] == 5
    # the sharper student is right as often and more confident
    assert result.values["s/accuracy"] == result.values["t/accuracy"]
    assert result.values["s/confidence"] > result.values["t/confidence"]


def test_directions_lower_is_better_except_accuracy() -> None:
    probe = create_probe("calibration")
    directions = with_directions(probe, run()).higher_is_better
    assert directions == {
        "ece": False,
        "ece_mass": False,
        "nll": False,
        "brier": False,
        "accuracy": True,
        "confidence": None,
    }


def test_the_default_is_fifteen_bins_and_empty_bins_are_none() -> None:
    result = run()
    assert len(result.series["t/bin_accuracy"]) == 15 and len(result.params["bin_edges"]) == 16
    assert None in result.series["t/bin_accuracy"]  # confidences >= 1/4 leave low bins empty
    assert sum(result.series["t/bin_count"]) == 45
    json.dumps(result.to_dict(), allow_nan=False)


def test_the_report_draws_one_reliability_diagram_per_model() -> None:
    probe = create_probe("calibration", batch_size=8)
    result = with_directions(probe, probe.run(MODELS, logit_data(Z, Y), ROLES))
    page = render_html(
        {
            "schema": 1,
            "run": {"name": "calibration"},
            "models": {"t": {"role": "teacher"}, "s": {"role": "student"}},
            "probes": {"calibration": json.loads(json.dumps(result.to_dict()))},
        }
    )
    start = page.index('<section id="probe-calibration">')
    section = page[start : page.index("</section>", start)]
    assert 'alt="calibration reliability diagrams"' in section
    assert 'alt="calibration series"' not in section  # the bins are drawn as diagrams only
    assert section.count("<img") == 2  # bars + diagrams
    assert "ece ↓" in section and "accuracy ↑" in section


@pytest.mark.parametrize("bad", [0, -3, 2.5, "15", True])
def test_bad_n_bins_is_a_one_line_config_error(bad) -> None:
    with pytest.raises(ConfigError, match="calibration.n_bins") as info:
        create_probe("calibration", n_bins=bad)
    assert "\n" not in str(info.value)
