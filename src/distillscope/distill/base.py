"""The loss-term contract.

A :class:`LossTerm` is one registered distillation loss. It never reaches into a model: the
trainer hands it the student's and the teacher's :class:`~distillscope.contracts.Outputs`
(logits and the tapped features it asked for) and the :class:`~distillscope.contracts.Batch`.

A term's life has three stages:

1. **bind** (:meth:`LossTerm.bind`), once, before anything trains: the term sees the student,
   the teacher, one sample batch run through both (with the features it asked for) and the
   training set's size, and builds the modules it owns (a hint regressor sized to the teacher's
   feature, an embedding, a memory bank over the training set) from the shapes it sees. Binding
   is deterministic (it runs under a seed of its own), so ``--resume`` binds again and then loads
   the saved state. A pair the term cannot apply to fails here, in seconds, with one line.
2. **prepare**, optional, after the teacher is trained and before the student trains. A term
   that trains something first declares it as :class:`Stage` objects (:meth:`LossTerm.stages`:
   FitNets' hint stage trains the student's lower half, AB's initialisation stage the student and
   its connectors, FT's paraphraser and SSKD's teacher head train on teacher features); the
   trainer's stage runner (:mod:`distillscope.train.stage`) runs them, with a progress bar, a
   finiteness check, metrics and a checkpoint per stage epoch. :meth:`LossTerm.prepare` then
   does what needs no optimiser (freeze what a stage trained, read the trained teacher's
   margins or classifier). :meth:`LossTerm.preparation` is the order of the two.
3. **forward**, every step; the trainer optimises the term's trainable parameters together with
   the student's and saves its state with the student's checkpoint.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from distillscope.contracts import Batch, Outputs

#: What a term may say it reads (:attr:`LossTerm.needs`).
NEEDS = frozenset({"logits", "features", "teacher", "explanation", "peers", "views"})


@dataclass
class BindContext:
    """What a loss term sees when it is bound (:meth:`LossTerm.bind`).

    Attributes:
        student: The student network (not yet trained).
        teacher: The teacher network, or ``None`` for a term without a teacher. Only its
            structure and output shapes may be relied on: at start-up it may not be trained yet.
        batch: A small sample batch of the training set, on the training device.
        student_outputs: ``batch`` through the student in eval mode, detached, with the student
            features the term asked for.
        teacher_outputs: The same through the teacher, or ``None``.
        num_train: Number of items of the training set (memory banks are indexed by
            ``Batch.index`` in ``[0, num_train)``).
        num_classes: Number of classes.
        train_targets: ``(N,)`` the class of every training item, indexed like ``Batch.index``
            (CRD draws its negatives from the other classes); ``None`` when the caller has none
            to give (a term that needs them refuses at bind).
        peer_outputs: ``batch`` through each other network of the term's group (eval mode,
            detached, with the features :meth:`LossTerm.peer_paths` names), for terms that
            need ``"peers"``; ``None`` when bound outside a group.
    """

    student: nn.Module
    teacher: nn.Module | None
    batch: Batch
    student_outputs: Outputs
    teacher_outputs: Outputs | None
    num_train: int
    num_classes: int
    train_targets: Tensor | None = None
    peer_outputs: list[Outputs] | None = None


@dataclass
class Stage:
    """A training stage a term runs before the student trains, declared by the term
    (:meth:`LossTerm.stages`) and run by the trainer's stage runner
    (:class:`distillscope.train.stage.StageRunner`).

    The runner builds ``optimizer(params)``, puts ``train`` in train mode and ``eval`` in eval
    mode (restoring both afterwards), enters ``open()`` around the stage and, for each of
    ``epochs`` passes over the training batches, per batch: ``loss = loss_of(batch)``, a
    finiteness check, ``zero_grad(set_to_none=True)``, ``backward``, ``step``.

    Attributes:
        name: The stage's name, logged as ``"<term key>/<name>"`` (e.g. ``"hint/stage1"``).
        epochs: Passes over the training set.
        params: What the stage optimises, in the optimiser's order.
        optimizer: Builds the stage's optimiser from ``params`` (its settings), e.g.
            ``functools.partial(torch.optim.Adam, lr=0.001)``.
        open: A context (taps on the networks) entered around the stage's epochs; it yields
            the loss of a batch, ``loss_of(batch) -> ()`` tensor.
        train: Modules put in train mode for the stage.
        eval: Modules put in eval mode for the stage (the frozen teacher).
    """

    name: str
    epochs: int
    params: list[nn.Parameter]
    optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer]
    open: Callable[[], AbstractContextManager[Callable[[Batch], Tensor]]]
    train: tuple[nn.Module, ...] = ()
    eval: tuple[nn.Module, ...] = ()


class LossTerm(nn.Module):
    """One distillation loss; ``forward`` returns ``{"loss": total, "<name>/<part>": part, ...}``.

    Class attributes:
        name: Registered name, used as the prefix of the logged parts.
        needs: What the term reads, a subset of :data:`NEEDS`. ``"teacher"``: the trainer runs
            the teacher (or its cache) and passes its outputs; ``"features"``: the term names
            module paths in :meth:`student_paths` / :meth:`teacher_paths` and the trainer taps
            them (a term that names paths must declare ``"features"``); ``"peers"``: the term
            belongs to a group trained together (DML) and ``forward`` takes ``peers=``, the
            other networks' detached outputs on the same batch. ``"explanation"``: the term
            explains the teacher (:meth:`explain_teacher`); the trainer (live) or the teacher
            cache (once per image, "frozen explanations") calls it and hands the term teacher
            :class:`~distillscope.contracts.Outputs` whose ``explanation`` is set. At most one
            term of a loss may need it. ``"views"``: the term makes transformed copies of the
            batch (:meth:`make_views`); the trainer runs the student (and the teacher) on the
            batch and its views in one pass and ``forward`` takes ``views=``
            (:class:`~distillscope.contracts.Views`). At most one term may need it.
    """

    name: ClassVar[str] = "loss"
    needs: ClassVar[set[str]] = {"logits"}

    def __init__(self) -> None:
        # Explicit so the registry sees the real parameters of parameterless terms (nn.Module's
        # own __init__ takes **kwargs, which would let unknown config keys through).
        super().__init__()
        #: Set once :meth:`bind_seeded` has run (the trainer binds an unbound loss itself).
        self.bound = False

    def data_parallel_issue(self) -> str | None:
        """Why this term cannot train data-parallel, or ``None`` (default: it can).

        Under ``torchrun`` each rank sees only its share of every batch; a term whose loss is a
        mean over the batch's items trains as in one process once the ranks' gradients are
        averaged. A term that reads statistics across the batch (relations between its items,
        a memory bank updated from it, a count of the items it saw) says here what it reads,
        and the run is refused in one line.
        """
        return None

    def student_paths(self) -> list[str]:
        """Student module paths whose features this term reads (tapped by the trainer)."""
        return []

    def teacher_paths(self) -> list[str]:
        """Teacher module paths whose features this term reads."""
        return []

    def teacher_modules(self) -> list[str]:
        """Teacher module paths whose outputs or parameters this term reads (its features, and
        modules it inspects, such as OFD's batch norms): a rewrite of the teacher for its
        passes (:mod:`distillscope.train.fold`) leaves them as they are."""
        return self.teacher_paths()

    def peer_paths(self) -> list[str]:
        """Module paths of the other networks of the group whose features this term reads
        (``"peers"`` terms; the trainer taps them on every peer)."""
        return []

    @property
    def needs_teacher(self) -> bool:
        return "teacher" in self.needs

    @property
    def needs_peers(self) -> bool:
        return "peers" in self.needs

    def attach(self, student: nn.Module, teacher: nn.Module | None) -> None:
        """Fill in what the config left to the models, before any tap is set (default: none).

        Called once before :meth:`bind`, so :meth:`student_paths` / :meth:`teacher_paths`
        may depend on it (e2KD explains each model's ``cam_layer`` unless told otherwise).
        Must be deterministic; raise :class:`~distillscope.errors.ConfigError` with one line
        when a model lacks what the term needs.
        """

    def student_context(self, student: nn.Module) -> AbstractContextManager[object]:
        """A context the student trains in (default: none).

        The trainer enters it around each step's forward half (the networks' passes and the
        loss) and leaves it before ``backward``: e2KD with ``bcos_student: explanation`` (the
        authors' code) runs B-cos students in their explanation mode, whose input gradients are
        the dynamic weights it distils, while the step's backward, run after the mode is left,
        differentiates through the dynamic factors.
        """
        return nullcontext()

    def bind_seeded(self, ctx: BindContext, seed: int = 0) -> None:
        """:meth:`bind` under a seed of its own, ``bind_seed(seed, name)``, with the global
        generators restored afterwards; marks the term bound. (A combination binds each term
        under the key it is stored at.)"""
        seeded_call(ctx.batch.inputs, bind_seed(seed, self.name), self.bind, ctx)
        self.bound = True

    def bind(self, ctx: BindContext) -> None:
        """Build the modules this term owns from the shapes in ``ctx`` (default: none).

        Called once before training, under a fixed seed; must build the same modules (same
        shapes, same initial values) every time it is called with the same context. Raise
        :class:`~distillscope.errors.ConfigError` with one line when the term cannot apply to
        this teacher/student pair.
        """

    def stages(self, student: nn.Module, teacher: nn.Module | None) -> list[Stage]:
        """The training stages to run before the student trains, in order (default: none).

        Declared right before they run (after the stages and :meth:`prepare` of the terms
        before this one), so they see the modules as those left them. Raise
        :class:`~distillscope.errors.TrainingError` with one line when a stage cannot run
        (e.g. it needs the teacher network and got none).
        """
        return []

    def prepare(
        self, student: nn.Module, teacher: nn.Module | None, batches: Iterable[Batch]
    ) -> None:
        """Optional preparation without an optimiser, run once after the term's
        :meth:`stages` and before the student's training (default: none): freeze what a stage
        trained, read the trained teacher (OFD's margins, CAT-KD's classifier weights).

        Args:
            student: The student.
            teacher: The trained, frozen teacher, or ``None``.
            batches: Re-iterable training batches on the training device.
        """

    def preparation(
        self, student: nn.Module, teacher: nn.Module | None, batches: Iterable[Batch]
    ) -> Iterator[tuple[str, Stage]]:
        """The term's preparation in order: yields ``(key, stage)`` for the caller to run
        (:class:`~distillscope.train.stage.StageRunner` does), then runs :meth:`prepare`
        once the caller asks for the next one. ``key`` is the term's name (a combination
        yields each term's stages under the key the term is stored at)."""
        for stage in self.stages(student, teacher):
            yield self.name, stage
        self.prepare(student, teacher, batches)

    def make_views(self, inputs: Tensor) -> Tensor:
        """``(V * B, ...)`` transformed copies of ``inputs`` ``(B, ...)``, view-major; only for
        terms that need ``"views"``."""
        raise NotImplementedError(f"loss term {self.name!r} makes no views")

    def explain_teacher(self, teacher: nn.Module, inputs: Tensor) -> Outputs:
        """The teacher's detached logits on ``inputs``, with ``explanation`` set.

        Only for terms that need ``"explanation"``. Called with autograd enabled (an
        explanation is a gradient) and the teacher in eval mode; the term taps what it
        explains itself (a teacher path it names in :meth:`teacher_paths` would be cached).
        """
        raise NotImplementedError(f"loss term {self.name!r} does not explain the teacher")

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        raise NotImplementedError


def bind_seed(seed: int, key: str) -> int:
    """The seed term ``key`` is bound under: a function of the run's seed and the key alone.

    Example:
        >>> bind_seed(0, "hint") == bind_seed(0, "hint") != bind_seed(1, "hint")
        True
    """
    return (int(seed) * 1_000_003 + zlib.crc32(key.encode())) % (2**63)


def rng_devices(x: Tensor) -> list[int]:
    """The CUDA devices whose generators :func:`torch.random.fork_rng` must save for ``x``."""
    return [x.device.index or 0] if x.device.type == "cuda" else []


def seeded_call(like: Tensor, seed: int, fn: object, *args: object) -> None:
    """``fn(*args)`` with the global generators seeded with ``seed``, restored afterwards
    (those of ``like``'s device included)."""
    with torch.random.fork_rng(devices=rng_devices(like)):
        torch.manual_seed(seed)
        fn(*args)  # type: ignore[operator]
