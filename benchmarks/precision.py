"""The teacher's passes and training in bf16 (autocast) against fp32, on the CPU.

Data: a Fashion-MNIST subset (synthetic 28x28 images if it is not installed), batch 128.

- Training: resnet8 and resnet20 trained with cross-entropy for one epoch, SGD, the same initial
  weights and batch order, with ``train.precision`` fp32 and bf16 (``<model>_bf16_vs_fp32``).
- The frozen teacher (resnet20, first trained one epoch in fp32 so that its top-1 means
  something): one ``no_grad`` pass over the data in the default layout in fp32
  (``teacher_fp32``), channels-last in fp32 (``teacher_cl``) and under bf16 autocast
  (``teacher_bf16``); and ``TeacherCache.build`` with ``precision`` fp32 and bf16
  (``cache_fp32``, ``cache_bf16``; the build picks channels-last itself on the CPU) at the
  runs' build batch on the CPU (``cache_pool.build_batch``, 128) and at 512, the batch of
  every build before session 12 (``cache_fp32_b512``, ``cache_bf16_b512``). ``cache_bf16`` is
  built from the network a run's bf16 passes use for a teacher whose students read only its
  output (``distillscope.train.onednn.bf16_runner``: batch norms folded into their
  convolutions, then one oneDNN graph); ``cache_bf16_autocast`` from the folded copy under
  autocast (what bf16 builds did in session 13, and still do for a teacher whose features a
  student reads), ``cache_bf16_unfolded`` from the unfolded teacher under autocast (before
  session 13). The bf16 caches' logits are compared with the fp32 cache's: top-1 agreement and
  the largest absolute logit difference; and each precision's cache at the two batches, which
  must be equal bit for bit (``checks``).
- The same fp32 and bf16 cache builds for two more teachers, resnet8 and mnist_cnn (each
  trained one epoch first): ``cache_<model>_fp32`` / ``cache_<model>_bf16``.
- Where the cache build's time goes (``cache_profile``): torch.profiler self-CPU seconds of one
  build in each precision, summed by operator family, and the bf16/fp32 ratio per family. The
  build's ratio cannot go below its convolutions' ratio unless the other operators shrink more.

Ratios within one run (never thresholds); one untimed warm-up round, ``--reps`` interleaved
rounds, medians kept.

Usage: ``python benchmarks/precision.py [--n 3200] [--reps 3] [--threads 2]``
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from epoch_time import OP_FAMILIES  # noqa: E402
from method_overhead import load_data  # noqa: E402
from rounds import image_bench_args, interleaved, write_result  # noqa: E402

from distillscope.config_train import TrainConfig  # noqa: E402
from distillscope.data.base import iter_batches  # noqa: E402
from distillscope.distill import build_loss  # noqa: E402
from distillscope.models import create_model  # noqa: E402
from distillscope.train import Trainer  # noqa: E402
from distillscope.train.cache_pool import build_batch  # noqa: E402
from distillscope.train.fold import fold_batchnorm  # noqa: E402
from distillscope.train.onednn import bf16_runner  # noqa: E402
from distillscope.train.precision import autocast  # noqa: E402
from distillscope.train.teacher_cache import TeacherCache  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "precision.json"
MODELS = ("resnet8", "resnet20")
#: Further teachers whose fp32 and bf16 cache builds are timed.
MORE_TEACHERS = ("resnet8", "mnist_cnn")


def by_family(run: Callable[[], object]) -> dict[str, float]:
    """torch.profiler self-CPU seconds of ``run()``, summed by operator family
    (``epoch_time.OP_FAMILIES``; ``total`` too)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    families: dict[str, float] = {}
    for event in prof.key_averages():
        name = event.key.lower()
        family = next((f for frag, f in OP_FAMILIES if frag in name), "other")
        families[family] = families.get(family, 0.0) + event.self_cpu_time_total / 1e6
    families["total"] = sum(families.values())
    return {k: round(v, 4) for k, v in sorted(families.items(), key=lambda kv: -kv[1])}


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

    def trained(model: str) -> torch.nn.Module:
        torch.manual_seed(0)
        net = create_model(model, num_classes=10, in_channels=1)
        epoch_cfg = TrainConfig(epochs=1, batch_size=128, optimizer="sgd", lr=0.05, momentum=0.9,
                                schedule="constant")  # fmt: skip
        Trainer(net, build_loss({"ce": {}}), epoch_cfg, progress=False, seed=0).fit(data)
        return net.eval().requires_grad_(False)

    teacher = trained("resnet20")
    teacher_cl = copy.deepcopy(teacher).to(memory_format=torch.channels_last)
    sample = data.inputs[:512]  # (512, 1, 28, 28): what a run's start-up check sees
    runner, pairs, graph = bf16_runner(teacher, [], sample)  # what a run's bf16 passes use
    folded, _ = fold_batchnorm(teacher)  # the same folding, under autocast
    more = {m: trained(m) for m in MORE_TEACHERS}
    more_runners = {m: bf16_runner(net, [], sample)[0] for m, net in more.items()}
    cpu = torch.device("cpu")

    def teacher_pass(net: torch.nn.Module, precision: str, channels_last: bool) -> None:
        with torch.no_grad(), autocast(precision, cpu):
            for batch in iter_batches(data, 128):
                x = batch.inputs  # (B, 1, 28, 28)
                net(x.contiguous(memory_format=torch.channels_last) if channels_last else x)

    def cache(precision: str, batch: int = build_batch(cpu), net: Any = None) -> TeacherCache:
        net = net if net is not None else runner if precision == "bf16" else teacher
        return TeacherCache.build(net, data, batch, cpu, progress=False, precision=precision)

    variants = {
        f"{m}_{p}": (lambda m=m, p=p: epoch(m, p)) for m in MODELS for p in ("fp32", "bf16")
    }
    variants |= {
        "teacher_fp32": lambda: teacher_pass(teacher, "fp32", False),
        "teacher_cl": lambda: teacher_pass(teacher_cl, "fp32", True),
        "teacher_bf16": lambda: teacher_pass(teacher, "bf16", False),
        "cache_fp32": lambda: cache("fp32"),
        "cache_bf16": lambda: cache("bf16"),
        "cache_bf16_autocast": lambda: cache("bf16", net=folded),
        "cache_bf16_unfolded": lambda: cache("bf16", net=teacher),
        "cache_fp32_b512": lambda: cache("fp32", 512),
        "cache_bf16_b512": lambda: cache("bf16", 512),
    }
    for m in MORE_TEACHERS:
        variants[f"cache_{m}_fp32"] = lambda m=m: cache("fp32", net=more[m])
        variants[f"cache_{m}_bf16"] = lambda m=m: cache("bf16", net=more_runners[m])
    times, med = interleaved(variants, args.reps)
    ratios = {f"{m}_bf16_vs_fp32": med[f"{m}_bf16"] / med[f"{m}_fp32"] for m in MODELS}
    ratios |= {
        "teacher_cl_vs_fp32": med["teacher_cl"] / med["teacher_fp32"],
        "teacher_bf16_vs_fp32": med["teacher_bf16"] / med["teacher_fp32"],
        "cache_bf16_vs_fp32": med["cache_bf16"] / med["cache_fp32"],
        "cache_bf16_autocast_vs_fp32": med["cache_bf16_autocast"] / med["cache_fp32"],
        "cache_bf16_unfolded_vs_fp32": med["cache_bf16_unfolded"] / med["cache_fp32"],
        "cache_bf16_vs_fp32_at_b512": med["cache_bf16_b512"] / med["cache_fp32_b512"],
        "cache_fp32_vs_b512": med["cache_fp32"] / med["cache_fp32_b512"],
        "cache_bf16_vs_b512": med["cache_bf16"] / med["cache_bf16_b512"],
    }
    ratios |= {
        f"cache_{m}_bf16_vs_fp32": med[f"cache_{m}_bf16"] / med[f"cache_{m}_fp32"]
        for m in MORE_TEACHERS
    }
    fp32, bf16 = cache("fp32").logits, cache("bf16").logits  # (N, K) each
    autocast_ = cache("bf16", net=folded).logits  # (N, K)
    unfolded = cache("bf16", net=teacher).logits  # (N, K)
    profiles = {p: by_family(lambda p=p: cache(p)) for p in ("fp32", "bf16")}
    cache_profile = {
        **{f"{p}_s": profiles[p] for p in profiles},
        "bf16_vs_fp32": {
            k: round(v / profiles["fp32"][k], 3)
            for k, v in profiles["bf16"].items()
            if profiles["fp32"].get(k)
        },  # fmt: skip
    }
    checks = {
        "teacher_top1_fp32": float((fp32.argmax(1) == data.targets).float().mean()),
        "bf16_top1_agreement": float((fp32.argmax(1) == bf16.argmax(1)).float().mean()),
        "bf16_max_logit_error": float((fp32 - bf16.float()).abs().max()),
        "bf16_autocast_top1_agreement": float(
            (fp32.argmax(1) == autocast_.argmax(1)).float().mean()
        ),
        "bf16_autocast_max_logit_error": float((fp32 - autocast_).abs().max()),
        "bf16_unfolded_top1_agreement": float(
            (fp32.argmax(1) == unfolded.argmax(1)).float().mean()
        ),
        "bf16_unfolded_max_logit_error": float((fp32 - unfolded).abs().max()),
        "batchnorms_folded": pairs,
        "onednn_graph": graph,
        "more_teachers_onednn_graph": {
            m: type(r).__name__ == "OneDNNGraph" for m, r in more_runners.items()
        },
        "fp32_equal_at_b512": torch.equal(fp32, cache("fp32", 512).logits),
        "bf16_equal_at_b512": torch.equal(bf16, cache("bf16", 512).logits),
    }
    setup = {"data": source, "train_images": len(data), "batch_size": 128,
             "cache_build_batch": build_batch(cpu), "models": MODELS,
             "teacher": "resnet20, one epoch of fp32 training first", "reps": args.reps,
             "threads": args.threads, "checks": checks}  # fmt: skip
    return write_result(args.out, "precision", setup, times, med, ratios,
                        {"cache_profile": cache_profile})  # fmt: skip


if __name__ == "__main__":
    main()
