"""A weighted sum of loss terms that keeps every term's parts for logging."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from distillscope.contracts import Batch, Outputs, Views
from distillscope.distill.base import (
    NEEDS,
    BindContext,
    LossTerm,
    Stage,
    bind_seed,
    seeded_call,
)
from distillscope.errors import ConfigError


class CombinedLoss(LossTerm):
    """``L = sum_i w_i L_i`` over named loss terms, with every term's parts kept.

    A combination is itself a :class:`~distillscope.distill.base.LossTerm` (its ``needs`` the
    union of its terms'), so the trainer holds one loss type.

    The terms live in an :class:`~torch.nn.ModuleDict`, so trainable modules they own
    (regressors, embeddings) are registered and reach the optimiser through
    :meth:`parameters`. ``forward`` returns ``"loss"`` (the weighted sum), ``"<key>/loss"``
    (each term's own, unweighted total) and each term's parts. Parts are named after the key
    the term is stored under: a term whose ``name`` is ``"kd"`` stored as ``"kd_t1"`` logs
    ``"kd_t1/soft"``, so two terms of one kind never overwrite each other's parts.

    Args:
        terms: Key -> loss term. Keys are valid module names (no ``"."``).
        weights: Key -> weight ``>= 0``; must have exactly the keys of ``terms``.

    Raises:
        ConfigError: No terms, mismatched keys, or a negative or non-finite weight.

    Example:
        >>> import torch
        >>> from distillscope.contracts import Batch, Outputs
        >>> from distillscope.distill.baselines import CrossEntropy, LabelSmoothing
        >>> loss = CombinedLoss(
        ...     {"ce": CrossEntropy(), "label_smoothing": LabelSmoothing(0.1)},
        ...     {"ce": 0.5, "label_smoothing": 1.0},
        ... )
        >>> batch = Batch(torch.zeros(2, 3), torch.tensor([0, 1]), torch.arange(2))
        >>> out = loss(Outputs(torch.zeros(2, 4)), None, batch)
        >>> sorted(out)  # doctest: +NORMALIZE_WHITESPACE
        ['ce/ce', 'ce/loss', 'label_smoothing/hard', 'label_smoothing/loss',
         'label_smoothing/uniform', 'loss']
        >>> round(out["loss"].item(), 4)  # 1.5 * log 4
        2.0794
    """

    name = "combined"

    def __init__(self, terms: Mapping[str, LossTerm], weights: Mapping[str, float]) -> None:
        super().__init__()
        if not terms:
            raise ConfigError("a loss needs at least one term; add e.g. {'ce': {}}")
        if set(terms) != set(weights):
            missing = sorted(set(terms) - set(weights))
            extra = sorted(set(weights) - set(terms))
            raise ConfigError(
                f"loss weights must match the terms: missing weights for {missing}, "
                f"weights without a term {extra}"
            )
        self.weights: dict[str, float] = {}
        for key in terms:
            weight = weights[key]
            if isinstance(weight, bool) or not isinstance(weight, (int, float)):
                raise ConfigError(f"{key}.weight={weight!r} is not a number; use a number >= 0")
            if not math.isfinite(weight) or weight < 0:
                raise ConfigError(
                    f"{key}.weight={weight!r} is out of range; use a finite number >= 0"
                )
            self.weights[key] = float(weight)
        for key, term in terms.items():
            _check_needs(key, term)
        for need, what in (("explanation", "explain the teacher"), ("views", "make views")):
            keys = [key for key, term in terms.items() if need in term.needs]
            if len(keys) > 1:
                raise ConfigError(f"loss terms {keys} both {what}; keep one of them")
        try:
            self.terms = nn.ModuleDict(dict(terms))
        except (KeyError, TypeError) as err:
            raise ConfigError(
                f"bad loss term key: {err.args[0]}; use plain names without '.', e.g. 'kd_t4'"
            ) from err

    def __getitem__(self, key: str) -> LossTerm:
        return self.terms[key]  # type: ignore[return-value]

    @property
    def needs(self) -> set[str]:
        """Union of the terms' ``needs``."""
        return set().union(*(term.needs for term in self.terms.values()))

    @property
    def needs_teacher(self) -> bool:
        """Whether any term reads the teacher's outputs."""
        return any(term.needs_teacher for term in self.terms.values())

    def data_parallel_issue(self) -> str | None:
        """The first term's reason it cannot train data-parallel, naming the term."""
        for key, term in self.terms.items():
            issue = term.data_parallel_issue()  # type: ignore[operator]
            if issue is not None:
                return f"loss term {key!r} {issue}"
        return None

    def student_paths(self) -> list[str]:
        """Union of the terms' student feature paths, in first-seen order."""
        return list(dict.fromkeys(p for t in self.terms.values() for p in t.student_paths()))

    def teacher_paths(self) -> list[str]:
        """Union of the terms' teacher feature paths, in first-seen order."""
        return list(dict.fromkeys(p for t in self.terms.values() for p in t.teacher_paths()))

    def teacher_modules(self) -> list[str]:
        """Union of the terms' teacher module paths (:meth:`LossTerm.teacher_modules`)."""
        return list(dict.fromkeys(p for t in self.terms.values() for p in t.teacher_modules()))

    def peer_paths(self) -> list[str]:
        """Union of the terms' peer feature paths, in first-seen order."""
        return list(dict.fromkeys(p for t in self.terms.values() for p in t.peer_paths()))

    def attach(self, student: nn.Module, teacher: nn.Module | None) -> None:
        """Let every term read what it needs from the models (:meth:`LossTerm.attach`)."""
        for term in self.terms.values():
            term.attach(student, teacher)

    @contextmanager
    def student_context(self, student: nn.Module) -> Iterator[None]:
        """Every term's :meth:`LossTerm.student_context`, entered in order."""
        with ExitStack() as stack:
            for term in self.terms.values():
                stack.enter_context(term.student_context(student))
            yield

    def bind_seeded(self, ctx: BindContext, seed: int = 0) -> None:
        """Bind every term (:meth:`LossTerm.bind`), each under a seed of its own.

        Term ``key`` is bound with the global generators seeded from ``seed`` and ``key``
        alone (restored afterwards), so binding builds the same modules on every call, in any
        order of terms, and leaves the caller's random state untouched.
        """
        for key, term in self.terms.items():
            seeded_call(ctx.batch.inputs, bind_seed(seed, key), term.bind, ctx)
            term.bound = True
        self.bound = True

    def bind(self, ctx: BindContext, seed: int = 0) -> None:
        """:meth:`bind_seeded` (kept for callers that bind a combination directly)."""
        self.bind_seeded(ctx, seed)

    def prepare(
        self, student: nn.Module, teacher: nn.Module | None, batches: Iterable[Batch]
    ) -> None:
        """Run every term's :meth:`LossTerm.prepare` (not their stages), in order.

        ``batches`` is iterated once per term, so pass a re-iterable (a ``DataLoader`` or a
        list), not a generator.
        """
        for term in self.terms.values():
            term.prepare(student, teacher, batches)

    def preparation(
        self, student: nn.Module, teacher: nn.Module | None, batches: Iterable[Batch]
    ) -> Iterator[tuple[str, Stage]]:
        """Every term's :meth:`LossTerm.preparation` in order (its stages, then its
        ``prepare``), each stage under the key its term is stored at."""
        for key, term in self.terms.items():
            for _, stage in term.preparation(student, teacher, batches):
                yield key, stage

    def make_views(self, inputs: Tensor) -> Tensor:
        """The transformed copies of ``inputs`` made by the one term that needs views."""
        for term in self.terms.values():
            if "views" in term.needs:
                return term.make_views(inputs)
        raise ValueError("no loss term needs views")

    def explain_teacher(self, teacher: nn.Module, inputs: Tensor) -> Outputs:
        """The teacher's outputs with its explanation, from the one term that needs it."""
        for term in self.terms.values():
            if "explanation" in term.needs:
                return term.explain_teacher(teacher, inputs)
        raise ValueError("no loss term needs the teacher's explanation")

    @property
    def needs_peers(self) -> bool:
        """Whether any term reads the other peers of a group (DML)."""
        return any(term.needs_peers for term in self.terms.values())

    def forward(
        self,
        student: Outputs,
        teacher: Outputs | None,
        batch: Batch,
        peers: list[Outputs] | None = None,
        views: Views | None = None,
    ) -> dict[str, Tensor]:
        """``{"loss": sum_i w_i L_i, "<key>/loss": L_i, "<key>/<part>": ...}`` for the batch.

        ``peers`` (the other networks of a group, detached) goes to the terms that need them,
        ``views`` (outputs on the batch's transformed copies) to the term that made them.
        """
        out: dict[str, Tensor] = {}
        totals: list[Tensor] = []
        for key, term in self.terms.items():
            extra: dict[str, Any] = {}
            if term.needs_peers:
                extra["peers"] = peers
            if "views" in term.needs:
                extra["views"] = views
            parts = term(student, teacher, batch, **extra)
            totals.append(self.weights[key] * parts["loss"])  # ()
            for part, value in parts.items():
                prefix, sep, rest = part.partition("/")
                logged = f"{key}/{rest}" if sep and prefix == term.name else f"{key}/{part}"
                if logged in out:
                    raise ValueError(f"loss term {key!r} logs {logged!r} twice; rename its parts")
                out[logged] = value
        out["loss"] = torch.stack(totals).sum()  # ()
        return out

    def extra_repr(self) -> str:
        return ", ".join(f"{key}: weight={w:g}" for key, w in self.weights.items())


def _check_needs(key: str, term: LossTerm) -> None:
    """A term's ``needs`` must be known words, and name ``"features"`` iff it taps paths."""
    unknown = set(term.needs) - NEEDS
    if unknown:
        raise ValueError(
            f"loss term {key!r} declares needs {sorted(unknown)}; use a subset of {sorted(NEEDS)}"
        )
    paths = bool(term.student_paths() or term.teacher_paths())
    if paths and "features" not in term.needs:
        raise ValueError(
            f"loss term {key!r} names feature paths but its needs {sorted(term.needs)} lack "
            "'features'; declare it"
        )
    if term.teacher_paths() and "teacher" not in term.needs:
        raise ValueError(
            f"loss term {key!r} reads teacher features but its needs lack 'teacher'; declare it"
        )
