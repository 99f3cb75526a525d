"""Unseen domains and shape bias: consensus on shifted images, decisions on cue conflicts.

Both probes redraw the held-out images on the fly with :mod:`distillscope.data.domain_shifts`: the
inputs are un-normalised to pixels (``DatasetInfo.mean/std``), transformed to RGB, brought back
to the models' channel count (luminance for one channel) and normalised again. The object
masks are the dataset's own (``TensorDataset.masks``) when it has them, else the pixels whose
luminance exceeds ``foreground_threshold`` (objects on a dark background).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Unpack

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillscope.attacks.temperature import to_pixels
from distillscope.checks import check_range
from distillscope.data.base import DatasetInfo
from distillscope.data.domain_shifts import (
    DOMAINS,
    MASK_THRESHOLD,
    apply_domain,
    cue_conflict,
    object_masks,
    to_channels,
    to_rgb,
)
from distillscope.data.textures import PATTERNS, class_textures, conflict_labels
from distillscope.errors import ConfigError
from distillscope.probes.base import Probe, ProbeData, ProbeParams, ProbeResult, Roles
from distillscope.probes.explained import check_choice
from distillscope.probes.sampling import evaluating, forward_all, probe_batches, probe_samples
from distillscope.registry import register_probe

__all__ = [
    "CUE_CONFLICT",
    "EXTRA_DOMAINS",
    "ORIGINAL",
    "PAPER_DOMAINS",
    "DomainConsensusProbe",
    "ShapeBiasProbe",
]

#: The untransformed held-out images, the seen domain (paper 003 Table 7's "ImageNet val").
ORIGINAL = "original"
#: Each object filled with the texture of another class (Geirhos et al.'s cue conflict).
CUE_CONFLICT = "cue_conflict"
#: Paper 003 4.4's unseen domains (Geirhos et al. 2021's sketch, stylized, edge, silhouette,
#: cue conflict), redrawn at CPU scale: the default of ``domain_consensus``.
PAPER_DOMAINS = ("sketch", "stylised", "edges", "silhouette", CUE_CONFLICT)
#: Domains of ours, not the paper's (opt in by naming them): colour and natural backgrounds.
EXTRA_DOMAINS = tuple(d for d in DOMAINS if d not in PAPER_DOMAINS)
#: Where the object masks come from: the dataset's when it has them, else bright pixels; or
#: always the bright pixels.
MASK_SOURCES = ("auto", "foreground")
#: Largest side of the example images stored for the report (larger ones are pooled down).
EXAMPLE_SIZE = 64


class _DomainProbe(Probe):
    """Shared knobs and plumbing of the two probes (masks, pixels, model inputs)."""

    def __init__(
        self,
        mask_source: str = "auto",
        foreground_threshold: float = MASK_THRESHOLD,
        examples: bool = True,
        **base: Unpack[ProbeParams],
    ) -> None:
        super().__init__(**base)
        self.mask_source = check_choice(f"{self.name}.mask_source", mask_source, MASK_SOURCES)
        self.foreground_threshold = check_range(
            f"{self.name}.foreground_threshold", foreground_threshold, 0.0, 1.0, high_open=True
        )
        if not isinstance(examples, bool):
            raise ConfigError(f"{self.name}.examples={examples!r} is invalid; use true or false")
        self.examples = examples

    def common_params(self) -> dict[str, Any]:
        return {
            **self.base_params(),
            "mask_source": self.mask_source,
            "foreground_threshold": self.foreground_threshold,
        }

    @staticmethod
    def data_reason(info: DatasetInfo) -> str | None:
        """Why the probe cannot run on data described by ``info``, or ``None``."""
        if not info.is_image or info.input_shape[0] not in (1, 3):
            return "domain shifts need 1- or 3-channel images"
        if info.pixel_range != (0.0, 1.0):
            return "domain shifts need images whose pixels lie in [0, 1]"
        return None

    def batches(self, data: ProbeData) -> Any:
        """``(batch, pixels (B, C, H, W) in [0, 1], masks (B, H, W))`` over the audited samples."""
        samples = probe_samples(data, self.max_samples, self.seed)
        dataset_masks = getattr(samples, "masks", None) if self.mask_source == "auto" else None
        for batch in probe_batches(self, data):
            pixels = to_pixels(batch.inputs, data.info.mean, data.info.std).clamp(0, 1)
            masks = (
                dataset_masks[batch.index.cpu()].to(pixels.device)
                if dataset_masks is not None
                else object_masks(pixels, self.foreground_threshold)
            )  # (B, H, W)
            yield batch, pixels, masks

    @staticmethod
    def model_inputs(rgb: Tensor, info: DatasetInfo) -> Tensor:
        """RGB pixels -> the models' normalised inputs with their own channel count."""
        x = to_channels(rgb, info.input_shape[0])  # (B, C, H, W)
        if info.mean is None or info.std is None:
            return x
        mean = torch.tensor(info.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(info.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std


def _example(rgb: Tensor) -> list:
    """One ``(3, H, W)`` image as an ``(H, W, 3)`` nested list, pooled to at most 64 pixels."""
    x = to_rgb(rgb[None].detach().to("cpu", torch.float32))  # (1, 3, H, W)
    if max(x.shape[-2:]) > EXAMPLE_SIZE:
        h, w = x.shape[-2:]
        scale = EXAMPLE_SIZE / max(h, w)
        x = F.adaptive_avg_pool2d(x, (max(1, round(h * scale)), max(1, round(w * scale))))
    return (x[0].permute(1, 2, 0).clamp(0, 1) * 1000).round().div(1000).tolist()


@register_probe("domain_consensus")
class DomainConsensusProbe(_DomainProbe):
    """Accuracy per domain and teacher-student top-1 consensus on unseen domains.

    Paper 003, 4.4 ("Does knowledge about unseen domains get distilled?"): "we take an image
    from an unseen domain and see how frequently the student's and teacher's class predictions
    match for it (regardless of whether the predicted label is correct or incorrect), which we
    call the consensus score", on Geirhos et al.'s sketch, stylized, edge, silhouette and
    cue-conflict images. By default we audit those five, redrawn at CPU scale
    (:data:`PAPER_DOMAINS`; :mod:`distillscope.data.domain_shifts`; ``cue_conflict``: each
    object filled with the texture of another class, as the ``shape_bias`` probe's images);
    colour and natural-photo backgrounds are ours, audited only when named in ``domains``.
    For a domain ``d`` with transform ``D_d`` (all seeded by ``seed``, the same images for
    every model):

        consensus_d(T, S) = 1/N sum_i 1[argmax T(D_d(x_i)) = argmax S(D_d(x_i))]
        acc_d(f) = 1/N sum_i 1[argmax f(D_d(x_i)) = y_i]

    ``original`` is the untransformed held-out split (the seen domain). Summary values (ours):
    ``"<m>"`` = mean accuracy and ``"<t>-><m>"`` = mean consensus over the shifted domains
    (all but ``original``).

    Args:
        domains: Domains to audit: ``original``, ``cue_conflict`` and keys of
            :data:`~distillscope.data.domain_shifts.DOMAINS`; default: ``original`` and the
            paper's five (:data:`PAPER_DOMAINS`).
        mask_source: ``auto`` (default: the dataset's masks, else bright pixels) or
            ``foreground`` (always bright pixels).
        foreground_threshold: Luminance in ``[0, 1)`` above which a pixel is object (0.1).
        examples: Store the first audited image in every domain for the report (default true).
        batch_size: See :class:`~distillscope.probes.base.Probe`.
        max_samples: See :class:`~distillscope.probes.base.Probe`.
        seed: See :class:`~distillscope.probes.base.Probe`.

    Values: ``"<m>/<domain>"`` accuracy, ``"<t>-><m>/<domain>"`` consensus for the pairs of
    ``roles.pairs()``, and the summaries above. Series: ``"x"`` = domain index,
    ``"<m>/accuracy"`` and ``"<t>-><m>/consensus"`` per domain; ``params["x_ticks"]`` names
    the domains.
    """

    description = (
        "Accuracy of each model and teacher-student top-1 consensus (share of images on which "
        "their predictions match, right or wrong) on the held-out images redrawn in the paper's "
        "unseen domains: sketches, stylised (texture-swapped) objects, edge maps, silhouettes "
        "and cue conflicts (object filled with another class's texture); original = the seen "
        "domain. Colour and natural-photo backgrounds are ours, audited when named. Paper 003 "
        "finds distillation raises consensus on unseen domains. Our domains are CPU-scale "
        "redrawings (the paper uses Geirhos et al.'s ImageNet sets); the main value (mean over "
        "the shifted domains) is ours."
    )
    paper = "003"

    higher_is_better = True

    def __init__(
        self,
        domains: Sequence[str] | None = None,
        mask_source: str = "auto",
        foreground_threshold: float = MASK_THRESHOLD,
        examples: bool = True,
        **base: Unpack[ProbeParams],
    ) -> None:
        super().__init__(mask_source, foreground_threshold, examples, **base)
        known = (ORIGINAL, *PAPER_DOMAINS, *EXTRA_DOMAINS)  # every domain we can draw
        chosen = [ORIGINAL, *PAPER_DOMAINS] if domains is None else domains
        if isinstance(chosen, str) or not isinstance(chosen, Sequence) or not chosen:
            raise ConfigError(
                f"domain_consensus.domains={domains!r} is invalid; use a non-empty list of "
                f"{', '.join(known)}"
            )
        for name in chosen:
            if name not in known:
                raise ConfigError(
                    f"domain_consensus.domains has {name!r}; use names among {', '.join(known)}"
                )
        if len(set(chosen)) != len(chosen):
            raise ConfigError(f"domain_consensus.domains={list(chosen)!r} repeats a domain")
        self.domains = list(chosen)

    def run(self, models: Mapping[str, nn.Module], data: ProbeData, roles: Roles) -> ProbeResult:
        params: dict[str, Any] = {**self.common_params(), "domains": self.domains}
        reason = self.data_reason(data.info)
        k = data.info.num_classes
        if reason is None and CUE_CONFLICT in self.domains and k < 2:
            reason = "cue conflicts need at least two classes; leave cue_conflict out of domains"
        if reason is not None:
            params["skipped"] = {"domain_consensus": reason}
            return ProbeResult(self.name, {}, params=params)
        d = len(self.domains)
        pairs = [(t, m) for t, m in roles.pairs() if t in models and m in models]
        correct = {m: torch.zeros(d) for m in models}
        agree = {pair: torch.zeros(d) for pair in pairs}
        generator = torch.Generator().manual_seed(self.seed)
        images: dict[str, Any] = {}
        n = 0
        with evaluating(models, models, data.device) as active:
            for batch, pixels, masks in self.batches(data):
                y = batch.targets.cpu()
                for j, name in enumerate(self.domains):
                    if name == ORIGINAL:
                        rgb, inputs = pixels, batch.inputs
                    else:
                        if name == CUE_CONFLICT:
                            rgb = _cue_conflicts(pixels, masks, y, k, generator)
                        else:
                            rgb = apply_domain(name, pixels, generator, masks)  # (B, 3, H, W)
                        inputs = self.model_inputs(rgb, data.info)
                    if self.examples and n == 0:
                        images[name] = _example(rgb[0])
                    preds = {m: z.argmax(1).cpu() for m, z in forward_all(active, inputs).items()}
                    for m, p in preds.items():
                        correct[m][j] += float((p == y).sum())
                    for (t, m), total in agree.items():
                        total[j] += float((preds[t] == preds[m]).sum())
                n += len(batch)
        shifted = [j for j, name in enumerate(self.domains) if name != ORIGINAL]
        values: dict[str, float] = {}
        series: dict[str, list[float]] = {"x": [float(j) for j in range(d)]}
        for key, sums, metric in [
            *((m, correct[m], "accuracy") for m in models),
            *((f"{t}->{m}", agree[(t, m)], "consensus") for t, m in pairs),
        ]:
            rates = (sums / max(n, 1)).tolist()
            if shifted:
                values[key] = sum(rates[j] for j in shifted) / len(shifted)
            values.update({f"{key}/{name}": rate for name, rate in zip(self.domains, rates)})
            series[f"{key}/{metric}"] = rates
        params.update(x_ticks=list(self.domains), x_label="domain", n_samples=n)
        return ProbeResult(self.name, values, series=series, params=params, images=images)


def _cue_conflicts(
    pixels: Tensor, masks: Tensor, y: Tensor, k: int, generator: torch.Generator
) -> Tensor:
    """``(B, 3, H, W)``: each object filled with the texture of another class, uniformly drawn
    (as the ``shape_bias`` probe draws its cue conflicts)."""
    h, w = pixels.shape[-2:]
    textures = class_textures(conflict_labels(y, k, generator), k, h, w, generator)
    return cue_conflict(pixels, masks, textures.to(pixels.device))


@register_probe("shape_bias")
class ShapeBiasProbe(_DomainProbe):
    """Shape bias on cue-conflict images: shape decisions / (shape + texture decisions).

    Paper 003, appendix C.3, after Geirhos et al. (2019; model-vs-human toolbox): on images
    whose shape (content) is of class A and texture (style) of class B != A, "the task is to
    see what fraction of correct decisions are based on shape vs. texture information":

        shape_bias(f) = sum_i 1[f(x_i) = A_i] / sum_i (1[f(x_i) = A_i] + 1[f(x_i) = B_i])

    Our cue-conflict images (:func:`~distillscope.data.domain_shifts.cue_conflict`): each held-out
    image's object mask (its class A) filled with the texture of a class B drawn uniformly
    among the others (:func:`~distillscope.data.textures.conflict_labels`, seeded by ``seed``);
    the texture of class k of K is pattern ``k % 6`` tinted with hue ``k / K``
    (:mod:`distillscope.data.textures`), the association ``textured-fashion`` trains with. A
    model never shown that association makes texture decisions only by chance. Paper 003 uses
    Geirhos's ImageNet cue-conflict set and a Stylized-ImageNet teacher (shape bias ~0.81)
    against a ResNet-18 student (~0.21).

    Args:
        mask_source: ``auto`` (default: the dataset's masks, else bright pixels) or
            ``foreground`` (always bright pixels).
        foreground_threshold: Luminance in ``[0, 1)`` above which a pixel is object (0.1).
        examples: Store the first two cue-conflict images for the report (default true).
        batch_size: See :class:`~distillscope.probes.base.Probe`.
        max_samples: See :class:`~distillscope.probes.base.Probe`.
        seed: See :class:`~distillscope.probes.base.Probe`.

    Values: ``"<m>"`` shape bias; ``"<m>/shape"`` and ``"<m>/texture"`` the shares of all
    cue-conflict images decided by shape and by texture; ``"<t>-><m>/diff"`` (ours) =
    ``shape_bias(m) - shape_bias(t)`` for the pairs of ``roles.pairs()``. A model with no shape
    and no texture decision has no shape bias (``params["skipped"]``).
    """

    description = (
        "Shape bias on cue-conflict images (each object's shape filled with the texture tied to "
        "another class): shape decisions / (shape + texture decisions); shape and texture: the "
        "shares of images decided by each cue. Paper 003 finds a shape-biased teacher raises "
        "its student's shape bias. Ours: masked texture fills instead of style transfer, "
        "class textures that only models trained on them (textured-fashion) know, and "
        "diff = student's shape bias minus its teacher's."
    )
    paper = "003"

    higher_is_better = None

    def run(self, models: Mapping[str, nn.Module], data: ProbeData, roles: Roles) -> ProbeResult:
        params: dict[str, Any] = {**self.common_params(), "texture_patterns": list(PATTERNS)}
        k = data.info.num_classes
        reason = self.data_reason(data.info)
        if reason is None and k < 2:
            reason = "cue conflicts need at least two classes"
        if reason is not None:
            params["skipped"] = {"shape_bias": reason}
            return ProbeResult(self.name, {}, params=params)
        shape = {m: 0 for m in models}
        texture = {m: 0 for m in models}
        generator = torch.Generator().manual_seed(self.seed)
        images: dict[str, Any] = {}
        n = 0
        with evaluating(models, models, data.device) as active:
            for batch, pixels, masks in self.batches(data):
                a = batch.targets.cpu()  # (B,) shape classes
                b = conflict_labels(a, k, generator)  # (B,) texture classes
                h, w = pixels.shape[-2:]
                textures = class_textures(b, k, h, w, generator)  # (B, 3, H, W)
                rgb = cue_conflict(pixels, masks, textures.to(pixels.device))
                if self.examples and n == 0:
                    names = data.info.class_names
                    for i in range(min(2, len(a))):
                        title = f"shape {names[int(a[i])]} / texture {names[int(b[i])]}"
                        images[title] = _example(rgb[i])
                inputs = self.model_inputs(rgb, data.info)
                for m, z in forward_all(active, inputs).items():
                    p = z.argmax(1).cpu()  # (B,)
                    shape[m] += int((p == a).sum())
                    texture[m] += int((p == b).sum())
                n += len(batch)
        values: dict[str, float] = {}
        skipped: dict[str, str] = {}
        for m in models:
            decided = shape[m] + texture[m]
            if decided:
                values[m] = shape[m] / decided
            else:
                skipped[m] = "no shape and no texture decision on the cue-conflict images"
            values[f"{m}/shape"] = shape[m] / max(n, 1)
            values[f"{m}/texture"] = texture[m] / max(n, 1)
        for t, m in roles.pairs():
            if t in values and m in values:
                values[f"{t}->{m}/diff"] = values[m] - values[t]
        params["n_samples"] = n
        if skipped:
            params["skipped"] = skipped
        return ProbeResult(self.name, values, params=params, images=images)
