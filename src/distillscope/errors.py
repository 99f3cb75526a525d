"""User-facing errors.

Every mistake a user can make (a bad config key, missing data, an unknown model, a wrong feature
path, a corrupt checkpoint) raises a :class:`UserError` whose message is one line naming the
problem and the fix. The CLI prints it and exits with code 2, without a traceback.
"""

from __future__ import annotations

#: Longest user value an error line quotes whole (:func:`quoted` cuts longer ones).
QUOTE_LIMIT = 70


def quoted(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` for an error line, cut to about ``limit`` characters with its length said.

    Every error line that echoes a user value goes through this (or :func:`clipped` for a
    name shown without quotes), so a 5 MB string in a config or a results file gives a short
    line.

    Example:
        >>> quoted("kd")
        "'kd'"
        >>> quoted("x" * 5000)
        "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx... (5000 chars)"
    """
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(value)} chars" if isinstance(value, str) else f"{len(text)} chars shown"
    return f"{text[: limit - 10]}... ({size})"


def clipped(text: object, limit: int = QUOTE_LIMIT) -> str:
    """``str(text)`` cut as :func:`quoted` cuts, for a user name shown without quotes.

    Example:
        >>> clipped("teacher"), clipped("a" * 100, limit=20)
        ('teacher', 'aaaaaaaaaa... (100 chars)')
    """
    text = str(text)
    return text if len(text) <= limit else f"{text[: limit - 10]}... ({len(text)} chars)"


#: Longest error line the CLI prints whole (:func:`error_line`).
LINE_LIMIT = 1000


def error_line(exc: BaseException, limit: int = LINE_LIMIT) -> str:
    """The one-line text of ``exc`` for the CLI: its start and end kept, the middle cut when it
    is longer than ``limit`` (a safety net behind :func:`quoted`: the problem is named at the
    start of a message and the fix at its end).

    Example:
        >>> error_line(UserError("bad name " + "a" * 5000 + "; rename it"), limit=60)
        'bad name aaaaaaaaaaaaaaaaaaaaa [... 4960 chars cut ...] aaaaaaaaaaaaaaaaaaa; rename it'
    """
    text = " ".join(str(exc).split("\n"))
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]} [... {len(text) - 2 * half} chars cut ...] {text[-half:]}"


class UserError(Exception):
    """An error caused by user input; its message is one line naming the problem and the fix."""


class ConfigError(UserError):
    """Invalid configuration: unknown key, wrong type, unknown registry name."""


class DataError(UserError):
    """A dataset cannot be found or read."""


class ModelError(UserError):
    """A model cannot be built, tapped or loaded."""


class CheckpointError(UserError):
    """A checkpoint is missing, corrupt or does not match the model."""


class TrainingError(UserError):
    """Training diverged (NaN or inf loss) or cannot continue."""


class NonFiniteLoss(TrainingError):
    """A training loss that is NaN or infinite: the run stops at that step.

    Args:
        message: The one-line error (the step, the parts that are not finite, the cause).
        member: The network whose loss was not finite.
        stage: The auxiliary training stage it happened in (``'hint/stage1'``), or ``None``
            for the main training, whose learning rate is ``train.lr``.
    """

    def __init__(self, message: str, *, member: str, stage: str | None = None) -> None:
        super().__init__(message)
        self.member = member
        self.stage = stage


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; carries the run directory so the CLI can say how to resume.

    Args:
        run_dir: The run directory that holds the checkpoints.
    """

    def __init__(self, run_dir: str) -> None:
        super().__init__(run_dir)
        self.run_dir = run_dir
