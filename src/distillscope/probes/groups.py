"""Accuracy and agreement per group of the held-out data (in- vs out-of-distribution, bias)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Unpack

import torch
from torch import nn

from distillscope.errors import ConfigError
from distillscope.probes.base import Probe, ProbeData, ProbeParams, ProbeResult, Roles
from distillscope.probes.sampling import evaluating, forward_all, probe_batches, sample_indices
from distillscope.registry import register_probe

__all__ = ["GroupGapProbe"]

#: How items are grouped: the dataset's own groups, or whether the group equals the label.
GROUPINGS = ("groups", "majority")


@register_probe("group_gap")
class GroupGapProbe(Probe):
    """Top-1 accuracy per group, the worst group and the gap; agreement per group.

    Paper 001 4.2 (Waterbirds) evaluates KD students in distribution and out of distribution
    (the label/background pairs rare in training); paper 003 6.2 asks whether a teacher's
    group bias passes to its student. With groups ``g`` given per held-out item
    (``TensorDataset.groups``, e.g. the background):

        acc_g(f) = mean_{i in g} 1[argmax f(x_i) = y_i]     worst(f) = min_g acc_g(f)
        gap(f) = max_g acc_g(f) - min_g acc_g(f)         agree_g(T, S) as paper 001 eq. 4

    ``grouping = majority`` (default) uses two groups: ``majority`` (the item's group equals
    its label: in distribution for spurious-background data) and ``minority`` (out of
    distribution); ``grouping = groups`` uses the dataset's groups as they are.

    Args:
        grouping: ``majority`` or ``groups``.
        batch_size: See :class:`~distillscope.probes.base.Probe`.
        max_samples: See :class:`~distillscope.probes.base.Probe`.
        seed: See :class:`~distillscope.probes.base.Probe`.

    Values: ``"<m>/<group>"``, ``"<m>/worst"`` and ``"<m>/gap"`` (lower is better) for every
    model; ``"<t>-><m>/<group>"`` agreement for every teacher/model pair.
    """

    description = (
        "Top-1 accuracy per group of the held-out data, the worst group and the gap between the "
        "best and the worst (lower is better), and teacher-student agreement per group. With "
        "spurious backgrounds the groups are the majority (background agrees with the label: in "
        "distribution) and the minority (out of distribution), as paper 001 evaluates KD students "
        "on Waterbirds; paper 003 6.2 asks whether a teacher's group bias passes to its student."
    )
    paper = "001"

    higher_is_better = True
    metric_directions = {"gap": False}

    def __init__(self, grouping: str = "majority", **base: Unpack[ProbeParams]) -> None:
        super().__init__(**base)
        if grouping not in GROUPINGS:
            raise ConfigError(
                f"group_gap.grouping={grouping!r} is invalid; use one of {', '.join(GROUPINGS)}"
            )
        self.grouping = grouping

    def run(self, models: Mapping[str, nn.Module], data: ProbeData, roles: Roles) -> ProbeResult:
        params: dict[str, Any] = {**self.base_params(), "grouping": self.grouping}
        full = getattr(data.dataset, "groups", None)
        if full is None:
            params["skipped"] = {
                "group_gap": f"{data.info.name} has no groups per item; use data with groups "
                "(e.g. spurious-fashion)"
            }
            return ProbeResult(self.name, {}, params=params)
        picked = sample_indices(len(data.dataset), self.max_samples, self.seed)  # as batches
        groups = full[picked]  # (N,) in probe order
        if self.grouping == "majority":
            targets = data.dataset.targets_tensor()[picked]
            groups = (groups != targets).long()  # 0: majority, 1: minority
            names = ["majority", "minority"]
        else:
            given = data.info.group_names or ()
            names = [
                given[g] if g < len(given) else f"group{g}" for g in range(int(groups.max()) + 1)
            ]
        k = len(names)
        correct = {m: torch.zeros(k) for m in models}
        agree = {pair: torch.zeros(k) for pair in roles.pairs()}
        counts = torch.zeros(k)
        with evaluating(models, models, data.device) as active:
            for batch in probe_batches(self, data):
                g = groups[batch.index.cpu()]  # (B,)
                counts += torch.bincount(g, minlength=k).float()
                preds = {m: z.argmax(1).cpu() for m, z in forward_all(active, batch.inputs).items()}
                y = batch.targets.cpu()
                for m, p in preds.items():
                    correct[m] += torch.bincount(g, weights=(p == y).float(), minlength=k)
                for (t, m), total in agree.items():
                    total += torch.bincount(g, weights=(preds[t] == preds[m]).float(), minlength=k)
        present = [i for i in range(k) if counts[i] > 0]
        values: dict[str, float] = {}
        for m, hits in correct.items():
            accs = {names[i]: float(hits[i] / counts[i]) for i in present}
            values.update({f"{m}/{name}": acc for name, acc in accs.items()})
            values[f"{m}/worst"] = min(accs.values())
            values[f"{m}/gap"] = max(accs.values()) - min(accs.values())
        for (t, m), hits in agree.items():
            for i in present:
                values[f"{t}->{m}/{names[i]}"] = float(hits[i] / counts[i])
        params["group_sizes"] = {names[i]: int(counts[i]) for i in range(k)}
        return ProbeResult(self.name, values, params=params)
