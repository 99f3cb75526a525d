"""Trainer overhead: the Trainer against a bare PyTorch loop, and KD's cost over scratch training.

Every variant trains the same small CNN for one epoch on the same synthetic 28x28 images in
the same batch order, from the same initial weights:

- ``bare``: a hand-written loop (forward, cross-entropy, backward, SGD step);
- ``trainer_ce``: :class:`~distillscope.train.Trainer` with the cross-entropy term;
- ``trainer_kd_cached``: the Trainer with KD against a :class:`TeacherCache`;
- ``trainer_kd_live``: the Trainer with KD against the live frozen teacher (reference only).

Repetitions are interleaved (the variant order rotates every round) after a warm-up round, and
the median per variant is kept, so drift and other processes' load hit all variants alike.

Usage: ``python benchmarks/trainer_overhead.py [--reps 5] [--threads 1] [--out FILE]``
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillscope.config_train import TrainConfig
from distillscope.contracts import Batch, Outputs
from distillscope.data.base import DatasetInfo, TensorDataset, iter_batches
from distillscope.train import TeacherCache, Trainer, epoch_generator

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "trainer_overhead.json"
TARGETS = {"trainer_vs_bare": 1.05, "kd_cached_vs_ce": 1.10}
NUM_CLASSES = 10
SEED = 0


class SmallCNN(nn.Module):
    """Fallback student: two 3x3 convolutions, max-pool, two linear layers (28x28 input)."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3), nn.ReLU(), nn.Conv2d(width, 2 * width, 3), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Sequential(
            nn.Linear(2 * width * 12 * 12, 128), nn.ReLU(), nn.Linear(128, 10)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))  # (B, 10)


class FallbackCE(nn.Module):
    """Cross-entropy term, used when ``distillscope.distill`` is not available."""

    needs_teacher = False

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        ce = F.cross_entropy(student.logits, batch.targets)  # ()
        return {"loss": ce, "ce/ce": ce}


class FallbackKD(nn.Module):
    """Hinton KD term (T=4, alpha=0.9), used when ``distillscope.distill`` is not available."""

    needs_teacher = True

    def forward(self, student: Outputs, teacher: Outputs | None, batch: Batch) -> dict[str, Tensor]:
        assert teacher is not None
        t, alpha = 4.0, 0.9
        log_p = F.log_softmax(student.logits / t, 1)  # (B, K)
        soft = F.kl_div(log_p, F.softmax(teacher.logits / t, 1), reduction="batchmean") * t * t
        hard = F.cross_entropy(student.logits, batch.targets)  # ()
        return {"loss": alpha * soft + (1 - alpha) * hard, "kd/soft": soft, "kd/hard": hard}


def build_parts() -> tuple[nn.Module, nn.Module, nn.Module, nn.Module, dict[str, str]]:
    """Student, teacher, CE and KD terms: the project's own if importable, else fallbacks."""
    used = {}
    try:
        from distillscope.models import create_model

        student = create_model("mnist_cnn", num_classes=NUM_CLASSES)
        used["student"] = "zoo:mnist_cnn"
    except Exception:  # the zoo is optional for this benchmark
        student = SmallCNN()
        used["student"] = "SmallCNN (script)"
    teacher = SmallCNN(width=64)
    used["teacher"] = "SmallCNN width 64 (script)"
    try:
        from distillscope.distill import create_loss

        ce, kd = create_loss("ce"), create_loss("kd", temperature=4.0, alpha=0.9)
        used["losses"] = "distillscope.distill ce, kd(T=4, alpha=0.9)"
    except Exception:  # the losses are optional for this benchmark
        ce, kd = FallbackCE(), FallbackKD()
        used["losses"] = "script fallbacks"
    return student, teacher, ce, kd, used


def synthetic_data(n: int) -> TensorDataset:
    """``n`` normalised random 28x28 grey images with random labels (fixed seed)."""
    g = torch.Generator().manual_seed(SEED)
    inputs = torch.randn(n, 1, 28, 28, generator=g)  # (N, 1, 28, 28)
    targets = torch.randint(0, NUM_CLASSES, (n,), generator=g)  # (N,)
    info = DatasetInfo("synthetic28", NUM_CLASSES, (1, 28, 28), [str(i) for i in range(10)])
    return TensorDataset(inputs, targets, info)


def bare_epoch(model: nn.Module, data: TensorDataset, cfg: TrainConfig) -> None:
    """The reference: forward, cross-entropy, backward, step over the Trainer's batches."""
    torch.manual_seed(SEED)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    model.train()
    for batch in iter_batches(data, cfg.batch_size, True, epoch_generator(SEED, 0)):
        loss = F.cross_entropy(model(batch.inputs), batch.targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def trainer_epoch(model: nn.Module, loss: nn.Module, data: TensorDataset, cfg: TrainConfig,
                  **kwargs: Any) -> None:  # fmt: skip
    Trainer(model, loss, cfg, progress=False, seed=SEED, **kwargs).fit(data)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="timed rounds (median kept)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--n", type=int, default=4096, help="number of images")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON result file")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    student, teacher, ce, kd, used = build_parts()
    teacher.eval()
    data = synthetic_data(args.n)
    cfg = TrainConfig(epochs=1, batch_size=args.batch_size, optimizer="sgd", lr=0.01,
                      momentum=0.9, weight_decay=0.0, schedule="constant")  # fmt: skip
    start = time.perf_counter()
    cache = TeacherCache.build(teacher, data, 512, "cpu", progress=False)
    cache_build = time.perf_counter() - start

    variants: dict[str, Callable[[nn.Module], None]] = {
        "bare": lambda m: bare_epoch(m, data, cfg),
        "trainer_ce": lambda m: trainer_epoch(m, ce, data, cfg),
        "trainer_kd_cached": lambda m: trainer_epoch(m, kd, data, cfg, teacher_cache=cache),
        "trainer_kd_live": lambda m: trainer_epoch(m, kd, data, cfg, teacher=teacher),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for round_ in range(args.warmup + args.reps):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            model = copy.deepcopy(student)
            start = time.perf_counter()
            variants[name](model)
            elapsed = time.perf_counter() - start
            if round_ >= args.warmup:
                times[name].append(elapsed)
        if round_ >= args.warmup:
            timings = ", ".join(f"{n}={times[n][-1]:.3f}s" for n in names)
            print(f"round {round_ + 1 - args.warmup}/{args.reps}: {timings}", flush=True)

    median = {name: statistics.median(values) for name, values in times.items()}
    steps = -(-args.n // args.batch_size)
    result = {
        "benchmark": "trainer_overhead",
        "ratios": {
            "trainer_vs_bare": median["trainer_ce"] / median["bare"],
            "kd_cached_vs_ce": median["trainer_kd_cached"] / median["trainer_ce"],
            "kd_live_vs_ce": median["trainer_kd_live"] / median["trainer_ce"],
        },
        "targets": TARGETS,
        "median_s": median,
        "times_s": times,
        "per_step_overhead_ms": 1e3 * (median["trainer_ce"] - median["bare"]) / steps,
        "teacher_cache_build_s": cache_build,
        "setup": {
            "images": args.n,
            "batch_size": args.batch_size,
            "steps_per_epoch": steps,
            "reps": args.reps,
            "warmup": args.warmup,
            "threads": args.threads,
            **used,
        },  # fmt: skip
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, args.out)
    for key, value in result["ratios"].items():
        target = TARGETS.get(key)
        verdict = "" if target is None else (" ok" if value <= target else f" ABOVE {target}")
        print(f"{key}: {value:.3f}{verdict}")
    print(f"per-step overhead: {result['per_step_overhead_ms']:.3f} ms; wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
