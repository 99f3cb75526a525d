"""The chance-accuracy warning: divergence only when the training loss rose, else "too short"."""

from __future__ import annotations

from distillscope.train.evaluate import chance_warning


def test_a_loss_that_rose_to_chance_is_called_a_divergence() -> None:
    history = [
        {"epoch": 1, "val_acc": 0.41, "loss": 1.9},
        {"epoch": 2, "val_acc": 0.30, "loss": 4100.0},
        {"epoch": 3, "val_acc": 0.10, "loss": 850.0},
    ]
    warning = chance_warning("kd", history, 10)
    assert warning == (
        "kd ends at chance accuracy (0.100 held-out, chance 0.100); its training loss rose from "
        "1.9 to 850 (peak 4100); training likely diverged: lower its train.lr (or add "
        "warmup_epochs) and run again"
    )


def test_a_short_run_whose_loss_fell_is_not_called_a_divergence() -> None:
    history = [
        {"epoch": 1, "val_acc": 0.09, "loss": 2.31},
        {"epoch": 2, "val_acc": 0.1, "loss": 2.3},
    ]
    warning = chance_warning("ls", history, 10)
    assert warning == (
        "ls ends at chance accuracy (0.100 held-out, chance 0.100) after 2 epochs; its training "
        "loss did not rise (2.31 to 2.3); probably too short to learn: give it more train.epochs "
        "or data"
    )
    assert "diverged" not in warning and "train.lr" not in warning


def test_one_epoch_at_chance_says_too_short_with_its_loss() -> None:
    # a smoke run of one epoch has no earlier loss: the rise cannot be seen, so no divergence
    warning = chance_warning("independent", [{"epoch": 1, "val_acc": 0.5, "loss": 0.69}], 2)
    assert warning is not None
    assert warning.startswith("independent ends at chance accuracy (0.500 held-out, chance 0.500)")
    assert "after 1 epoch (training loss 0.69, no earlier epoch to compare)" in warning
    assert "diverged" not in warning


def test_a_flat_loss_counts_as_not_risen_and_above_chance_is_silent() -> None:
    flat = [{"epoch": e, "val_acc": 0.1, "loss": 2.3026} for e in (1, 2, 3)]
    assert "did not rise" in chance_warning("kd", flat, 10)
    learnt = [{"epoch": 1, "val_acc": 0.2, "loss": 2.0}, {"epoch": 2, "val_acc": 0.13, "loss": 9.0}]
    assert chance_warning("kd", learnt, 10) is None  # 0.13 > 0.1 + CHANCE_MARGIN
