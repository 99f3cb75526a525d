"""Distillation losses: registered :class:`LossTerm` families and their weighted combination.

Importing this package registers every term in :data:`distillscope.registry.LOSSES`.
A student's loss is a mapping ``{term: {"weight": w, **params}}`` (the YAML
``students.<name>.loss`` block) turned into a :class:`CombinedLoss` by :func:`build_loss`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from distillscope.distill.attention import (
    ActivationBoundaries,
    AttentionTransfer,
    NeuronSelectivityTransfer,
    VariationalInformation,
)
from distillscope.distill.base import LossTerm, Stage
from distillscope.distill.baselines import CrossEntropy, LabelSmoothing, PseudoSoftLabels
from distillscope.distill.class_attention import ClassAttentionTransfer
from distillscope.distill.combine import CombinedLoss
from distillscope.distill.contrastive import ContrastiveRepresentation
from distillscope.distill.explanation import ExplanationEnhancedKD
from distillscope.distill.factor import FactorTransfer
from distillscope.distill.feature import Hint
from distillscope.distill.inheritance import (
    InheritanceExploration,
    InheritanceExplorationAT,
    InheritanceExplorationOD,
)
from distillscope.distill.inheritance_mutual import InheritanceExplorationDML
from distillscope.distill.logit import KnowledgeDistillation, SoftTargets, require_teacher
from distillscope.distill.logit_variants import DecoupledKD, TeacherFreeKD
from distillscope.distill.mutual import DeepMutualLearning
from distillscope.distill.overhaul import OverhaulFeatureDistillation
from distillscope.distill.relation import (
    CorrelationCongruence,
    ProbabilisticKT,
    RelationalKD,
    SimilarityPreserving,
)
from distillscope.distill.review import ReviewKD
from distillscope.distill.self_supervised import SelfSupervisedKD
from distillscope.errors import ConfigError
from distillscope.registry import LOSSES

__all__ = [
    "ActivationBoundaries",
    "AttentionTransfer",
    "ContrastiveRepresentation",
    "CorrelationCongruence",
    "DecoupledKD",
    "NeuronSelectivityTransfer",
    "ProbabilisticKT",
    "RelationalKD",
    "SimilarityPreserving",
    "TeacherFreeKD",
    "VariationalInformation",
    "ClassAttentionTransfer",
    "CombinedLoss",
    "CrossEntropy",
    "DeepMutualLearning",
    "ExplanationEnhancedKD",
    "FactorTransfer",
    "Hint",
    "InheritanceExploration",
    "InheritanceExplorationAT",
    "InheritanceExplorationDML",
    "InheritanceExplorationOD",
    "KnowledgeDistillation",
    "LabelSmoothing",
    "LossTerm",
    "OverhaulFeatureDistillation",
    "PseudoSoftLabels",
    "ReviewKD",
    "SelfSupervisedKD",
    "SoftTargets",
    "Stage",
    "build_loss",
    "create_loss",
    "loss_names",
    "require_teacher",
]


def loss_names(pattern: str = "*") -> list[str]:
    """Registered loss-term names matching an fnmatch ``pattern``, sorted.

    Example:
        >>> loss_names("k*")
        ['kd']
    """
    return LOSSES.list(pattern)


def create_loss(name: str, **params: Any) -> LossTerm:
    """Build the registered loss term ``name`` with ``params``.

    Args:
        name: A name from :func:`loss_names`.
        **params: The term's constructor parameters, e.g. ``temperature=4.0``.

    Returns:
        The loss term.

    Raises:
        ConfigError: Unknown name or parameter (the message lists the valid ones), or a
            parameter out of its range.

    Example:
        >>> create_loss("kd", temperature=2.0)
        KnowledgeDistillation(temperature=2.0, alpha=0.5)
    """
    term = LOSSES.create(name, **params)
    if not isinstance(term, LossTerm):
        raise TypeError(f"loss {name!r} built a {type(term).__name__}, not a LossTerm")
    return term


def build_loss(spec: Mapping[str, Mapping[str, Any] | None]) -> CombinedLoss:
    """Build a student's loss from ``{term: {"weight": w, **params}}``.

    ``weight`` defaults to 1.0; the other keys go to the term's constructor. A term given
    as ``None`` (``ce:`` in YAML) uses its defaults.

    Args:
        spec: Term name -> its weight and parameters.

    Returns:
        The weighted sum ``sum_i w_i L_i`` as a :class:`CombinedLoss`.

    Raises:
        ConfigError: Empty spec, unknown term or parameter, or a bad value.

    Example:
        >>> loss = build_loss({"kd": {"temperature": 4, "alpha": 0.9}, "ce": {"weight": 0.5}})
        >>> loss.weights, loss.needs_teacher
        ({'kd': 1.0, 'ce': 0.5}, True)
    """
    if not isinstance(spec, Mapping) or not spec:
        raise ConfigError(
            f"loss must be a non-empty mapping of term -> parameters, got {spec!r}; "
            "e.g. {'kd': {'temperature': 4}}"
        )
    terms: dict[str, LossTerm] = {}
    weights: dict[str, float] = {}
    for name, params in spec.items():
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise ConfigError(
                f"loss.{name} must be a mapping of parameters, got {params!r}; "
                f"e.g. {{'weight': 1.0}}"
            )
        kwargs = dict(params)
        weights[name] = kwargs.pop("weight", 1.0)
        terms[name] = create_loss(name, **kwargs)
    return CombinedLoss(terms, weights)
