"""GPU check: what a machine with CUDA gives distillscope, measured in a few minutes.

Run through ``benchmarks/gpu_check.sh`` (same arguments). Three measurements on the CUDA device:

1. **Quickstart on CUDA**: the packaged quickstart shrunk as ``docs/smoke-test.md`` shrinks it
   (one epoch each, 200 training images per class, the probes on fewer images) with
   ``device=cuda``; its wall time, set-up and probes included.
2. **Step time**: one epoch of ``resnet20`` (cross-entropy, batch 128, SGD) through the Trainer
   on CUDA and on the CPU, in fp32 and bf16; the mean time per step (the epoch's loop time over
   its steps) after an untimed warm-up of each variant, and whether the layout was
   channels-last (``train.channels_last: auto``).
3. **Determinism**: the shrunk quickstart twice more with ``train.deterministic=true``; every
   tensor of every model file and every value of results.json compared
   (``scripts/compare_runs.py``), the differing keys listed.

``CUBLAS_WORKSPACE_CONFIG`` is set before torch touches CUDA: cuBLAS reads it when its handle
is made, so setting it later in the process (as ``deterministic_mode`` does for a block) comes
too late for a handle an earlier pass already made. Runs go to a temporary folder (and a
teacher store of their own), removed at the end unless ``--keep`` names a folder.

Without CUDA it prints one line saying so and exits 0 (after checking its arguments, before
torch is imported).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before CUDA is touched

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "gpu_check.json"
COMPARE = HERE.parent / "scripts" / "compare_runs.py"
#: The quickstart, shrunk (docs/smoke-test.md): seconds of work on a GPU.
SHRINK = (
    "progress=false",
    "train.epochs=1",
    "teacher.train.epochs=1",
    "data.train_fraction=null",
    "data.train_per_class=200",
    "data.test_per_class=20",
    "probe_defaults.max_samples=200",
    "probes.adherence.max_samples=20",
    "probes.adversarial.max_samples=50",
)
#: The determinism runs: deterministic training, the slowest probes on fewer images.
DETERMINISTIC = (
    "train.deterministic=true",
    "probes.adherence.max_samples=10",
    "probes.adversarial.max_samples=20",
)
#: Step-time variants: (device kind, precision).
VARIANTS = (("cuda", "fp32"), ("cuda", "bf16"), ("cpu", "fp32"), ("cpu", "bf16"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="gpu_check.sh", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--device", default="cuda", help="the CUDA device (cuda or cuda:N)")
    parser.add_argument("--data-root", help="the folder holding Fashion-MNIST (quickstart)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON written")
    parser.add_argument("--images", type=int, default=2560, help="step-time training images")
    parser.add_argument(
        "--cpu-batches", type=int, default=10, help="batches timed on the CPU (it is slow)"
    )
    parser.add_argument("--keep", type=Path, help="keep the runs in this folder")
    args = parser.parse_args(argv)
    if args.device != "cuda" and not args.device.startswith("cuda:"):
        parser.error(f"--device {args.device!r}: give cuda or cuda:N")
    if args.images < 128 or args.cpu_batches < 1:
        parser.error("--images must be >= 128 (one batch) and --cpu-batches >= 1")
    return args


def no_cuda_reason() -> str | None:
    """Why there is nothing to measure here, or ``None`` when CUDA is usable."""
    import torch

    if torch.cuda.is_available():
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    hint = f", CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""
    built = torch.version.cuda or "none"
    return (
        f"gpu_check: no CUDA device visible to torch {torch.__version__} (built for CUDA "
        f"{built}{hint}); nothing measured"
    )


@contextlib.contextmanager
def own_store(folder: Path) -> Iterator[None]:
    """``DISTILLSCOPE_CACHE`` pointed at ``folder`` inside the block (teachers stored apart)."""
    saved = os.environ.get("DISTILLSCOPE_CACHE")
    os.environ["DISTILLSCOPE_CACHE"] = str(folder)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("DISTILLSCOPE_CACHE", None)
        else:
            os.environ["DISTILLSCOPE_CACHE"] = saved


def quickstart(
    folder: Path,
    device: str,
    data_root: str | None = None,
    overrides: list[str] | None = None,
    config: Any = "quickstart",
    shrink: tuple[str, ...] = SHRINK,
) -> tuple[Path, float]:
    """One shrunk quickstart run (or ``config`` shrunk by ``shrink``) in ``folder``, with a
    teacher store of its own; its run directory and wall time in seconds."""
    from distillscope import run_experiment

    start = time.perf_counter()
    with own_store(folder / "store"):
        run = run_experiment(config, [*shrink, f"device={device}", *(overrides or [])],
                             data_root=data_root, retrain_teacher=True,
                             run_at=folder / "run")  # fmt: skip
    return Path(run.path), time.perf_counter() - start


def step_times(
    devices: dict[str, str], images: int, cpu_batches: int, model: str = "resnet20"
) -> dict[str, dict[str, Any]]:
    """Mean training-step time of ``model`` per (device kind, precision) variant.

    Args:
        devices: Device kind (``cuda``, ``cpu``) -> the device to run it on.
        images: Training images (synthetic 28x28 grey images, 10 classes).
        cpu_batches: Batches timed on the CPU (CUDA runs the whole epoch).
        model: A registered model name.
    """
    import torch

    from distillscope.config_train import TrainConfig
    from distillscope.data.base import DatasetInfo, TensorDataset
    from distillscope.distill import build_loss
    from distillscope.models import create_model
    from distillscope.train import Trainer

    g = torch.Generator().manual_seed(0)
    info = DatasetInfo("synthetic28", 10, (1, 28, 28), [str(i) for i in range(10)])
    x = torch.randn(images, 1, 28, 28, generator=g)  # (N, 1, 28, 28)
    data = TensorDataset(x, torch.randint(0, 10, (images,), generator=g), info)
    out: dict[str, dict[str, Any]] = {}
    for kind, precision in VARIANTS:
        if kind not in devices:
            continue
        batches = cpu_batches if kind == "cpu" else None

        def epoch(cap: int | None, kind: str = kind, precision: str = precision) -> Trainer:
            torch.manual_seed(0)
            net = create_model(model, num_classes=10, in_channels=1)
            cfg = TrainConfig(epochs=1, batch_size=128, schedule="constant",
                              precision=precision, max_batches=cap)  # fmt: skip
            trainer = Trainer(net, build_loss({"ce": {}}), cfg, device=devices[kind],
                              progress=False)  # fmt: skip
            trainer.fit(data)
            return trainer

        epoch(2)  # warm-up: CUDA context, cuDNN's algorithms, allocator, oneDNN primitives
        trainer = epoch(batches)
        steps = min(-(-images // 128), batches or images)
        seconds = float(trainer.history[0]["time"])
        out[f"{kind}_{precision}"] = {
            "step_ms": 1000 * seconds / steps,
            "steps": steps,
            "epoch_loop_s": seconds,
            "channels_last": trainer.channels_last,
        }
    return out


def compare_runs(a: Path, b: Path) -> dict[str, Any]:
    """``scripts/compare_runs.py``'s comparison of two run directories."""
    spec = importlib.util.spec_from_file_location("compare_runs", COMPARE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.compare(a, b)


def determinism(
    folder: Path,
    device: str,
    data_root: str | None,
    overrides: tuple[str, ...] = DETERMINISTIC,
    **kwargs: Any,
) -> dict[str, Any]:
    """Two identical deterministic runs compared: their model tensors and result values
    (``kwargs``: :func:`quickstart`'s ``config`` and ``shrink``)."""
    runs = [
        quickstart(folder / name, device, data_root, list(overrides), **kwargs)[0]
        for name in ("a", "b")
    ]
    result = compare_runs(*runs)
    differences = result["differences"]
    return {
        "identical": not differences,
        "tensors": result["tensors"],
        "values": result["values"],
        "differences": differences,
    }


def table(result: dict[str, Any]) -> str:
    """The summary printed at the end."""
    lines = [f"gpu_check on {result['gpu']} (torch {result['torch']}, CUDA {result['cuda']})"]
    quick = result["quickstart"]
    lines.append(
        f"  quickstart (shrunk) on {result['device']}: "
        + (f"{quick['wall_s']:.1f} s" if "wall_s" in quick else f"not run: {quick['error']}")
    )
    lines.append("  resnet20 training step  ms/step  channels-last")
    for name, row in result["step_time"].items():
        lines.append(f"    {name:<20} {row['step_ms']:8.1f}  {row['channels_last']!s:>13}")
    for name, value in result["speedup"].items():
        lines.append(f"  {name}: {value:.2f}x")
    det = result["determinism"]
    if "identical" not in det:
        lines.append(f"  determinism: not run: {det['error']}")
    else:
        verdict = "identical" if det["identical"] else f"{len(det['differences'])} differences"
        lines.append(
            f"  determinism (two runs, train.deterministic=true): {det['tensors']} tensors and "
            f"{det['values']} result values compared: {verdict}"
        )
        lines += [f"    {d}" for d in det["differences"][:20]]
    return "\n".join(lines)


def speedups(steps: dict[str, dict[str, Any]]) -> dict[str, float]:
    """CPU step time over CUDA step time, per precision, and bf16 over fp32 on CUDA."""
    ms = {k: v["step_ms"] for k, v in steps.items()}
    out = {}
    for p in ("fp32", "bf16"):
        if f"cuda_{p}" in ms and f"cpu_{p}" in ms:
            out[f"cuda_vs_cpu_{p}"] = ms[f"cpu_{p}"] / ms[f"cuda_{p}"]
    if "cuda_fp32" in ms and "cuda_bf16" in ms:
        out["cuda_bf16_vs_fp32"] = ms["cuda_fp32"] / ms["cuda_bf16"]
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    reason = no_cuda_reason()
    if reason is not None:
        print(reason)
        return 0
    import torch

    from distillscope.errors import UserError
    from distillscope.files import atomic_write_text

    device = args.device
    started = time.perf_counter()
    result: dict[str, Any] = {
        "device": device,
        "gpu": torch.cuda.get_device_name(torch.device(device)),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }
    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            work = args.keep
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gpu_check-")))
        try:
            _, wall = quickstart(work / "quickstart", device, args.data_root)
            result["quickstart"] = {"wall_s": wall}
        except UserError as exc:  # most likely: Fashion-MNIST is not installed
            result["quickstart"] = {"error": str(exc)}
        print(f"quickstart: {result['quickstart']}", flush=True)
        steps = step_times({"cuda": device, "cpu": "cpu"}, args.images, args.cpu_batches)
        result["step_time"] = steps
        result["speedup"] = speedups(steps)
        if "error" in result["quickstart"]:
            result["determinism"] = {"error": "the quickstart did not run"}
        else:
            result["determinism"] = determinism(work / "determinism", device, args.data_root)
    result["total_s"] = time.perf_counter() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(result, indent=1) + "\n")
    print(table(result))
    print(f"total {result['total_s']:.0f} s; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
