"""What identities cost, and why the thread count is part of them.

- ``fashion_mnist_*``: the data fingerprint of full Fashion-MNIST (60,000 training and 10,000
  held-out images, in memory) as a run computes it (every byte of every split, SHA-256), on a
  fresh dataset object each repetition (the data loading itself is timed apart as
  ``fashion_mnist_load_s``). In-memory data is hashed whole every time: there is no cache to
  warm, so the first and the later fingerprints cost the same.
- ``imagefolder_*``: an ImageFolder tree of ``--files`` PNG files written here; the first
  fingerprint reads every file (``imagefolder_first_s``, the file-digest cache emptied first),
  later ones only ``stat`` them (``imagefolder_cached_s``).
- ``threads_*``: the same network trained for one epoch from the same weights on the same
  batches with 1 and with 2 torch threads; ``threads_max_weight_difference`` is the largest
  absolute difference between the two sets of weights (0 would mean the thread count need not
  be part of an identity).

Usage: ``python benchmarks/fingerprint.py [--reps 3] [--files 2000] [--out FILE]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distillscope.config_train import TrainConfig
from distillscope.data import load_dataset
from distillscope.distill import build_loss
from distillscope.models import create_model
from distillscope.train.trainer import Trainer


def timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def fashion_mnist(reps: int) -> dict[str, Any]:
    loads, prints = [], []
    for _ in range(reps):
        t_load, (train, test) = timed(
            lambda: (load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test"))
        )
        t_print, _ = timed(lambda train=train, test=test: (train.fingerprint(), test.fingerprint()))
        loads.append(t_load)
        prints.append(t_print)
    return {
        "fashion_mnist_images": len(train) + len(test),
        "fashion_mnist_load_s": statistics.median(loads),
        "fashion_mnist_fingerprint_s": statistics.median(prints),
        "fashion_mnist_fingerprint_all_s": prints,
    }


def imagefolder(files: int, reps: int) -> dict[str, Any]:
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DISTILLSCOPE_CACHE"] = str(Path(tmp) / "cache")
        rng = np.random.default_rng(0)
        for i in range(files):
            folder = Path(tmp) / "tree" / "train" / f"c{i % 10}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, size=(28, 28, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
        firsts, cached = [], []
        for _ in range(reps):
            (Path(tmp) / "cache" / "file-digests.sqlite").unlink(missing_ok=True)
            data = load_dataset("imagefolder", "train", root=str(Path(tmp) / "tree"))
            firsts.append(timed(data.fingerprint)[0])
            again = load_dataset("imagefolder", "train", root=str(Path(tmp) / "tree"))
            cached.append(timed(again.fingerprint)[0])
    return {
        "imagefolder_files": files,
        "imagefolder_first_s": statistics.median(firsts),
        "imagefolder_cached_s": statistics.median(cached),
        "imagefolder_cached_vs_first": statistics.median(cached) / statistics.median(firsts),
    }


def threads_effect(n: int = 2000) -> dict[str, Any]:
    train = load_dataset("fashion-mnist", "train", per_class=n // 10, seed=0)
    weights = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        model = create_model("mnist_cnn", num_classes=10, in_channels=1)
        cfg = TrainConfig(epochs=1, batch_size=128, lr=0.05)
        Trainer(model, build_loss({"ce": {}}), cfg, progress=False, seed=0).fit(train)
        weights[threads] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    diff = max(
        (weights[1][k].float() - weights[2][k].float()).abs().max().item() for k in weights[1]
    )
    return {"threads_images": len(train), "threads_max_weight_difference": diff}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results/fingerprint.json"))
    args = parser.parse_args(argv)
    result: dict[str, Any] = {
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        **fashion_mnist(args.reps),
        **imagefolder(args.files, args.reps),
        **threads_effect(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("_all_s")}, indent=2))
    return result


if __name__ == "__main__":
    main()
