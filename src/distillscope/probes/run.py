"""Run a config's probes over the trained models, in the order the config lists them."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from torch import nn

from distillscope.errors import UserError
from distillscope.messages import say
from distillscope.probes import create_probe
from distillscope.probes.base import ProbeData, Roles, with_directions
from distillscope.train.seeding import seed_everything


def check_probes(
    probes: Mapping[str, Mapping[str, Any] | None],
    defaults: Mapping[str, Any],
    models: Mapping[str, nn.Module],
    roles: Roles,
) -> None:
    """Each probe's :meth:`~distillscope.probes.base.Probe.check_models` on the built,
    untrained models: a parameter that cannot apply fails at start-up, nothing written."""
    for name, params in probes.items():
        try:
            create_probe(name, **{**defaults, **(params or {})}).check_models(models, roles)
        except UserError as exc:
            raise type(exc)(f"probes.{name}: {exc}") from None


def run_probes(
    probes: Mapping[str, Mapping[str, Any] | None],
    defaults: Mapping[str, Any],
    models: Mapping[str, nn.Module],
    data: ProbeData,
    roles: Roles,
    seed: int,
    progress: bool = True,
) -> dict[str, Any]:
    """Each probe's result (``ProbeResult.to_dict``) by name.

    Args:
        probes: Probe name -> its parameters (the config's ``probes``).
        defaults: Parameters every probe takes unless it sets its own (``probe_defaults``).
        models: The trained models, in eval mode.
        data: The held-out split.
        roles: Who is teacher, independent, student.
        seed: The global generators are seeded with it before each probe, so a probe's
            numbers do not depend on the probes before it.
        progress: Show each probe's progress bar.
    """
    out: dict[str, Any] = {}
    for name, params in probes.items():
        t0 = time.time()
        probe = create_probe(name, **{**defaults, **(params or {})})
        probe.progress = progress
        say(f"probe {name}")
        seed_everything(seed)
        result = with_directions(probe, probe.run(models, data, roles))
        out[name] = result.to_dict()
        say(f"probe {name}: done in {time.time() - t0:.1f}s")
    return out
