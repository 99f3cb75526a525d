"""Teacher caches held during a run, within one memory budget.

A :class:`CachePool` builds a teacher's cache once per teacher, training set, feature set and
explanation and hands it to every student (or group) that asks for the same; the logits and
features of the caches held at once stay within ``teacher_cache_mb``: the oldest are dropped to
make room, and a cache that would not fit alone is written to disk once and read from there
(:mod:`distillscope.train.cache_disk`; with ``disk=False``, or without room on the disk, it is
not built and the teacher runs live; one line says which).
"""

from __future__ import annotations

import torch
from torch import nn

from distillscope.data.base import DistillDataset
from distillscope.distill.combine import CombinedLoss
from distillscope.messages import say
from distillscope.train.cache_disk import disk_key, disk_root, free_bytes
from distillscope.train.distributed import current_world, from_main
from distillscope.train.onednn import OneDNNGraph
from distillscope.train.teacher_cache import (
    Explainer,
    TeacherCache,
    cache_allowed,
    cache_bytes,
    unmoved_features,
)


def build_batch(device: torch.device) -> int:
    """The inference batch of a cache build on ``device``: 128 on the CPU, 512 elsewhere.

    The rows a build stores do not depend on it (bit for bit on the CPU in fp32 and bf16 for
    batches 64 to 1,000, measured on resnet8, resnet20 and mnist_cnn). On the CPU the smaller
    batch keeps a batch's activations within the processor's caches: an fp32 build of 3,200
    28x28 images took 0.77 (resnet20) and 0.61 (resnet8, mnist_cnn) of its time at 512
    (``benchmarks/precision.py``); on an accelerator the larger batch keeps the device busy.

    Example:
        >>> build_batch(torch.device("cpu")), build_batch(torch.device("cuda"))
        (128, 512)
    """
    return 128 if device.type == "cpu" else 512


class CachePool:
    """The teacher caches of one run.

    Args:
        budget_mb: Memory budget of the caches held at once (``teacher_cache_mb``).
        device: Where caches are built and kept.
        progress: Show the build's progress bar.
        disk: Put a cache over the budget on disk instead of running the teacher live.
    """

    def __init__(
        self, budget_mb: float, device: torch.device, progress: bool = True, disk: bool = False
    ) -> None:
        self.budget_mb = budget_mb
        self.device = device
        self.progress = progress
        self.disk = disk
        self.caches: dict[str, TeacherCache] = {}

    def get(
        self,
        member: str,
        mode: str,
        teacher_name: str,
        teacher: nn.Module,
        train: DistillDataset,
        losses: list[CombinedLoss],
        precision: str = "fp32",
    ) -> TeacherCache | None:
        """The teacher's cache for ``member`` and the ``losses`` trained with it (a group's peers),
        built once per teacher and feature set, or ``None``.

        ``None`` when caching is off, when augmentation makes cached outputs differ from live
        ones (``teacher_cache: auto``), or when the logits and features would exceed
        ``teacher_cache_mb`` (one line says so; the teacher then runs live). Caches kept for
        other students count against the same budget: the oldest are dropped to make room.
        """
        if mode == "off" or not cache_allowed(train, frozen=mode == "frozen"):
            return None
        paths = list(dict.fromkeys(p for loss in losses for p in loss.teacher_paths()))
        terms = {k: t for loss in losses for k, t in loss.terms.items()}
        explainers = [loss for loss in losses if "explanation" in loss.needs]
        explaining = sorted({repr(t) for t in terms.values() if "explanation" in t.needs})
        if len(explaining) > 1:  # peers explaining the teacher in other ways: run it live
            return None
        # data is shared by object; explanations differ by the term's settings
        key = "|".join([teacher_name, str(id(train)), precision, *sorted(paths), *explaining])
        if key in self.caches:
            return self.caches[key]
        n = len(train)
        explain = explainers[0].explain_teacher if explainers else None
        need = cache_bytes(teacher, train, paths, explain)
        budget = self.budget_mb * 2**20
        if need > budget:
            what = (
                f"logits and features {', '.join(paths) or '-'} on {n} training items need "
                f"{need / 2**20:.0f} MB, over teacher_cache_mb={self.budget_mb:g}"
            )

            cache = self._on_disk(member, teacher_name, teacher, train, paths, explain,
                                  explaining, what, need, precision)  # fmt: skip
            if cache is not None:
                self.caches[key] = cache
            return cache
        held = {k: _cache_size(c) for k, c in self.caches.items()}
        while held and sum(held.values()) + need > budget:  # the oldest caches go first
            oldest = next(iter(held))
            del self.caches[oldest], held[oldest]
        what = f"outputs and features {', '.join(paths)}" if paths else "outputs"
        what += " and explanations" if explain is not None else ""
        say(f"caching teacher {teacher_name} {what} on {n} training items ({need / 2**20:.0f} MB)")
        world = current_world()  # data-parallel: each rank builds a block, then holds all
        self.caches[key] = TeacherCache.build(
            teacher,
            train,  # the cache reads un-augmented inputs itself
            batch_size=build_batch(self.device),
            device=self.device,
            feature_paths=paths,
            progress=self.progress and world.main,
            explain=explain,
            precision=precision,
            world=world,
        )
        unmoved = unmoved_features(self.caches[key])
        if unmoved:
            readers = [n for n, t in terms.items() if set(t.teacher_paths()) & set(unmoved)]
            say(
                f"warning: {member}: teacher_cache frozen under augmentation: the teacher "
                f"features {', '.join(unmoved)} read by {', '.join(readers) or 'the loss'} are not "
                "spatial maps, so they stay those of the un-augmented image (as the logits); "
                "use teacher_cache: auto to run the teacher live on each augmented view"
            )
        return self.caches[key]

    def _on_disk(
        self,
        member: str,
        teacher_name: str,
        teacher: nn.Module,
        train: DistillDataset,
        paths: list[str],
        explain: Explainer | None,
        explaining: list[str],
        what: str,
        need: int,
        precision: str = "fp32",
    ) -> TeacherCache | None:
        """The cache on disk (built once, or reused from an earlier run), or ``None`` (one line
        says why) when disk caches are off, the disk lacks room or a dtype cannot be mapped.

        In a data-parallel run rank 0 decides, and every rank writes its block of rows into the
        same files (:meth:`TeacherCache.on_disk`)."""
        if not self.disk:
            say(f"{member}: not caching teacher {teacher_name} ({what}); the teacher runs live")
            return None
        passes = f"precision:{precision}" + (":onednn" if isinstance(teacher, OneDNNGraph) else "")
        folder = disk_root() / disk_key(teacher, train.fingerprint(), paths,
                                        [*explaining, passes])  # fmt: skip
        world = current_world()
        if not from_main(world, lambda: folder.is_dir() or need * 1.05 <= free_bytes(folder)):
            say(
                f"{member}: not caching teacher {teacher_name} ({what}, and {folder.parent} has "
                f"{free_bytes(folder) / 2**20:.0f} MB free); the teacher runs live"
            )
            return None
        say(f"caching teacher {teacher_name} on disk ({what}) in {folder}")
        try:
            batch = build_batch(self.device)
            return TeacherCache.on_disk(teacher, train, folder, batch, self.device, paths,
                                        self.progress and world.main, explain, precision,
                                        world=world)  # fmt: skip
        except TypeError as exc:  # e.g. bfloat16 outputs: no numpy dtype to map
            say(f"{member}: cannot map teacher {teacher_name}'s outputs to disk ({exc}); "
                "the teacher runs live")  # fmt: skip
            return None


def _cache_size(cache: TeacherCache) -> int:
    """Memory a cache holds (a disk cache's mapped files: none of the budget)."""
    if cache.folder is not None:
        return 0
    tensors = [cache.logits, *cache.features.values()]
    return sum(t.numel() * t.element_size() for t in tensors)
