"""Atomic safetensors checkpoints, strict loading and the training state."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from distillscope.errors import CheckpointError
from distillscope.files import TMP_SUFFIX, clean_stale_temporaries
from distillscope.train import checkpoint as ckpt
from distillscope.train.checkpoint import (
    TrainState,
    load_checkpoint,
    load_model_weights,
    load_train_state,
    save_checkpoint,
    save_model,
    save_train_state,
)


def test_roundtrip_tensors_and_meta(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "x.safetensors"
    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5), "scalar": torch.tensor(2.5)}
    meta = {"epoch": 2, "history": [{"loss": 0.5}], "name": "m", "nested": {"x": None}}
    save_checkpoint(path, tensors, meta)
    loaded, loaded_meta = load_checkpoint(path)
    assert loaded.keys() == tensors.keys()
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    assert loaded_meta == meta
    assert [p.name for p in path.parent.iterdir()] == ["x.safetensors"]  # no temp file left


def test_shared_and_non_contiguous_tensors_are_saved(tmp_path: Path) -> None:
    weight = torch.randn(4, 6)
    tensors = {"w": weight, "tied": weight, "tied_again": weight, "t": weight.t()}
    save_checkpoint(tmp_path / "x.safetensors", tensors, {})
    loaded, _ = load_checkpoint(tmp_path / "x.safetensors")
    assert torch.equal(loaded["tied"], weight) and torch.equal(loaded["t"], weight.t())
    assert torch.equal(loaded["tied_again"], weight)


def test_failed_write_keeps_the_previous_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "x.safetensors"
    save_checkpoint(path, {"w": torch.ones(2)}, {"v": 1})

    real_fdopen = ckpt.os.fdopen

    class BrokenFile:
        def __init__(self, fd: int, mode: str) -> None:
            self.f = real_fdopen(fd, mode)

        def __enter__(self) -> BrokenFile:
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()

        def write(self, data: bytes) -> None:
            self.f.write(data[:7])  # a partial write, then the disk is full
            raise OSError("disk full")

    monkeypatch.setattr(ckpt.os, "fdopen", BrokenFile)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, {"w": torch.zeros(2)}, {"v": 2})
    tensors, meta = load_checkpoint(path)
    assert meta == {"v": 1} and torch.equal(tensors["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]


def _valid_bytes(tmp_path: Path) -> bytes:
    save_checkpoint(tmp_path / "good.safetensors", {"w": torch.randn(64)}, {"a": 1})
    return (tmp_path / "good.safetensors").read_bytes()


@pytest.mark.parametrize("kind", ["empty", "text", "random", "truncated", "bad_meta"])
def test_corrupt_files_raise_one_line_checkpoint_error(tmp_path: Path, kind: str) -> None:
    good = _valid_bytes(tmp_path)
    content = {
        "empty": b"",
        "text": b"this is not a checkpoint\n",
        "random": bytes(range(256)) * 4,
        "truncated": good[: len(good) - 40],
        "bad_meta": good.replace(b'{\\"a\\": 1}', b'[\\"a\\", 1]'),
    }[kind]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path} is not a valid checkpoint (")
    assert message.endswith("; delete it or retrain") and "\n" not in message


def test_missing_file_is_a_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_model_roundtrip(tmp_path: Path) -> None:
    source, target = nn.Linear(3, 2), nn.Linear(3, 2)
    save_model(tmp_path / "m.safetensors", source, {"name": "s"})
    meta = load_model_weights(tmp_path / "m.safetensors", target)
    assert meta == {"kind": "model", "name": "s"}
    assert torch.equal(source.weight, target.weight) and torch.equal(source.bias, target.bias)


@pytest.mark.parametrize(
    ("target", "phrase"),
    [
        (nn.Sequential(nn.Linear(3, 5)), "'0.weight' has shape (2, 3) in the file but (5, 3)"),
        (nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2)), "'1.weight' is missing from the file"),
        (nn.Sequential(nn.Linear(3, 2, bias=False)), "'0.bias' is in the file but not in"),
    ],
)
def test_mismatched_model_names_file_and_key(tmp_path: Path, target: nn.Module, phrase: str):
    path = tmp_path / "m.safetensors"
    save_model(path, nn.Sequential(nn.Linear(3, 2)))
    with pytest.raises(CheckpointError) as info:
        load_model_weights(path, target)
    message = str(info.value)
    assert str(path) in message and phrase in message
    assert "pass the architecture it was trained with or retrain" in message


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_train_state_roundtrip_includes_optimizer_state(tmp_path: Path, optimizer: str) -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    make = {"sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
            "adam": lambda p: torch.optim.Adam(p, lr=0.01)}[optimizer]  # fmt: skip
    opt = make(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5**s)
    x = torch.randn(8, 4)
    for _ in range(3):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
        sched.step()
    state = TrainState(
        model=model.state_dict(),
        loss={"buf": torch.tensor([1, 2])},
        optimizer=opt.state_dict(),
        scheduler=sched.state_dict(),
        rng_tensors={"torch": torch.get_rng_state()},
        rng_meta={"python": [3]},
        meta={"epochs_done": 3, "history": [{"loss": 1.0}]},
    )
    save_train_state(tmp_path / "s.safetensors", state)
    back = load_train_state(tmp_path / "s.safetensors")
    assert back.meta["epochs_done"] == 3 and back.meta["history"] == [{"loss": 1.0}]
    assert torch.equal(back.loss["buf"], torch.tensor([1, 2]))
    assert torch.equal(back.rng_tensors["torch"], torch.get_rng_state())
    assert back.scheduler == sched.state_dict()
    assert back.rng_meta == {"python": [3]}

    # a fresh optimizer given the loaded state takes exactly the same next step
    clone = nn.Linear(4, 3)
    clone.load_state_dict(back.model)
    clone_opt = make(clone.parameters())
    clone_opt.load_state_dict(back.optimizer)
    for net, o in ((model, opt), (clone, clone_opt)):
        o.zero_grad()
        net(x).square().mean().backward()
        o.step()
    assert torch.equal(model.weight, clone.weight) and torch.equal(model.bias, clone.bias)
    assert clone_opt.param_groups[0]["lr"] == opt.param_groups[0]["lr"]


def test_plain_model_file_is_not_a_train_state(tmp_path: Path) -> None:
    save_model(tmp_path / "m.safetensors", nn.Linear(2, 2))
    with pytest.raises(CheckpointError, match="no training state in it"):
        load_train_state(tmp_path / "m.safetensors")


def test_key_order_never_reaches_the_file_bytes(tmp_path: Path) -> None:
    # the same tensors and metadata filled in another order (nested dicts too) give one file
    w, b = torch.randn(3, 2), torch.arange(4)
    meta_a = {"epoch": 2, "history": [{"loss": 0.5, "acc": 0.9}], "opt": {"lr": 0.1, "m": 0.9}}
    meta_b = {"opt": {"m": 0.9, "lr": 0.1}, "history": [{"acc": 0.9, "loss": 0.5}], "epoch": 2}
    save_checkpoint(tmp_path / "a.safetensors", {"w": w, "b": b}, meta_a)
    save_checkpoint(tmp_path / "b.safetensors", {"b": b, "w": w}, meta_b)
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


def test_the_header_is_sorted_and_keeps_its_length(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "x.safetensors", {"z": torch.ones(1), "a": torch.ones(2)}, {"k": 1})
    blob = (tmp_path / "x.safetensors").read_bytes()
    n = int.from_bytes(blob[:8], "little")
    header = blob[8 : 8 + n]
    text = header.rstrip(b" ")
    parsed = json.loads(text)
    assert list(parsed) == sorted(parsed) == ["__metadata__", "a", "z"]
    assert text == json.dumps(parsed, sort_keys=True, separators=(",", ":")).encode()
    assert parsed["__metadata__"] == {"distillscope": '{"k": 1}', "format": "pt"}


def small_state(optimizer: dict, **extra: object) -> TrainState:
    return TrainState(model={"w": torch.ones(2)}, loss={}, optimizer=optimizer, scheduler={},
                      **extra)  # type: ignore[arg-type]  # fmt: skip


def test_train_state_without_an_optimizer_roundtrips(tmp_path: Path) -> None:
    save_train_state(tmp_path / "s.safetensors", small_state({}, meta={"epochs_done": 0}))
    back = load_train_state(tmp_path / "s.safetensors")
    assert back.optimizer == {}
    assert back.meta == {"kind": "train_state", "format_version": 1, "epochs_done": 0}
    assert torch.equal(back.model["w"], torch.ones(2))


def test_non_tensor_optimizer_state_is_kept(tmp_path: Path) -> None:
    exp_avg = torch.tensor([0.5, -0.5])
    optimizer = {
        "state": {
            0: {"step": 3, "exp_avg": exp_avg, "flag": True},
            1: {"n_iter": 7, "buf/slow": exp_avg},
            3: {"calls": 2},  # only numbers; 2 has no state at all (never stepped)
        },
        "param_groups": [
            {"params": [0, 1], "lr": 0.1, "betas": (0.9, 0.99)},
            {"params": [2, 3], "lr": 0.01, "betas": (0.5, 0.9)},
        ],
    }
    save_train_state(tmp_path / "s.safetensors", small_state(optimizer))
    back = load_train_state(tmp_path / "s.safetensors").optimizer
    assert back["param_groups"] == optimizer["param_groups"]  # betas a tuple again
    assert back["state"].keys() == {0, 1, 3}
    assert back["state"][3] == {"calls": 2}
    assert back["state"][1]["n_iter"] == 7 and torch.equal(back["state"][1]["buf/slow"], exp_avg)
    assert {k: v for k, v in back["state"][0].items() if k != "exp_avg"} == {
        "step": 3,
        "flag": True,
    }
    assert torch.equal(back["state"][0]["exp_avg"], exp_avg)


def test_a_tensor_outside_the_layout_is_a_one_line_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "s.safetensors"
    meta = {"kind": "train_state", "optimizer": {}}
    for bad in ("foo/x", "model", "optim/0"):
        save_checkpoint(path, {bad: torch.ones(1)}, meta)
        with pytest.raises(CheckpointError) as info:
            load_train_state(path)
        message = str(info.value)
        assert message.startswith(f"{path} is not a valid checkpoint (")
        assert message.endswith("; delete it or retrain") and "\n" not in message
        if bad != "optim/0":
            assert f"unexpected tensor {bad!r}" in message


@pytest.mark.parametrize(
    "meta",
    [
        {"kind": "train_state"},  # no optimizer
        {"kind": "model", "optimizer": {}},
        {"optimizer": {}},
    ],
)
def test_a_file_without_kind_and_optimizer_is_not_a_train_state(tmp_path: Path, meta) -> None:
    path = tmp_path / "s.safetensors"
    save_checkpoint(path, {"model/w": torch.ones(1)}, meta)
    with pytest.raises(CheckpointError) as info:
        load_train_state(path)
    assert str(info.value) == (
        f"{path} is not a valid checkpoint (no training state in it); delete it or retrain"
    )


def test_an_inconsistent_optimizer_state_is_a_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "s.safetensors"
    meta = {"kind": "train_state", "optimizer": {"param_groups": []}}  # no "scalars"
    save_checkpoint(path, {"optim/0/1/buf": torch.ones(1)}, meta)
    with pytest.raises(CheckpointError) as info:
        load_train_state(path)
    message = str(info.value)
    assert message.startswith(
        f"{path} is not a valid checkpoint (optimizer state is inconsistent: "
    )
    assert "'scalars'" in message


def test_volatile_state_lives_beside_the_file(tmp_path: Path) -> None:
    path = tmp_path / "last.safetensors"
    times = {"history": {"net": [{"time": 1.5}, {"time": 2.5}]}}
    save_train_state(path, small_state({}, volatile=times))
    side = tmp_path / "last.volatile.json"
    assert json.loads(side.read_text()) == times
    assert b"time" not in path.read_bytes()
    assert load_train_state(path).volatile == times
    save_train_state(path, small_state({}))  # nothing volatile: no stale times left behind
    assert not side.exists() and load_train_state(path).volatile == {}


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (
            "{not json",
            "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        ),
        ("[1,\n   2]", "[1, 2]"),
        (str(list(range(60))), str(list(range(60)))[:100]),
    ],
)
def test_an_unreadable_volatile_file_names_itself_and_the_fix(
    tmp_path: Path, content: str, reason: str
) -> None:
    side, said = _refusal_of_volatile(tmp_path, content)
    assert said == (
        f"{side} is not a JSON object ({reason}); delete it (it holds only wall times) and resume"
    )


def _refusal_of_volatile(tmp_path: Path, content: str) -> tuple[Path, str]:
    """A checkpoint whose volatile side file holds ``content``: the side file and the error
    loading it raised."""
    path = tmp_path / "last.safetensors"
    save_train_state(path, small_state({}, volatile={"history": {}}))
    side = tmp_path / "last.volatile.json"
    side.write_text(content)
    with pytest.raises(CheckpointError) as info:
        load_train_state(path)
    return side, str(info.value)


@pytest.mark.parametrize(
    "content",
    ['{"history": [1, 2]}', '{"history": {"kd": [1, 2]}}', '{"history": {"kd": {"time": 1}}}'],
)
def test_a_volatile_file_of_the_wrong_shape_names_itself_and_the_fix(
    tmp_path: Path, content: str
) -> None:
    """A JSON object that is not rows per network would break the resume later."""
    side, said = _refusal_of_volatile(tmp_path, content)
    assert said == (
        f"{side} does not hold a history of rows per network; delete it (it holds only wall "
        "times) and resume"
    )


def test_the_volatile_file_does_not_depend_on_key_order(tmp_path: Path) -> None:
    a = {"history": {"s": [{"time": 1.0}], "p": [{"time": 2.0}]}, "x": 1}
    b = {"x": 1, "history": {"p": [{"time": 2.0}], "s": [{"time": 1.0}]}}
    save_train_state(tmp_path / "a" / "last.safetensors", small_state({}, volatile=a))
    save_train_state(tmp_path / "b" / "last.safetensors", small_state({}, volatile=b))
    side_a, side_b = (tmp_path / d / "last.volatile.json" for d in "ab")
    assert side_a.read_bytes() == side_b.read_bytes()


def test_volatile_history_helpers() -> None:
    rows = [{"epoch": 1, "loss": 0.5, "time": 1.5}, {"epoch": 2, "loss": 0.25}]
    assert ckpt.stable(rows) == [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}]
    assert ckpt.volatile(rows) == [{"time": 1.5}, {}]
    assert ckpt.with_volatile(ckpt.stable(rows), ckpt.volatile(rows)) == rows
    assert ckpt.with_volatile(ckpt.stable(rows), []) == ckpt.stable(rows)
    assert ckpt.VOLATILE_FIELDS == ("time",)


def test_own_model_files_are_told_apart_by_identity(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_model(path, nn.Linear(2, 2), {"identity": "abc", "name": "s"})
    assert ckpt.load_own_model(path, nn.Linear(2, 2), "abc")["name"] == "s"
    with pytest.raises(CheckpointError) as info:
        ckpt.load_own_model(path, nn.Linear(2, 2), "xyz")
    assert str(info.value) == (
        f"{path} was not written by this run (identity 'abc', this run xyz); delete it to "
        "train that model again"
    )


def test_the_write_goes_through_a_hidden_sibling_that_stale_cleanup_knows(
    tmp_path: Path, monkeypatch
) -> None:
    renames = []
    real_replace = ckpt.os.replace

    def replace(src: str, dst: Path) -> None:
        renames.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", replace)
    path = tmp_path / "a" / "b" / "x.safetensors"  # folders made on the way
    save_checkpoint(path, {"w": torch.ones(1)}, {})
    ((src, dst),) = renames
    assert dst == path and src.parent == path.parent
    assert src.name.startswith(".x.safetensors.") and src.name.endswith(TMP_SUFFIX)
    src.write_bytes(b"cut")  # as a kill mid-write would leave it
    assert clean_stale_temporaries(tmp_path) == [src]


def test_a_plain_safetensors_export_has_empty_metadata(tmp_path: Path) -> None:
    save_file({"w": torch.ones(2)}, str(tmp_path / "plain.safetensors"))
    save_file({"w": torch.ones(2)}, str(tmp_path / "other.safetensors"), metadata={"x": "1"})
    for name in ("plain", "other"):
        tensors, meta = load_checkpoint(tmp_path / f"{name}.safetensors")
        assert meta == {} and torch.equal(tensors["w"], torch.ones(2))


def test_corrupt_file_errors_quote_the_reason_cut_to_200_characters(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    save_checkpoint(path, {"w": torch.ones(1)}, {"a": 1})
    path.write_bytes(path.read_bytes().replace(b'{\\"a\\": 1}', b'[\\"a\\", 1]'))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value) == (
        f"{path} is not a valid checkpoint (metadata is not a JSON object); delete it or retrain"
    )
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert "(None)" not in str(info.value) and "()" not in str(info.value)
    long = ckpt._invalid(path, "word " * 100)
    assert (
        str(long)
        == f"{path} is not a valid checkpoint ({('word ' * 40)[:200]}); delete it or retrain"
    )
    assert "(ValueError)" in str(ckpt._invalid(path, ValueError()))  # no text: its type


def test_tied_one_element_tensors_are_saved(tmp_path: Path) -> None:
    scale = torch.tensor([2.0])
    save_checkpoint(tmp_path / "x.safetensors", {"a": scale, "b": scale}, {})
    loaded, _ = load_checkpoint(tmp_path / "x.safetensors")
    assert loaded["a"].tolist() == loaded["b"].tolist() == [2.0]


def test_canonical_header_sorts_a_compact_header_of_the_same_length() -> None:
    header = (
        b'{"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"__metadata__":{"z":"1","a":"2"}}'
    )
    blob = len(header).to_bytes(8, "little") + header + b"\x00\x00\x80\x3f"
    out = ckpt.canonical_safetensors(blob)
    assert len(out) == len(blob) and out[-4:] == blob[-4:]
    text = out[8 : 8 + len(header)]
    assert text == (
        b'{"__metadata__":{"a":"2","z":"1"},"b":{"data_offsets":[0,4],"dtype":"F32","shape":[1]}}'
    )


def test_a_minimal_train_state_loads_with_empty_defaults(tmp_path: Path) -> None:
    path = tmp_path / "s.safetensors"
    save_checkpoint(path, {"model/w": torch.ones(1)}, {"kind": "train_state", "optimizer": {}})
    state = load_train_state(path)
    assert state.scheduler == {} and state.rng_meta == {} and state.rng_tensors == {}
    assert state.optimizer == {} and state.loss == {} and state.volatile == {}
    assert state.meta == {"kind": "train_state"}
