"""Training precision: the forward half of each step under ``torch.autocast``.

``train.precision`` (:class:`~distillscope.config_train.TrainConfig`): ``fp32`` runs as before;
``bf16`` runs the networks' forward passes and the losses under autocast in bfloat16 (matrix
products and convolutions in bf16, reductions and softmax in fp32 as autocast decides), while
the weights, the optimiser's state and the gradients stay fp32 (the backward runs outside the
context, as PyTorch's AMP recipe does); ``fp16`` does the same in float16 with a gradient
scaler, which only CUDA supports here.

``teacher_precision`` (the run's config): the frozen teacher's passes (its cache, its live
forward) in ``fp32``, ``bf16`` (on a copy with its batch norms folded into their convolutions:
:mod:`distillscope.train.fold`; on the CPU, when its students read only its output, as one
oneDNN graph: :mod:`distillscope.train.onednn`, else under autocast; outputs kept in fp32), or
``auto``: bf16 when a check on training items finds it gives the fp32 top-1 and nearly the
fp32 logits (:func:`choose_teacher_precision`), else fp32.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from distillscope.contracts import Outputs
from distillscope.errors import ConfigError

__all__ = [
    "PRECISIONS",
    "TEACHER_PRECISIONS",
    "TeacherPrecision",
    "as_fp32",
    "autocast",
    "check_precision",
    "choose_teacher_precision",
    "passes_said",
]

#: Precision name -> the autocast dtype (``None``: no autocast).
PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def check_precision(precision: str, device: torch.device) -> None:
    """A one-line ConfigError when ``precision`` cannot train on ``device``.

    Example:
        >>> check_precision("bf16", torch.device("cpu"))
        >>> check_precision("fp16", torch.device("cpu"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        distillscope.errors.ConfigError: train.precision=fp16 needs a CUDA device ...
    """
    if precision not in PRECISIONS:
        raise ConfigError(
            f"train.precision={precision!r} is invalid; use one of {', '.join(PRECISIONS)}"
        )
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"train.precision=fp16 needs a CUDA device (its gradient scaler); on {device.type} "
            "use bf16 or fp32"
        )


def as_fp32(out: Outputs) -> Outputs:
    """``out`` with its logits and features in float32 (what a bf16 teacher pass hands on)."""
    if out.logits.dtype == torch.float32 and all(
        v.dtype == torch.float32 for v in out.features.values()
    ):
        return out
    features = {k: v.float() if v.is_floating_point() else v for k, v in out.features.items()}
    return replace(out, logits=out.logits.float(), features=features)


def autocast(precision: str, device: torch.device) -> AbstractContextManager[object]:
    """The autocast context of ``precision`` on ``device`` (nothing for ``fp32``)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


#: The teacher passes' precisions (``teacher_precision``): ``auto`` checks bf16 first.
TEACHER_PRECISIONS = ("fp32", "bf16", "auto")
#: ``auto`` takes bf16 only if it gives the fp32 top-1 on at least this share of the sample...
AGREEMENT_FLOOR = 0.999
#: ... and no logit moves by more than this (absolute, in logits).
LOGIT_BOUND = 0.05
#: Training items the ``auto`` check runs the teacher on.
CHECK_ITEMS = 512


@dataclass(frozen=True)
class TeacherPrecision:
    """The precision a frozen teacher runs in, and what the check measured.

    Attributes:
        precision: ``fp32`` or ``bf16``.
        requested: What the config asked (``fp32``, ``bf16`` or ``auto``).
        agreement: Share of the checked items whose bf16 top-1 equals the fp32 one.
        max_logit_error: Largest ``|z_bf16 - z_fp32|`` over the checked items and classes.
        items: Items checked.
        folded: Batch norms folded into their convolutions for the bf16 passes
            (:mod:`distillscope.train.fold`; 0 in fp32).
        onednn: The bf16 passes run as one oneDNN graph (:mod:`distillscope.train.onednn`)
            rather than under autocast.
    """

    precision: str
    requested: str
    agreement: float | None = None
    max_logit_error: float | None = None
    items: int = 0
    folded: int = 0
    onednn: bool = False


def choose_teacher_precision(
    teacher: nn.Module,
    inputs: Tensor,
    device: torch.device,
    requested: str,
    runner: nn.Module | None = None,
    folded: int = 0,
    onednn: bool = False,
) -> TeacherPrecision:
    """The precision of ``teacher``'s no-grad passes (cache build, live forward) for
    ``requested``: ``fp32`` as asked; otherwise ``teacher`` runs on ``inputs`` in fp32 and
    ``runner`` (the network the bf16 passes would use: ``teacher`` itself, or its copy with
    ``folded`` batch norms folded, run as a oneDNN graph when ``onednn``) under bf16 autocast,
    both in eval mode (restored), and ``bf16`` is kept when asked, or for ``auto`` only when the
    top-1 agrees on at least :data:`AGREEMENT_FLOOR` of the items and no logit moves by more
    than :data:`LOGIT_BOUND`."""
    if requested not in TEACHER_PRECISIONS:
        raise ConfigError(
            f"teacher_precision={requested!r} is invalid; use one of "
            f"{', '.join(TEACHER_PRECISIONS)}"
        )
    if requested == "fp32":
        return TeacherPrecision("fp32", requested)
    runner = teacher if runner is None else runner
    modes = {net: net.training for net in (teacher, runner)}
    try:
        with torch.no_grad():
            x = inputs.to(device)
            exact = teacher.eval()(x).float()  # (N, K)
            with autocast("bf16", device):
                low = runner.eval()(x).float()  # (N, K)
    finally:
        for net, mode in modes.items():
            net.train(mode)
    agreement = float((exact.argmax(1) == low.argmax(1)).float().mean())
    error = float((exact - low).abs().max())
    ok = agreement >= AGREEMENT_FLOOR and error <= LOGIT_BOUND
    chosen = "bf16" if requested == "bf16" or ok else "fp32"
    low_precision = chosen == "bf16"
    return TeacherPrecision(chosen, requested, agreement, error, int(len(inputs)),
                            folded if low_precision else 0,
                            onednn and low_precision)  # fmt: skip


def passes_said(chosen: TeacherPrecision) -> str:
    """How a teacher's passes ran, in words: the run's line (the report words its header row
    from results.json's record, which it cannot trust to be well formed).

    Example:
        >>> said = passes_said(TeacherPrecision("bf16", "bf16", 0.998, 0.12, 512, 9, True))
        >>> said.split("; ")  # doctest: +NORMALIZE_WHITESPACE
        ['teacher_precision: bf16', '9 batch norms folded into their convolutions',
         'one oneDNN graph',
         'bf16 agrees with fp32 on 99.80% of 512 training items, largest logit change 0.12']
        >>> passes_said(TeacherPrecision("fp32", "auto", 1.0, 0.087, 512)).split("; ")[-1]
        'auto takes bf16 only at 99.9% agreement or more and a largest change of 0.05 or less'
    """
    parts = [f"teacher_precision: {chosen.requested}"]
    if chosen.folded:
        parts.append(f"{chosen.folded} batch norms folded into their convolutions")
    if chosen.onednn:
        parts.append("one oneDNN graph")
    if chosen.agreement is not None and chosen.max_logit_error is not None:
        parts.append(
            f"bf16 agrees with fp32 on {chosen.agreement:.2%} of {chosen.items} training items, "
            f"largest logit change {chosen.max_logit_error:.3g}"
        )
        if chosen.requested == "auto" and chosen.precision == "fp32":
            parts.append(
                f"auto takes bf16 only at {AGREEMENT_FLOOR:.1%} agreement or more and a "
                f"largest change of {LOGIT_BOUND:g} or less"
            )
    return "; ".join(parts)
