"""Token attributions against word labels: Integrated Gradients per token, scored by sign
agreement, AUROC and AUPRC (paper 000, 5.4 and appendix E.3)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Unpack

import torch
from captum.attr import LayerIntegratedGradients
from torch import Tensor, nn

from distillscope.checks import check_int
from distillscope.contracts import PAD_ID, UNK
from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.errors import ConfigError, ModelError
from distillscope.explain.attribution import IG_STEPS
from distillscope.functional.token_attribution import (
    TOKEN_METRICS,
    sentence_polarity,
    token_attribution_scores,
)
from distillscope.probes.base import Probe, ProbeData, ProbeParams, ProbeResult, Roles
from distillscope.probes.sampling import evaluating, probe_batches, probe_samples
from distillscope.registry import register_probe

__all__ = [
    "FIGURE_KEY",
    "N_SENTENCES",
    "TokenAttributionProbe",
    "embedding_module",
    "token_attributions",
]

#: Sentences drawn for every model: 4, a few rows, as the loss-gradient figure draws a few images.
N_SENTENCES = 4
#: Key of the figure in ``ProbeResult.images``.
FIGURE_KEY = "token_attribution"
#: Decimals kept of the drawn attributions, each sentence divided by its largest |a| first.
DECIMALS = 3


def _embedding_reason(model: nn.Module) -> str | None:
    """Why ``model`` has no usable ``embedding_layer``, or ``None`` when it has one."""
    layer = getattr(model, "embedding_layer", None)
    if layer is None:
        return (
            f"{type(model).__name__} has no embedding_layer; token attributions need the "
            "module whose output embeds the token ids (a text model)"
        )
    if isinstance(layer, nn.Module):
        return None
    if isinstance(layer, str):
        try:
            model.get_submodule(layer)
        except AttributeError:
            return f"{type(model).__name__}.embedding_layer = {layer!r} names no module"
        return None
    return f"{type(model).__name__}.embedding_layer must be a module or a module path"


def embedding_module(model: nn.Module) -> nn.Module:
    """The module ``model.embedding_layer`` names: the module itself, or its path in ``model``.

    Raises:
        ModelError: The model has none, or the path names no module.
    """
    reason = _embedding_reason(model)
    if reason is not None:
        raise ModelError(reason)
    layer = model.embedding_layer
    return layer if isinstance(layer, nn.Module) else model.get_submodule(layer)


def token_attributions(
    model: nn.Module,
    ids: Tensor,
    targets: Tensor,
    n_steps: int = IG_STEPS,
    internal_batch_size: int | None = None,
) -> Tensor:
    """``(B, L)`` Integrated Gradients of each token to the logit ``targets``, at the
    embedding layer (captum's ``LayerIntegratedGradients``, the tool paper 000 E.3 names).

    With ``e = E(ids)`` the embedding layer's output and ``e'`` its output on the baseline, every
    token replaced by :data:`~distillscope.contracts.PAD_ID` (Sundararajan et al. 2017, eq. 1,
    on the layer's output; captum's Gauss-Legendre points):

        IG_t = sum_d (e_td - e'_td) * integral_0^1 d z_c(e' + a (e - e')) / d e_td da,

    summed over the embedding dimension ``d`` (one number per token: the words are single
    tokens). Only the embedding's output is interpolated; the model still sees the real ids
    everywhere else (its attention mask, position embeddings), so padding gets exactly 0 and
    ``sum_t IG_t = z_c(e) - z_c(e')`` up to the quadrature error (completeness).

    Args:
        model: A text classifier ``(B, L)`` int64 ids -> ``(B, K)`` logits with an
            ``embedding_layer`` (:func:`embedding_module`), in eval mode.
        ids: ``(B, L)`` token ids.
        targets: ``(B,)`` the class explained (the probe: the true class).
        n_steps: Path points.
        internal_batch_size: Path points times sentences per forward pass (default: all).

    Returns:
        ``(B, L)`` detached attributions.

    Raises:
        ModelError: No embedding layer, or one whose output is not ``(B, L, ...)``.

    Example:
        >>> class Bag(nn.Module):  # logit c = sum_t <E[ids_t], w_c>: IG is exact
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.embedding_layer = nn.Embedding(4, 2, padding_idx=0)
        ...         self.head = nn.Linear(2, 2, bias=False)
        ...     def forward(self, ids):
        ...         return self.head(self.embedding_layer(ids).sum(1))
        >>> net = Bag()
        >>> ids = torch.tensor([[2, 3, 0]])
        >>> ig = token_attributions(net, ids, torch.tensor([1]), n_steps=4)
        >>> exact = net.embedding_layer(ids) @ net.head.weight[1]  # (1, 3)
        >>> torch.allclose(ig, exact, atol=1e-6), ig[0, 2].item()
        (True, 0.0)
    """
    layer = embedding_module(model)
    ig = LayerIntegratedGradients(model, layer)
    with torch.enable_grad():
        out = ig.attribute(
            ids,
            baselines=torch.full_like(ids, PAD_ID),
            target=targets.to(ids.device),
            n_steps=n_steps,
            internal_batch_size=internal_batch_size,
        )
    if not isinstance(out, Tensor) or out.dim() < 2 or tuple(out.shape[:2]) != tuple(ids.shape):
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ModelError(
            f"{type(model).__name__}.embedding_layer gives {shape} for ids of shape "
            f"{tuple(ids.shape)}; it must give (B, L, ...): one embedding per token"
        )
    return out.detach().flatten(2).sum(2)  # (B, L)


@register_probe("token_attribution")
class TokenAttributionProbe(Probe):
    """Integrated Gradients per token against the data's word labels, for every model.

    Paper 000, 5.4 (Table 5) and appendix E.3 (Table 13): BERT students trained from scratch and
    by KD on the Stanford Sentiment Treebank, whose words carry polarity labels; Integrated
    Gradients attributions (captum's ``LayerIntegratedGradients``) are scored, on the samples
    the model classifies correctly, by whether positive words get positive attributions and
    negative words negative ones in positive sentences, and the reverse in negative sentences.
    Here, per model:

    1. the audited samples (``max_samples`` of a ``seed``-ed permutation) it classifies
       correctly (top-1 = true class; ``params["n_correct"]``);
    2. their attributions to the true class, :func:`token_attributions` (IG at
       ``model.embedding_layer``, baseline: every token replaced by the padding id,
       ``n_steps`` Gauss-Legendre points, summed over the embedding dimension);
    3. the scores of :mod:`distillscope.functional.token_attribution` over the pooled labelled
       words of those samples: sign agreement (our reading of the tables' "Accuracy"), AUROC
       and AUPRC of the attribution (each sentence divided by its L2 norm with ``normalise``)
       as a score for "the word supports its sentence's class".

    Args:
        n_steps: Integrated Gradients path points (50, captum's default; the paper gives none).
        normalise: Divide each sentence's attributions by their L2 norm before AUROC and AUPRC
            (default true; see :func:`~distillscope.functional.token_attribution.
            attribution_auc`).
        n_sentences: Sentences drawn for every model (4); the first audited ones, the same for
            every model, drawn whether or not a model classifies them correctly.
        batch_size: See :class:`~distillscope.probes.base.Probe`; also the number of IG path
            points times sentences per forward pass.
        max_samples: See :class:`~distillscope.probes.base.Probe`.
        seed: See :class:`~distillscope.probes.base.Probe`.

    Values: ``"<m>"`` (sign agreement), ``"<m>/auroc"``, ``"<m>/auprc"`` for every model.
    Non-text data, data without word labels (``TensorDataset.token_labels``) or with an odd
    number of classes give no values; a model without ``embedding_layer``, without a correctly
    classified sample or labelled word is left out; AUROC and AUPRC are left out when the scored
    words are all of one kind: ``params["skipped"]`` says why, never an exception. Images:
    ``images["token_attribution"] = {"tokens": [[word, ...], ...], "labels": [class, ...],
    "word_labels": [[-1|0|1, ...], ...], "attributions": {"<m>": [[a, ...], ...]}, "correct":
    {"<m>": [bool, ...]}}``, padding left out, each sentence's attributions divided by their
    largest absolute value and rounded to 3 decimals.
    """

    description = (
        "Integrated Gradients per token (captum's LayerIntegratedGradients at the embedding "
        "layer, baseline: every token replaced by padding, attribution to the true class, summed "
        "over the embedding dimension) against the data's word polarity labels, on the samples "
        "each model classifies correctly: the share of labelled words whose attribution has the "
        "expected sign (positive words positive and negative words negative in a positive "
        "sentence, the reverse in a negative one; our reading of the paper's 'Accuracy'), and "
        "AUROC and AUPRC of the attribution as a score for 'the word supports the sentence's "
        "class' over the pooled labelled words. Pooling over words, the per-sentence L2 "
        "normalisation before AUROC/AUPRC and counting a zero attribution as a disagreement are "
        "this project's choices. The figure colours each word by its attribution: blue "
        "positive, red negative, each row scaled to its largest |attribution|."
    )
    paper = "000"
    text = True

    higher_is_better = True

    def __init__(
        self,
        n_steps: int = IG_STEPS,
        normalise: bool = True,
        n_sentences: int = N_SENTENCES,
        **base: Unpack[ProbeParams],
    ) -> None:
        super().__init__(**base)
        self.n_steps = check_int("token_attribution.n_steps", n_steps)
        if not isinstance(normalise, bool):
            raise ConfigError(
                f"token_attribution.normalise={normalise!r} is invalid; use true or false"
            )
        self.normalise = normalise
        self.n_sentences = check_int("token_attribution.n_sentences", n_sentences, minimum=0)

    def run(self, models: Mapping[str, nn.Module], data: ProbeData, roles: Roles) -> ProbeResult:
        params: dict[str, Any] = {
            **self.base_params(),
            "n_steps": self.n_steps,
            "baseline": "pad",
            "target": "ground_truth",
            "normalise": self.normalise,
            "n_sentences": self.n_sentences,
        }
        reason = _data_reason(data)
        if reason is not None:
            params["skipped"] = {"token_attribution": reason}
            return ProbeResult(self.name, {}, params=params)
        skipped = {m: r for m, net in models.items() if (r := _embedding_reason(net)) is not None}
        todo = [m for m in models if m not in skipped]
        if not todo:
            params["skipped"] = skipped
            return ProbeResult(self.name, {}, params=params)
        labels_all = probe_samples(data, self.max_samples, self.seed).token_labels  # (N, L)
        kept: dict[str, list[tuple[Tensor, Tensor, Tensor]]] = {m: [] for m in todo}
        figure = _Figure(data.info, todo)
        n = 0
        with evaluating(models, todo, data.device) as active:
            for batch in probe_batches(self, data):
                labels = labels_all[batch.index.cpu()]  # (B, L)
                polarity = sentence_polarity(batch.targets.cpu(), data.info.num_classes)  # (B,)
                drawn = torch.zeros(len(batch), dtype=torch.bool)
                drawn[: max(0, min(self.n_sentences - figure.size, len(batch)))] = True
                figure.add_sentences(
                    batch.inputs.cpu()[drawn], batch.targets.cpu()[drawn], labels[drawn]
                )
                for m in todo:
                    with torch.no_grad():
                        correct = (active[m](batch.inputs).argmax(1) == batch.targets).cpu()
                    need = correct | drawn  # (B,) explained: the scored and the drawn
                    if not bool(need.any()):
                        continue
                    attr = torch.zeros(labels.shape, dtype=torch.float64)  # (B, L)
                    attr[need] = token_attributions(
                        active[m],
                        batch.inputs[need.to(batch.inputs.device)],
                        batch.targets[need.to(batch.targets.device)],
                        self.n_steps,
                        internal_batch_size=self.batch_size,
                    ).to("cpu", torch.float64)
                    kept[m].append((attr[correct], labels[correct], polarity[correct]))
                    figure.add_model(m, attr[drawn], correct[drawn])
                n += len(batch)
        values: dict[str, float] = {}
        n_correct: dict[str, int] = {}
        n_words: dict[str, int] = {}
        for m in todo:
            n_correct[m] = sum(len(p) for _, _, p in kept[m])
            if n_correct[m] == 0:
                skipped[m] = "it classifies none of the audited samples correctly"
                continue
            attr, labels, polarity = (torch.cat(parts) for parts in zip(*kept[m]))
            scores = token_attribution_scores(attr, labels, polarity, self.normalise)
            n_words[m] = scores["n_words"]
            if scores["n_words"] == 0:
                skipped[m] = "its correctly classified samples have no labelled word"
                continue
            for metric in TOKEN_METRICS:
                key = m if metric == "agreement" else f"{m}/{metric}"
                if scores[metric] == scores[metric]:  # not NaN
                    values[key] = scores[metric]
                else:
                    skipped[key] = (
                        "the scored words all support (or all oppose) their sentence's class: "
                        f"{scores['n_supporting']} of {scores['n_words']} support it"
                    )
        params["n_samples"] = n
        params["n_correct"] = n_correct
        params["n_words"] = n_words
        images: dict[str, Any] = {}
        if figure.size:
            images[FIGURE_KEY] = figure.to_dict()
            params["n_drawn"] = figure.size
        if skipped:
            params["skipped"] = skipped
        return ProbeResult(self.name, values, params=params, images=images)


def _data_reason(data: ProbeData) -> str | None:
    """Why the probe cannot run on ``data``, or ``None`` when it can."""
    info = data.info
    if not info.is_text:
        return "token attributions need text data (token ids of a vocabulary)"
    labels = getattr(data.dataset, "token_labels", None)
    if not isinstance(data.dataset, TensorDataset) or labels is None:
        return (
            f"the dataset {info.name!r} has no word labels (token_labels); use a text dataset "
            "with word polarity labels, such as sst"
        )
    if tuple(labels.shape) != tuple(data.dataset.inputs.shape):
        return (
            f"the word labels {tuple(labels.shape)} do not match the token ids "
            f"{tuple(data.dataset.inputs.shape)}; give one label per token"
        )
    if info.num_classes < 2 or info.num_classes % 2:
        return (
            f"sentence polarity needs an even number of ordered classes (negative ones first), "
            f"{info.name!r} has {info.num_classes}"
        )
    return None


class _Figure:
    """The drawn sentences and every model's scaled attributions of them."""

    def __init__(self, info: DatasetInfo, models: list[str]) -> None:
        self.info = info
        self.tokens: list[list[str]] = []
        self.labels: list[str] = []
        self.word_labels: list[list[int]] = []
        self.attributions: dict[str, list[list[float]]] = {m: [] for m in models}
        self.correct: dict[str, list[bool]] = {m: [] for m in models}
        self.real: list[Tensor] = []  # per drawn sentence: (L,) bool, its non-padding tokens

    @property
    def size(self) -> int:
        return len(self.tokens)

    def add_sentences(self, ids: Tensor, targets: Tensor, labels: Tensor) -> None:
        vocab, names = self.info.vocab or (), self.info.class_names
        for row, y, lab in zip(ids.cpu(), targets.cpu().tolist(), labels):
            real = row != PAD_ID  # (L,)
            self.real.append(real)
            self.tokens.append([vocab[i] if i < len(vocab) else UNK for i in row[real].tolist()])
            self.labels.append(names[y] if y < len(names) else str(y))
            self.word_labels.append(lab[real].tolist())

    def add_model(self, model: str, attr: Tensor, correct: Tensor) -> None:
        start = len(self.attributions[model])
        for a, ok, real in zip(attr, correct.tolist(), self.real[start:]):
            a = a[real]  # (T,)
            top = float(a.abs().max()) if a.numel() else 0.0
            a = (a / top if top > 0 else a).round(decimals=DECIMALS)
            self.attributions[model].append(a.tolist())
            self.correct[model].append(bool(ok))

    def to_dict(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "labels": self.labels,
            "word_labels": self.word_labels,
            "attributions": self.attributions,
            "correct": self.correct,
        }
