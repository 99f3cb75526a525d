"""What each distillation method costs per epoch, against plain KD on the same pair.

Pair: a resnet20 teacher and a resnet8 student (the configs/methods/ pair), on the same
Fashion-MNIST training subset (synthetic 28x28 images if it is not installed), batch 128, SGD,
the same initial weights and batch order for every variant. One epoch per variant:

- ``teacher_forward``: the teacher over the training set under ``no_grad`` at batch 128 (what a
  live teacher costs per epoch);
- ``cache_build``: :meth:`TeacherCache.build` (logits) over the same images;
- ``bare_kd_live``: a hand-written KD epoch (teacher forward under ``no_grad``, student forward,
  ``kd`` loss, backward, SGD step);
- ``kd_live`` / ``kd_cached``: the Trainer with ``kd`` and the live teacher / a prebuilt cache;
- ``<method>_live`` (and ``<method>_cached`` where the cache can hold what it reads) for every
  method in :data:`METHODS` that is registered;
- ``<method>_group``: two resnet8 peers trained together in one loop, for the mutual methods
  in :data:`GROUPS` (``dml``, ``ie_dml``), no teacher.

Ratios: ``kd_live_vs_bare`` (the Trainer's cost over the hand loop, target <= 1.05),
``cache_build_vs_teacher_forward`` (target <= 1), ``kd_cached_vs_kd_live`` (what the cache
saves), and ``<method>_vs_kd`` (each method's step time relative to KD, both live; and
``<method>_cached_vs_live``, what the feature cache saves), ``<method>_group_vs_kd`` (a group
epoch, two networks, against one KD epoch) and ``ie_dml_vs_dml``. torchdistill's KD is timed too
where torchdistill is installed (``torchdistill_kd``). One untimed warm-up round, ``--reps``
interleaved rounds, medians kept. Ratios within one run, never thresholds.

Usage: ``python benchmarks/method_overhead.py [--n 3200] [--reps 3] [--threads 2]
[--only ie_ft ie_dml ...]`` (``--only``: time KD and these methods alone, into
``method_overhead_<names>.json`` unless ``--out`` says otherwise).
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
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rounds import interleaved, write_result  # noqa: E402

from distillscope.config_train import TrainConfig  # noqa: E402
from distillscope.data import load_dataset  # noqa: E402
from distillscope.data.base import DatasetInfo, TensorDataset, iter_batches  # noqa: E402
from distillscope.distill import build_loss, loss_names  # noqa: E402
from distillscope.errors import DataError  # noqa: E402
from distillscope.functional.soft_targets import kd_loss  # noqa: E402
from distillscope.models import create_model  # noqa: E402
from distillscope.models.taps import FeatureTap  # noqa: E402
from distillscope.train import TeacherCache, Trainer, epoch_generator  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "method_overhead.json"
SEED = 0
#: Method name -> its loss spec on the resnet20 -> resnet8 pair (the configs/methods/ settings).
STAGES = ["layer1", "layer2", "layer3"]
POOL = {"student_layer": "pool", "teacher_layer": "pool"}
METHODS: dict[str, dict[str, Any]] = {
    "hint": {
        "ce": {},
        "hint": {"weight": 100, "student_layer": "layer2", "teacher_layer": "layer2"},
    },
    "at": {"ce": {}, "at": {"weight": 1000, "student_layers": STAGES, "teacher_layers": STAGES}},
    "nst": {"ce": {}, "nst": {"weight": 50, "student_layers": STAGES, "teacher_layers": STAGES}},
    "vid": {"ce": {}, "vid": {"student_layers": STAGES, "teacher_layers": STAGES}},
    "ft": {"ce": {}, "ft": {"weight": 200, "student_layer": "layer3", "teacher_layer": "layer3"}},
    "ie_ft": {"ce": {}, "ie_ft": {"student_layer": "layer3", "teacher_layer": "layer3"}},
    "ofd": {
        "ce": {},
        "ofd": {
            "weight": 0.001,
            "student_layers": [f"{stage}.0.preact" for stage in STAGES],
            "teacher_layers": [f"{stage}.2.preact" for stage in STAGES],
            "teacher_bns": [f"{stage}.2.bn2" for stage in STAGES],
        },
    },
    "reviewkd": {
        "ce": {},
        "reviewkd": {
            "student_layers": [*STAGES, "pool"],
            "teacher_layers": [*STAGES, "pool"],
            "warmup_epochs": 0,
        },
    },
    "cat_kd": {
        "ce": {},
        "cat_kd": {
            "weight": 0.7,
            "student_layer": "layer3",
            "teacher_layer": "layer3",
            "resolution": 2,
            "normalize": False,
        },  # fmt: skip
    },
    "sp": {"ce": {}, "sp": {"weight": 3000, **POOL}},
    "rkd": {"ce": {}, "rkd": POOL},
    "pkt": {"ce": {}, "pkt": {"weight": 30000, **POOL}},
    "cc": {"ce": {}, "cc": {"weight": 0.02, **POOL}},
    "crd": {"ce": {}, "crd": {"weight": 0.8, "negatives": 4096, **POOL}},
    "dkd": {"dkd": {}},
    "sskd": {"sskd": {"head_epochs": 1}},
    "e2kd": {"e2kd": {"temperature": 4.0, "alpha": 1.0}},
}
#: Mutual methods: each of two peers' loss spec.
GROUPS: dict[str, dict[str, Any]] = {
    "dml": {"dml": {}},
    "ie_dml": {"ce": {}, "ie_dml": {"layer": "layer3"}},
}


def load_data(n: int) -> tuple[TensorDataset, str]:
    try:
        data = load_dataset("fashion-mnist", "train", per_class=n // 10, seed=SEED)
        assert isinstance(data, TensorDataset)
        return data, "fashion-mnist"
    except DataError:
        g = torch.Generator().manual_seed(SEED)
        info = DatasetInfo("synthetic28", 10, (1, 28, 28), [str(i) for i in range(10)])
        x = torch.randn(n, 1, 28, 28, generator=g)  # (n, 1, 28, 28)
        return TensorDataset(x, torch.randint(0, 10, (n,), generator=g), info), "synthetic"


def networks() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(SEED)
    teacher = create_model("resnet20", num_classes=10, in_channels=1).eval()
    student = create_model("resnet8", num_classes=10, in_channels=1)
    return teacher, student


def teacher_forward(teacher: nn.Module, data: TensorDataset, cfg: TrainConfig) -> None:
    with torch.no_grad():
        for batch in iter_batches(data, cfg.batch_size):
            teacher(batch.inputs)


def bare_kd(teacher: nn.Module, student: nn.Module, data: TensorDataset, cfg: TrainConfig) -> None:
    """One KD epoch by hand, the Trainer's batch order and loss (alpha 0.5, T 4)."""
    opt = torch.optim.SGD(
        student.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    student.train()
    order = torch.randperm(len(data), generator=epoch_generator(SEED, 0))  # (N,)
    for start in range(0, len(data), cfg.batch_size):
        idx = order[start : start + cfg.batch_size]  # (B,)
        x, y = data.inputs[idx], data.targets[idx]
        with torch.no_grad():
            t = teacher(x)  # (B, K)
        z = student(x)  # (B, K)
        loss = 0.5 * F.cross_entropy(z, y) + 0.5 * kd_loss(z, t, 4.0)  # ()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def trainer_epoch(
    teacher: nn.Module,
    student: nn.Module,
    data: TensorDataset,
    cfg: TrainConfig,
    spec: dict[str, Any],
    cache: TeacherCache | None = None,
) -> None:
    loss = build_loss(spec)
    s_tap = FeatureTap(student, loss.student_paths()) if loss.student_paths() else None
    t_tap = None
    if cache is None and loss.teacher_paths():
        t_tap = FeatureTap(teacher, loss.teacher_paths())
    try:
        Trainer(student, loss, cfg, teacher=teacher, teacher_cache=cache, progress=False,
                seed=SEED, student_tap=s_tap, teacher_tap=t_tap).fit(data)  # fmt: skip
    finally:
        for tap in (s_tap, t_tap):
            if tap is not None:
                tap.remove()


def group_epoch(peers: list[nn.Module], data: TensorDataset, cfg: TrainConfig,
                spec: dict[str, Any]) -> None:  # fmt: skip
    """One epoch of ``peers`` trained together, each with the loss ``spec``."""
    models = {f"peer{i}": m for i, m in enumerate(peers)}
    losses = {name: build_loss(spec) for name in models}
    Trainer(models, losses, cfg, progress=False, seed=SEED).fit(data)


def torchdistill_kd(teacher: nn.Module, student: nn.Module, data: TensorDataset,
                    cfg: TrainConfig) -> Callable[[], None] | None:  # fmt: skip
    """torchdistill's KD loss in the hand loop, where torchdistill is installed."""
    try:
        from torchdistill.losses.mid_level import KDLoss  # type: ignore[import-not-found]
    except ImportError:
        return None
    criterion = KDLoss(nn.KLDivLoss(reduction="batchmean"), temperature=4.0, alpha=0.5)
    return lambda: _td_epoch(teacher, student, data, cfg, criterion)


def _td_epoch(teacher, student, data, cfg, criterion) -> None:  # type: ignore[no-untyped-def]
    opt = torch.optim.SGD(student.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    order = torch.randperm(len(data), generator=epoch_generator(SEED, 0))
    for start in range(0, len(data), cfg.batch_size):
        idx = order[start : start + cfg.batch_size]
        x, y = data.inputs[idx], data.targets[idx]
        with torch.no_grad():
            t = teacher(x)
        loss = criterion(student(x), t, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3200, help="training images")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--only", nargs="+", default=None, help="methods to time beside KD")
    args = parser.parse_args(argv)
    known = set(METHODS) | set(GROUPS)
    if args.only and not set(args.only) <= known:
        parser.error(
            f"--only: unknown {sorted(set(args.only) - known)}; use some of {sorted(known)}"
        )
    out = args.out or (
        DEFAULT_OUT.with_name(f"method_overhead_{'_'.join(args.only)}.json")
        if args.only
        else DEFAULT_OUT
    )
    torch.set_num_threads(args.threads)
    data, source = load_data(args.n)
    cfg = TrainConfig(epochs=1, batch_size=128, optimizer="sgd", lr=0.05, momentum=0.9,
                      weight_decay=5e-4, schedule="constant")  # fmt: skip
    teacher, student0 = networks()
    kd = {"kd": {"temperature": 4.0, "alpha": 0.5}}
    cache = TeacherCache.build(teacher, data, 512, "cpu", progress=False)

    def fresh() -> nn.Module:
        return copy.deepcopy(student0)

    variants: dict[str, Callable[[], None]] = {
        "teacher_forward": lambda: teacher_forward(teacher, data, cfg),
        "cache_build": lambda: TeacherCache.build(teacher, data, 512, "cpu", progress=False),
        "bare_kd_live": lambda: bare_kd(teacher, fresh(), data, cfg),
        "kd_live": lambda: trainer_epoch(teacher, fresh(), data, cfg, kd),
        "kd_cached": lambda: trainer_epoch(teacher, fresh(), data, cfg, kd, cache),
    }
    td = torchdistill_kd(teacher, fresh(), data, cfg)
    if td is not None:
        variants["torchdistill_kd"] = td
    registered = set(loss_names())
    chosen = set(args.only) if args.only else set(METHODS) | set(GROUPS)
    methods = {m: s for m, s in METHODS.items() if set(s) <= registered and m in chosen}
    feature_caches: dict[str, TeacherCache] = {}
    for method, spec in methods.items():
        variants[f"{method}_live"] = lambda spec=spec: trainer_epoch(
            teacher, fresh(), data, cfg, spec
        )
        probe = build_loss(spec)
        probe.attach(student0, teacher)  # terms that learn their layers from the models
        explain = probe.explain_teacher if "explanation" in probe.needs else None
        feature_caches[method] = TeacherCache.build(
            teacher, data, 512, "cpu", probe.teacher_paths(), False, explain=explain
        )
        variants[f"{method}_cached"] = lambda spec=spec, m=method: trainer_epoch(
            teacher, fresh(), data, cfg, spec, feature_caches[m]
        )
    groups = {m: s for m, s in GROUPS.items() if set(s) <= registered and m in chosen}
    for method, spec in groups.items():
        variants[f"{method}_group"] = lambda spec=spec: group_epoch(
            [fresh(), fresh()], data, cfg, spec
        )
    times, med = interleaved(variants, args.reps)
    ratios = {
        "kd_live_vs_bare": med["kd_live"] / med["bare_kd_live"],
        "cache_build_vs_teacher_forward": med["cache_build"] / med["teacher_forward"],
        "kd_cached_vs_kd_live": med["kd_cached"] / med["kd_live"],
    }
    if "torchdistill_kd" in med:
        ratios["kd_live_vs_torchdistill"] = med["kd_live"] / med["torchdistill_kd"]
    for method in methods:
        ratios[f"{method}_vs_kd"] = med[f"{method}_live"] / med["kd_live"]
        ratios[f"{method}_cached_vs_live"] = med[f"{method}_cached"] / med[f"{method}_live"]
    for method in groups:
        ratios[f"{method}_group_vs_kd"] = med[f"{method}_group"] / med["kd_live"]
    if {"dml", "ie_dml"} <= set(groups):
        ratios["ie_dml_vs_dml"] = med["ie_dml_group"] / med["dml_group"]
    return write_result(
        out,
        "method_overhead",
        {
            "data": source,
            "train_images": len(data),
            "batch_size": cfg.batch_size,
            "teacher": "resnet20",
            "student": "resnet8",
            "reps": args.reps,
            "threads": args.threads,
            "methods": methods,
            "groups": groups,
        },
        times,
        med,
        ratios,
    )


if __name__ == "__main__":
    main()
