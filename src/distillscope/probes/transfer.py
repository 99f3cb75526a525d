"""Adversarial transfer: do the images that fool the teacher fool its distilled student more?

Paper 003 (What Knowledge Gets Distilled?), section 4.2 and appendix B.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Unpack

import torch
from torch import Tensor, nn

from distillscope.attacks.gradient import IMAGE_EPS
from distillscope.attacks.l2 import IFGSM_STEPS, ifgsm
from distillscope.attacks.temperature import PixelSpaceModel, to_pixels
from distillscope.checks import check_int, check_positive
from distillscope.errors import ConfigError
from distillscope.probes.base import (
    ModelParam,
    Probe,
    ProbeData,
    ProbeParams,
    ProbeResult,
    Roles,
)
from distillscope.probes.robustness import POINT_EPS
from distillscope.probes.sampling import evaluating, probe_batches
from distillscope.registry import register_probe

__all__ = ["FOREIGN_WHY", "AdversarialTransferProbe"]

#: Why the foreign control cannot be a distilled student (ends the one-line error).
FOREIGN_WHY = (
    "the foreign control must be a network that did not learn from the teacher; name another "
    "teacher or an independent-role model"
)


@register_probe("adversarial_transfer")
class AdversarialTransferProbe(Probe):
    """Fooling rate of a teacher's successful adversarial images on each student.

    Paper 003, 4.2: each held-out image ``I`` becomes ``I_adv`` by iterative FGSM on the source
    network ``S`` (``k = 5`` steps in the L-inf ball of radius ``eps``, ascending the
    cross-entropy of the true label; appendix B). The attack succeeds when ``S``'s prediction
    changes, ``S(I_adv) != S(I)``; only the successful pairs are kept, and a model ``M`` is
    fooled by a pair when its own prediction changes:

        fool(S -> M) = |{i successful on S : M(I_adv_i) != M(I_i)}| / |{i successful on S}|

    The paper's finding: the distilled student is fooled more often than the independent one
    by its teacher's images, and not by a foreign network's images (Fig. 3c: the control that
    the gain comes from the teacher, not from distillation in general).

    Sources: every teacher (against its independent and distilled students); the ``foreign``
    model, if named (against every student of every teacher: the control; e.g. a teacher of
    another seed trained with no students); and, with ``reverse``, every student against its
    teacher (our addition: does the teacher inherit its student's weaknesses? It is a symmetric
    check of similarity).

    Args:
        eps: L-inf budget in pixel units; default 8/255 on images, :data:`POINT_EPS` on points.
        steps: I-FGSM iterations (paper 003: 5); step ``eps / steps`` (ours: the paper gives
            none).
        foreign: Name of a model of the run used as the control source.
        reverse: Also attack every student and measure its teacher.
        batch_size: See :class:`~distillscope.probes.base.Probe`.
        max_samples: See :class:`~distillscope.probes.base.Probe` (the paper: 5,000 images).
        seed: See :class:`~distillscope.probes.base.Probe`.

    Values: ``"<source>-><model>"`` fooling rates; ``"<source>/success"``, the share of images
    whose prediction the attack changed on the source itself; for the foreign control
    ``"<foreign>-><model>"`` as well. ``params["n_successful"]`` holds each source's count.
    """

    description = (
        "Images crafted by iterative FGSM (5 steps, L-inf eps) to change a source network's "
        "prediction; of those that succeed, the share that also change each other model's "
        "prediction (<source>-><model>). Paper 003 finds the distilled student fooled more often "
        "than the independent one by its teacher's images, but not by a foreign network's (the "
        "control, if a foreign model is named). <source>/success: the attack's success rate on "
        "the source itself. Student -> teacher rows (reverse) are this project's addition."
    )
    paper = "003"

    higher_is_better = None  # neither: a higher rate means more inherited vulnerability
    model_params = {"foreign": ModelParam(("teacher", "independent"), FOREIGN_WHY)}

    def __init__(
        self,
        eps: float | None = None,
        steps: int = IFGSM_STEPS,
        foreign: str | None = None,
        reverse: bool = False,
        **base: Unpack[ProbeParams],
    ) -> None:
        super().__init__(**base)
        self.eps = None if eps is None else check_positive("adversarial_transfer.eps", eps)
        self.steps = check_int("adversarial_transfer.steps", steps)
        if foreign is not None and (not isinstance(foreign, str) or not foreign):
            raise ConfigError(
                f"adversarial_transfer.foreign={foreign!r} is invalid; name a model of the run"
            )
        self.foreign = foreign
        self.reverse = bool(reverse)

    def _pairs(self, models: Mapping[str, nn.Module], roles: Roles) -> dict[str, list[str]]:
        """Source -> the models measured on its images."""
        pairs: dict[str, list[str]] = {}
        for teacher, model in roles.pairs():
            pairs.setdefault(teacher, []).append(model)
        foreign = self.foreign
        if foreign is not None:
            if foreign not in models:
                raise ConfigError(
                    f"adversarial_transfer.foreign={foreign!r} is not a model of the run "
                    f"({', '.join(models)}); name one, e.g. a second teacher of another seed"
                )
            if foreign in roles.students:
                raise ConfigError(
                    f"adversarial_transfer.foreign={foreign!r} is a distilled student; "
                    f"{FOREIGN_WHY}"
                )
            targets = [m for ms in pairs.values() for m in ms if m != foreign]
            pairs[foreign] = list(dict.fromkeys([*pairs.get(foreign, []), *targets]))
        if self.reverse:
            for teacher, model in roles.pairs():
                pairs.setdefault(model, []).append(teacher)
        return pairs

    def run(self, models: Mapping[str, nn.Module], data: ProbeData, roles: Roles) -> ProbeResult:
        info = data.info
        eps = self.eps if self.eps is not None else (IMAGE_EPS if info.is_image else POINT_EPS)
        pairs = self._pairs(models, roles)
        params: dict[str, Any] = {**self.base_params(), "eps": eps, "steps": self.steps,
                                  "step_size": eps / self.steps, "attack": "ifgsm",
                                  "foreign": self.foreign,
                                  "reverse": self.reverse}  # fmt: skip
        if not pairs:
            params["skipped"] = {
                "adversarial_transfer": "needs a teacher with students (or a foreign model)"
            }
            return ProbeResult(self.name, {}, params=params)
        names = list(dict.fromkeys([*pairs, *(m for ms in pairs.values() for m in ms)]))
        fooled = {(s, m): 0 for s, ms in pairs.items() for m in ms}
        success = dict.fromkeys(pairs, 0)
        seen = 0
        bounds = info.pixel_range
        with evaluating(models, names, data.device) as active:
            nets = {
                m: PixelSpaceModel(net, info.mean, info.std).eval() for m, net in active.items()
            }
            for batch in probe_batches(self, data):
                x = to_pixels(batch.inputs, info.mean, info.std)  # (B, ...) pixel space
                clean = {m: _predict(net, x) for m, net in nets.items()}  # (B,) each
                for source, measured in pairs.items():
                    x_adv = ifgsm(nets[source], x, batch.targets, eps, self.steps, bounds=bounds)
                    ok = _predict(nets[source], x_adv) != clean[source]  # (B,) successful
                    success[source] += int(ok.sum())
                    for m in measured:
                        changed = _predict(nets[m], x_adv) != clean[m]  # (B,)
                        fooled[source, m] += int((changed & ok).sum())
                seen += len(batch)
        values = {f"{s}/success": success[s] / max(seen, 1) for s in pairs}
        skipped = {}
        for (s, m), count in fooled.items():
            if success[s]:
                values[f"{s}->{m}"] = count / success[s]
            else:
                skipped[f"{s}->{m}"] = f"the attack changed no prediction of {s}"
        params["n_successful"] = success
        params["n_samples"] = seen
        if skipped:
            params["skipped"] = skipped
        return ProbeResult(self.name, values, params=params)


@torch.no_grad()
def _predict(model: nn.Module, x: Tensor) -> Tensor:
    return model(x).argmax(1)
