"""Probes: audits of what transferred from a teacher to its students.

Importing this package registers every probe in :data:`distillscope.registry.PROBES`.

Example:
    >>> "accuracy" in probe_names()
    True
    >>> create_probe("accuracy", topk=3, max_samples=100).topk
    3
"""

from __future__ import annotations

from typing import Any

from distillscope.probes import (
    calibration,
    cam_similarity,
    decision,
    dissection,
    domains,
    explanations,
    five_band,
    groups,
    invariance,
    landscape,
    localisation,
    loss_gradients,
    representations,
    roar,
    robustness,
    shift,
    similarity,
    task,
    token_attribution,
    transfer,
)
from distillscope.probes.base import Probe, ProbeData, ProbeResult, Roles
from distillscope.registry import PROBES

__all__ = [
    "Probe",
    "ProbeData",
    "ProbeResult",
    "Roles",
    "calibration",
    "cam_similarity",
    "create_probe",
    "decision",
    "dissection",
    "domains",
    "explanations",
    "five_band",
    "groups",
    "invariance",
    "landscape",
    "localisation",
    "loss_gradients",
    "probe_names",
    "representations",
    "roar",
    "robustness",
    "shift",
    "similarity",
    "task",
    "token_attribution",
    "transfer",
]


def create_probe(name: str, **params: Any) -> Probe:
    """Build the registered probe ``name``; unknown names or parameters raise ``ConfigError``."""
    return PROBES.create(name, **params)


def probe_names(pattern: str = "*") -> list[str]:
    """Names of the registered probes matching an fnmatch ``pattern``, sorted."""
    return PROBES.list(pattern)
