"""Epoch time of the quickstart's networks: the Trainer against a bare PyTorch loop.

For each network (by default the quickstart's resnet20 teacher and mnist_cnn student), on the
same Fashion-MNIST training subset, the same batch size, optimizer and batch order, from the
same initial weights:

- ``train_bare``: a hand-written epoch (index the in-memory tensors, forward, cross-entropy,
  backward, SGD step) in PyTorch's default layout - the cost of the model itself;
- ``train_bare_cl``: the same with model and inputs in channels-last layout;
- ``train_trainer``: one epoch of :class:`~distillscope.train.Trainer` with the ``ce`` term,
  no validation (set-up, layout trial, optimizer and scheduler construction included; it
  trains channels-last on the CPU, see :mod:`distillscope.train.layout`);
- ``val_bare`` / ``val_bare_cl``: a hand-written pass over the held-out split under
  ``torch.inference_mode``, default / channels-last layout;
- ``val_trainer``: :func:`~distillscope.train.evaluate.evaluate` on the same split with the
  model in channels-last layout, as the Trainer runs it after every epoch.

``trainer_vs_bare_same_layout`` (Trainer / bare channels-last loop) is the loop's own cost;
``channels_last_speedup`` (bare / bare channels-last) what the layout gains;
``trainer_vs_bare`` (Trainer / bare default-layout loop) both together.

Rounds are interleaved (the variant order rotates every round) after an untimed warm-up round,
and the median per variant is kept. Results are ratios within this one run, never thresholds.
``--profile`` adds a torch.profiler breakdown (time by operator family) and a cProfile of the
Trainer's Python-level time for one Trainer epoch per network.

Usage: ``python benchmarks/epoch_time.py [--n 6400] [--reps 3] [--threads 2] [--profile]``
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import json
import os
import platform
import pstats
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from distillscope.config_train import TrainConfig
from distillscope.data import load_dataset
from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.distill import create_loss
from distillscope.errors import DataError
from distillscope.models import count_parameters, create_model
from distillscope.train import Trainer, epoch_generator
from distillscope.train.evaluate import evaluate
from distillscope.train.layout import channels_last

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "epoch_time.json"
SEED = 0
#: Networks this script knows: name -> (zoo name, params). ``teacher`` and ``student`` are the
#: quickstart's; the others are cheaper teacher candidates.
NETWORKS: dict[str, tuple[str, dict[str, Any]]] = {
    "teacher": ("resnet_cifar", {"depth": 20, "width": 16}),
    "student": ("mnist_cnn", {}),
    "resnet14": ("resnet_cifar", {"depth": 14, "width": 16}),
    "resnet8": ("resnet_cifar", {"depth": 8, "width": 16}),
}
#: torch.profiler operator name fragments -> family, first match wins (lower-cased names).
OP_FAMILIES = (
    ("convolution_backward", "conv backward"),
    ("conv", "conv forward"),
    ("batch_norm_backward", "batchnorm backward"),
    ("batch_norm", "batchnorm forward"),
    ("threshold_backward", "relu backward"),
    ("relu", "relu forward"),
    ("max_pool", "pool"),
    ("avg_pool", "pool"),
    ("mean", "pool"),
    ("addmm", "linear"),
    ("mm", "linear"),
    ("sgd", "optimizer"),
    ("_foreach", "optimizer"),
    ("add_", "optimizer and residual adds"),
    ("index", "batch indexing"),
    ("cross_entropy", "loss"),
    ("log_softmax", "loss"),
    ("nll_loss", "loss"),
    ("dropout", "dropout"),
    ("bernoulli", "dropout"),
)


def load_data(n: int, n_val: int) -> tuple[TensorDataset, TensorDataset, str]:
    """``n`` training and ``n_val`` held-out Fashion-MNIST images (balanced), or synthetic."""
    try:
        train = load_dataset("fashion-mnist", "train", per_class=n // 10, seed=SEED)
        val = load_dataset("fashion-mnist", "test", per_class=n_val // 10, seed=SEED)
        assert isinstance(train, TensorDataset) and isinstance(val, TensorDataset)
        return train, val, "fashion-mnist"
    except DataError:
        g = torch.Generator().manual_seed(SEED)
        info = DatasetInfo("synthetic28", 10, (1, 28, 28), [str(i) for i in range(10)])

        def make(k: int) -> TensorDataset:
            inputs = torch.randn(k, 1, 28, 28, generator=g)  # (k, 1, 28, 28)
            return TensorDataset(inputs, torch.randint(0, 10, (k,), generator=g), info)

        return make(n), make(n_val), "synthetic (Fashion-MNIST not found)"


def bare_train(model: nn.Module, data: TensorDataset, cfg: TrainConfig, cl: bool = False) -> None:
    """One epoch by hand: the Trainer's batch order, cross-entropy, SGD with the same settings."""
    layout = torch.channels_last if cl else torch.contiguous_format
    model.to(memory_format=layout)
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    model.train()
    order = torch.randperm(len(data), generator=epoch_generator(SEED, 0))  # (N,)
    for start in range(0, len(data), cfg.batch_size):
        idx = order[start : start + cfg.batch_size]  # (B,)
        x = data.inputs[idx].contiguous(memory_format=layout)  # (B, C, H, W)
        loss = F.cross_entropy(model(x), data.targets[idx])  # ()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


@torch.inference_mode()
def bare_val(model: nn.Module, data: TensorDataset, batch_size: int, cl: bool = False) -> float:
    """Held-out accuracy by hand, in eval mode."""
    layout = torch.channels_last if cl else torch.contiguous_format
    model.eval().to(memory_format=layout)
    correct = torch.zeros((), dtype=torch.long)
    for start in range(0, len(data), batch_size):
        x = data.inputs[start : start + batch_size].contiguous(memory_format=layout)
        logits = model(x)  # (B, K)
        correct += (logits.argmax(1) == data.targets[start : start + batch_size]).sum()
    return correct.item() / len(data)


def trainer_train(model: nn.Module, data: TensorDataset, cfg: TrainConfig) -> None:
    Trainer(model, create_loss("ce"), cfg, progress=False, seed=SEED).fit(data)


def trainer_val(model: nn.Module, data: TensorDataset, batch_size: int) -> None:
    """:func:`evaluate` in the layout the Trainer gives the model during ``fit``."""
    with channels_last(model, data.inputs[:2], torch.device("cpu")):
        evaluate(model, data, batch_size)


def op_breakdown(model: nn.Module, data: TensorDataset, cfg: TrainConfig) -> dict[str, Any]:
    """torch.profiler self-CPU time of one Trainer epoch, summed by operator family."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer_train(model, data, cfg)
    families: dict[str, float] = {}
    top = []
    for event in prof.key_averages():
        name = event.key.lower()
        family = next((f for frag, f in OP_FAMILIES if frag in name), "other")
        families[family] = families.get(family, 0.0) + event.self_cpu_time_total / 1e6
        top.append((event.self_cpu_time_total / 1e6, event.key, event.count))
    total = sum(families.values())
    top.sort(reverse=True)
    return {
        "total_self_cpu_s": total,
        "share_by_family": {
            k: round(v / total, 4) for k, v in sorted(families.items(), key=lambda kv: -kv[1])
        },
        "top_ops": [{"op": k, "self_cpu_s": round(s, 3), "calls": c} for s, k, c in top[:12]],
    }


def python_breakdown(model: nn.Module, data: TensorDataset, cfg: TrainConfig) -> dict[str, Any]:
    """cProfile of one Trainer epoch: time inside torch's compiled calls vs the loop's Python."""
    profiler = cProfile.Profile()
    profiler.enable()
    trainer_train(model, data, cfg)
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt  # type: ignore[attr-defined]
    own: dict[str, float] = {}
    for (file, _, func), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = "distillscope" if "distillscope" in file else ("torch" if "torch" in file else "")
        key = f"{where}:{func}" if where else func
        own[key] = own.get(key, 0.0) + tottime
    ours = sum(v for k, v in own.items() if k.startswith("distillscope:"))
    top = sorted(own.items(), key=lambda kv: -kv[1])[:12]
    return {
        "total_s": total,
        "distillscope_python_share": round(ours / total, 4),
        "top_self_time": [{"function": k, "self_s": round(v, 3)} for k, v in top],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", default=["teacher", "student"],
                        choices=sorted(NETWORKS), help="networks to time")  # fmt: skip
    parser.add_argument("--n", type=int, default=6400, help="training images (balanced)")
    parser.add_argument("--n-val", type=int, default=2000, help="held-out images (balanced)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--reps", type=int, default=3, help="timed rounds (median kept)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--profile", action="store_true", help="add operator / Python profiles")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON result file")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    train, val, source = load_data(args.n, args.n_val)
    info = train.info
    cfg = TrainConfig(epochs=1, batch_size=args.batch_size, optimizer="sgd", lr=0.05,
                      momentum=0.9, weight_decay=5e-4, schedule="cosine")  # fmt: skip
    initial: dict[str, nn.Module] = {}
    for net in args.networks:
        arch, params = NETWORKS[net]
        torch.manual_seed(SEED)
        initial[net] = create_model(arch, num_classes=info.num_classes,
                                    in_channels=info.input_shape[0], **params)  # fmt: skip

    def variants(net: str) -> dict[str, Callable[[], None]]:
        fresh = lambda: copy.deepcopy(initial[net])  # noqa: E731
        return {  # validation times do not depend on the weights' values
            "train_bare": lambda: bare_train(fresh(), train, cfg),
            "train_bare_cl": lambda: bare_train(fresh(), train, cfg, cl=True),
            "train_trainer": lambda: trainer_train(fresh(), train, cfg),
            "val_bare": lambda: bare_val(fresh(), val, args.batch_size),
            "val_bare_cl": lambda: bare_val(fresh(), val, args.batch_size, cl=True),
            "val_trainer": lambda: trainer_val(fresh(), val, args.batch_size),
        }

    times = {net: {v: [] for v in variants(net)} for net in args.networks}
    for round_ in range(args.warmup + args.reps):
        for net in args.networks:
            runs = variants(net)
            names = list(runs)
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                torch.manual_seed(SEED)
                start = time.perf_counter()
                runs[name]()
                elapsed = time.perf_counter() - start
                if round_ >= args.warmup:
                    times[net][name].append(elapsed)
            if round_ >= args.warmup:
                shown = ", ".join(f"{k}={v[-1]:.2f}s" for k, v in times[net].items())
                print(f"round {round_ + 1 - args.warmup}/{args.reps} {net}: {shown}", flush=True)

    networks: dict[str, Any] = {}
    for net in args.networks:
        med = {k: statistics.median(v) for k, v in times[net].items()}
        arch, params = NETWORKS[net]
        epoch = med["val_trainer"] + med["train_trainer"]
        networks[net] = {
            "model": {
                "name": arch,
                "params": params,
                "parameters": count_parameters(initial[net]),
            },  # fmt: skip
            "median_s": med,
            "times_s": times[net],
            "images_per_s": {
                k: (args.n if k.startswith("train") else args.n_val) / v for k, v in med.items()
            },
            "ratios": {
                "train_trainer_vs_bare_same_layout": med["train_trainer"] / med["train_bare_cl"],
                "train_channels_last_speedup": med["train_bare"] / med["train_bare_cl"],
                "train_trainer_vs_bare": med["train_trainer"] / med["train_bare"],
                "val_trainer_vs_bare_same_layout": med["val_trainer"] / med["val_bare_cl"],
                "val_channels_last_speedup": med["val_bare"] / med["val_bare_cl"],
                "val_share_of_epoch": med["val_trainer"] / epoch,
            },
        }
        if args.profile:
            networks[net]["ops"] = op_breakdown(copy.deepcopy(initial[net]), train, cfg)
            networks[net]["python"] = python_breakdown(copy.deepcopy(initial[net]), train, cfg)
    result = {
        "benchmark": "epoch_time",
        "networks": networks,
        "setup": {
            "data": source,
            "train_images": len(train),
            "val_images": len(val),
            "batch_size": args.batch_size,
            "optimizer": "sgd lr 0.05 momentum 0.9 weight_decay 5e-4 (cosine in the Trainer)",
            "reps": args.reps,
            "warmup": args.warmup,
            "threads": args.threads,
            "load_average": list(os.getloadavg()),
        },
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, args.out)
    for net, r in networks.items():
        ips, ratio = r["images_per_s"], r["ratios"]
        print(
            f"{net}: train {ips['train_trainer']:.0f} img/s (bare {ips['train_bare']:.0f}, "
            f"channels-last {ips['train_bare_cl']:.0f}), trainer/bare same layout "
            f"{ratio['train_trainer_vs_bare_same_layout']:.3f}; val {ips['val_trainer']:.0f} "
            f"img/s, evaluate/bare same layout {ratio['val_trainer_vs_bare_same_layout']:.3f}"
        )
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
