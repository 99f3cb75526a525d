"""One training step's forward half: a batch in, every member's loss parts out.

:class:`Step` is the one place where networks run during training. It serves what each
member's loss declares it needs (:attr:`~distillscope.distill.base.LossTerm.needs`) and nothing
else, the same way for a single network and for a group trained together (DML):

- every member's student forward, its logits divided by the training temperature (paper 004,
  section 4.1), with the student features its loss reads tapped;
- the teacher's outputs, from the cache or from the frozen teacher (once per batch, under
  ``no_grad``), with the teacher features the losses read;
- the teacher's explanation (e2KD), through the member's own loss;
- transformed views of the batch (SSKD), run with the batch in one pass;
- the other members' detached outputs (``peers``), for losses that learn from peers.

The views are made first, then the teacher runs, then the students (:meth:`Step.__call__`).

It owns the feature taps (built here and nowhere else) and the memory layout
(``train.channels_last``, :mod:`distillscope.train.layout`): under ``auto`` a single
convolutional network whose loss reads no features trains channels-last on the CPU (and on
CUDA under bf16/fp16); groups train in the default layout unless the layout is ``on``.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from distillscope.contracts import Batch, Outputs, Views
from distillscope.data.base import DistillDataset
from distillscope.distill.base import LossTerm
from distillscope.models.forward import forward_outputs
from distillscope.models.taps import FeatureTap
from distillscope.train.layout import channels_last, to_layout
from distillscope.train.precision import as_fp32, autocast
from distillscope.train.teacher_cache import TeacherCache


@dataclass
class StepResult:
    """What one step computed.

    Attributes:
        parts: Member -> its loss dict (``"loss"`` and the logged parts).
        logits: Member -> its logits at T = 1 ``(B, K)`` (training accuracy).
        student: Member -> the outputs its loss saw (temperature-scaled).
        teacher: Member -> the teacher outputs its loss saw, or ``None``.
    """

    parts: dict[str, dict[str, Tensor]]
    logits: dict[str, Tensor]
    student: dict[str, Outputs]
    teacher: dict[str, Outputs | None]


class Step:
    """Turns a batch into every member's loss parts (see the module docstring).

    Args:
        models: Member name -> network, in training order.
        losses: Member name -> its loss (the same names).
        temperature: Training temperature; student logits are divided by it.
        teacher: The frozen teacher, or ``None``.
        teacher_cache: Precomputed teacher outputs, used instead of running ``teacher``.
        student_taps: Member name -> a tap the caller made; otherwise the step taps what the
            member's loss reads.
        teacher_tap: A teacher tap the caller made (live teacher only).
    """

    def __init__(
        self,
        models: Mapping[str, nn.Module],
        losses: Mapping[str, LossTerm],
        temperature: float = 1.0,
        *,
        teacher: nn.Module | None = None,
        teacher_cache: TeacherCache | None = None,
        student_taps: Mapping[str, FeatureTap | None] | None = None,
        teacher_tap: FeatureTap | None = None,
        teacher_precision: str = "fp32",
    ) -> None:
        self.models = dict(models)
        #: What runs each member's forward pass: the network, or its DDP wrapper in a
        #: data-parallel run (set by the trainer; taps stay on the network itself).
        self.runners: dict[str, nn.Module] = dict(self.models)
        self.losses = dict(losses)
        self.names = list(self.models)
        self.temperature = float(temperature)
        self.teacher = teacher
        self.teacher_cache = teacher_cache
        self.student_taps: dict[str, FeatureTap | None] = dict(student_taps or {})
        self.teacher_tap = teacher_tap
        self.needs_teacher = any(loss.needs_teacher for loss in self.losses.values())
        self.channels_last: dict[str, bool] = dict.fromkeys(self.names, False)
        self.teacher_channels_last = False
        #: The live teacher's no-grad passes: ``fp32`` or ``bf16`` (autocast, outputs in fp32).
        self.teacher_precision = teacher_precision

    # ----------------------------------------------------------------- set-up
    def tap(self, stack: ExitStack) -> None:
        """Tap what the bound losses read (taps the caller gave are kept); removed when
        ``stack`` closes. A term may learn its paths from the models at bind (e2KD's
        ``cam_layer``), so taps are made after binding."""
        for name in self.names:
            read = [self.losses[name].student_paths()]  # its own loss's, then its peers'
            read += [self.losses[q].peer_paths() for q in self.names if q != name]
            paths = list(dict.fromkeys(p for group in read for p in group))
            if paths and self.student_taps.get(name) is None:
                self.student_taps[name] = stack.enter_context(FeatureTap(self.models[name], paths))
        paths = self._teacher_paths()
        live = self.teacher is not None and self.needs_teacher
        live = live and (self.teacher_cache is None or self._any_views())  # views run live
        if paths and live and self.teacher_tap is None:
            assert self.teacher is not None
            self.teacher_tap = stack.enter_context(FeatureTap(self.teacher, paths))

    def choose_layouts(
        self,
        stack: ExitStack,
        train: DistillDataset,
        device: torch.device,
        mode: str = "auto",
        precision: str = "fp32",
    ) -> None:
        """The memory layout of the trained networks and the live teacher
        (:mod:`distillscope.train.layout`); the models leave in the default layout when
        ``stack`` closes.

        ``auto`` considers one network whose loss reads no features (and the live teacher
        when no loss reads its features): groups and tapped networks keep the default layout,
        as they always have. ``on`` puts every network of the step in channels-last, tapped or
        not (the features a loss reads then arrive channels-last too); ``off`` none.
        """
        if mode == "off" or (mode == "auto" and len(self.names) > 1):
            return
        sample = _sample_inputs(train).to(device)  # (1, ...)
        for name in self.names:
            if mode == "on" or not self.losses[name].student_paths():
                self.channels_last[name] = stack.enter_context(
                    channels_last(self.models[name], sample, device, mode, precision)
                )
        live = self.teacher is not None and self.needs_teacher and self.teacher_cache is None
        if live and (mode == "on" or not self._teacher_paths()):
            assert self.teacher is not None
            self.teacher_channels_last = stack.enter_context(
                channels_last(self.teacher, sample, device, mode, self.teacher_precision)
            )

    def _teacher_paths(self) -> list[str]:
        return list(dict.fromkeys(p for loss in self.losses.values() for p in loss.teacher_paths()))

    def _any_views(self) -> bool:
        return any("views" in loss.needs for loss in self.losses.values())

    # ------------------------------------------------------------------- step
    def __call__(self, batch: Batch) -> StepResult:
        """Every member's loss parts on ``batch`` (already on the device).

        The views are made first, then the teacher runs, then the students: the teacher's
        no-grad activations are freed before the students' forward passes keep theirs for the
        backward, so the step's memory peaks at the larger of the two, not at their sum (fewer
        fresh pages to fault in every step; SSKD's live step: about a third of the page faults,
        see ``benchmarks/README.md``). No pass reads another's results, so the order changes
        no number.
        """
        both: dict[str, Tensor] = {}  # member -> its batch then its views, ((1 + V) B, ...)
        for name in self.names:
            if "views" in self.losses[name].needs:  # one pass over the batch and its views
                views = self.losses[name].make_views(batch.inputs)  # (V * B, ...)
                both[name] = torch.cat([batch.inputs, views])  # ((1 + V) B, ...)
        teacher: dict[str, Outputs | None] = {}
        teacher_views: dict[str, Outputs | None] = {}
        shared: list[Outputs | None] = []  # the plain teacher pass, run once when needed
        for name in self.names:
            loss = self.losses[name]
            if not loss.needs_teacher:
                teacher[name] = teacher_views[name] = None
            elif name in both:
                teacher[name], teacher_views[name] = self._teacher_with_views(batch, both[name])
            elif "explanation" in loss.needs and self.teacher_cache is None:
                teacher[name] = self._explained(loss, batch)
            else:
                if not shared:
                    shared.append(self._teacher_outputs(batch))
                teacher[name] = shared[0]
        student: dict[str, Outputs] = {}
        student_views: dict[str, Outputs] = {}
        for name in self.names:
            model, tap = self.runners[name], self.student_taps.get(name)
            x = to_layout(both.get(name, batch.inputs), self.channels_last[name])
            out = _scaled(forward_outputs(model, x, tap), self.temperature)
            if name in both:
                student[name], student_views[name] = out.split(len(batch))
            else:
                student[name] = out
        parts: dict[str, dict[str, Tensor]] = {}
        for name in self.names:
            loss = self.losses[name]
            kwargs: dict[str, object] = {}
            if loss.needs_peers:
                kwargs["peers"] = [student[q].detach() for q in self.names if q != name]
            if name in both:
                kwargs["views"] = Views(student_views[name], teacher_views[name])
            parts[name] = loss(student[name], teacher[name], batch, **kwargs)
        logits = {name: out.raw_logits for name, out in student.items()}  # (B, K) at T = 1
        return StepResult(parts, logits, student, teacher)

    def _teacher_outputs(self, batch: Batch) -> Outputs:
        if self.teacher_cache is not None:
            return self.teacher_cache.outputs(batch)
        assert self.teacher is not None
        x = to_layout(batch.inputs, self.teacher_channels_last)
        with torch.no_grad(), autocast(self.teacher_precision, x.device):
            return as_fp32(forward_outputs(self.teacher, x, self.teacher_tap))

    def _explained(self, loss: LossTerm, batch: Batch) -> Outputs:
        """The live teacher's outputs with ``loss``'s explanation of it (a gradient: e2KD)."""
        assert self.teacher is not None
        x = to_layout(batch.inputs, self.teacher_channels_last)
        with torch.enable_grad():
            explained = loss.explain_teacher(self.teacher, x).detach()
        if self.teacher_tap is None:
            return explained
        with torch.no_grad():  # other terms' teacher features: a plain pass
            out = forward_outputs(self.teacher, x, self.teacher_tap)
        return replace(out, explanation=explained.explanation)

    def _teacher_with_views(self, batch: Batch, both: Tensor) -> tuple[Outputs, Outputs]:
        """The teacher on ``both``, the batch then its views (the students' input): one pass
        over both, or the cache for the batch and a live pass for the views."""
        assert self.teacher is not None
        n = len(batch)
        layout = self.teacher_channels_last
        with torch.no_grad():
            if self.teacher_cache is None:
                return forward_outputs(
                    self.teacher, to_layout(both, layout), self.teacher_tap
                ).split(n)
            cached = self.teacher_cache.outputs(batch)
            views = both[n:]  # (V * B, ...)
            return cached, forward_outputs(self.teacher, to_layout(views, layout), self.teacher_tap)


def _scaled(out: Outputs, temperature: float) -> Outputs:
    """The student's outputs with its logits divided by its training temperature."""
    if temperature == 1.0:
        return Outputs(out.logits, out.features, 1.0)
    return Outputs(out.logits / temperature, out.features, temperature)


def _sample_inputs(train: DistillDataset) -> Tensor:
    """The first training input as a batch of one, drawn without touching the global RNGs."""
    with torch.random.fork_rng(devices=[]):  # __getitem__ may augment at random
        x = train[0][0]
    return torch.as_tensor(x).unsqueeze(0)  # (1, ...)
