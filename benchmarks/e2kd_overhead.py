"""What e2KD's explanations cost per step, live and frozen, against plain KD on the same pair.

Pair and data as ``method_overhead.py`` (resnet20 teacher, resnet8 student, Fashion-MNIST
subset or synthetic 28x28 images), with random crop (pad 2) so that frozen explanations must
be moved with each image. One epoch per variant, same initial weights and batch order:

- ``kd_live``: ``kd`` (tau 5, alpha 1) with the teacher run every step;
- ``kd_frozen``: ``kd`` with the teacher's logits cached once per image (``teacher_cache:
  frozen``);
- ``e2kd_live``: ``e2kd`` (tau 5, alpha 1, lambda 1); every step explains the teacher (a
  forward with autograd and a backward to its last block) and the student (double backprop);
- ``e2kd_frozen``: ``e2kd`` with the teacher's logits and maps cached once per image and
  moved with each batch's crop draw (paper 001 3.3);
- ``cache_build`` / ``cache_build_explained``: building the logit cache and the cache with
  explanations;
- ``kd_frozen_default_layout`` / ``e2kd_frozen_channels_last``: the two frozen variants in the
  other memory layout (``train.channels_last`` ``off`` / ``on``). Under ``auto`` KD's student
  trains channels-last on the CPU and e2KD's, whose loss reads a feature, in the default layout
  (:mod:`distillscope.train.layout`), so ``e2kd_frozen_vs_kd_frozen`` compares two layouts as
  well as the two losses; these two compare the losses alone. ``on`` changes float rounding
  (other convolution kernels), not the method.

With ``--bcos`` the pair is ``bcos_resnet14`` -> ``bcos_resnet8`` (B-cos explanations: the
dynamic weights ``W(x)``) trained with Adam, and one more variant, ``e2kd_live_authors``: the
student trained in explanation mode in one pass (``bcos_student: explanation``, the authors'
code) against our default second explanation pass, and ``e2kd_frozen_authors``, the same with
frozen teacher explanations (results in ``e2kd_overhead_bcos.json``).

Ratios (paper-independent goals from the issue): ``e2kd_live_vs_kd_live`` (goal <= 2),
``e2kd_frozen_vs_kd_live`` (goal <= 1.2; also against ``kd_frozen``) and
``cache_build_explained_vs_plain``; in one layout:
``e2kd_frozen_vs_kd_frozen_default_layout`` and ``e2kd_frozen_channels_last_vs_kd_frozen``.
One untimed warm-up round, ``--reps`` interleaved rounds, medians kept; ratios within one run,
never thresholds. Beside the wall times, each variant's process CPU time (``cpu_s``,
``cpu_ratios``: the same ratios), which a busy machine moves far less than the wall time (with
``--threads 1``; more threads add their waiting).

Usage: ``python benchmarks/e2kd_overhead.py [--n 3200] [--reps 3] [--threads 2] [--bcos]``
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from method_overhead import load_data, networks, trainer_epoch  # noqa: E402
from rounds import interleaved, write_result  # noqa: E402

from distillscope.config_train import TrainConfig  # noqa: E402
from distillscope.data.base import TensorDataset  # noqa: E402
from distillscope.data.vision import RandomCropFlip  # noqa: E402
from distillscope.distill import build_loss  # noqa: E402
from distillscope.models import create_model  # noqa: E402
from distillscope.train import TeacherCache  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
KD = {"kd": {"temperature": 5.0, "alpha": 1.0}}
E2KD = {"e2kd": {"temperature": 5.0, "alpha": 1.0, "explanation_weight": 1.0}}
E2KD_AUTHORS = {"e2kd": {**E2KD["e2kd"], "bcos_student": "explanation"}}


def bcos_networks(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[Any, Any]:
    """An (untrained) B-cos teacher and student: timing does not depend on the weights."""
    torch.manual_seed(0)
    common = {"num_classes": 10, "in_channels": 1, "input_mean": mean, "input_std": std}
    teacher = create_model("bcos_resnet14", **common).eval()
    return teacher, create_model("bcos_resnet8", **common)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3200, help="training images")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bcos", action="store_true", help="B-cos pair and explanations")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    out = args.out or RESULTS / ("e2kd_overhead_bcos.json" if args.bcos else "e2kd_overhead.json")
    torch.set_num_threads(args.threads)
    plain, source = load_data(args.n)
    fill = tuple(-m / s for m, s in zip(plain.info.mean or (0.0,), plain.info.std or (1.0,)))
    data = TensorDataset(plain.inputs, plain.targets, plain.info, RandomCropFlip(2, fill=fill))
    cfg = TrainConfig(epochs=1, batch_size=128, optimizer="sgd", lr=0.05, momentum=0.9,
                      weight_decay=5e-4, schedule="constant")  # fmt: skip
    if args.bcos:
        cfg = TrainConfig(epochs=1, batch_size=128, optimizer="adam", lr=1e-3, weight_decay=0.0,
                          schedule="constant")  # fmt: skip
        mean, std = plain.info.mean or (0.0,), plain.info.std or (1.0,)
        teacher, student0 = bcos_networks(tuple(mean), tuple(std))
    else:
        teacher, student0 = networks()
    layout_off = cfg.model_copy(update={"channels_last": "off"})
    layout_on = cfg.model_copy(update={"channels_last": "on"})
    e2kd_loss = build_loss(E2KD)
    e2kd_loss.attach(student0, teacher)
    explain = e2kd_loss.explain_teacher

    def build(explained: bool) -> TeacherCache:
        return TeacherCache.build(teacher, data, 512, "cpu", progress=False,
                                  explain=explain if explained else None)  # fmt: skip

    logit_cache, explained_cache = build(False), build(True)

    def fresh() -> torch.nn.Module:
        return copy.deepcopy(student0)

    variants: dict[str, Callable[[], object]] = {
        "kd_live": lambda: trainer_epoch(teacher, fresh(), data, cfg, KD),
        "kd_frozen": lambda: trainer_epoch(teacher, fresh(), data, cfg, KD, logit_cache),
        "e2kd_live": lambda: trainer_epoch(teacher, fresh(), data, cfg, E2KD),
        "e2kd_frozen": lambda: trainer_epoch(teacher, fresh(), data, cfg, E2KD, explained_cache),
        "cache_build": lambda: build(False),
        "cache_build_explained": lambda: build(True),
        "kd_frozen_default_layout": lambda: trainer_epoch(
            teacher, fresh(), data, layout_off, KD, logit_cache
        ),
        "e2kd_frozen_channels_last": lambda: trainer_epoch(
            teacher, fresh(), data, layout_on, E2KD, explained_cache
        ),
    }
    if args.bcos:
        variants["e2kd_live_authors"] = lambda: trainer_epoch(
            teacher, fresh(), data, cfg, E2KD_AUTHORS
        )
        variants["e2kd_frozen_authors"] = lambda: trainer_epoch(
            teacher, fresh(), data, cfg, E2KD_AUTHORS, explained_cache
        )
    cpu: dict[str, list[float]] = {k: [] for k in variants}

    def cpu_timed(name: str) -> Callable[[], None]:
        def run() -> None:
            start = time.process_time()
            variants[name]()
            cpu[name].append(time.process_time() - start)

        return run

    times, med = interleaved({k: cpu_timed(k) for k in variants}, args.reps)
    cpu = {k: v[1:] for k, v in cpu.items()}  # the warm-up round's entry dropped
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    ratios = _ratios(med, args.bcos)
    return write_result(
        out,
        "e2kd_overhead_bcos" if args.bcos else "e2kd_overhead",
        {
            "data": source,
            "train_images": len(data),
            "augmentation": "RandomCropFlip(padding=2)",
            "batch_size": cfg.batch_size,
            "teacher": "bcos_resnet14" if args.bcos else "resnet20",
            "student": "bcos_resnet8" if args.bcos else "resnet8",
            "optimizer": cfg.optimizer,
            "kd": KD,
            "e2kd": E2KD,
            "reps": args.reps,
            "threads": args.threads,
        },
        times,
        med,
        ratios,
        {"cpu_s": med_cpu, "cpu_ratios": _ratios(med_cpu, args.bcos), "cpu_times_s": cpu},
    )


def _ratios(med: dict[str, float], bcos: bool) -> dict[str, float]:
    """The ratios the README reports, from one set of medians (wall or CPU)."""
    ratios = {
        "e2kd_live_vs_kd_live": med["e2kd_live"] / med["kd_live"],
        "e2kd_frozen_vs_kd_live": med["e2kd_frozen"] / med["kd_live"],
        "e2kd_frozen_vs_kd_frozen": med["e2kd_frozen"] / med["kd_frozen"],
        "kd_frozen_vs_kd_live": med["kd_frozen"] / med["kd_live"],
        "cache_build_explained_vs_plain": med["cache_build_explained"] / med["cache_build"],
        "e2kd_frozen_vs_kd_frozen_default_layout": (
            med["e2kd_frozen"] / med["kd_frozen_default_layout"]
        ),
        "e2kd_frozen_channels_last_vs_kd_frozen": (
            med["e2kd_frozen_channels_last"] / med["kd_frozen"]
        ),
    }
    if bcos:
        ratios["e2kd_live_authors_vs_kd_live"] = med["e2kd_live_authors"] / med["kd_live"]
        ratios["e2kd_frozen_authors_vs_kd_live"] = med["e2kd_frozen_authors"] / med["kd_live"]
        ratios["e2kd_frozen_authors_vs_kd_frozen"] = med["e2kd_frozen_authors"] / med["kd_frozen"]
        ratios["e2kd_live_vs_authors"] = med["e2kd_live"] / med["e2kd_live_authors"]
    return ratios


if __name__ == "__main__":
    main()
