"""TensorBoard event files: one subfolder per member, every number of a line at its epoch."""

from __future__ import annotations

import sys

import pytest

from distillscope.config_tracking import TensorBoardConfig
from distillscope.errors import ConfigError
from distillscope.tracking.base import RunLabel
from distillscope.tracking.tensorboard_writer import check_tensorboard
from tests.tracking.readback import tensorboard_scalars

#: Values exact in float32 (TensorBoard keeps scalars in float32).
LINES = [
    {"model": "teacher", "epoch": 1, "lr": 0.5, "loss": 2.0, "ce/ce": 2.0, "val_acc": 0.5},
    {"model": "kd", "stage": "fitnets/hint", "epoch": 1, "loss": 3.5},
    {"model": "kd", "epoch": 1, "lr": 0.5, "loss": 1.25, "kd/soft": 0.125, "val_acc": 0.25},
    {"model": "kd", "epoch": 2, "lr": 0.25, "loss": 0.75, "kd/soft": 0.0625, "val_acc": 0.375},
]


def tracker(folder, axes=None):
    pytest.importorskip("tensorboard", reason="the tracking extra (tensorboard) is not installed")
    from distillscope.tracking.tensorboard_writer import TensorBoardTracker

    return TensorBoardTracker(folder, RunLabel("grid-x/T=4", axes or {}))


def test_scalars_per_member_and_epoch_read_back(tmp_path) -> None:
    board = tracker(tmp_path / "tb")
    board.log(LINES[:2])
    board.log(LINES[2:])
    board.close("FINISHED")
    got = tensorboard_scalars(tmp_path / "tb")
    assert got == {
        "teacher": {"lr": {1: 0.5}, "loss": {1: 2.0}, "ce/ce": {1: 2.0},
                    "val_acc": {1: 0.5}},
        "kd": {"stage/fitnets/hint/loss": {1: 3.5}, "lr": {1: 0.5, 2: 0.25},
               "loss": {1: 1.25, 2: 0.75}, "kd/soft": {1: 0.125, 2: 0.0625},
               "val_acc": {1: 0.25, 2: 0.375}},
    }  # fmt: skip


def test_lines_are_readable_before_the_run_ends(tmp_path) -> None:
    board = tracker(tmp_path / "tb")
    board.log(LINES[2:3])  # flushed: a viewer sees epoch 1 while epoch 2 trains
    assert tensorboard_scalars(tmp_path / "tb")["kd"]["loss"] == {1: 1.25}
    board.close("FINISHED")


def test_a_grid_cell_writes_its_axis_values_once_per_member(tmp_path) -> None:
    board = tracker(tmp_path / "tb", {"students.kd.temperature": "4", "seed": "0"})
    board.log(LINES)
    board.close("FINISHED")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb" / "kd"), size_guidance={"tensors": 0})
    events.Reload()
    (text,) = events.Tensors("grid_cell/text_summary")
    assert text.tensor_proto.string_val[0].decode() == (
        "grid-x/T=4: students.kd.temperature = 4, seed = 0"
    )


def test_a_missing_package_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(ConfigError) as err:
        check_tensorboard(TensorBoardConfig())
    message = str(err.value)
    assert "tracking.tensorboard needs the tensorboard package" in message
    assert "pip install 'distillscope[tracking]'" in message and "\n" not in message


def test_a_log_dir_that_cannot_be_written_is_refused_and_nothing_made(tmp_path) -> None:
    pytest.importorskip("tensorboard", reason="the tracking extra (tensorboard) is not installed")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="tensorboard.log_dir .* is a file, not a folder"):
        check_tensorboard(TensorBoardConfig(log_dir=str(blocker / "tb")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    check_tensorboard(TensorBoardConfig(log_dir=str(tmp_path / "new" / "tb")))  # creatable
    assert not (tmp_path / "new").exists()  # checked, not made
