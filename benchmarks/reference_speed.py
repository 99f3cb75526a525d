"""The slow methods' training step against their reference implementations' (issue 23, item 3).

For CRD and FT (RepDistiller), SSKD (the authors' code) and ReviewKD (the authors' CIFAR code),
one training step of distillscope (the ``Trainer`` with the method's loss and a live teacher)
is timed against one training step of the reference code on the same networks and batches:
a resnet20 teacher and a resnet8 student of ours (the ``configs/methods/`` pair) on 28x28
Fashion-MNIST images (synthetic ones if it is not installed), batch 128, SGD (lr 0.05,
momentum 0.9, weight decay 5e-4), the same initial weights for both sides.

The reference code is not part of distillscope and is never copied into it: ``--reference-root
DIR`` names a folder holding the repositories as their authors publish them (``RepDistiller/``,
``SSKD/``, ``ReviewKD/``; see ``benchmarks/README.md``), and their modules are imported from
there at run time. Our networks are handed to them through :class:`ReferenceView`, which gives
a network the references' calling convention (``model(x, is_feat=True) -> (features,
logits)``), so both sides run the same convolutions and only the method differs. What runs of
each reference:

- ``crd``: RepDistiller's ``CRDLoss`` in its own training loop (``helper.loops.train_distill``,
  ``--distill crd -a 0 -b 0.8``, ``nce_k`` 4096); the negatives are drawn before the step, as
  its data loader's workers do (``CIFAR100InstanceSample``, mode ``exact``); that draw is timed
  apart (``crd_reference_draw``) by calling the dataset's own ``__getitem__`` for every item of
  a batch. Its ``ContrastMemory`` moves a sampler to CUDA at construction; that call is made a
  no-op here (the CPU has none, and the sampler is unused when indices are given).
- ``ft``: RepDistiller's ``Paraphraser``, ``Translator`` and ``FactorTransfer`` in the same
  loop (``--distill factor -a 0 -b 200``), the paraphraser untrained (its stage is not timed).
- ``sskd``: the authors' ``wrapper`` (projection heads) and the body of their student training
  loop (the inner ``for x, target in train_loader`` loop of ``student.py``), read from the file
  and run with ``.cuda()`` calls removed; their data loader's four rotated copies per image are
  made before the step, as its workers do. The teacher's head is untrained on both sides.
- ``reviewkd``: the authors' ``ReviewKD`` module (ABFs; built with the student's stage sizes,
  its ``.to('cuda')`` at construction skipped) and ``hcl`` loss, with cross-entropy, in a loop
  written here after their ``train.py`` (teacher under ``no_grad``, stages ``layer1-3`` and the
  pooled map as their CIFAR ResNets give them).

Ours: the same method through ``Trainer.fit`` (``--steps`` batches, ``max_batches``), the time
of its training loop alone (the epoch record's ``time``: binding and stages excluded), the same
loss settings: ``ce`` + ``crd`` (weight 0.8, 4096 negatives, the ``exact`` sampler), ``ce`` +
``ft`` (weight 200, no paraphraser epochs), ``sskd`` (no head epochs), ``ce`` + ``reviewkd`` (no
warm-up). The references' steps run on batches made before the loop (their loaders' work);
ours make their batches and the method's draws (CRD's negatives, SSKD's rotations) inside the
loop.

One more variant of ours, ``crd_ours_fresh_gather``, gathers CRD's bank rows into new memory
every step, as distillscope did before its workspace (what that change saves).

Output: per-step seconds of every variant, medians over ``--reps`` interleaved rounds after one
warm-up round, and ``<method>_ours_vs_reference`` (ours / reference; below 1: ours is faster;
for CRD also against the reference step plus its loader's draw), into
``results/reference_speed.json``. Ratios within one run, never thresholds. Beside the wall
times, every variant's thread CPU time and minor page faults per step (``cpu_s_per_step``,
``page_faults_per_step``, medians, and ``cpu_ratios``): on a busy machine the CPU time moves
far less than the wall time. They span the whole variant (ours: ``Trainer.fit`` with its
binding pass on a sample batch; a reference: its set-up), a little against ours.

Usage: ``python benchmarks/reference_speed.py --reference-root DIR [--n 6000] [--steps 20]
[--reps 5] [--threads 1] [--only crd ft sskd reviewkd]``
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import importlib
import io
import resource
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, NoReturn

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from method_overhead import load_data, networks  # noqa: E402
from rounds import interleaved, write_result  # noqa: E402

from distillscope.config_train import TrainConfig  # noqa: E402
from distillscope.distill import build_loss  # noqa: E402
from distillscope.distill.contrastive import ContrastiveRepresentation  # noqa: E402
from distillscope.functional.relation import contrast_draws  # noqa: E402
from distillscope.models.taps import FeatureTap  # noqa: E402
from distillscope.train import Trainer, epoch_generator  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "reference_speed.json"
SEED = 0
METHODS = ("crd", "ft", "sskd", "reviewkd")
#: Reference folder -> the files this benchmark imports or reads from it.
REFERENCES = {
    "RepDistiller": (
        "crd/criterion.py",
        "helper/loops.py",
        "distiller_zoo/FT.py",
        "models/util.py",
        "dataset/cifar100.py",
    ),  # fmt: skip
    "SSKD": ("wrapper.py", "student.py", "utils.py"),
    "ReviewKD": ("CIFAR-100/model/reviewkd.py",),
}
#: Where each reference is imported from, below its folder.
IMPORT_DIRS = {"RepDistiller": "", "SSKD": "", "ReviewKD": "CIFAR-100"}
K_NEGATIVES = 4096
OURS: dict[str, dict[str, Any]] = {
    "crd": {
        "ce": {},
        "crd": {
            "weight": 0.8,
            "negatives": K_NEGATIVES,
            "student_layer": "pool",
            "teacher_layer": "pool",
        },
    },  # fmt: skip
    "ft": {
        "ce": {},
        "ft": {
            "weight": 200,
            "student_layer": "layer3",
            "teacher_layer": "layer3",
            "paraphraser_epochs": 0,
        },
    },  # fmt: skip
    "sskd": {"sskd": {"head_epochs": 0}},
    "reviewkd": {
        "ce": {},
        "reviewkd": {
            "student_layers": ["layer1", "layer2", "layer3", "pool"],
            "teacher_layers": ["layer1", "layer2", "layer3", "pool"],
            "warmup_epochs": 0,
        },
    },  # fmt: skip
}
#: The stem, the three stages and the pooled feature: the references' ``feats`` list.
STAGES = ("act1", "layer1", "layer2", "layer3", "pool")


class ReferenceView(nn.Module):
    """One of our CIFAR ResNets under the references' calling convention.

    ``forward(x, is_feat=True)`` returns ``([stem, layer1, layer2, layer3, pooled], logits)``
    as RepDistiller's, SSKD's and ReviewKD's CIFAR ResNets do (``preact`` is accepted and
    ignored: the stages are the tapped modules' outputs, as distillscope reads them); the
    pooled feature is ``(B, C)`` or, with ``pooled_map``, ``(B, C, 1, 1)`` (ReviewKD's). The
    classifier is also the last child, where SSKD's ``wrapper`` reads its input width.
    """

    def __init__(self, net: nn.Module, pooled_map: bool = False) -> None:
        super().__init__()
        self.net = net
        self.fc = net.fc
        self.pooled_map = pooled_map
        self.tap = FeatureTap(net, list(STAGES))

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> Any:
        logits = self.net(x)  # (B, K)
        if not is_feat:
            return logits
        feats = [self.tap.features[p] for p in STAGES]
        if self.pooled_map:
            feats[-1] = feats[-1][:, :, None, None]  # (B, C, 1, 1)
        return feats, logits

    def remove(self) -> None:
        """Detach the tap from the network (the teacher is shared with our runs)."""
        self.tap.remove()


@contextlib.contextmanager
def viewed(net: nn.Module, pooled_map: bool = False) -> Iterator[ReferenceView]:
    """A :class:`ReferenceView` of ``net`` for one reference epoch; its tap removed after."""
    view = ReferenceView(net, pooled_map)
    try:
        yield view
    finally:
        view.remove()


# ---------------------------------------------------------------------------- references
def fail(message: str) -> NoReturn:
    """One line on stderr, exit status 2 (no reference code to run)."""
    print(f"reference_speed: {message}", file=sys.stderr)
    raise SystemExit(2)


@contextlib.contextmanager
def _on_path(folder: Path) -> Iterator[None]:
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path.remove(str(folder))


def load_references(root: Path, methods: list[str]) -> dict[str, Any]:
    """Import what each method needs from the reference root; one-line SystemExit(2) if not."""
    wanted = {"crd": "RepDistiller", "ft": "RepDistiller", "sskd": "SSKD", "reviewkd": "ReviewKD"}
    refs: dict[str, Any] = {}
    for name in dict.fromkeys(wanted[m] for m in methods):
        folder = root / name
        missing = [f for f in REFERENCES[name] if not (folder / f).is_file()]
        if missing:
            fail(
                f"{folder} lacks {', '.join(missing)}; export the {name} repository there "
                "(see benchmarks/README.md, 'reference_speed.py')"
            )
        with _on_path(folder / IMPORT_DIRS[name]):
            refs[name] = _import(name, folder)
    return refs


def _import(name: str, folder: Path) -> SimpleNamespace:
    if name == "RepDistiller":
        memory = importlib.import_module("crd.memory")
        return SimpleNamespace(
            criterion=importlib.import_module("crd.criterion"),
            memory=memory,
            loops=importlib.import_module("helper.loops"),
            zoo=importlib.import_module("distiller_zoo"),
            util=importlib.import_module("models.util"),
            cifar=importlib.import_module("dataset.cifar100"),
        )
    if name == "SSKD":
        return SimpleNamespace(
            wrapper=importlib.import_module("wrapper").wrapper,
            utils=importlib.import_module("utils"),
            student_loop=_sskd_student_loop(folder / "student.py"),
        )
    return SimpleNamespace(reviewkd=importlib.import_module("model.reviewkd"))


class _NoCuda(ast.NodeTransformer):
    """``expr.cuda()`` -> ``expr`` (the references' device moves, on a CPU)."""

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "cuda" and not node.args:
            return func.value
        return node


def _sskd_student_loop(path: Path) -> Any:
    """The code object of the student's training loop in SSKD's ``student.py``: the inner
    ``for x, target in train_loader`` of the ``for epoch in range(args.epoch)`` loop."""
    tree = ast.parse(path.read_text(), str(path))
    for node in tree.body:
        if isinstance(node, ast.For) and ast.unparse(node.iter) == "range(args.epoch)":
            for inner in node.body:
                if isinstance(inner, ast.For) and ast.unparse(inner.iter) == "train_loader":
                    module = ast.fix_missing_locations(ast.Module([_NoCuda().visit(inner)], []))
                    return compile(module, str(path), "exec")
    fail(
        f"no student training loop ('for epoch in range(args.epoch)' then 'for x, target in "
        f"train_loader') in {path}; export the SSKD authors' repository there"
    )


# ---------------------------------------------------------------------------- the runs
class Setup:
    """Data, networks, batches and optimiser settings shared by both sides."""

    def __init__(self, n: int, steps: int) -> None:
        self.data, self.source = load_data(n)
        self.teacher, self.student0 = networks()
        self.steps = min(steps, len(self.data) // 128)
        self.cfg = TrainConfig(epochs=1, batch_size=128, optimizer="sgd", lr=0.05, momentum=0.9,
                               weight_decay=5e-4, schedule="constant",
                               max_batches=self.steps)  # fmt: skip
        order = torch.randperm(len(self.data), generator=epoch_generator(SEED, 0))  # (N,)
        self.index = [order[i * 128 : (i + 1) * 128] for i in range(self.steps)]  # (B,) each

    def batches(self) -> list[tuple[Tensor, Tensor, Tensor]]:
        return [(self.data.inputs[i], self.data.targets[i], i) for i in self.index]

    def student(self) -> nn.Module:
        return copy.deepcopy(self.student0)

    def sgd(self, params: Any) -> torch.optim.Optimizer:
        cfg = self.cfg
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)  # fmt: skip


def ours(setup: Setup, method: str, fresh_gather: bool = False) -> float:
    """Seconds per step of distillscope's Trainer loop (binding and stages excluded).

    With ``fresh_gather`` CRD gathers its bank rows into new memory every step, as it did
    before its workspace (``crd_ours_fresh_gather``: what the workspace saves).
    """
    loss = build_loss(OURS[method])
    if fresh_gather:
        for term in loss.modules():
            if isinstance(term, ContrastiveRepresentation):
                term._gather = lambda bank, draws, side: bank[draws]  # type: ignore[method-assign]
    history = Trainer(setup.student(), loss, setup.cfg, teacher=setup.teacher, progress=False,
                      seed=SEED).fit(setup.data)  # fmt: skip
    return history[0]["time"] / setup.steps


def repdistiller(setup: Setup, refs: SimpleNamespace, method: str) -> Callable[[], float]:
    """RepDistiller's ``train_distill`` epoch over the batches, for ``crd`` or ``ft``."""
    labels = setup.data.targets
    loader: list[tuple[Tensor, ...]] = []
    torch.manual_seed(SEED)
    for x, y, i in setup.batches():
        if method == "crd":  # the negatives, as drawn off the step by the data loader
            loader.append((x, y, i, contrast_draws(i, len(labels), K_NEGATIVES, "exact", labels)))
        else:
            loader.append((x, y, i))

    def epoch() -> float:
        with viewed(setup.student()) as student, viewed(setup.teacher) as teacher:
            return _train_distill(setup, refs, method, student, teacher, loader)

    return epoch


def _train_distill(setup: Setup, refs: SimpleNamespace, method: str, student: ReferenceView,
                   teacher: ReferenceView, loader: list[tuple[Tensor, ...]]) -> float:  # fmt: skip
    with torch.no_grad():  # the shapes their train_student.py reads from a sample pass
        feat_s, _ = student.eval()(setup.data.inputs[:2], is_feat=True)
        feat_t, _ = teacher.eval()(setup.data.inputs[:2], is_feat=True)
    distill = {"crd": "crd", "ft": "factor"}[method]  # their --distill names
    opt = SimpleNamespace(distill=distill, gamma=1.0, alpha=0.0, print_freq=10**9)
    modules: list[nn.Module] = [student]
    trainable: list[nn.Module] = [student]
    if method == "crd":
        opt.beta = 0.8
        args = SimpleNamespace(s_dim=feat_s[-1].shape[1], t_dim=feat_t[-1].shape[1], feat_dim=128,
                               nce_k=K_NEGATIVES, nce_t=0.07, nce_m=0.5,
                               n_data=len(setup.data))  # fmt: skip
        with _no_cuda_sampler(refs.memory):
            criterion = refs.criterion.CRDLoss(args)
        modules += [criterion.embed_s, criterion.embed_t]
        trainable += [criterion.embed_s, criterion.embed_t]
    else:
        opt.beta = 200.0
        paraphraser = refs.util.Paraphraser(feat_t[-2].shape)
        translator = refs.util.Translator(feat_s[-2].shape, feat_t[-2].shape)
        criterion = refs.zoo.FactorTransfer()
        modules += [translator, paraphraser]
        trainable += [translator]
    optimizer = setup.sgd(nn.ModuleList(trainable).parameters())
    module_list = nn.ModuleList([*modules, teacher])
    criteria = nn.ModuleList([nn.CrossEntropyLoss(), refs.zoo.DistillKL(4.0), criterion])
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        refs.loops.train_distill(1, loader, module_list, criteria, optimizer, opt)
    return (time.perf_counter() - start) / setup.steps


@contextlib.contextmanager
def _no_cuda_sampler(memory: ModuleType) -> Iterator[None]:
    """RepDistiller's ``ContrastMemory`` moves its (unused) sampler to CUDA when built."""
    alias = memory.AliasMethod
    saved = alias.cuda
    alias.cuda = lambda self: None
    try:
        yield
    finally:
        alias.cuda = saved


def crd_reference_draw(setup: Setup, refs: SimpleNamespace) -> Callable[[], float]:
    """Seconds per batch of RepDistiller's ``CIFAR100InstanceSample.__getitem__`` (mode
    ``exact``), which draws each item's negatives in the data loader's workers."""
    labels = setup.data.targets.numpy()
    classes = sorted(set(labels.tolist()))
    positive = [np.flatnonzero(labels == c) for c in classes]
    dataset = SimpleNamespace(
        train=True, train_data=np.zeros((len(labels), 1, 1, 3), np.uint8), train_labels=labels,
        transform=None, target_transform=None, is_sample=True, mode="exact", k=K_NEGATIVES,
        cls_positive=positive,
        cls_negative=[np.flatnonzero(labels != c) for c in classes],
    )  # fmt: skip
    getitem = refs.cifar.CIFAR100InstanceSample.__getitem__

    def draw() -> float:
        start = time.perf_counter()
        for index in setup.index:
            for i in index.tolist():
                getitem(dataset, i)
        return (time.perf_counter() - start) / setup.steps

    return draw


def sskd(setup: Setup, refs: SimpleNamespace) -> Callable[[], float]:
    """The SSKD authors' student loop over the batches (their four rotated copies per item)."""
    loader = [
        (torch.stack([torch.rot90(x, k, dims=(2, 3)) for k in range(4)], 1), y)  # (B, 4, C, H, W)
        for x, y, _ in setup.batches()
    ]
    hyper = SimpleNamespace(ce_weight=0.1, kd_weight=0.9, tf_weight=2.7, ss_weight=10.0, kd_T=4.0,
                            tf_T=4.0, ss_T=0.5, ratio_tf=1.0, ratio_ss=0.75)  # fmt: skip

    def epoch() -> float:
        with viewed(setup.student()) as student, viewed(setup.teacher) as teacher:
            return _sskd_epoch(setup, refs, loader, hyper, student, teacher)

    return epoch


def _sskd_epoch(
    setup: Setup,
    refs: SimpleNamespace,
    loader: list[tuple[Tensor, Tensor]],
    hyper: SimpleNamespace,
    student: ReferenceView,
    teacher: ReferenceView,
) -> float:
    t_model = refs.wrapper(teacher).eval()
    s_model = refs.wrapper(student).train()
    meters = {f"{k}_record": refs.utils.AverageMeter()
              for k in ("loss1", "loss2", "loss3", "loss4", "cls_acc", "ssp_acc")}  # fmt: skip
    scope = {"torch": torch, "F": F, "args": hyper, "train_loader": loader,
             "s_model": s_model, "t_model": t_model, "accuracy": refs.utils.accuracy,
             "optimizer": setup.sgd(s_model.parameters()), **meters}  # fmt: skip
    start = time.perf_counter()
    exec(refs.student_loop, scope)  # their loop body, from their student.py
    return (time.perf_counter() - start) / setup.steps


def reviewkd(setup: Setup, refs: SimpleNamespace) -> Callable[[], float]:
    """The ReviewKD authors' ABFs and HCL loss in a step after their ``train.py``."""
    batches = setup.batches()
    module = refs.reviewkd

    class OnCPU(module.ReviewKD):  # type: ignore[misc,name-defined]  # __init__ ends in .to('cuda')
        def to(self, *args: Any, **kwargs: Any) -> Any:
            return self if args == ("cuda",) else super().to(*args, **kwargs)

    def epoch() -> float:
        with viewed(setup.student(), True) as student, viewed(setup.teacher, True) as teacher:
            teacher.eval()
            with torch.no_grad():
                feats, _ = student.eval()(setup.data.inputs[:2], is_feat=True)
                t_feats, _ = teacher(setup.data.inputs[:2], is_feat=True)
            sizes = [int(f.shape[-1]) for f in feats[1:]][::-1]  # deepest first, as theirs
            cnn = OnCPU(student, [int(f.shape[1]) for f in feats[1:]],
                        [int(f.shape[1]) for f in t_feats[1:]], sizes, None).train()  # fmt: skip
            optimizer = setup.sgd(cnn.parameters())
            start = time.perf_counter()
            for images, labels, _ in batches:
                cnn.zero_grad()
                s_features, pred = cnn(images)
                with torch.no_grad():
                    t_features, _ = teacher(images, is_feat=True, preact=True)
                loss = module.hcl(s_features, t_features[1:]) + F.cross_entropy(pred, labels)
                loss.backward()
                optimizer.step()
            return (time.perf_counter() - start) / setup.steps

    return epoch


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference-root", type=Path, default=None,
                        help="folder holding RepDistiller/, SSKD/ and ReviewKD/")  # fmt: skip
    parser.add_argument("--n", type=int, default=6000, help="training images (CRD's bank size)")
    parser.add_argument("--steps", type=int, default=20, help="steps timed per round")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--only", nargs="+", choices=METHODS, default=list(METHODS))
    args = parser.parse_args(argv)
    if args.reference_root is None:
        fail(
            "no --reference-root; export RepDistiller, SSKD and ReviewKD into one folder and "
            "pass it (see benchmarks/README.md)"
        )
    refs = load_references(args.reference_root.resolve(), args.only)
    torch.set_num_threads(args.threads)
    setup = Setup(args.n, args.steps)
    variants: dict[str, Callable[[], float]] = {}
    for method in args.only:
        variants[f"{method}_ours"] = lambda m=method: ours(setup, m)
        if method in ("crd", "ft"):
            variants[f"{method}_reference"] = repdistiller(setup, refs["RepDistiller"], method)
        elif method == "sskd":
            variants["sskd_reference"] = sskd(setup, refs["SSKD"])
        else:
            variants["reviewkd_reference"] = reviewkd(setup, refs["ReviewKD"])
    if "crd" in args.only:
        variants["crd_ours_fresh_gather"] = lambda: ours(setup, "crd", fresh_gather=True)
        variants["crd_reference_draw"] = crd_reference_draw(setup, refs["RepDistiller"])
    per_step: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    faults: dict[str, list[float]] = {k: [] for k in variants}

    def timed(name: str) -> Callable[[], None]:
        def run() -> None:
            faults0, cpu0 = _minor_faults(), time.thread_time()
            per_step[name].append(variants[name]())
            cpu[name].append((time.thread_time() - cpu0) / setup.steps)
            faults[name].append((_minor_faults() - faults0) / setup.steps)

        return run

    interleaved({k: timed(k) for k in variants}, args.reps)
    per_step = {k: v[1:] for k, v in per_step.items()}  # the warm-up round's entry dropped
    med = {k: float(np.median(v)) for k, v in per_step.items()}
    med_cpu = {k: float(np.median(v[1:])) for k, v in cpu.items()}
    med_faults = {k: float(np.median(v[1:])) for k, v in faults.items()}
    ratios = {f"{m}_ours_vs_reference": med[f"{m}_ours"] / med[f"{m}_reference"]
              for m in args.only}  # fmt: skip
    if "crd" in args.only:
        with_draw = med["crd_reference"] + med["crd_reference_draw"]
        ratios["crd_ours_vs_reference_with_draw"] = med["crd_ours"] / with_draw
        ratios["crd_ours_fresh_gather_vs_reference"] = (
            med["crd_ours_fresh_gather"] / med["crd_reference"]
        )
        ratios["crd_ours_vs_ours_fresh_gather"] = med["crd_ours"] / med["crd_ours_fresh_gather"]
    cpu_ratios = {f"{m}_ours_vs_reference": med_cpu[f"{m}_ours"] / med_cpu[f"{m}_reference"]
                  for m in args.only}  # fmt: skip
    for k, v in med.items():
        print(f"{k}: {v * 1e3:.1f} ms/step, CPU {med_cpu[k] * 1e3:.1f} ms/step, "
              f"{med_faults[k]:.0f} page faults/step")  # fmt: skip
    return write_result(
        args.out,
        "reference_speed",
        {
            "data": setup.source,
            "train_images": len(setup.data),
            "batch_size": 128,
            "steps": setup.steps,
            "teacher": "resnet20",
            "student": "resnet8",
            "reps": args.reps,
            "threads": args.threads,
            "ours": {m: OURS[m] for m in args.only},
            "crd_negatives": K_NEGATIVES,
            "unit": "seconds per training step",
        },
        per_step,
        med,
        ratios,
        {
            "cpu_s_per_step": med_cpu,
            "page_faults_per_step": med_faults,
            "cpu_ratios": cpu_ratios,
            "cpu_times_s": {k: v[1:] for k, v in cpu.items()},
        },
    )


def _minor_faults() -> int:
    """Minor page faults of this thread so far (fresh memory touched for the first time)."""
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt


if __name__ == "__main__":
    main()
