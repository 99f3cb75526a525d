"""Plugin modules written by tests, and a fixture that gives the registries back as they were."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from distillscope import plugins
from distillscope.registry import TEXT_DATASETS

#: A plugin with a loss (``t_margin``), a probe (``t_confidence``) and a dataset (``t_stripes``).
PLUGIN = """
import torch
import torch.nn.functional as F

from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.distill.base import LossTerm
from distillscope.probes.base import Probe, ProbeResult
from distillscope.probes.sampling import evaluating, forward_all, probe_batches
from distillscope.registry import register_dataset, register_loss, register_probe

OFFSET = 0.0


@register_dataset("t_stripes")
def t_stripes(split: str, root: str | None = None, n: int = 120, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed if split == "train" else seed + 1)
    x = torch.rand(n, 2, generator=g)
    y = (x[:, 0] * 3).long().clamp(max=2)
    info = DatasetInfo("t_stripes", 3, (2,), ["l", "m", "r"], pixel_range=None)
    return TensorDataset(x + OFFSET, y, info)


@register_loss("t_margin")
class TMargin(LossTerm):
    needs = {"logits", "teacher"}

    def __init__(self, beta: float = 0.5) -> None:
        super().__init__()
        self.beta = beta

    def forward(self, student, teacher, batch):
        ce = F.cross_entropy(student.logits, batch.targets)
        gap = (student.logits - teacher.logits.detach()).pow(2).mean()
        return {"loss": ce + self.beta * gap, "t_margin/ce": ce, "t_margin/gap": gap}


@register_probe("t_confidence")
class TConfidence(Probe):
    def run(self, models, data, roles):
        total, n = dict.fromkeys(models, 0.0), 0
        with evaluating(models, models, data.device) as active:
            for batch in probe_batches(self, data):
                for name, z in forward_all(active, batch.inputs).items():
                    total[name] += z.softmax(1).max(1).values.sum().item()
                n += len(batch)
        return ProbeResult(self.name, {f"{m}/mean": total[m] / n for m in models})
"""

#: A tiny config on the plugin's data, loss and probe (teacher and students: 2-D MLPs).
CONFIG = {
    "name": "plug",
    "device": "cpu",
    "progress": False,
    "data": {"name": "t_stripes"},
    "train": {"epochs": 1, "batch_size": 32, "optimizer": "adam", "lr": 0.01, "max_batches": 2},
    "teacher": {"model": {"name": "mlp_reduced"}},
    "student": {"name": "mlp_reduced"},
    "students": {"independent": {"loss": "ce"}, "mine": {"loss": "t_margin", "beta": 0.3}},
    "probe_defaults": {"max_samples": 32, "batch_size": 32},
    "probes": {"accuracy": {}, "t_confidence": {}},
}


def write_plugin(folder: Path, name: str = "t_plugin.py", text: str = PLUGIN) -> Path:
    path = folder / name
    path.write_text(text)
    return path


@pytest.fixture
def isolated_registries() -> Iterator[None]:
    """Every registry, the text-dataset set and the loaded plugins as they were before the test
    (tests register names that must not leak into other tests, or collide with them)."""
    plugins.import_registries()  # the families first: what is saved is whole
    saved = {kind: (dict(r._entries), dict(r._prefixes)) for kind, r in plugins.REGISTRIES.items()}
    text = set(TEXT_DATASETS)
    loaded, by_spec = dict(plugins._LOADED), dict(plugins._BY_SPEC)
    yield
    for kind, registry in plugins.REGISTRIES.items():
        registry._entries.clear()
        registry._entries.update(saved[kind][0])
        registry._prefixes.clear()
        registry._prefixes.update(saved[kind][1])
    TEXT_DATASETS.clear()
    TEXT_DATASETS.update(text)
    for module in set(plugins._LOADED) - set(loaded):
        plugins._drop_modules(module)
    plugins._LOADED.clear()
    plugins._LOADED.update(loaded)
    plugins._BY_SPEC.clear()
    plugins._BY_SPEC.update(by_spec)
