from __future__ import annotations

import torch
from torch import nn

from distillscope.teacher_store import TeacherStore, default_store_root


def test_roundtrip_and_history(tmp_path):
    store = TeacherStore(tmp_path / "teachers")
    torch.manual_seed(0)
    trained = nn.Linear(3, 2)
    entry = store.entry("torchvision:resnet18", "abc123")
    assert entry.name == "torchvision_resnet18-abc123"
    history = [{"epoch": 1, "loss": 0.5}]
    store.save(entry, trained, {"key": "abc123"}, history)
    fresh = nn.Linear(3, 2)
    loaded, why = store.load(entry, fresh)
    assert loaded == history and why == ""
    assert torch.equal(fresh.weight, trained.weight)


def test_missing_and_damaged_entries_leave_the_model_untouched(tmp_path):
    store = TeacherStore(tmp_path)
    model = nn.Linear(3, 2)
    before = model.weight.detach().clone()
    assert store.load(store.entry("mlp", "none"), model) == (None, "not stored")
    entry = store.entry("mlp", "bad")
    store.save(entry, nn.Linear(3, 2), {"key": "bad"}, [])
    (entry / "meta.json").write_text("{broken")
    history, why = store.load(entry, model)
    assert history is None and why
    assert torch.equal(model.weight, before)  # restored to its initial weights


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("DISTILLSCOPE_CACHE", str(tmp_path))
    assert default_store_root() == tmp_path / "teachers"
    assert default_store_root(str(tmp_path / "mine")) == tmp_path / "mine"
