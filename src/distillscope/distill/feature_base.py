"""The base of every loss term that reads intermediate features: :class:`FeatureTerm`.

A feature term names the layers it reads on both networks (``student_layers`` /
``teacher_layers``, paired in order; a single-layer term, :class:`SingleLayerTerm`, takes one
``student_layer`` / ``teacher_layer``). The base owns what every such term does alike:

- the checks of the layer parameters when the term is built (:func:`check_path`,
  :func:`check_layers`; one line naming the parameter and the fix);
- the layers a config leaves out: :meth:`FeatureTerm.attach` fills them from the models'
  declared ``model.feature_layers`` / ``model.cam_layer`` (every zoo model and adapter sets
  both) by the term's rule, :attr:`FeatureTerm.default_layers` (:data:`DEFAULT_RULES`), and
  checks that every layer names a module of its network;
- the paths the trainer taps (:meth:`~distillscope.distill.base.LossTerm.student_paths`), the
  teacher checks (:meth:`FeatureTerm.bind_teacher` at bind, :meth:`FeatureTerm.feature_pairs` at
  every step) and ``extra_repr``.

Omitted layers of a list term are paired from the deepest: both omitted, each side takes as many
of its deepest default layers as both have; one given (``n`` layers), the other takes its ``n``
deepest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import ClassVar

import torch
from torch import Tensor, nn

from distillscope.contracts import Batch, Outputs
from distillscope.distill.base import BindContext, LossTerm
from distillscope.distill.logit import require_teacher
from distillscope.errors import ConfigError, ModelError, TrainingError
from distillscope.models.forward import forward_outputs
from distillscope.models.taps import FeatureTap, check_module_paths

ROLES = ("student", "teacher")


def check_path(name: str, value: object) -> str:
    """``value`` if it can be a module path (a non-empty string without surrounding blanks),
    else a one-line ConfigError naming ``name``.

    Example:
        >>> check_path("hint.student_layer", "layer2")
        'layer2'
    """
    if not isinstance(value, str) or not value or value.strip() != value:
        raise ConfigError(
            f"{name}={value!r} is not a module path; give a path of model.named_modules(), "
            "e.g. 'layer2'"
        )
    return value


def check_optional_path(name: str, value: object) -> str | None:
    """``None``, or ``value`` checked by :func:`check_path`."""
    return None if value is None else check_path(name, value)


def check_layers(name: str, value: object, distinct: bool = False) -> list[str]:
    """``value`` as a non-empty list of module paths (each once, if ``distinct``), else a
    one-line ConfigError naming ``name``.

    Example:
        >>> check_layers("at.student_layers", ("layer1", "layer2"))
        ['layer1', 'layer2']
    """
    if isinstance(value, str):
        raise ConfigError(f"{name}={value!r} is a single path; give a list, e.g. [{value!r}]")
    if not isinstance(value, Sequence) or not value:
        raise ConfigError(
            f"{name}={value!r} is not a list of module paths; give a non-empty list, e.g. "
            "[layer1, layer2, layer3]"
        )
    paths = [check_path(f"{name}[{i}]", path) for i, path in enumerate(value)]
    twice = [p for i, p in enumerate(paths) if p in paths[:i]]
    if distinct and twice:
        raise ConfigError(f"{name}={paths!r} names {twice[0]!r} twice; give each layer once")
    return paths


def _last(model: nn.Module) -> list[str]:
    return _declared(model)[-1:]


def _middle(model: nn.Module) -> list[str]:
    layers = _declared(model)
    return layers[(len(layers) - 1) // 2 :][:1]


def _cam(model: nn.Module) -> list[str]:
    cam = getattr(model, "cam_layer", None)
    return [cam] if cam else []


def _maps(model: nn.Module) -> list[str]:
    layers, cam = _declared(model), getattr(model, "cam_layer", None)
    return layers[: layers.index(cam) + 1] if cam in layers else []


def _declared(model: nn.Module) -> list[str]:
    return list(getattr(model, "feature_layers", None) or [])


#: Rules that fill omitted layers from a model: name -> (what they take, how). ``last``: the
#: last of ``model.feature_layers`` (the pooled penultimate feature of the zoo's CNNs);
#: ``middle``: its middle one, ``feature_layers[(n - 1) // 2]``; ``cam``: ``model.cam_layer``,
#: the last feature map; ``maps``: ``feature_layers`` up to and including ``cam_layer`` (the
#: feature maps); ``all``: every one of ``feature_layers``.
DEFAULT_RULES: dict[str, tuple[str, Callable[[nn.Module], list[str]]]] = {
    "last": ("last declared feature layer", _last),
    "middle": ("middle declared feature layer", _middle),
    "cam": ("cam_layer", _cam),
    "maps": ("declared feature maps (feature_layers up to cam_layer)", _maps),
    "all": ("declared feature layers", _declared),
}


class FeatureTerm(LossTerm):
    """A term reading features of layer pairs: ``student_layers[i]`` with ``teacher_layers[i]``.

    Subclasses set:

    - :attr:`default_layers`: the rule (a key of :data:`DEFAULT_RULES`) that fills layers the
      config leaves out (``None``: they must be given);
    - :attr:`distinct`: the roles whose layers must each be named once.

    Args:
        student_layers: Student module paths, or ``None`` for the default rule.
        teacher_layers: Teacher module paths, one per student path, or ``None``.

    Raises:
        ConfigError: Not lists of module paths, or of different lengths (when both are given).
    """

    needs: ClassVar[set[str]] = {"features", "teacher"}
    #: The rule that fills omitted layers at :meth:`attach`; ``None``: layers are required.
    default_layers: ClassVar[str | None] = None
    #: Roles (``"student"``, ``"teacher"``) whose list may not name a layer twice.
    distinct: ClassVar[tuple[str, ...]] = ()
    #: One layer per side (:class:`SingleLayerTerm`), named ``student_layer`` / ``teacher_layer``.
    single: ClassVar[bool] = False

    def __init__(self, student_layers: object = None, teacher_layers: object = None) -> None:
        super().__init__()
        self.student_layers: list[str] | None = self._checked("student", student_layers)
        self.teacher_layers: list[str] | None = self._checked("teacher", teacher_layers)
        if self.student_layers is not None and self.teacher_layers is not None:
            n, m = len(self.student_layers), len(self.teacher_layers)
            if n != m:
                raise ConfigError(
                    f"{self.name}: {n} student layers but {m} teacher layers; give one teacher "
                    "layer per student layer"
                )

    def param(self, role: str) -> str:
        """The config key of ``role``'s layers, e.g. ``"hint.student_layer"``."""
        return f"{self.name}.{role}_layer{'' if self.single else 's'}"

    def _checked(self, role: str, value: object) -> list[str] | None:
        if value is None and self.default_layers is not None:
            return None
        if self.single:
            return [check_path(self.param(role), value)]
        return check_layers(self.param(role), value, distinct=role in self.distinct)

    # ------------------------------------------------------------------ the models
    def attach(self, student: nn.Module, teacher: nn.Module | None) -> None:
        """Fill omitted layers from the models' declared layers (:attr:`default_layers`) and
        check that every layer names a module of its network. Without a teacher network (a
        teacher cache alone) omitted teacher layers stay unset, and binding says so.

        Raises:
            ConfigError: A layer list is omitted and its model declares none to default to.
            ModelError: A layer names no module of its network.
        """
        models = {"student": student, "teacher": teacher}
        omitted = {
            role: self._defaults(role, model)
            for role, model in models.items()
            if model is not None and self.layers_of(role) is None
        }
        given = [len(v) for r in ROLES if (v := self.layers_of(r)) is not None]
        n = given[0] if given else min((len(v) for v in omitted.values()), default=0)
        for role, layers in omitted.items():
            if len(layers) < n:
                raise ConfigError(
                    f"{self.param(role)} defaults to the {role}'s {self._rule()[0]}, but "
                    f"{type(models[role]).__name__} declares {len(layers)} for {n} given "
                    f"layers; give {self.param(role)}"
                )
            setattr(self, f"{role}_layers", layers[len(layers) - n :])
        for role, model in models.items():
            if model is not None:
                try:
                    check_module_paths(model, self.layers(role))
                except ModelError as exc:
                    raise ModelError(f"{self.param(role)}: {exc}") from None

    def _rule(self) -> tuple[str, Callable[[nn.Module], list[str]]]:
        assert self.default_layers is not None  # layers are omitted only where there is a rule
        return DEFAULT_RULES[self.default_layers]

    def _defaults(self, role: str, model: nn.Module) -> list[str]:
        what, rule = self._rule()
        layers = rule(model)
        if not layers:
            raise ConfigError(
                f"{self.param(role)} defaults to the {role}'s {what}, but "
                f"{type(model).__name__} declares none; give {self.param(role)}"
            )
        return layers

    def layers_of(self, role: str) -> list[str] | None:
        """``role``'s layers as given or filled in, ``None`` while omitted (before attach)."""
        return self.student_layers if role == "student" else self.teacher_layers

    def layers(self, role: str) -> list[str]:
        """``role``'s layers; a TrainingError while they are omitted and not yet filled in."""
        layers = self.layers_of(role)
        if layers is None:
            raise TrainingError(
                f"{self.param(role)} is not set: it defaults to the {role}'s "
                f"{self._rule()[0]}, read when the term is attached to the {role} network "
                f"(bind_loss, Trainer.fit); pass the {role} network or give {self.param(role)}"
            )
        return layers

    def layer_pairs(self) -> list[tuple[str, str]]:
        """``(student layer, teacher layer)`` per pair (a TrainingError before attach, when
        layers were omitted)."""
        return list(zip(self.layers("student"), self.layers("teacher")))

    def student_paths(self) -> list[str]:
        return list(self.student_layers or [])

    def teacher_paths(self) -> list[str]:
        return list(self.teacher_layers or [])

    # ------------------------------------------------------------------ the teacher
    def bind_teacher(self, ctx: BindContext) -> Outputs:
        """The teacher's outputs at bind, or the one-line ConfigError of a term without one."""
        if ctx.teacher_outputs is None:
            raise ConfigError(f"{self.name} needs a teacher; give the student one")
        return ctx.teacher_outputs

    def feature_pairs(
        self, student: Outputs, teacher: Outputs | None
    ) -> list[tuple[Tensor, Tensor]]:
        """``(f_s, f_t)`` per layer pair, the teacher's detached; a TrainingError without the
        teacher's outputs."""
        teacher = require_teacher(self.name, teacher)
        return [(student.features[s], teacher.features[t].detach()) for s, t in self.layer_pairs()]

    def extra_repr(self) -> str:
        return f"student_layers={self.student_layers}, teacher_layers={self.teacher_layers}"


class SingleLayerTerm(FeatureTerm):
    """A feature term reading one student layer and one teacher layer (``student_layer``,
    ``teacher_layer``; each ``None`` for the term's default rule)."""

    single: ClassVar[bool] = True

    def __init__(self, student_layer: str | None = None, teacher_layer: str | None = None) -> None:
        super().__init__(student_layer, teacher_layer)

    @property
    def student_layer(self) -> str:
        """The student's layer (once given or filled in)."""
        return self.layers("student")[0]

    @property
    def teacher_layer(self) -> str:
        """The teacher's layer (once given or filled in)."""
        return self.layers("teacher")[0]

    def named(self) -> tuple[str | None, str | None]:
        """``(student layer, teacher layer)``, each ``None`` while omitted (before attach)."""
        s, t = self.student_layers, self.teacher_layers
        return (s[0] if s else None), (t[0] if t else None)

    def bound_maps(self, ctx: BindContext, what: str) -> tuple[Tensor, Tensor]:
        """``(f_s, f_t)`` at bind, both feature maps ``(B, C, H, W)``, else the one-line
        ConfigError ``"<name> <what> feature maps ..."`` naming both layers' shapes."""
        teacher = self.bind_teacher(ctx)
        s = ctx.student_outputs.features[self.student_layer]
        t = teacher.features[self.teacher_layer]
        if s.dim() != 4 or t.dim() != 4:
            raise ConfigError(
                f"{self.name} {what} feature maps (B, C, H, W) but student "
                f"{self.student_layer!r} gives {tuple(s.shape[1:])} and teacher "
                f"{self.teacher_layer!r} {tuple(t.shape[1:])}; "
                "pick convolutional layers of both networks"
            )
        return s, t

    def pair(self, student: Outputs, teacher: Outputs | None) -> tuple[Tensor, Tensor]:
        """``(f_s, f_t)``: the student's feature and the teacher's, detached."""
        return self.feature_pairs(student, teacher)[0]

    def extra_repr(self) -> str:
        s, t = self.named()
        return f"student_layer={s!r}, teacher_layer={t!r}"


@contextmanager
def stage_loss(
    teacher: nn.Module,
    teacher_paths: Sequence[str],
    loss: Callable[[Outputs | None, Outputs], Tensor],
    student: nn.Module | None = None,
    student_paths: Sequence[str] = (),
) -> Iterator[Callable[[Batch], Tensor]]:
    """A stage's ``open`` (:class:`~distillscope.distill.base.Stage`) for terms that read
    features: taps on the teacher (detached) and, when given, on the student; yields
    ``loss_of(batch) = loss(student outputs or None, teacher outputs)``, the teacher run
    without gradients first. Bind it with ``functools.partial``."""
    with ExitStack() as stack:
        s_tap = None
        if student is not None:
            s_tap = stack.enter_context(FeatureTap(student, list(student_paths)))
        t_tap = stack.enter_context(FeatureTap(teacher, list(teacher_paths), detach=True))

        def loss_of(batch: Batch) -> Tensor:
            with torch.no_grad():
                t = forward_outputs(teacher, batch.inputs, t_tap)
            s = None if student is None else forward_outputs(student, batch.inputs, s_tap)
            return loss(s, t)

        yield loss_of
