"""distillscope: distill a teacher into a student, then audit what transferred.

Public API (stable names)::

    from distillscope import (
        Batch, Outputs, create_loss, create_model, create_probe, load_dataset, run_experiment,
        functional,
    )
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from distillscope.contracts import Batch, Outputs

__all__ = [
    "Batch",
    "Outputs",
    "__version__",
    "create_loss",
    "create_model",
    "create_probe",
    "functional",
    "load_dataset",
    "run_experiment",
]


def __getattr__(name: str) -> Any:
    # Lazy imports keep `import distillscope` light (no model zoo or captum until asked for).
    if name == "create_loss":
        from distillscope.distill import create_loss

        return create_loss
    if name == "create_model":
        from distillscope.models import create_model

        return create_model
    if name == "create_probe":
        from distillscope.probes import create_probe

        return create_probe
    if name == "load_dataset":
        from distillscope.data import load_dataset

        return load_dataset
    if name == "run_experiment":
        from distillscope.experiment import run_experiment

        return run_experiment
    if name == "functional":
        import distillscope.functional as functional

        return functional
    raise AttributeError(f"module 'distillscope' has no attribute {name!r}")
