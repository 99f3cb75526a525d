"""The stable names of DESIGN.md's public API, importable from the package root."""

from __future__ import annotations

import torch

import distillscope as ds


def test_public_names_exist():
    for name in (
        "Batch",
        "Outputs",
        "create_loss",
        "create_probe",
        "create_model",
        "load_dataset",
        "run_experiment",
        "functional",
    ):
        assert name in ds.__all__
        assert getattr(ds, name) is not None


def test_public_api_works_together():
    model = ds.create_model("mlp_reduced", num_classes=3)
    data = ds.load_dataset("toy2d-ring", "train", per_class=4)
    assert len(data) == 12
    batch = ds.Batch(data.inputs, data.targets, torch.arange(len(data)))
    logits = model(batch.inputs)
    loss = ds.create_loss("kd", temperature=2.0, alpha=0.5)
    parts = loss(ds.Outputs(logits), ds.Outputs(logits.detach() * 2), batch)
    assert set(parts) >= {"loss", "kd/soft", "kd/hard"}
    assert torch.isfinite(parts["loss"])
    assert ds.create_probe("accuracy").name == "accuracy"
    assert float(ds.functional.kd_loss(logits.detach(), logits.detach(), 4.0)) < 1e-6


def test_unknown_attribute_raises():
    import pytest

    with pytest.raises(AttributeError):
        _ = ds.no_such_name
