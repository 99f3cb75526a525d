"""One line per known probe for the report: what it measures, and the paper it comes from.

Each probe class carries its own ``description`` and ``paper`` (class attributes, see
:class:`~distillscope.probes.base.Probe`); :func:`describe` reads them from the probe registry.

Paper numbers are those of the project's paper index: [000] On the Impact of Knowledge
Distillation for Model Interpretability (ICML 2023); [001] Good Teachers Explain:
Explanation-Enhanced Knowledge Distillation; [002] Revisiting Knowledge Distillation: An
Inheritance and Exploration Framework; [003] What Knowledge Gets Distilled in Knowledge
Distillation?; [004] Trustworthy Distillation? High-Temperature Distillation as Double
Regularization Plus Gradient Masking. A probe without a description is rendered with a generic line.
"""

from __future__ import annotations

import distillscope.probes  # noqa: F401  (registers the probes and their descriptions)
from distillscope.registry import PROBES

PAPERS = {
    "000": "On the Impact of Knowledge Distillation for Model Interpretability (ICML 2023)",
    "001": "Good Teachers Explain: Explanation-Enhanced Knowledge Distillation",
    "002": "Revisiting Knowledge Distillation: An Inheritance and Exploration Framework",
    "003": "What Knowledge Gets Distilled in Knowledge Distillation?",
    "004": "Trustworthy Distillation? High-Temperature Distillation as Double Regularization "
    "Plus Gradient Masking",
}

GENERIC = "No description registered for this probe; its values are shown as recorded."


def describe(probe: str) -> str:
    """The description line of a probe, with its paper when it has one.

    Example:
        >>> describe("agreement").endswith("[001] " + PAPERS["001"] + ".")
        True
        >>> describe("mystery") == GENERIC
        True
        >>> describe("cam_similarity").endswith("Knowledge Distillation?")  # no "?."
        True
    """
    cls = PROBES.get(probe) if probe in PROBES.list() else None
    text: str | None = getattr(cls, "description", None)
    if text is None:
        return GENERIC
    paper: str | None = getattr(cls, "paper", None)
    if paper is None:
        return text
    title = PAPERS[paper]
    return f"{text} Source: [{paper}] {title}{'' if title[-1] in '.?!' else '.'}"
