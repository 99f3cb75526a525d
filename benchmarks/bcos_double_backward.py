"""The e2KD explanation gradient of a B-cos student: fidelity to the authors' and step cost.

**Fidelity.** On fresh ``bcos_resnet8`` students (Fashion-MNIST shape, 10 classes; the targets
``W(x)`` and classes from a fresh ``bcos_resnet14`` teacher; random pixels; ``--seeds`` seeds,
train and eval mode) the gradient of ``explanation_loss(W_S(x), W_T(x))`` w.r.t. the
student's parameters is computed three ways:

- ``ours``: the zoo model as it is (:func:`~distillscope.models.bcos_layers.dynamic_product`);
- ``detached``: ``dynamic_product`` replaced by the detached product, i.e. the layers before
  issue 18 (the same ``W(x)``);
- ``reference``: ``dynamic_product`` replaced by a product written here from the e2KD authors'
  semantics (``_DynamicMultiplication`` in GoodTeachersExplain): the factor gets no gradient
  while a global flag is set, which is set only while ``W(x)`` is computed.

Reported: cosine and norm ratio of ``ours`` and ``detached`` against ``reference``. (That
``ours`` is the derivative of the loss is tested against central differences in float64,
``tests/models/test_bcos_gradient.py``.)

**Cost.** One e2KD step of the student's side (forward, ``W(x)`` with ``create_graph``, the
loss, backward, Adam step) for ``bcos_student: normal`` (ours, two passes) and ``explanation``
(the authors', one pass), each with our product and with the detached one (the cost before
issue 18: the same operations, no backward through the factors); the teacher's outputs are
computed once beforehand. ``--reps`` interleaved rounds of ``--steps`` steps at batch
``--batch``, medians; ratios ``*_vs_detached`` (the cost of the double backward through the
factors) and the authors' one pass against our two.

Usage: ``python benchmarks/bcos_double_backward.py [--seeds 3] [--reps 5] [--steps 5]
[--batch 32] [--threads 2] [--out PATH]``
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rounds import interleaved, write_result  # noqa: E402

from distillscope.contracts import Batch  # noqa: E402
from distillscope.data.base import DatasetInfo, TensorDataset  # noqa: E402
from distillscope.distill import build_loss  # noqa: E402
from distillscope.functional.explanation_metrics import explanation_loss  # noqa: E402
from distillscope.models import create_model  # noqa: E402
from distillscope.models.forward import forward_outputs  # noqa: E402
from distillscope.models.taps import FeatureTap  # noqa: E402
from distillscope.train.bind import bind_loss  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
FROZEN = {"on": False}  # the reference's state: set while W(x) is computed


class _ReferenceProduct(torch.autograd.Function):
    """The authors' semantics, from the maths: ``factor * x`` (or ``@``); the factor gets no
    gradient while ``FROZEN`` is on (read when the backward runs)."""

    @staticmethod
    def forward(ctx: Any, factor: Tensor, x: Tensor, matmul: bool) -> Tensor:
        ctx.save_for_backward(factor, x)
        ctx.matmul = matmul
        return factor @ x if matmul else factor * x

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor, None]:
        factor, x = ctx.saved_tensors
        if ctx.matmul:
            gx, gf = factor.transpose(-1, -2) @ grad, grad @ x.transpose(-1, -2)
        else:
            gx, gf = grad * factor, grad * x
        gf = None if FROZEN["on"] else gf.sum_to_size(factor.shape)
        return gf, gx.sum_to_size(x.shape), None


def reference_product(factor: Tensor, x: Tensor, owner: nn.Module, matmul: bool = False) -> Tensor:
    return _ReferenceProduct.apply(factor, x, matmul)


def detached_product(factor: Tensor, x: Tensor, owner: nn.Module, matmul: bool = False) -> Tensor:
    return factor.detach() @ x if matmul else factor.detach() * x


def with_product(product: Callable[..., Tensor] | None) -> Callable[[], None]:
    """Install ``product`` as the layers' dynamic product (``None``: ours); returns the undo."""
    from distillscope.models import bcos as bcos_models
    from distillscope.models import bcos_layers

    saved = bcos_layers.dynamic_product
    if product is not None:
        bcos_layers.dynamic_product = bcos_models.dynamic_product = product

    def undo() -> None:
        bcos_layers.dynamic_product = bcos_models.dynamic_product = saved

    return undo


def loss_gradient(student: nn.Module, x: Tensor, top1: Tensor, goal: Tensor, product) -> Tensor:
    undo = with_product(product)
    try:
        FROZEN["on"] = True
        w = student.dynamic_weights(x, top1, create_graph=True)
        FROZEN["on"] = False
        loss = explanation_loss(w, goal)
        grads = torch.autograd.grad(loss, list(student.parameters()), allow_unused=True)
    finally:
        FROZEN["on"] = False
        undo()
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(p)).flatten()
            for g, p in zip(grads, student.parameters(), strict=True)
        ]  # fmt: skip
    )


def compare(a: Tensor, b: Tensor) -> dict[str, float]:
    return {
        "cosine": F.cosine_similarity(a, b, dim=0).item(),
        "norm_ratio": (a.norm() / b.norm()).item(),
    }


def fidelity(seeds: int, batch: int) -> dict[str, Any]:
    cases = []
    for mode in ("train", "eval"):
        for seed in range(seeds):
            torch.manual_seed(seed)
            student = create_model("bcos_resnet8", num_classes=10, in_channels=1).train(
                mode == "train"
            )
            teacher = create_model("bcos_resnet14", num_classes=10, in_channels=1).eval()
            x = torch.rand(batch, 1, 28, 28)
            with torch.no_grad():
                top1 = teacher(x).argmax(1)
            goal = teacher.dynamic_weights(x, top1)
            grads = {
                name: loss_gradient(student, x, top1, goal, product)
                for name, product in (
                    ("ours", None),
                    ("detached", detached_product),
                    ("reference", reference_product),
                )
            }
            cases.append({
                "mode": mode,
                "seed": seed,
                "ours_vs_reference": compare(grads["ours"], grads["reference"]),
                "detached_vs_reference": compare(grads["detached"], grads["reference"]),
            })  # fmt: skip
            print(cases[-1])
    return {"cases": cases}


def timing(reps: int, steps: int, batch: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    torch.manual_seed(0)
    base = create_model("bcos_resnet8", num_classes=10, in_channels=1)
    teacher = create_model("bcos_resnet14", num_classes=10, in_channels=1).eval()
    x = torch.rand(batch, 1, 28, 28)
    targets = torch.arange(batch) % 10
    data = Batch(x, targets, torch.arange(batch))
    info = DatasetInfo("random", 10, (1, 28, 28), [str(k) for k in range(10)])
    variants = {}
    for mode in ("normal", "explanation"):
        for name, product in (("ours", None), ("detached", detached_product)):
            student = copy.deepcopy(base).train()
            loss = build_loss({"e2kd": {"bcos_student": mode}})
            bind_loss(loss, student, teacher, TensorDataset(x, targets, info), device="cpu")
            t_out = loss.explain_teacher(teacher, x)
            opt = torch.optim.Adam(student.parameters(), lr=1e-3)

            def run(student=student, loss=loss, t_out=t_out, opt=opt, product=product) -> None:
                undo = with_product(product)
                try:
                    for _ in range(steps):
                        with (
                            loss.student_context(student),
                            FeatureTap(student, loss.student_paths()) as tap,
                        ):
                            parts = loss(forward_outputs(student, x, tap), t_out, data)
                        opt.zero_grad(set_to_none=True)
                        parts["loss"].backward()
                        opt.step()
                finally:
                    undo()

            variants[f"e2kd_{mode}_{name}"] = run
    return interleaved(variants, reps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "bcos_double_backward.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    setup: dict[str, Any] = {
        "student": "bcos_resnet8",
        "teacher": "bcos_resnet14",
        "batch": args.batch,
        "steps": args.steps,
        "reps": args.reps,
        "threads": args.threads,
    }
    times, medians = timing(args.reps, args.steps, args.batch)
    ratios = {
        "normal_vs_detached": medians["e2kd_normal_ours"] / medians["e2kd_normal_detached"],
        "explanation_vs_detached": (
            medians["e2kd_explanation_ours"] / medians["e2kd_explanation_detached"]
        ),
        "authors_one_pass_vs_ours_two_passes": (
            medians["e2kd_explanation_ours"] / medians["e2kd_normal_ours"]
        ),
    }
    setup["fidelity"] = fidelity(args.seeds, args.batch)
    write_result(args.out, "bcos_double_backward", setup, times, medians, ratios)


if __name__ == "__main__":
    main()
