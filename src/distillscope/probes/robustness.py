"""Robustness probes: accuracy under weak and strong (temperature-scaled) attacks."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Unpack

import torch
from torch import Tensor, nn

from distillscope.attacks.carlini import CW_SEARCH_STEPS, CW_STEPS, cw_l2
from distillscope.attacks.deepfool import DEEPFOOL_OVERSHOOT, DEEPFOOL_STEPS, deepfool
from distillscope.attacks.gradient import (
    IMAGE_EPS,
    PGD_STEP_FRACTION,
    PGD_STEPS,
    fgsm_sweep,
    pgd,
)
from distillscope.attacks.l2 import IFGSM_STEPS, ifgsm, pgd_l2
from distillscope.attacks.temperature import PixelSpaceModel, TemperatureScaled, to_pixels
from distillscope.checks import check_int, check_positive, check_range
from distillscope.data.base import DatasetInfo
from distillscope.errors import ConfigError
from distillscope.probes.base import Probe, ProbeData, ProbeParams, ProbeResult, Roles
from distillscope.probes.sampling import evaluating, probe_batches
from distillscope.registry import register_probe

__all__ = [
    "ATTACKS",
    "BUDGET_ATTACKS",
    "DEFAULT_ATTACKS",
    "IMAGE_L2_EPS",
    "MINIMAL_ATTACKS",
    "POINT_EPS",
    "AdversarialProbe",
]

#: Attacks the probe knows.
ATTACKS = ("fgsm", "pgd", "ifgsm", "pgd_l2", "cw_l2", "deepfool")
#: Attacks bounded by a budget (``eps``; ``l2_eps`` for PGD-L2, scaled with ``eps`` in a sweep).
BUDGET_ATTACKS = ("fgsm", "pgd", "ifgsm", "pgd_l2")
#: Minimal-perturbation attacks: no budget; the mean L2 norm of their successes is reported.
MINIMAL_ATTACKS = ("cw_l2", "deepfool")
#: L2 budget of PGD-L2 on images in pixel units: 0.5, the CIFAR-10 L2 standard (RobustBench).
IMAGE_L2_EPS = 0.5
#: Attacks run unless the config names others: DeepFool is opt-in (see the probe's docstring).
DEFAULT_ATTACKS = ("fgsm", "pgd")
#: L-inf budget on unbounded 2-D points: 0.3, about 4% of the toy ring's extent (8 units, paper
#: 004 5.1), the share 8/255 is of the [0, 1] pixel range.
POINT_EPS = 0.3


@register_probe("adversarial")
class AdversarialProbe(Probe):
    """Top-1 accuracy under FGSM, PGD and (opt-in) DeepFool, each weak and strong ("CW").

    Paper 004 (Trustworthy Distillation?), section 4.2: weak attacks use the model's logits
    ``z``; strong ones ``z / T_train`` (Carlini & Wagner), which undoes the gradient masking of
    models trained at a high temperature. Accuracy is always measured on the model at ``T = 1``:

        acc_attack(f) = 1/N sum_i 1[argmax f(A(g, x_i, y_i)) = y_i],  g = f (weak) or f/T (strong)

    FGSM: one step of size eps; PGD: ``pgd_steps`` steps of ``pgd_step_size`` from a random
    start, projected to the L-inf eps-ball (eps 8/255, the usual CIFAR-10 budget, paper 003
    4.2; step 2/255; 10 steps, ours: a common setting at a CPU cost). Both ascend the
    cross-entropy, whose gradient vanishes on saturated softmaxes.

    DeepFool (Moosavi-Dezfooli et al. 2016; :func:`~distillscope.attacks.deepfool.deepfool`,
    ``deepfool_steps = 50``, ``deepfool_overshoot = 0.02``) is a minimal-perturbation attack:
    it has no budget and walks every sample across its nearest linearised boundary. Paper 004
    reports it that way (torchattacks' DeepFool, no eps; a few % accuracy left on CIFAR-10,
    Figure 5), so ``eps`` and ``sweep`` do not apply to it and it has no series. It fools
    almost every sample by construction (only those that resist ``deepfool_steps`` steps, or
    whose gradients vanish, stay correct), so its accuracy says little by itself; the probe also
    reports, as our addition (the paper gives no norms), the mean L2 norm in pixel (or input)
    units of the perturbations that fooled the samples the model had classified correctly:

        deepfool_l2(f) = mean_{i: f(x_i) = y_i, f(x'_i) != y_i} ||x'_i - x_i||_2

    (higher = a larger perturbation was needed). DeepFool reads logits, not the softmax, so its
    strong form differs from the weak one only through its ``1e-4`` push (scaled by ``T``):
    expect ``deepfool_strong`` close to ``deepfool``, as in the paper's Figure 5.

    DeepFool is opt-in (``attacks: [fgsm, pgd, deepfool]``; paper 004 ran all three, so configs
    that reproduce it name it): it costs up to 50 steps of one forward and ``K`` backward passes
    each, far more than PGD's 10, and the quickstart must stay fast; the weak/strong contrast
    the probe exists to show lives in FGSM and PGD.

    Attacks run in pixel space: inputs are un-normalised with ``DatasetInfo.mean/std``, clamped
    to ``pixel_range`` (unclamped when it is None), and the model is wrapped with the
    normalisation. ``T_train`` is ``roles.temperature[m]`` (default 1, where strong = weak and
    the weak value is reported for both).

    Attacking 2-D toy points (non-image inputs, eps :data:`POINT_EPS`) is this project's
    extension: paper 004 attacked CIFAR-10 and TSRD only.

    I-FGSM (paper 003 appendix B: ``ifgsm_steps = 5`` signed steps of ``eps / 5`` from the clean
    input, in the L-inf ball), PGD-L2 (``pgd_steps`` normalised-gradient steps of
    ``l2_eps / 4`` in the L2 ball of radius ``l2_eps``) and Carlini-Wagner L2 (``cw_steps`` Adam
    steps per value of ``c``, ``cw_search_steps`` rounds of binary search; no budget, like
    DeepFool: its mean L2 norm of successful perturbations is reported as ``cw_l2_l2``) are
    opt-in (:mod:`distillscope.attacks.l2`, :mod:`distillscope.attacks.carlini`).

    Args:
        attacks: Subset of :data:`ATTACKS`; default :data:`DEFAULT_ATTACKS`.
        eps: L-inf budget of FGSM and PGD in pixel units; default 8/255 for images,
            :data:`POINT_EPS` for non-image (e.g. 2-D) inputs.
        pgd_steps: PGD iterations.
        pgd_step_size: PGD step; default ``eps / 4`` (2/255 for eps 8/255).
        random_start: PGD starts from a uniform point of the eps-ball (seeded by ``seed``).
        ifgsm_steps: I-FGSM iterations ``k``.
        l2_eps: L2 budget of PGD-L2 in pixel units; default :data:`IMAGE_L2_EPS` for images,
            :data:`POINT_EPS` for points.
        cw_steps: Carlini-Wagner's Adam steps per ``c``.
        cw_search_steps: Carlini-Wagner's binary-search rounds.
        deepfool_steps: DeepFool's maximum iterations per sample.
        deepfool_overshoot: DeepFool's overshoot past the boundary.
        strong: Also run the strong versions.
        sweep: More budgets to evaluate; with any, ``series`` holds accuracy against eps (``"x"``)
            for every ``"<m>/<attack>[_strong]"`` of FGSM and PGD (the PGD step scales with eps).
            Needs FGSM or PGD among the attacks.
        batch_size: See :class:`~distillscope.probes.base.Probe`.
        max_samples: See :class:`~distillscope.probes.base.Probe`.
        seed: See :class:`~distillscope.probes.base.Probe`.

    Values: ``"<m>/clean"``, ``"<m>/<attack>"`` and ``"<m>/<attack>_strong"`` for every model;
    with DeepFool also ``"<m>/deepfool_l2"`` and ``"<m>/deepfool_strong_l2"`` (left out, with the
    reason in ``params["skipped"]``, when DeepFool fooled no sample of that model).
    """

    description = (
        "Accuracy on clean inputs and under FGSM and PGD (L-inf budget eps) and DeepFool "
        "(values <m>/deepfool, <m>/deepfool_strong: the smallest step across the linearised "
        "nearest boundary, 50 steps, overshoot 0.02) attacks; the strong variants attack the "
        "logits divided by the model's training temperature, undoing gradient masking. Paper 004 "
        "attacks CIFAR-10 and TSRD images; attacking 2-D toy points (the decision-map data) is "
        "this project's extension. Opt-in: I-FGSM (5 steps), PGD-L2 and Carlini-Wagner L2 "
        "(<m>/cw_l2_l2: mean L2 norm of its successes). Series, if any: accuracy against the "
        "attack budget eps."
    )
    paper = "004"

    higher_is_better = True

    def __init__(
        self,
        attacks: Sequence[str] = DEFAULT_ATTACKS,
        eps: float | None = None,
        pgd_steps: int = PGD_STEPS,
        pgd_step_size: float | None = None,
        random_start: bool = True,
        deepfool_steps: int = DEEPFOOL_STEPS,
        deepfool_overshoot: float = DEEPFOOL_OVERSHOOT,
        ifgsm_steps: int = IFGSM_STEPS,
        l2_eps: float | None = None,
        cw_steps: int = CW_STEPS,
        cw_search_steps: int = CW_SEARCH_STEPS,
        strong: bool = True,
        sweep: Sequence[float] = (),
        **base: Unpack[ProbeParams],
    ) -> None:
        super().__init__(**base)
        if (
            not isinstance(attacks, (list, tuple))
            or not attacks
            or any(a not in ATTACKS for a in attacks)
        ):
            raise ConfigError(
                f"adversarial.attacks={attacks!r} is invalid; use a non-empty list, a subset of "
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
        self.deepfool_steps = check_int("adversarial.deepfool_steps", deepfool_steps)
        self.deepfool_overshoot = check_range(
            "adversarial.deepfool_overshoot", deepfool_overshoot, 0.0, math.inf, high_open=True
        )
        self.ifgsm_steps = check_int("adversarial.ifgsm_steps", ifgsm_steps)
        self.l2_eps = None if l2_eps is None else check_positive("adversarial.l2_eps", l2_eps)
        self.cw_steps = check_int("adversarial.cw_steps", cw_steps)
        self.cw_search_steps = check_int("adversarial.cw_search_steps", cw_search_steps)
        self.strong = bool(strong)
        if not isinstance(sweep, (list, tuple)):
            raise ConfigError(
                f"adversarial.sweep={sweep!r} is invalid; use a list of finite numbers > 0"
            )
        self.sweep = [check_positive("adversarial.sweep", e) for e in sweep]
        if self.sweep and not any(a in BUDGET_ATTACKS for a in self.attacks):
            raise ConfigError(
                f"adversarial.sweep={list(sweep)!r} needs a budgeted attack "
                f"({', '.join(BUDGET_ATTACKS)}) in adversarial.attacks (DeepFool and CW have "
                "no budget); add one or drop the sweep"
            )

    def run(self, models: Mapping[str, nn.Module], data: ProbeData, roles: Roles) -> ProbeResult:
        info = data.info
        eps = self._main_eps(info.is_image)
        step = self.pgd_step_size if self.pgd_step_size is not None else eps * PGD_STEP_FRACTION
        temps = {m: float(roles.temperature.get(m, 1.0)) for m in models}
        variants = [""] + (["_strong"] if self.strong else [])
        keys = ["clean"] + [f"{a}{v}" for a in self.attacks for v in variants]
        budget_keys = [f"{a}{v}" for a in self.attacks if a in BUDGET_ATTACKS for v in variants]
        sweep = sorted({*self.sweep, eps})
        # clean accuracy and DeepFool/CW do not depend on eps: run at the main budget only
        budgets = {e: keys if e == eps else budget_keys for e in sweep}
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
            accs, norms = self._accuracies(nets, targets, data, budgets, eps, step)
        values: dict[str, float] = {}
        skipped: dict[str, str] = {}
        series: dict[str, list[float]] = {"x": sweep} if len(sweep) > 1 else {}
        for m in models:
            for k in keys:
                source = k.removesuffix("_strong") if temps[m] == 1.0 else k
                values[f"{m}/{k}"] = accs[eps, m, source]
                if series and k in budget_keys:
                    series[f"{m}/{k}"] = [accs[e, m, source] for e in sweep]
                if k.startswith(MINIMAL_ATTACKS):
                    if norms.get((m, source)) is None:
                        attack = k.removesuffix("_strong")
                        skipped[f"{m}/{k}_l2"] = f"{attack} fooled no correctly classified sample"
                    else:
                        values[f"{m}/{k}_l2"] = norms[m, source]
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
        if "ifgsm" in self.attacks:
            params["ifgsm_steps"] = self.ifgsm_steps
        if "pgd_l2" in self.attacks:
            params["l2_eps"] = self._l2_eps(info.is_image)
        if "cw_l2" in self.attacks:
            params["cw_steps"] = self.cw_steps
            params["cw_search_steps"] = self.cw_search_steps
        if "deepfool" in self.attacks:
            params["deepfool_steps"] = self.deepfool_steps
            params["deepfool_overshoot"] = self.deepfool_overshoot
            params["deepfool_budget"] = (
                "unbounded (minimal perturbation); eps and sweep do not apply"
            )
        if skipped:
            params["skipped"] = skipped
        return ProbeResult(self.name, values, series=series, params=params)

    def _main_eps(self, is_image: bool) -> float:
        return self.eps if self.eps is not None else (IMAGE_EPS if is_image else POINT_EPS)

    def _l2_eps(self, is_image: bool) -> float:
        return self.l2_eps if self.l2_eps is not None else (IMAGE_L2_EPS if is_image else POINT_EPS)

    def _accuracies(
        self,
        nets: Mapping[str, nn.Module],
        targets: Mapping[tuple[str, str], nn.Module],
        data: ProbeData,
        budgets: Mapping[float, Sequence[str]],
        eps: float,
        step: float,
    ) -> tuple[dict[tuple[float, str, str], float], dict[tuple[str, str], float | None]]:
        """Accuracy of every (budget, model, key) in one pass over the batches.

        Args:
            nets: The models at ``T = 1`` in pixel space.
            targets: What each (model, variant) attack differentiates.
            data: The held-out split.
            budgets: Each L-inf budget -> the keys evaluated at it.
            eps: The main budget (PGD's step and PGD-L2's budget scale with ``budget / eps``).
            step: PGD's step at the main budget.

        What does not depend on the budget runs once per batch: the clean pass, and FGSM's
        gradient (:func:`~distillscope.attacks.gradient.fgsm_sweep`). Each (budget, model,
        variant) has its own generator seeded with ``seed``, so every budget draws the random
        starts it would draw alone, whatever the other models and budgets are. Fixed-size
        counters only.

        Returns:
            The accuracies, and for DeepFool and CW keys (main budget) the mean L2 norm of the
            perturbations that fooled a correctly classified sample (None when there was none).
        """
        info = data.info
        main = budgets[eps]
        correct = {(e, m, k): 0 for e, keys in budgets.items() for m in nets for k in keys}
        norm_sum = {(m, k): 0.0 for m in nets for k in main if k.startswith(MINIMAL_ATTACKS)}
        norm_n = dict.fromkeys(norm_sum, 0)
        gens = {
            (e, *key): torch.Generator().manual_seed(self.seed) for e in budgets for key in targets
        }
        n = 0
        for batch in probe_batches(self, data):
            x = to_pixels(batch.inputs, info.mean, info.std)  # (B, ...) pixel space
            y = batch.targets  # (B,)
            clean_ok: dict[str, Tensor] = {}
            if "clean" in main:
                for m, net in nets.items():
                    clean_ok[m] = _correct(net, x, y)  # (B,)
                    correct[eps, m, "clean"] += int(clean_ok[m].sum())
            for (m, v), attacked in targets.items():
                for a in self.attacks:
                    key = f"{a}{v}"
                    todo = [e for e, keys in budgets.items() if key in keys]
                    if a == "fgsm":
                        adversarial = fgsm_sweep(attacked, x, y, todo, info.pixel_range)
                    else:
                        adversarial = [
                            self._attack(a, attacked, x, y, e, eps, step, info, gens[e, m, v])
                            for e in todo
                        ]
                    for e, x_adv in zip(todo, adversarial):
                        adv_ok = _correct(nets[m], x_adv, y)  # (B,) at T = 1
                        correct[e, m, key] += int(adv_ok.sum())
                        if a in MINIMAL_ATTACKS:
                            fooled = clean_ok[m] & ~adv_ok  # (B,)
                            dist = (x_adv - x).flatten(1).norm(dim=1)  # (B,)
                            norm_sum[m, key] += float(dist[fooled].double().sum())
                            norm_n[m, key] += int(fooled.sum())
            n += len(batch)
        accs = {key: count / n for key, count in correct.items()}
        norms = {
            key: total / norm_n[key] if norm_n[key] else None for key, total in norm_sum.items()
        }
        return accs, norms

    def _attack(
        self,
        attack: str,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        budget: float,
        eps: float,
        step: float,
        info: DatasetInfo,
        generator: torch.Generator,
    ) -> Tensor:
        """``(B, ...)`` adversarial inputs of one attack other than FGSM at one ``budget``
        (PGD's ``step`` at the main budget ``eps`` and PGD-L2's budget scale with it)."""
        bounds = info.pixel_range
        if attack == "ifgsm":
            return ifgsm(model, x, y, budget, steps=self.ifgsm_steps, bounds=bounds)
        if attack == "cw_l2":
            return cw_l2(model, x, y, bounds=bounds, steps=self.cw_steps,
                         search_steps=self.cw_search_steps)  # fmt: skip
        if attack == "deepfool":
            return deepfool(model, x, y, steps=self.deepfool_steps,
                            overshoot=self.deepfool_overshoot, bounds=bounds)  # fmt: skip
        if attack == "pgd_l2":
            l2_eps = self._l2_eps(info.is_image) * budget / eps
            return pgd_l2(model, x, y, l2_eps, l2_eps * PGD_STEP_FRACTION, steps=self.pgd_steps,
                          random_start=self.random_start, bounds=bounds,
                          generator=generator)  # fmt: skip
        return pgd(model, x, y, budget, step * budget / eps, steps=self.pgd_steps,
                   random_start=self.random_start, bounds=bounds, generator=generator)  # fmt: skip


@torch.inference_mode()
def _correct(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """``(B,)`` whether the model classifies each of ``x`` as ``y`` (at temperature 1)."""
    return model(x).argmax(1) == y
