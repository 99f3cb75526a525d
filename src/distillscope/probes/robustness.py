"""Robustness probes: accuracy under weak and strong (temperature-scaled) gradient attacks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from distillscope.attacks.gradient import IMAGE_EPS, PGD_STEP_FRACTION, PGD_STEPS, fgsm, pgd
from distillscope.attacks.temperature import PixelSpaceModel, TemperatureScaled, to_pixels
from distillscope.checks import check_int, check_positive
from distillscope.errors import ConfigError
from distillscope.probes.base import Probe, ProbeData, ProbeResult, Roles
from distillscope.probes.sampling import evaluating, probe_batches
from distillscope.registry import register_probe

__all__ = ["ATTACKS", "POINT_EPS", "AdversarialProbe"]

#: Attacks the probe runs.
ATTACKS = ("fgsm", "pgd")
#: L-inf budget on unbounded 2-D points: 0.3, about 4% of the toy ring's extent (8 units, paper
#: 004 5.1), the share 8/255 is of the [0, 1] pixel range.
POINT_EPS = 0.3


@register_probe("adversarial")
class AdversarialProbe(Probe):
    """Top-1 accuracy under FGSM and PGD, each weak and strong ("CW").

    Paper 004 (Trustworthy Distillation?), section 4.2: weak attacks ascend the cross-entropy of
    the model's logits ``z``; strong ones that of ``z / T_train`` (Carlini & Wagner), which undoes
    the gradient masking of models trained at a high temperature. Accuracy is always measured on
    the model at ``T = 1``:

        acc_attack(f) = 1/N sum_i 1[argmax f(A(g, x_i, y_i)) = y_i],  g = f (weak) or f/T (strong)

    FGSM: one step of size eps; PGD: ``pgd_steps`` steps of ``pgd_step_size`` from a random
    start, projected to the L-inf eps-ball (SPEC section 2: eps 8/255, step 2/255, 10 steps,
    random start). Attacks run in pixel space: inputs are un-normalised with
    ``DatasetInfo.mean/std``, clamped to ``pixel_range`` (unclamped when it is None), and the
    model is wrapped with the normalisation. ``T_train`` is ``roles.temperature[m]`` (default 1,
    where strong = weak and the weak value is reported for both).

    Args:
        attacks: Subset of ``("fgsm", "pgd")``.
        eps: L-inf budget in pixel units; default 8/255 for images, :data:`POINT_EPS` for
            non-image (e.g. 2-D) inputs.
        pgd_steps: PGD iterations.
        pgd_step_size: PGD step; default ``eps / 4`` (2/255 for eps 8/255).
        random_start: PGD starts from a uniform point of the eps-ball (seeded by ``seed``).
        strong: Also run the strong versions.
        sweep: More budgets to evaluate; with any, ``series`` holds accuracy against eps (``"x"``)
            for every ``"<m>/<attack>[_strong]"`` (the PGD step scales with eps).
        batch_size: See :class:`~distillscope.probes.base.Probe`.
        max_samples: See :class:`~distillscope.probes.base.Probe`.
        seed: See :class:`~distillscope.probes.base.Probe`.

    Values: ``"<m>/clean"``, ``"<m>/<attack>"`` and ``"<m>/<attack>_strong"`` for every model.
    """

    name = "adversarial"
    higher_is_better = True

    def __init__(
        self,
        attacks: Sequence[str] = ATTACKS,
        eps: float | None = None,
        pgd_steps: int = PGD_STEPS,
        pgd_step_size: float | None = None,
        random_start: bool = True,
        strong: bool = True,
        sweep: Sequence[float] = (),
        batch_size: int = 256,
        max_samples: int = 1000,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, max_samples, seed)
        if not attacks or any(a not in ATTACKS for a in attacks):
            raise ConfigError(
                f"adversarial.attacks={list(attacks)!r} is invalid; use a non-empty subset of "
                f"{', '.join(ATTACKS)}"
            )
        self.attacks = list(dict.fromkeys(attacks))
        self.eps = None if eps is None else check_positive("adversarial.eps", eps)
        self.pgd_steps = check_int("adversarial.pgd_steps", pgd_steps)
        self.pgd_step_size = (
            None
            if pgd_step_size is None
            else check_positive("adversarial.pgd_step_size", pgd_step_size)
        )
        self.random_start = bool(random_start)
        self.strong = bool(strong)
        self.sweep = [check_positive("adversarial.sweep", float(e)) for e in sweep]

    def run(self, models: Mapping[str, nn.Module], data: ProbeData, roles: Roles) -> ProbeResult:
        info = data.info
        eps = self.eps if self.eps is not None else (IMAGE_EPS if info.is_image else POINT_EPS)
        step = self.pgd_step_size if self.pgd_step_size is not None else eps * PGD_STEP_FRACTION
        temps = {m: float(roles.temperature.get(m, 1.0)) for m in models}
        variants = [""] + (["_strong"] if self.strong else [])
        keys = ["clean"] + [f"{a}{v}" for a in self.attacks for v in variants]
        sweep = sorted({*self.sweep, eps})
        with evaluating(models, models, data.device) as active:
            nets = {
                m: PixelSpaceModel(model, info.mean, info.std).eval() for m, model in active.items()
            }
            # What each attack differentiates: the model (weak) or its logits / T (strong). At
            # T = 1 strong == weak, so it is not recomputed; its value is copied below.
            targets = {
                (m, v): TemperatureScaled(net, temps[m]).eval() if v else net
                for m, net in nets.items()
                for v in variants
                if not (v and temps[m] == 1.0)
            }
            # clean accuracy does not depend on eps: counted at the main budget only
            accs = {
                e: self._accuracies(
                    nets, targets, data, e, step * e / eps, keys if e == eps else keys[1:]
                )
                for e in sweep
            }
        values: dict[str, float] = {}
        series: dict[str, list[float]] = {"x": sweep} if len(sweep) > 1 else {}
        for m in models:
            for k in keys:
                source = k.removesuffix("_strong") if temps[m] == 1.0 else k
                values[f"{m}/{k}"] = accs[eps][m, source]
                if series and k != "clean":
                    series[f"{m}/{k}"] = [accs[e][m, source] for e in sweep]
        params: dict[str, Any] = {
            **self.base_params(),
            "attacks": self.attacks,
            "eps": eps,
            "sweep": sweep,
            "pgd_steps": self.pgd_steps,
            "pgd_step_size": step,
            "random_start": self.random_start,
            "strong": self.strong,
            "temperatures": temps,
            "bounds": None if info.pixel_range is None else list(info.pixel_range),
            "n_samples": min(self.max_samples, len(data.dataset)),
        }
        return ProbeResult(self.name, values, series=series, params=params)

    def _accuracies(
        self,
        nets: Mapping[str, nn.Module],
        targets: Mapping[tuple[str, str], nn.Module],
        data: ProbeData,
        eps: float,
        step: float,
        keys: Sequence[str],
    ) -> dict[tuple[str, str], float]:
        """Accuracy of every (model, key) at one budget ``eps``; fixed-size counters only."""
        bounds = data.info.pixel_range
        correct = {(m, k): 0 for m in nets for k in keys}
        # One generator per (model, variant): each model meets the same random starts, whatever
        # the other models are.
        gens = {key: torch.Generator().manual_seed(self.seed) for key in targets}
        n = 0
        for batch in probe_batches(self, data):
            x = to_pixels(batch.inputs, data.info.mean, data.info.std)  # (B, ...) pixel space
            y = batch.targets  # (B,)
            if "clean" in keys:
                for m, net in nets.items():
                    correct[m, "clean"] += _n_correct(net, x, y)
            for (m, v), attacked in targets.items():
                for a in self.attacks:
                    if a == "fgsm":
                        x_adv = fgsm(attacked, x, y, eps, bounds)
                    else:
                        x_adv = pgd(
                            attacked,
                            x,
                            y,
                            eps,
                            step,
                            steps=self.pgd_steps,
                            random_start=self.random_start,
                            bounds=bounds,
                            generator=gens[m, v],
                        )
                    correct[m, f"{a}{v}"] += _n_correct(nets[m], x_adv, y)  # at T = 1
            n += len(batch)
        return {key: count / n for key, count in correct.items()}


@torch.no_grad()
def _n_correct(model: nn.Module, x: Tensor, y: Tensor) -> int:
    """How many of ``x`` the model classifies as ``y`` (at temperature 1)."""
    return int((model(x).argmax(1) == y).sum())
