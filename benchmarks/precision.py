"""Epoch time of training in bf16 (autocast) against fp32, on the CPU.

resnet8 and resnet20 trained with cross-entropy for one epoch on a Fashion-MNIST subset
(synthetic 28x28 images if it is not installed), batch 128, SGD, the same initial weights and
batch order, with ``train.precision`` fp32 and bf16. Ratios ``<model>_bf16_vs_fp32`` within one
run (never thresholds); one untimed warm-up round, ``--reps`` interleaved rounds, medians kept.

Usage: ``python benchmarks/precision.py [--n 3200] [--reps 3] [--threads 2]``
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from method_overhead import load_data  # noqa: E402
from rounds import image_bench_args, interleaved, write_result  # noqa: E402

from distillscope.config_train import TrainConfig  # noqa: E402
from distillscope.distill import build_loss  # noqa: E402
from distillscope.models import create_model  # noqa: E402
from distillscope.train import Trainer  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "precision.json"
MODELS = ("resnet8", "resnet20")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = image_bench_args(__doc__, DEFAULT_OUT, argv)
    data, source = load_data(args.n)
    torch.manual_seed(0)
    nets = {m: create_model(m, num_classes=10, in_channels=1) for m in MODELS}

    def epoch(model: str, precision: str) -> None:
        cfg = TrainConfig(epochs=1, batch_size=128, optimizer="sgd", lr=0.05, momentum=0.9,
                          schedule="constant", precision=precision)  # fmt: skip
        Trainer(copy.deepcopy(nets[model]), build_loss({"ce": {}}), cfg, progress=False,
                seed=0).fit(data)  # fmt: skip

    variants = {
        f"{m}_{p}": (lambda m=m, p=p: epoch(m, p)) for m in MODELS for p in ("fp32", "bf16")
    }
    times, med = interleaved(variants, args.reps)
    ratios = {f"{m}_bf16_vs_fp32": med[f"{m}_bf16"] / med[f"{m}_fp32"] for m in MODELS}
    setup = {"data": source, "train_images": len(data), "batch_size": 128, "models": MODELS,
             "reps": args.reps, "threads": args.threads}  # fmt: skip
    return write_result(args.out, "precision", setup, times, med, ratios)


if __name__ == "__main__":
    main()
