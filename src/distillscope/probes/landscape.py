"""Loss-landscape probes: active directions of a representation, and sharpness of the weights.

Paper 002 (IE-KD), section 4.7 and Fig. 4b/4c, audits a student by the number of "active
neurons" of a representation (after Cui et al. 2019) and by how fast its training loss rises
as Gaussian noise is added to its weights.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Unpack

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillscope.checks import check_int, check_range
from distillscope.errors import ConfigError, ModelError
from distillscope.functional.active_subspace import active_count, gradient_spectrum
from distillscope.functional.weight_noise import NOISE_MODES, curve_area, noise_direction
from distillscope.models.taps import check_module_paths
from distillscope.probes.base import Probe, ProbeData, ProbeParams, ProbeResult, Roles
from distillscope.probes.sampling import evaluating, probe_batches
from distillscope.registry import register_probe

__all__ = [
    "DEFAULT_SIGMAS",
    "SPECTRUM_POINTS",
    "ActiveNeuronsProbe",
    "SharpnessProbe",
    "default_layer",
]

#: How many leading eigenvalues the active-neurons series keeps per model.
SPECTRUM_POINTS = 128
#: Default noise scales of the sharpness sweep, per noise mode (ours; 0 is always added).
DEFAULT_SIGMAS = {
    "relative": (0.0, 0.05, 0.1, 0.15, 0.2, 0.25),
    "absolute": (0.0, 0.002, 0.004, 0.006, 0.008, 0.01),
}


def default_layer(model: nn.Module) -> tuple[str, bool]:
    """The representation audited when no layer is named: ``(module path, read its input)``.

    The last of ``model.feature_layers`` (the pooled penultimate feature of the zoo's CNNs and
    ViTs, the last hidden activation of its MLPs), read at its output; a model that declares
    none is read at the input of its last ``nn.Linear`` (the penultimate representation of a
    network with a linear head).

    Raises:
        ModelError: The model declares no feature layer and has no linear layer.
    """
    declared = list(getattr(model, "feature_layers", None) or [])
    if declared:
        return declared[-1], False
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear) and name]
    if not linears:
        raise ModelError(
            f"{type(model).__name__} declares no feature_layers and has no nn.Linear head; "
            "name the representation with active_neurons.layer"
        )
    return linears[-1], True


@contextmanager
def _gradient_point(model: nn.Module, path: str, on_input: bool) -> Iterator[list[Tensor]]:
    """Make the representation at ``path`` a leaf of the graph; yields the list it lands in.

    The module's output (or its first input) is replaced by a copy of a detached leaf that
    requires grad, so ``autograd.grad(loss, leaf)`` is the gradient with respect to the
    representation, and nothing before it is differentiated. A later in-place operation
    changes the copy, not the leaf.
    """
    module = check_module_paths(model, [path])[path]
    caught: list[Tensor] = []

    def leaf_of(value: Any) -> Tensor:
        if not isinstance(value, Tensor):
            raise ModelError(
                f"module {path!r} ({type(module).__name__}) passes {type(value).__name__}, not a "
                "tensor; name a layer whose output is a tensor in active_neurons.layer"
            )
        leaf = value.detach().requires_grad_(True)
        caught.append(leaf)
        return leaf.clone()

    def on_output(_m: nn.Module, _args: Any, output: Any) -> Tensor:
        return leaf_of(output)

    def on_args(_m: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (leaf_of(args[0]), *args[1:])

    handle = (
        module.register_forward_pre_hook(on_args)
        if on_input
        else module.register_forward_hook(on_output)
    )
    try:
        yield caught
    finally:
        handle.remove()


@register_probe("active_neurons")
class ActiveNeuronsProbe(Probe):
    """Number of active directions of a layer's representation for the classification loss.

    Paper 002 (IE-KD), section 4.7 and Fig. 4b, counts the "active neurons" of a
    representation, the number of directions to which the classification loss is sensitive,
    after Cui et al. 2019 ("Active subspace of neural networks: structural analysis and
    universal attacks"; paper 002's reference [6]). Here, with ``z_i`` the representation of
    held-out image ``x_i`` at ``layer``, flattened to ``D`` entries (a feature map
    ``(C, H, W)`` counts as ``D = C*H*W``; it is not pooled over positions), and
    ``l_i = CE(f(x_i), y_i)`` the per-sample cross-entropy in nats:

        g_i = d l_i / d z_i,    G = 1/N sum_i g_i g_i^T    (uncentred, D x D)
        k   = min{k : (lambda_1 + ... + lambda_k) / tr(G) >= share}

    with ``lambda_1 >= lambda_2 >= ...`` the eigenvalues of ``G``
    (:func:`~distillscope.functional.active_subspace.gradient_spectrum`, computed from the
    ``N x N`` Gram matrix when ``N < D``). ``k`` is invariant to a rotation of ``z``'s basis and
    at most ``min(N, D)``. The models run in eval mode, so batch normalisation uses its running
    statistics and each ``g_i`` depends on ``x_i`` alone.

    The threshold ``share`` is Cui et al.'s ``1 - epsilon``; paper 002 does not state the one
    it used, so the default 0.99 is ours, as are the default layer (:func:`default_layer`) and
    the held-out samples (the paper does not say which data it used).

    Args:
        layer: Module path of the representation in every probed model, read at its output;
            default (``None``): each model's :func:`default_layer`.
        share: Share of ``tr(G)`` the counted directions hold, in ``(0, 1]``.
        batch_size: See :class:`~distillscope.probes.base.Probe`.
        max_samples: See :class:`~distillscope.probes.base.Probe`; ``N``.
        seed: See :class:`~distillscope.probes.base.Probe`.

    Values: ``"<m>"`` (``k``) and ``"<m>/dim"`` (``D``). Series: ``"<m>/spectrum"``, the
    :data:`SPECTRUM_POINTS` largest ``lambda_i / tr(G)``, and ``"<m>/captured"``, their
    cumulative sums. Params: ``layers`` (model -> module path read, ``"<path> (input)"`` for the
    input of a module), ``n_samples``; ``skipped`` names a model whose loss gradient is 0 at
    every sample (no direction is active).
    """

    description = (
        "Number of active directions ('active neurons') of a layer's representation: the "
        "count of leading eigenvalues of the second moment of the per-sample cross-entropy "
        "gradient with respect to the flattened representation that hold a share of its trace "
        "(params share). More active directions = a less redundant representation. Cui et al. "
        "2019 define the count; the share 0.99, the default layer (the last declared feature "
        "layer, else the input of the linear head) and the held-out samples are ours. Series: "
        "the normalised eigenvalues and their cumulative share."
    )
    paper = "002"

    higher_is_better = None

    def __init__(
        self,
        layer: str | None = None,
        share: float = 0.99,
        **base: Unpack[ProbeParams],
    ) -> None:
        super().__init__(**base)
        if layer is not None and (not isinstance(layer, str) or not layer):
            raise ConfigError(
                f"active_neurons.layer={layer!r} is invalid; use a module path such as 'pool'"
            )
        self.layer = layer
        self.share = check_range("active_neurons.share", share, 0.0, 1.0, low_open=True)

    def check_models(self, models: Mapping[str, nn.Module], roles: Roles) -> None:
        """A named ``layer`` must be a module of every model."""
        if self.layer:
            for model in models.values():
                check_module_paths(model, [self.layer])

    def run(self, models: Mapping[str, nn.Module], data: ProbeData, roles: Roles) -> ProbeResult:
        values: dict[str, float] = {}
        series: dict[str, list[float]] = {}
        layers: dict[str, str] = {}
        skipped: dict[str, str] = {}
        n = 0
        with evaluating(models, models, data.device) as active:
            for m, model in active.items():
                path, on_input = (self.layer, False) if self.layer else default_layer(model)
                layers[m] = f"{path} (input)" if on_input else path
                grads = self._gradients(model, path, on_input, data)  # (N, D)
                n = len(grads)
                spectrum = gradient_spectrum(grads)  # (min(N, D),)
                total = float(spectrum.sum())
                values[f"{m}/dim"] = float(grads.shape[1])
                if total <= 0.0:
                    skipped[m] = "the loss gradient is 0 at every sample"
                    continue
                values[m] = float(active_count(spectrum, self.share))
                normalised = spectrum[:SPECTRUM_POINTS] / total
                series[f"{m}/spectrum"] = normalised.tolist()
                series[f"{m}/captured"] = torch.cumsum(normalised, 0).tolist()
        params: dict[str, Any] = {
            **self.base_params(),
            "layer": self.layer,
            "share": self.share,
            "layers": layers,
            "n_samples": n,
            "x_label": {
                "spectrum": "eigenvalue index (0 = largest)",
                "captured": "eigenvalue index (0 = largest)",
            },
        }
        if skipped:
            params["skipped"] = skipped
        return ProbeResult(self.name, values, series=series, params=params)

    def _gradients(self, model: nn.Module, path: str, on_input: bool, data: ProbeData) -> Tensor:
        """``(N, D)`` float64 per-sample gradients of the cross-entropy at the representation."""
        rows: list[Tensor] = []
        with _gradient_point(model, path, on_input) as caught, torch.enable_grad():
            for batch in probe_batches(self, data):
                caught.clear()
                logits = model(batch.inputs)  # (B, K)
                if not caught:
                    raise ModelError(
                        f"module {path!r} of {type(model).__name__} did not run in its forward "
                        "pass; name another layer in active_neurons.layer"
                    )
                loss = F.cross_entropy(logits.double(), batch.targets, reduction="sum")
                (grad,) = torch.autograd.grad(loss, caught[-1])  # (B, ...)
                rows.append(grad.detach().reshape(len(grad), -1).to("cpu", torch.float64))
        return torch.cat(rows)


@register_probe("sharpness")
class SharpnessProbe(Probe):
    """Cross-entropy as Gaussian noise of growing scale is added to the weights.

    Paper 002 (IE-KD), section 4.7 and Fig. 4c, compares how fast the training loss of an
    IE-KD and an independent student rises "as we increase the scale of Gaussian noise added
    to model parameters" (flat minima rise slowly, citing Keskar et al. 2017 and Chaudhari et
    al. 2019). For every ``sigma`` of the sweep (0 always included) and ``draws`` directions
    ``d_1..d_draws``:

        L(sigma) = 1/draws sum_j 1/N sum_i CE(f(x_i; theta + sigma d_j), y_i)     (nats)

    The same directions serve every ``sigma`` (common random numbers: the curve is smooth in
    ``sigma``), drawn from ``seed`` independently for each model
    (:func:`~distillscope.functional.weight_noise.noise_direction`):

    - ``noise: relative`` (default): filter-normalised directions after Li et al. 2018
      ("Visualizing the loss landscape of neural nets"): each filter of a weight (one output
      channel or unit) gets Gaussian noise of its own norm, one-dimensional parameters (biases,
      normalisation) none, so ``sigma`` is a fraction of each filter's norm. The default because
      absolute noise measures the weights' scale as much as the minimum's flatness: a network
      with batch normalisation computes the same function with its filters rescaled, and then
      a fixed ``sigma`` perturbs it more or less; models of different sizes (teacher, student)
      compare only under relative noise.
    - ``noise: absolute``: every parameter entry gets ``N(0, sigma^2)``; paper 002 does not say
      which scale its noise had, and this is the literal reading of its sentence.

    The loss is measured on the probe's held-out samples (``data``), not on training data as
    in paper 002: a probe sees the held-out split only. On held-out data the clean loss
    already includes the generalisation gap; the rise is what this probe is about. The models
    run in eval mode (batch normalisation uses its running statistics, which the noise does not
    touch). Every parameter is restored bit for bit after the probe.

    As our summary, ``auc`` is the mean loss rise over the sweep,
    ``1/sigma_max int_0^sigma_max (L(sigma) - L(0)) d sigma`` by the trapezoid rule
    (:func:`~distillscope.functional.weight_noise.curve_area`): 0 for a flat curve, larger for
    a sharper minimum. Neither direction is marked better: flatness is a proxy for
    generalisation, not a property a model should maximise.

    Args:
        noise: ``"relative"`` or ``"absolute"``.
        sigmas: Noise scales of the sweep, each ``>= 0``; default :data:`DEFAULT_SIGMAS` of
            the mode (ours).
        draws: Directions averaged per scale.
        batch_size: See :class:`~distillscope.probes.base.Probe`.
        max_samples: See :class:`~distillscope.probes.base.Probe`.
        seed: See :class:`~distillscope.probes.base.Probe`; also seeds the directions.

    Values: ``"<m>"`` (``auc``) and ``"<m>/clean_loss"`` (``L(0)``). Series: ``"x"`` (the
    scales) and ``"<m>/loss"`` (``L(sigma)``).
    """

    text = True

    description = (
        "Cross-entropy on held-out samples as Gaussian noise of scale sigma is added to the "
        "weights, averaged over a few random directions (the same for every sigma), as a curve "
        "against sigma; the value is our summary, the mean loss rise over the sweep (0 = flat). "
        "Default noise 'relative': each filter perturbed in proportion to its norm (filter "
        "normalisation, Li et al. 2018), biases and normalisation parameters untouched; "
        "'absolute': N(0, sigma^2) on every weight. Paper 002 measured the training loss; the "
        "probe uses the held-out split it is given. Models in eval mode, weights restored "
        "exactly."
    )
    paper = "002"

    higher_is_better = None

    def __init__(
        self,
        noise: str = NOISE_MODES[0],
        sigmas: Sequence[float] | None = None,
        draws: int = 3,
        **base: Unpack[ProbeParams],
    ) -> None:
        super().__init__(**base)
        if not isinstance(noise, str) or noise not in NOISE_MODES:
            raise ConfigError(
                f"sharpness.noise={noise!r} is unknown; use one of {', '.join(NOISE_MODES)}"
            )
        self.noise = noise
        if sigmas is not None and not isinstance(sigmas, (list, tuple)):
            raise ConfigError(
                f"sharpness.sigmas={sigmas!r} is invalid; use a list of finite numbers >= 0"
            )
        given = DEFAULT_SIGMAS[noise] if sigmas is None else sigmas
        checked = [check_range("sharpness.sigmas", s, 0.0, math.inf, high_open=True) for s in given]
        self.sigmas = sorted({0.0, *checked})
        if len(self.sigmas) < 2:
            raise ConfigError(
                f"sharpness.sigmas={list(given)!r} has no scale > 0; add at least one"
            )
        self.draws = check_int("sharpness.draws", draws)

    def run(self, models: Mapping[str, nn.Module], data: ProbeData, roles: Roles) -> ProbeResult:
        values: dict[str, float] = {}
        series: dict[str, list[float]] = {"x": list(self.sigmas)}
        with evaluating(models, models, data.device) as active:
            for m, model in active.items():
                curve = self._curve(model, data)
                series[f"{m}/loss"] = curve
                values[m] = curve_area(self.sigmas, curve)
                values[f"{m}/clean_loss"] = curve[0]
        params: dict[str, Any] = {
            **self.base_params(),
            "noise": self.noise,
            "sigmas": list(self.sigmas),
            "draws": self.draws,
            "split": "held-out (the probe's data)",
            "n_samples": min(self.max_samples, len(data.dataset)),
            "x_label": f"sigma ({self.noise} weight noise)",
        }
        return ProbeResult(self.name, values, series=series, params=params)

    @torch.no_grad()
    def _curve(self, model: nn.Module, data: ProbeData) -> list[float]:
        """``L(sigma)`` for every sigma of the sweep; the weights are restored exactly."""
        params = list(model.parameters())
        saved = [p.detach().clone() for p in params]
        generator = torch.Generator().manual_seed(self.seed)
        clean = self._loss(model, data)  # sigma = 0, the first of the sorted sweep
        sums = [0.0] * (len(self.sigmas) - 1)
        try:
            for _ in range(self.draws):
                direction = noise_direction(saved, self.noise, generator)
                for s, sigma in enumerate(self.sigmas[1:]):
                    for p, w, d in zip(params, saved, direction):
                        p.copy_(w + sigma * d)
                    sums[s] += self._loss(model, data)
        finally:
            for p, w in zip(params, saved):
                p.copy_(w)
        return [clean, *(total / self.draws for total in sums)]

    def _loss(self, model: nn.Module, data: ProbeData) -> float:
        """Mean cross-entropy of ``model`` over the probe's samples, in nats."""
        total, n = 0.0, 0
        for batch in probe_batches(self, data):
            logits = model(batch.inputs)  # (B, K)
            total += float(F.cross_entropy(logits.double(), batch.targets, reduction="sum"))
            n += len(batch)
        return total / n
