"""Teacher outputs computed once per image and looked up by dataset index.

With a cache the frozen teacher runs once over the training set instead of once per epoch.
That is only the same as running it live when the student sees the same image every epoch: the
dataset has no random augmentation, or the user explicitly froze the teacher's outputs.
:func:`cache_allowed` states the rule; callers apply it before building a cache.

Frozen under a geometric augmentation (random crop / flip), the cache is computed on the
un-augmented images and each batch reads it so:

* logits (and any feature that is not a spatial map, e.g. a pooled ``(N, D)`` vector): the
  teacher's answer on the un-augmented image, by design ("fixed teaching");
* spatial feature maps (``(N, C, h, w)``: hint / FitNets, attention transfer, NST targets):
  moved with the batch's own draw at their own resolution (:meth:`GeometricTransform.move`),
  so they stay in step with the student's augmented view;
* explanations: moved with the batch's draw as its images were (e2KD's frozen explanations).

:func:`unmoved_features` names the cached features that are not moved, for a warning.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from distillscope.contracts import Batch, Outputs
from distillscope.data.base import (
    DistillDataset,
    GeometricTransform,
    TensorDataset,
    iter_batches,
    num_batches,
)
from distillscope.errors import CheckpointError, ConfigError
from distillscope.models.forward import forward_outputs
from distillscope.models.taps import FeatureTap
from distillscope.train.cache_disk import disk_allocator, open_disk_cache, publish
from distillscope.train.checkpoint import load_checkpoint, save_checkpoint
from distillscope.train.distributed import SINGLE, World, barrier, block, from_main, gather_rows
from distillscope.train.layout import channels_last, to_layout
from distillscope.train.precision import as_fp32, autocast
from distillscope.train.seeding import resolve_device

#: Gives a teacher's detached outputs with its explanation: ``(teacher, inputs)``.
Explainer = Callable[[nn.Module, Tensor], Outputs]
#: Makes a stored array: ``(name, rows, one row's example) -> (rows, ...) tensor``.
Allocator = Callable[[str, int, Tensor], Tensor]


def cache_allowed(dataset: DistillDataset, frozen: bool = False) -> bool:
    """Whether cached teacher outputs equal live ones for ``dataset``.

    True when the dataset applies no random augmentation, or when the user froze the teacher's
    outputs on purpose (``frozen``).

    Example:
        >>> from distillscope.data.base import DatasetInfo
        >>> info = DatasetInfo("toy", 2, (1,), ["a", "b"])
        >>> data = TensorDataset(torch.zeros(4, 1), torch.zeros(4), info, transform=lambda x: x)
        >>> cache_allowed(data), cache_allowed(data, frozen=True)
        (False, True)
    """
    return frozen or not getattr(dataset, "augmented", False)


class TeacherCache:
    """Teacher logits (and tapped features) for every item of a dataset, by dataset index.

    Args:
        logits: ``(N, K)`` teacher logits at temperature 1, row ``i`` for dataset index ``i``.
        features: Module path -> ``(N, ...)`` activations.
        explanation: ``(N, ...)`` teacher explanations of its top-1 class (frozen
            explanations, paper 001 3.3), or ``None``.
        transform: The training data's geometric augmentation: a batch's cached explanations
            are moved by the batch's own draw (``Batch.augmentation``), exactly as its images
            were ("augmenting images and pre-computed explanations jointly", paper 001), and
            its 4-D feature maps by the same draw at their own resolution.

    Example:
        >>> from distillscope.data.base import DatasetInfo
        >>> info = DatasetInfo("toy", 2, (3,), ["a", "b"])
        >>> data = TensorDataset(torch.randn(6, 3), torch.zeros(6), info)
        >>> teacher = torch.nn.Linear(3, 2)
        >>> cache = TeacherCache.build(teacher, data, batch_size=4, device="cpu", progress=False)
        >>> batch = Batch(data.inputs[[4, 1]], data.targets[[4, 1]], torch.tensor([4, 1]))
        >>> torch.allclose(cache.outputs(batch).logits, teacher(batch.inputs))
        True
    """

    def __init__(
        self,
        logits: Tensor,
        features: dict[str, Tensor] | None = None,
        explanation: Tensor | None = None,
        transform: GeometricTransform | None = None,
        data: str | None = None,
        folder: Path | None = None,
        serve_device: torch.device | None = None,
    ) -> None:
        features = dict(features or {})
        rows = {f"feature {p!r}": v for p, v in features.items()}
        if explanation is not None:
            rows["explanation"] = explanation
        for what, value in rows.items():
            if value.shape[0] != logits.shape[0]:
                raise ValueError(
                    f"{what} has {value.shape[0]} rows but logits have {logits.shape[0]}"
                )
        self.logits = logits
        self.features = features
        self.explanation = explanation
        self.transform = transform
        self.data = data  # fingerprint of the data it was built on (checked by :meth:`check`)
        #: The folder of a disk cache (:meth:`on_disk`), whose tensors map its files; else None.
        self.folder = folder
        #: Where a disk cache hands its rows (the training device); ``None``: where it lives.
        self.serve_device = serve_device
        #: The precision of the teacher passes it holds (``fp32`` or ``bf16``; set by build).
        self.precision = "fp32"

    @property
    def device(self) -> torch.device:
        return self.logits.device

    def __len__(self) -> int:
        return int(self.logits.shape[0])

    @classmethod
    def build(
        cls,
        teacher: nn.Module,
        dataset: DistillDataset,
        batch_size: int,
        device: str | torch.device,
        feature_paths: Sequence[str] = (),
        progress: bool = True,
        explain: Explainer | None = None,
        allocate: Allocator | None = None,
        precision: str = "fp32",
        world: World = SINGLE,
        gather: bool = True,
    ) -> TeacherCache:
        """Run the frozen ``teacher`` once over ``dataset`` in order and keep its outputs.

        The teacher runs in eval mode under :func:`torch.inference_mode` (its mode is restored
        afterwards), on the CPU in channels-last layout where it can (see
        :mod:`distillscope.train.layout`; the stored tensors are contiguous either way). For an
        in-memory dataset with a transform, the un-augmented inputs are used.
        The stored tensors are ordinary tensors, usable in autograd-tracked losses.

        With ``explain`` (a loss's :meth:`~distillscope.distill.base.LossTerm.explain_teacher`)
        the teacher runs with autograd on instead, once per image, and its explanations are
        kept too: frozen explanations (paper 001 3.3). A geometric augmentation of the dataset
        is kept with the cache to move them as each batch's images were moved.

        Args:
            teacher: The teacher network (moved to ``device``).
            dataset: Items to cache; rows follow dataset indices.
            batch_size: Inference batch size.
            device: Where the teacher runs and the cache lives.
            feature_paths: Teacher module paths (``named_modules`` names) to keep as well.
            progress: Show a progress bar on stderr.
            precision: ``fp32``, or ``bf16``: the teacher's passes under autocast, stored in
                fp32 (not with ``explain``: explanations stay fp32).
            allocate: Makes each stored array, ``allocate(name, n, like)`` with ``name`` one of
                ``logits``, ``features/<path>``, ``explanation`` (default: ordinary tensors on
                ``device``; :meth:`on_disk` maps files instead).
            world: The ranks of a data-parallel run: each runs the teacher on its
                :func:`~distillscope.train.distributed.block` of the items, and with
                ``gather`` the blocks are broadcast so that every rank holds the whole cache
                (without: the stores are shared, disk files every rank writes its rows to).
            gather: See ``world``.

        Raises:
            ModelError: If a feature path does not name a module of the teacher.
        """
        device = resolve_device(device)
        alloc: Allocator = allocate or (lambda name, n, like: _empty(n, like))
        source = unaugmented(dataset)
        n = len(source)
        was_training = teacher.training
        teacher.to(device).eval()
        logits: Tensor | None = None
        explanation: Tensor | None = None
        features: dict[str, Tensor] = {}
        sample = source[0][0].unsqueeze(0).to(device) if n else None  # (1, ...)
        try:
            with ExitStack() as stack:
                if explain is None:
                    stack.enter_context(torch.inference_mode())
                    stack.enter_context(autocast(precision, device))
                    layout = sample is not None and stack.enter_context(
                        channels_last(teacher, sample, device, "auto", precision)
                    )
                else:
                    stack.enter_context(torch.enable_grad())
                    layout = False
                tap = (
                    stack.enter_context(FeatureTap(teacher, feature_paths, detach=explain is None))
                    if feature_paths
                    else None
                )
                rows = torch.arange(*block(n, world)) if world.parallel else None  # (n / R,)
                batches = iter_batches(source, batch_size, shuffle=False, rows=rows)
                total = (
                    -(-len(rows) // batch_size)
                    if rows is not None
                    else num_batches(source, batch_size)
                )
                bar = tqdm(batches, total=total, desc="teacher cache", file=sys.stderr,
                           disable=not progress, leave=False)  # fmt: skip
                for batch in bar:
                    batch = batch.to(device)
                    x = to_layout(batch.inputs, layout)
                    out = as_fp32(_outputs(teacher, x, tap, explain))
                    if logits is None:
                        logits = alloc("logits", n, out.logits)  # (N, K)
                    _put(logits, batch.index, out.logits)
                    if out.explanation is not None:
                        if explanation is None:
                            explanation = alloc("explanation", n, out.explanation)  # (N, ...)
                        _put(explanation, batch.index, out.explanation)
                    for path, value in out.features.items():
                        if path not in features:
                            features[path] = alloc(f"features/{path}", n, value)  # (N, ...)
                        _put(features[path], batch.index, value.detach())
        finally:
            teacher.train(was_training)
        if logits is None:
            raise ConfigError("cannot build a teacher cache over an empty dataset")
        if gather:
            kept = [logits, *features.values(), *([] if explanation is None else [explanation])]
            gather_rows(kept, world)
        transform = getattr(dataset, "transform", None)
        moves = transform if isinstance(transform, GeometricTransform) else None
        cache = cls(logits, features, explanation, moves, data=dataset.fingerprint())
        cache.precision = precision if explain is None else "fp32"
        return cache

    @classmethod
    def on_disk(
        cls,
        teacher: nn.Module,
        dataset: DistillDataset,
        folder: Path,
        batch_size: int,
        device: str | torch.device,
        feature_paths: Sequence[str] = (),
        progress: bool = True,
        explain: Explainer | None = None,
        precision: str = "fp32",
        world: World = SINGLE,
    ) -> TeacherCache:
        """A cache whose arrays are memory-mapped files in ``folder``
        (:mod:`distillscope.train.cache_disk`): opened if ``folder`` holds a whole cache of
        this data, else built once (the teacher runs on ``device``, rows go to the files) and
        published atomically. Rows are served on ``device``.

        In a data-parallel ``world`` (every rank calls it) rank 0 makes the files and every rank
        writes the rows of its :func:`~distillscope.train.distributed.block` into them; rank 0
        publishes the cache once all have, and every rank maps it.

        Raises:
            TypeError: A stored dtype has no numpy equivalent (bfloat16).
        """
        device = resolve_device(device)
        transform = getattr(dataset, "transform", None)
        moves = transform if isinstance(transform, GeometricTransform) else None
        opened = open_disk_cache(folder) if world.main else None
        if from_main(world, lambda: opened is None):  # rank 0's view decides for all
            tmp = from_main(world, lambda: _fresh_folder(folder))
            try:
                allocate, made = disk_allocator(tmp, world)
                built = cls.build(teacher, dataset, batch_size, device, feature_paths, progress,
                                  explain, allocate=allocate, precision=precision, world=world,
                                  gather=False)  # fmt: skip
                for array in made.values():
                    array.flush()
                barrier(world)  # every rank's rows are in the files
                if world.main:
                    publish(tmp, folder, made, {"num_items": len(built), "data": built.data,
                                                "precision": built.precision})  # fmt: skip
            finally:
                if world.main:
                    shutil.rmtree(tmp, ignore_errors=True)
            barrier(world)  # published
        opened = opened or open_disk_cache(folder)
        if opened is None:
            raise CheckpointError(f"the teacher cache written to {folder} cannot be read")
        arrays, record = opened
        features = {k.partition("/")[2]: v for k, v in arrays.items() if k.startswith("features/")}
        data = record.get("data") if isinstance(record.get("data"), str) else None
        cache = cls(arrays["logits"], features, arrays.get("explanation"), moves, data=data,
                    folder=folder, serve_device=device)  # fmt: skip
        cache.precision = str(record.get("precision", "fp32"))
        return cache

    def outputs(self, batch: Batch) -> Outputs:
        """The cached teacher :class:`Outputs` for ``batch`` (rows ``batch.index``); with a
        geometric augmentation, explanations and 4-D feature maps moved by the batch's draw."""
        index = batch.index
        if index.device != self.logits.device:
            index = index.to(self.logits.device)
        features = {path: value[index] for path, value in self.features.items()}
        explanation = None if self.explanation is None else self.explanation[index]  # (B, ...)
        if self.transform is not None and batch.augmentation is not None:
            aug = batch.augmentation.to(self.logits.device)
            size = tuple(batch.inputs.shape[-2:])
            for path, value in features.items():
                if value.dim() == 4:  # (B, C, h, w) maps of the images
                    features[path] = self.transform.move(value, aug, size)
            if explanation is not None:
                explanation = self.transform.apply(explanation, aug, fill=(0.0,))
        logits = self.logits[index]  # (B, K)
        to = self.serve_device
        if to is not None and to != self.logits.device:  # a disk cache feeding another device
            logits = logits.to(to)
            features = {path: value.to(to) for path, value in features.items()}
            explanation = None if explanation is None else explanation.to(to)
        return Outputs(logits, features, explanation=explanation)

    def check(self, dataset: DistillDataset, feature_paths: Sequence[str] = ()) -> None:
        """Raise :class:`ConfigError` unless the cache covers ``dataset`` and ``feature_paths``.

        A cache that records the data it was built on (built by :meth:`build`, or saved and
        loaded) must have been built on ``dataset``'s very bytes, not only on as many items.
        """
        if len(dataset) != len(self):
            raise ConfigError(
                f"the teacher cache holds {len(self)} items but the training set has "
                f"{len(dataset)}; rebuild the cache on this training set"
            )
        if self.data is not None and self.data != dataset.fingerprint():
            raise ConfigError(
                f"the teacher cache was built on other data (fingerprint {self.data[:16]}, the "
                f"training set {dataset.fingerprint()[:16]}); rebuild the cache on this "
                "training set"
            )
        missing = [p for p in feature_paths if p not in self.features]
        if missing:
            raise ConfigError(
                f"the loss reads teacher feature {missing[0]!r} but the teacher cache holds "
                f"only {sorted(self.features) or 'logits'}; rebuild it with "
                f"feature_paths={list(feature_paths)}"
            )

    def to(self, device: str | torch.device) -> TeacherCache:
        """A copy of the cache on ``device``."""
        explanation = None if self.explanation is None else self.explanation.to(device)
        return TeacherCache(
            self.logits.to(device),
            {p: v.to(device) for p, v in self.features.items()},
            explanation,
            self.transform,
            self.data,
        )

    def save(self, path: str | Path) -> None:
        """Write the cache to a safetensors file atomically."""
        tensors = {"logits": self.logits}
        tensors.update({f"features/{p}": v for p, v in self.features.items()})
        if self.explanation is not None:  # the augmentation is not saved: pass it to load
            tensors["explanation"] = self.explanation
        meta = {
            "kind": "teacher_cache",
            "num_items": len(self),
            "feature_paths": sorted(self.features),
            "data": self.data,
        }
        save_checkpoint(path, tensors, meta)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> TeacherCache:
        """Read a cache written by :meth:`save` onto ``device``.

        Raises:
            CheckpointError: If the file is unreadable or holds no teacher cache.
        """
        tensors, meta = load_checkpoint(path)
        if meta.get("kind") != "teacher_cache" or "logits" not in tensors:
            raise CheckpointError(
                f"{path} is not a valid checkpoint (no teacher cache in it); delete it or "
                "rebuild the cache"
            )
        features = {
            key.partition("/")[2]: value
            for key, value in tensors.items()
            if key.startswith("features/")
        }
        explanation = tensors.get("explanation")
        data = meta.get("data") if isinstance(meta.get("data"), str) else None
        cache = cls(tensors["logits"], features, explanation, data=data)
        return cache.to(resolve_device(device))


def cache_bytes(
    teacher: nn.Module,
    dataset: DistillDataset,
    feature_paths: Sequence[str] = (),
    explain: Explainer | None = None,
) -> int:
    """Bytes a :class:`TeacherCache` of ``teacher`` over ``dataset`` would hold, estimated
    from one item run through the teacher (eval mode, no gradients unless ``explain`` is
    given, whose explanation is counted too; the teacher's mode is restored).

    Example:
        >>> from distillscope.data.base import DatasetInfo
        >>> data = TensorDataset(torch.randn(10, 3), torch.zeros(10),
        ...                      DatasetInfo("toy", 2, (3,), ["a", "b"]))
        >>> net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
        >>> cache_bytes(net, data), cache_bytes(net, data, ["1"])  # 10 x (2 [+ 5]) float32
        (80, 280)
    """
    if len(dataset) == 0:
        return 0
    device = next(iter(teacher.parameters()), torch.zeros(())).device
    with torch.random.fork_rng(devices=[]):
        x = torch.as_tensor(dataset[0][0]).unsqueeze(0).to(device)  # (1, ...)
    was_training = teacher.training
    teacher.eval()
    try:
        with ExitStack() as stack, torch.set_grad_enabled(explain is not None):
            tap = (
                stack.enter_context(FeatureTap(teacher, feature_paths, detach=explain is None))
                if feature_paths
                else None
            )
            out = _outputs(teacher, x, tap, explain)
    finally:
        teacher.train(was_training)
    kept = [out.logits, *out.features.values()]
    if out.explanation is not None:
        kept.append(out.explanation)
    per_item = sum(t.numel() * t.element_size() for t in kept)
    return per_item * len(dataset)


def unmoved_features(cache: TeacherCache) -> list[str]:
    """Cached feature paths a geometric augmentation does not move (not ``(N, C, h, w)`` maps):
    they hold the un-augmented view, as the logits do. Empty without such an augmentation.

    Example:
        >>> from distillscope.data.vision import RandomCropFlip
        >>> feats = {"pool": torch.zeros(2, 8), "layer1": torch.zeros(2, 4, 3, 3)}
        >>> unmoved_features(TeacherCache(torch.zeros(2, 3), feats, transform=RandomCropFlip(1)))
        ['pool']
    """
    if cache.transform is None:
        return []
    return [path for path, value in cache.features.items() if value.dim() != 4]


def unaugmented(dataset: DistillDataset) -> DistillDataset:
    """The same items without random augmentation where that is possible (in-memory data)."""
    if isinstance(dataset, TensorDataset) and dataset.transform is not None:
        return TensorDataset(
            dataset.inputs,
            dataset.targets,
            dataset.info,
            masks=dataset.masks,
            groups=dataset.groups,
            heatmaps=dataset.heatmaps,
            token_labels=dataset.token_labels,
        )
    return dataset


def _outputs(
    teacher: nn.Module, x: Tensor, tap: FeatureTap | None, explain: Explainer | None
) -> Outputs:
    """The teacher's detached outputs on ``x``: logits and tapped features, and with
    ``explain`` its explanation. The explanation pass gives the logits too, so a second
    (gradient-free) pass runs only for tapped features; nothing keeps a graph, which would
    chain every batch's graph to the cache."""
    if explain is None:
        return forward_outputs(teacher, x, tap).detach()
    explained = explain(teacher, x).detach()
    if tap is None:
        return explained
    with torch.no_grad():
        out = forward_outputs(teacher, x, tap).detach()
    return Outputs(out.logits, out.features, explanation=explained.explanation)


def _fresh_folder(folder: Path) -> Path:
    """An empty temporary sibling of ``folder`` to write a disk cache in."""
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _put(store: Tensor, index: Tensor, rows: Tensor) -> None:
    """``store[index] = rows`` across devices (a disk cache's store is on the CPU)."""
    store[index.to(store.device)] = rows.to(store.device)


def _empty(n: int, like: Tensor) -> Tensor:
    """An ordinary (non-inference) ``(n, *like.shape[1:])`` tensor to fill row by row."""
    with torch.inference_mode(False):
        return torch.empty((n, *like.shape[1:]), dtype=like.dtype, device=like.device)
