"""A teacher cache on disk against one in memory and against the live teacher.

Pair: a resnet20 teacher and a resnet8 student (the configs/methods/ pair) on a Fashion-MNIST
training subset (synthetic 28x28 images if it is not installed), batch 128, SGD, KD with the
teacher's logits and its ``layer3`` maps (as hint reads them: a feature cache of some size).
One epoch per variant, the same initial weights and batch order:

- ``live``: the teacher runs every step;
- ``memory``: a prebuilt in-memory :class:`TeacherCache`;
- ``disk``: the same cache as memory-mapped files (:meth:`TeacherCache.on_disk`), opened once;
- ``disk_build``: writing the disk cache (one teacher pass) and ``memory_build`` building the
  in-memory one.

Ratios (within one run, never thresholds): ``disk_vs_memory``, ``disk_vs_live``,
``disk_build_vs_memory_build``. One untimed warm-up round, ``--reps`` interleaved rounds,
medians kept.

Usage: ``python benchmarks/cache_disk.py [--n 3200] [--reps 3] [--threads 2]``
"""

from __future__ import annotations

import copy
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from method_overhead import load_data, networks, trainer_epoch  # noqa: E402
from rounds import image_bench_args, interleaved, write_result  # noqa: E402

from distillscope.config_train import TrainConfig  # noqa: E402
from distillscope.train import TeacherCache  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "cache_disk.json"
SPEC: dict[str, Any] = {
    "kd": {"temperature": 4.0, "alpha": 0.5},
    "hint": {"weight": 1.0, "student_layer": "layer3", "teacher_layer": "layer3"},
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = image_bench_args(__doc__, DEFAULT_OUT, argv)
    data, source = load_data(args.n)
    cfg = TrainConfig(epochs=1, batch_size=128, optimizer="sgd", lr=0.05, momentum=0.9,
                      weight_decay=5e-4, schedule="constant")  # fmt: skip
    teacher, student0 = networks()
    paths = ["layer3"]
    work = Path(tempfile.mkdtemp(prefix="cache-disk-bench-"))
    try:
        memory = TeacherCache.build(teacher, data, 512, "cpu", paths, progress=False)
        disk = TeacherCache.on_disk(teacher, data, work / "cache", 512, "cpu", paths, False)
        size = sum(t.numel() * t.element_size() for t in [disk.logits, *disk.features.values()])

        def fresh() -> nn.Module:
            return copy.deepcopy(student0)

        def build_disk() -> None:
            shutil.rmtree(work / "again", ignore_errors=True)
            TeacherCache.on_disk(teacher, data, work / "again", 512, "cpu", paths, False)

        variants = {
            "live": lambda: trainer_epoch(teacher, fresh(), data, cfg, SPEC),
            "memory": lambda: trainer_epoch(teacher, fresh(), data, cfg, SPEC, memory),
            "disk": lambda: trainer_epoch(teacher, fresh(), data, cfg, SPEC, disk),
            "memory_build": lambda: TeacherCache.build(
                teacher, data, 512, "cpu", paths, progress=False
            ),  # fmt: skip
            "disk_build": build_disk,
        }
        times, med = interleaved(variants, args.reps)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratios = {
        "disk_vs_memory": med["disk"] / med["memory"],
        "disk_vs_live": med["disk"] / med["live"],
        "memory_vs_live": med["memory"] / med["live"],
        "disk_build_vs_memory_build": med["disk_build"] / med["memory_build"],
    }
    setup = {"data": source, "train_images": len(data), "batch_size": cfg.batch_size,
             "teacher": "resnet20", "student": "resnet8", "loss": SPEC,
             "cache_mb": size / 2**20, "reps": args.reps, "threads": args.threads}  # fmt: skip
    return write_result(args.out, "cache_disk", setup, times, med, ratios)


if __name__ == "__main__":
    main()
