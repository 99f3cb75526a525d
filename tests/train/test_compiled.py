"""``train.compile``: eager by default, compiled forward passes train to eager's weights within
float rounding, checkpoints keep the plain keys and a compiled run resumes; refusals before
anything trains."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distillscope.errors import ConfigError
from distillscope.train.compiled import check_compile, compile_mode
from distillscope.train.trainer import FINAL_WEIGHTS, LAST_CHECKPOINT, Trainer
from tests.train.tiny_train_parts import (
    CE,
    KD,
    Recording,
    SimulatedKill,
    TinyNet,
    config,
    make_data,
    state_equal,
)

CPU = torch.device("cpu")


def fit(
    setting: bool | str, tmp: Path | None = None, seen: list | None = None, **kwargs: object
) -> TinyNet:
    """A tiny MLP (no dropout: Inductor draws its own random numbers) trained 2 epochs;
    ``seen`` records whether each forward pass was being compiled."""
    net = TinyNet(hidden=16, dropout=0.0, seed=1)
    if seen is not None:
        net.register_forward_hook(lambda m, i, o: seen.append(torch.compiler.is_compiling()))
    cfg = config(epochs=2, compile=setting)
    loss = kwargs.pop("loss", CE())
    trainer = Trainer(net, loss, cfg, progress=False, seed=3, name="net",
                      checkpoint_dir=tmp, **kwargs)  # type: ignore[arg-type]  # fmt: skip
    trainer.fit(make_data(40), resume=tmp is not None)
    assert trainer.step is not None and trainer.step.runners["net"] is net  # wrapper gone
    return net


def test_compile_is_off_by_default_and_wraps_only_the_trained_networks_when_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[object, object]] = []

    def spy(module: torch.nn.Module, mode: str | None = None) -> torch.nn.Module:
        calls.append((module, mode))
        return module  # runs eagerly: what is pinned here is what gets wrapped

    monkeypatch.setattr(torch, "compile", spy)
    assert config().compile is False
    assert state_equal(fit(False), fit(False)) and calls == []
    student, teacher = TinyNet(seed=1), TinyNet(seed=2)
    cfg = config(epochs=1, compile="max-autotune")
    Trainer(student, KD(), cfg, teacher=teacher, progress=False).fit(make_data(16))
    assert calls == [(student, "max-autotune")]  # the frozen teacher stays eager


@pytest.mark.slow
def test_compiled_training_matches_eager_keeps_plain_keys_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch._inductor.config as inductor

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    # Inductor's precompiled headers (150 MB) go to the system temp folder whatever the above
    monkeypatch.setattr(inductor, "cpp_cache_precompile_headers", False)
    seen: list[bool] = []
    eager = fit(False, seen=seen)
    assert seen and not any(seen)
    killed = Recording(CE(), kill_at=5 + 3)  # in the second epoch, after one checkpoint
    with pytest.raises(SimulatedKill):
        fit(True, tmp_path / "run", loss=killed)
    saved = load_file(str(tmp_path / "run" / LAST_CHECKPOINT))
    assert "model/fc1.weight" in saved and not any("_orig_mod" in k for k in saved)
    resumed = fit(True, tmp_path / "run", seen=seen)
    assert any(seen)  # the resumed run traced the network's forward
    assert sorted(load_file(str(tmp_path / "run" / FINAL_WEIGHTS))) == sorted(eager.state_dict())
    for name, value in eager.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, atol=1e-5, rtol=1e-5)


def test_modes_and_refusals_before_anything_trains(monkeypatch: pytest.MonkeyPatch) -> None:
    assert [compile_mode(s) for s in (False, True, "reduce-overhead")] == [
        None,
        "default",
        "reduce-overhead",
    ]
    with pytest.raises(ConfigError, match=r"^train.compile='fast' is invalid"):
        compile_mode("fast")
    with pytest.raises(ConfigError, match=r"^train.compile=True is supported on cpu and cuda"):
        check_compile(True, torch.device("mps"))
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr("shutil.which", lambda name: None)
    net = TinyNet(seed=1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    trainer = Trainer(net, CE(), config(epochs=1, compile=True), progress=False)
    with pytest.raises(ConfigError, match=r"^train.compile=True on the CPU needs a C\+\+ compiler"):
        trainer.fit(make_data(16))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    check_compile(False, CPU)  # off: nothing to check
