"""The probe contract: models in, one uniform :class:`ProbeResult` out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar, TypedDict

from torch import nn

from distillscope.checks import check_int
from distillscope.data.base import DatasetInfo, DistillDataset
from distillscope.probes.logits import LogitCache


@dataclass
class Roles:
    """Which model plays which part.

    Attributes:
        teachers: Names of the teachers.
        independent: Names of students trained without a teacher (same architecture).
        students: Names of distilled students.
        teacher_of: Student (or independent) name -> the teacher it is compared with.
        temperature: Model name -> its training temperature (strong attacks, paper 004).
    """

    teachers: list[str]
    independent: list[str] = field(default_factory=list)
    students: list[str] = field(default_factory=list)
    teacher_of: dict[str, str] = field(default_factory=dict)
    temperature: dict[str, float] = field(default_factory=dict)

    @property
    def all_models(self) -> list[str]:
        return [*self.teachers, *self.independent, *self.students]

    def pairs(self) -> list[tuple[str, str]]:
        """``(teacher, model)`` for every non-teacher model that has a teacher."""
        return [
            (self.teacher_of[m], m)
            for m in [*self.independent, *self.students]
            if m in self.teacher_of
        ]


@dataclass
class ProbeData:
    """What a probe audits on: the held-out split and its metadata.

    Attributes:
        dataset: The held-out split.
        info: Its metadata.
        device: Where the models run.
        logits: The models' clean logits per audited batch, filled by the first probe that
            computes them and read by the others
            (:func:`~distillscope.probes.sampling.probe_logits`).
    """

    dataset: DistillDataset
    info: DatasetInfo
    device: str = "cpu"
    logits: LogitCache = field(default_factory=LogitCache, repr=False, compare=False)


@dataclass(frozen=True)
class ProbeResult:
    """A probe's uniform result.

    Attributes:
        probe: Registered probe name.
        values: ``"<model>[/<metric>]"`` or ``"<teacher>-><model>[/<metric>]"`` -> number.
        series: Sweeps for plots, ``"<model>[/<metric>]"`` -> list of numbers; the x axis, if
            any, is stored under ``"x"`` or ``"x/<metric>"``.
        params: Every knob that produced the numbers, seed included.
        images: Optional ``name -> (H, W) or (H, W, C)`` nested lists (decision maps).
        higher_is_better: Metric (``""`` for the main value) -> whether a higher value is
            better (``None``: neither); filled from the probe's class attributes by
            :func:`with_directions`, read by the report.
    """

    probe: str
    values: dict[str, float]
    series: dict[str, list[float]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    images: dict[str, Any] = field(default_factory=dict)
    higher_is_better: dict[str, bool | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ProbeResult:
        return cls(**dict(d))


@dataclass(frozen=True)
class ModelParam:
    """A probe parameter that names models of the run (checked at config load).

    Attributes:
        roles: Roles a named model may have (``teacher``, ``independent``, ``student``), or
            ``None`` for any.
        why: Why the other roles are refused (ends the one-line error).
    """

    roles: tuple[str, ...] | None = None
    why: str = ""


class ProbeParams(TypedDict, total=False):
    """Parameters every probe takes (defaults in :class:`Probe`); subclasses accept them as
    ``**base: Unpack[ProbeParams]`` and pass them on, so they are declared only here."""

    batch_size: int
    max_samples: int
    seed: int


class Probe:
    """One registered audit.

    Args:
        batch_size: Batch size of every forward pass.
        max_samples: Number of held-out samples audited (first ones of a seeded permutation).
        seed: Seed of the sample choice and of any randomness in the probe.
    """

    name: ClassVar[str] = "probe"
    #: One paragraph for the report: what the probe measures, and which of its parts are this
    #: project's rather than the paper's (``None``: the report prints a generic line).
    description: ClassVar[str | None] = None
    #: The paper it comes from, a number of the project's paper index
    #: (:data:`distillscope.report.descriptions.PAPERS`), or ``None``.
    paper: ClassVar[str | None] = None
    #: Whether a higher main value is better (``None``: neither direction is better).
    higher_is_better: ClassVar[bool | None] = None
    #: Metrics whose direction differs from :attr:`higher_is_better` (e.g. agreement's ``kl``).
    metric_directions: ClassVar[dict[str, bool | None]] = {}
    #: Show a progress bar over the probe's batches (set by the experiment runner).
    progress: bool = False
    #: Parameters that name models of the run (each read from the attribute of its name, a
    #: name, a list of names or ``None``); every one is checked at config load, before the
    #: run directory exists. A probe with such a parameter must declare it here.
    model_params: ClassVar[dict[str, ModelParam]] = {}
    #: Words a model parameter may take that name a set of roles, not a model (``students``).
    model_sets: ClassVar[tuple[str, ...]] = ()
    #: Whether the probe applies to text data (token ids, ``DatasetInfo.vocab``); a config
    #: with text data and a probe that does not is refused at load.
    text: ClassVar[bool] = False

    def __init__(self, batch_size: int = 256, max_samples: int = 1000, seed: int = 0) -> None:
        self.batch_size = check_int(f"{self.name}.batch_size", batch_size)
        self.max_samples = check_int(f"{self.name}.max_samples", max_samples)
        self.seed = check_int(f"{self.name}.seed", seed, minimum=0)

    def models_named(self) -> dict[str, list[str]]:
        """Parameter -> the models of the run it names, for every one of :attr:`model_params`
        that names any (checked at config load, before a run starts).

        Example:
            >>> from distillscope.probes import create_probe
            >>> create_probe("adversarial_transfer", foreign="t2").models_named()
            {'foreign': ['t2']}
            >>> create_probe("class_similarity").models_named()  # 'students' is a role set
            {}
        """
        named: dict[str, list[str]] = {}
        for param in self.model_params:
            value = getattr(self, param)
            if value is None or (isinstance(value, str) and value in self.model_sets):
                continue
            named[param] = [value] if isinstance(value, str) else list(value)
        return named

    def base_params(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "max_samples": self.max_samples, "seed": self.seed}

    def check_models(self, models: Mapping[str, nn.Module], roles: Roles) -> None:
        """Raise a one-line :class:`~distillscope.errors.UserError` now, at start-up before
        anything is trained or written, when a parameter cannot apply to the (untrained)
        models, e.g. a module path that names no module (default: nothing to check)."""

    def run(self, models: Mapping[str, nn.Module], data: ProbeData, roles: Roles) -> ProbeResult:
        raise NotImplementedError


def with_directions(probe: Probe, result: ProbeResult) -> ProbeResult:
    """``result`` with ``higher_is_better`` set for every metric among its values.

    Example:
        >>> class Toy(Probe):
        ...     higher_is_better = True
        ...     metric_directions = {"kl": False}
        >>> r = with_directions(Toy(), ProbeResult("toy", {"a": 1.0, "t->a/kl": 0.2}))
        >>> r.higher_is_better
        {'': True, 'kl': False}
    """
    metrics = dict.fromkeys(key.partition("/")[2] for key in result.values)
    directions = {m: probe.metric_directions.get(m, probe.higher_is_better) for m in metrics}
    return replace(result, higher_is_better=directions)
