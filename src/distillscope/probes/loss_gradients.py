"""Loss-gradient probe: the input gradient of each model's loss, drawn and compared."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Unpack

import torch
from torch import Tensor, nn

from distillscope.checks import check_int
from distillscope.data.base import DatasetInfo
from distillscope.functional.calibration import nll_logit_gradient
from distillscope.functional.similarity import flat_cosine
from distillscope.probes.base import Probe, ProbeData, ProbeParams, ProbeResult, Roles
from distillscope.probes.explained import pixel_image
from distillscope.probes.sampling import evaluating, probe_batches
from distillscope.registry import register_probe

__all__ = ["FIGURE_KEY", "N_IMAGES", "LossGradientProbe", "loss_input_gradient"]

#: Images drawn per model: 6, a few rows as in Tsipras et al.'s Fig. 2 and paper 000's Fig. 13.
N_IMAGES = 6
#: Key of the figure in ``ProbeResult.images``.
FIGURE_KEY = "loss_gradients"
#: Decimals kept of the drawn gradients, each divided by its largest absolute entry first.
DECIMALS = 3


def loss_input_gradient(model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
    """``grad_x CE(f(x), y)`` per sample, the cross-entropy of the true label, at temperature 1.

    Backpropagates ``softmax(z) - onehot(y)`` (:func:`~distillscope.functional.calibration.
    nll_logit_gradient`, computed so a confident model's gradient keeps its true-class term)
    through ``z = f(x)``; equal to autograd of ``cross_entropy(f(x), y, reduction="sum")``, whose
    samples do not mix in eval mode. The model's parameter gradients are not touched.

    Args:
        model: A network returning ``(B, K)`` logits, in eval mode.
        inputs: ``(B, ...)`` inputs.
        targets: ``(B,)`` true labels.

    Returns:
        ``(B, ...)`` detached gradients, shaped like ``inputs``.

    Example:
        >>> net = nn.Linear(2, 2, bias=False)
        >>> _ = net.weight.data.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        >>> loss_input_gradient(net, torch.zeros(1, 2), torch.tensor([0]))  # (p - e_0) W
        tensor([[-0.5000,  0.5000]])
    """
    with torch.enable_grad():
        x = inputs.detach().requires_grad_(True)
        z = model(x)  # (B, K)
        g = nll_logit_gradient(z.detach(), targets).to(z.dtype)  # (B, K) dCE/dz
        (grad,) = torch.autograd.grad(z, x, grad_outputs=g)  # (B, ...)
    return grad.detach()


@register_probe("loss_gradients")
class LossGradientProbe(Probe):
    """Input gradients of the loss for a fixed set of held-out images, for every model.

    Paper 000, section 5.3 and Figs. 8 and 13 (after Tsipras et al. 2019, "Robustness may be at
    odds with accuracy", section 4 and Fig. 2): the gradient of the cross-entropy of the true
    label with respect to the input pixels,

        g(x) = grad_x L(f(x), y) = J_f(x)^T (softmax(f(x)) - onehot(y)),

    shown for scratch and KD models; the paper reads KD's gradients as more aligned with the
    object (its edges, the strokes of a digit). The paper's result is the figure: the first
    ``n_images`` audited samples (chosen by ``seed``, the same for every model) in rows, the
    models in columns. Gradients are taken w.r.t. pixels: the dataset's normalisation is undone
    (``dL/dpixel_c = dL/dx_c / std_c``). Drawing follows Tsipras et al. (Fig. 2 caption): on one
    channel, signed with a diverging map (blue positive, red negative; the symmetric range
    ``+-max |g|`` of each panel is ours, they give none); on RGB, clipped to the mean +- 3
    standard deviations of the panel's entries and rescaled to ``[0, 1]``.

    The numbers are ours (the paper has none), over all audited samples:

        cosine(T, m) = 1/N sum_i <g_T(x_i), g_m(x_i)> / (||g_T(x_i)|| ||g_m(x_i)||)

    for every (teacher, model) pair, signed in ``[-1, 1]`` (:func:`~distillscope.functional.
    flat_cosine`; a gradient that is zero everywhere scores 0), and each model's mean gradient
    norm ``norm(m) = 1/N sum_i ||g_m(x_i)||_2``, which shrinks as the loss saturates.

    Args:
        n_images: Images drawn per model (6); at most ``max_samples`` are drawn.
        batch_size: See :class:`~distillscope.probes.base.Probe`.
        max_samples: See :class:`~distillscope.probes.base.Probe`.
        seed: See :class:`~distillscope.probes.base.Probe`.

    Values: ``"<t>-><m>/cosine"`` for every pair of ``roles.pairs()``, ``"<m>/norm"`` for every
    model. Images: ``images["loss_gradients"] = {"inputs": [...], "labels": [...],
    "gradients": {"<m>": [...]}}``: the drawn inputs in ``[0, 1]`` (``(H, W)`` or ``(H, W, 3)``),
    their class names and each model's gradients (same shapes), each divided by its largest
    absolute entry and rounded to 3 decimals (both displays are scale-free). Images are left out
    (``params["skipped"]["figure"]`` says why) for inputs that are not 1- or 3-channel images.
    """

    description = (
        "Input gradients of the cross-entropy of the true label (Tsipras et al. 2019), drawn "
        "for the same held-out images for every model (rows images, columns models): one-channel "
        "gradients signed (blue positive, red negative), RGB ones clipped to mean +- 3 std and "
        "rescaled, as Tsipras et al. do. Paper 000 reads KD's gradients as more aligned with the "
        "object than scratch's. The numbers are ours: cosine = mean over images of the cosine "
        "between the teacher's and the model's loss gradient (signed, in [-1, 1]); norm = the "
        "model's mean gradient L2 norm w.r.t. pixels."
    )
    paper = "000"

    higher_is_better = None

    def __init__(self, n_images: int = N_IMAGES, **base: Unpack[ProbeParams]) -> None:
        super().__init__(**base)
        self.n_images = check_int("loss_gradients.n_images", n_images)

    def run(self, models: Mapping[str, nn.Module], data: ProbeData, roles: Roles) -> ProbeResult:
        names = list(models)
        pairs = roles.pairs()
        params: dict[str, Any] = {**self.base_params(), "n_images": self.n_images}
        cosine = dict.fromkeys(pairs, 0.0)
        norm = dict.fromkeys(names, 0.0)
        reason = _figure_reason(data.info)
        figure: dict[str, Any] = {"inputs": [], "labels": [], "gradients": {m: [] for m in names}}
        n = 0
        with evaluating(models, names, data.device) as active:
            for batch in probe_batches(self, data):
                grads = {  # (B, C, ...) w.r.t. pixels
                    m: _to_pixels(loss_input_gradient(net, batch.inputs, batch.targets), data.info)
                    for m, net in active.items()
                }
                for m, g in grads.items():
                    norm[m] += float(g.flatten(1).double().norm(dim=1).sum())
                for t, m in pairs:
                    cosine[t, m] += float(flat_cosine(grads[t], grads[m]).double().sum())
                take = min(self.n_images - len(figure["labels"]), len(batch))
                if reason is None and take > 0:
                    _draw(figure, batch.inputs[:take], batch.targets[:take], grads, take, data)
                n += len(batch)
        values: dict[str, float] = {f"{t}->{m}/cosine": cosine[t, m] / n for t, m in pairs}
        values.update({f"{m}/norm": norm[m] / n for m in names})
        params["n_samples"] = n
        images: dict[str, Any] = {}
        if reason is None:
            images[FIGURE_KEY] = figure
            params["n_drawn"] = len(figure["labels"])
        else:
            params["skipped"] = {"figure": reason}
        return ProbeResult(self.name, values, params=params, images=images)


def _figure_reason(info: DatasetInfo) -> str | None:
    """Why the gradients cannot be drawn, or ``None`` when they can."""
    if not info.is_image:
        return "the inputs are not images"
    if info.input_shape[0] not in (1, 3):
        return f"images with {info.input_shape[0]} channels cannot be drawn; 1 or 3 can"
    return None


def _to_pixels(grad: Tensor, info: DatasetInfo) -> Tensor:
    """``dL/dpixel = dL/dx / std`` per channel for normalised images; others unchanged."""
    if not info.is_image or info.std is None:
        return grad
    std = torch.tensor(info.std, dtype=grad.dtype, device=grad.device)  # (C,)
    return grad / std.view(1, -1, *([1] * (grad.dim() - 2)))  # (B, C, H, W)


def _draw(
    figure: dict[str, Any],
    inputs: Tensor,
    targets: Tensor,
    grads: Mapping[str, Tensor],
    take: int,
    data: ProbeData,
) -> None:
    """Add the first ``take`` samples of a batch to the figure: input, label, gradients."""
    class_names = data.info.class_names
    for i in range(take):
        y = int(targets[i])
        figure["inputs"].append(pixel_image(inputs[i], data.info))
        figure["labels"].append(class_names[y] if y < len(class_names) else str(y))
        for m, g in grads.items():
            figure["gradients"][m].append(_panel(g[i]))


def _panel(grad: Tensor) -> list:
    """One ``(C, H, W)`` gradient as ``(H, W)`` or ``(H, W, 3)`` nested lists, divided by its
    largest absolute entry and rounded (the drawings are scale-free)."""
    g = grad.detach().to("cpu", torch.float64)  # (C, H, W)
    scale = float(g.abs().max())
    g = (g / scale if scale > 0 else g).round(decimals=DECIMALS)  # (C, H, W) in [-1, 1]
    return g[0].tolist() if g.shape[0] == 1 else g.permute(1, 2, 0).tolist()
