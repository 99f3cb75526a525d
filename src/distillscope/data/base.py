"""The dataset contract and the batch loader.

Every registered dataset returns a :class:`TensorDataset`: inputs already normalised and held in
memory, integer targets, and metadata the probes need (class names, categories, the
normalisation, whether inputs are images in ``[0, 1]`` pixel space before normalisation).
Datasets too large for memory (ImageFolder) subclass :class:`DistillDataset` and are read
through a ``torch.utils.data.DataLoader``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from distillscope.contracts import NEGATIVE, POSITIVE, Batch
from distillscope.errors import ConfigError


@runtime_checkable
class GeometricTransform(Protocol):
    """A random batch transform whose draw is kept (:class:`Batch` ``.augmentation``) so that
    per-pixel companions of the images (frozen explanations, :meth:`apply`) and spatial maps
    of them at another resolution (frozen teacher feature maps, :meth:`move`) can be moved
    the same way."""

    def sample(self, b: int, device: Any = "cpu") -> Any: ...

    def apply(self, x: Tensor, params: Any, fill: Sequence[float] | None = None) -> Tensor: ...

    def move(self, maps: Tensor, params: Any, image_size: Sequence[int]) -> Tensor: ...


@dataclass
class DatasetInfo:
    """Metadata shared by every dataset.

    Attributes:
        name: Registered name.
        num_classes: Number of classes K.
        input_shape: Shape of one input, e.g. ``(1, 28, 28)`` or ``(2,)``.
        class_names: One name per class.
        categories: Category name -> class indices (class-similarity probe, paper 000 4.1).
        mean: Per-channel normalisation mean (images) or ``None``.
        std: Per-channel normalisation std (images) or ``None``.
        pixel_range: ``(low, high)`` of un-normalised inputs, ``(0, 1)`` for images, ``None``
            for unbounded inputs such as 2-D points.
        group_names: Names of the item groups (``TensorDataset.groups``), if the data has
            groups: ``spurious-fashion``'s backgrounds, ``multi-domain``'s domains.
        source: Where the data was read from (a folder), for the record; not part of the
            data's fingerprint (the same bytes in another folder are the same data).
        vocab: Text data only: the word-level vocabulary, token id -> word (``vocab[0]`` is
            :data:`~distillscope.contracts.PAD`, ``vocab[1]`` :data:`~distillscope.contracts.UNK`);
            ``input_shape`` is then ``(L,)``, the padded sentence length.
    """

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    class_names: list[str]
    categories: dict[str, list[int]] = field(default_factory=dict)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    pixel_range: tuple[float, float] | None = (0.0, 1.0)
    group_names: tuple[str, ...] | None = None
    source: str | None = None
    vocab: tuple[str, ...] | None = None

    @property
    def is_image(self) -> bool:
        return len(self.input_shape) == 3

    @property
    def is_text(self) -> bool:
        """Token ids of a vocabulary (:attr:`vocab`), not numbers."""
        return self.vocab is not None


class DistillDataset(Dataset):
    """A map-style dataset whose items are ``(input, target, index)``."""

    info: DatasetInfo
    #: True when ``__getitem__`` applies random augmentation (the teacher cache is then unsafe).
    augmented: bool = False
    #: True when this held-out split holds the training images (a flat ImageFolder): the run
    #: warns that held-out numbers then measure fit, not generalisation.
    shares_training_images: bool = False

    def targets_tensor(self) -> Tensor:
        """All targets as a ``(N,)`` long tensor."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A hex digest of the data actually loaded: every byte of it (reuse keys).

        Covers the metadata (but not :attr:`DatasetInfo.source`, where it was read from), every
        target and the whole of every input, so the same config pointed at other files (other
        labels, other images, one changed pixel) gives another fingerprint, and the same data
        moved to another folder the same one. Computed once per dataset object.
        """
        cached = getattr(self, "_fingerprint", None)
        if cached is None:
            h = fingerprint_start(self.info, self.targets_tensor())
            self._hash_content(h)
            cached = self._fingerprint = h.hexdigest()[:32]
        return cached

    def _hash_content(self, h: Any) -> None:
        """Feed every input into ``h`` (subclasses hash their storage directly)."""
        for i in range(len(self)):
            h.update(_tensor_bytes(self[i][0]))


class TensorDataset(DistillDataset):
    """An in-memory dataset.

    Args:
        inputs: ``(N, ...)`` normalised inputs.
        targets: ``(N,)`` class indices.
        info: Dataset metadata.
        transform: Optional batch transform ``f(inputs) -> inputs`` applied by the loader
            (random augmentation; sets :attr:`augmented`).
        masks: Optional ``(N, H, W)`` boolean object masks (localisation probes, paper 001
            4.2); kept through :meth:`subset`, never augmented (probes read un-augmented data).
        groups: Optional ``(N,)`` integer group of each item (e.g. its background; group
            accuracy, paper 001 4.2 and paper 003 6.2); kept through :meth:`subset`.
        heatmaps: Optional ``(N, H, W)`` integer ground-truth heat maps (``heatmap-shapes``:
            0 background, 1 object, 2 distinguishing feature; the ``five_band`` probe, paper
            000 5.1); kept through :meth:`subset`, never augmented, like ``masks``.
        token_labels: Text only: optional ``(N, L)`` word polarity of every token of the
            ``(N, L)`` token ids in ``inputs``: :data:`~distillscope.contracts.POSITIVE` (1),
            :data:`~distillscope.contracts.NEGATIVE` (-1), 0 for neutral words, padding and
            unknown words (attributions scored against word labels, paper 000 5.4); stored
            as int64 and kept through :meth:`subset`, like ``heatmaps``.
    """

    def __init__(
        self,
        inputs: Tensor,
        targets: Tensor,
        info: DatasetInfo,
        transform: Callable[[Tensor], Tensor] | None = None,
        masks: Tensor | None = None,
        groups: Tensor | None = None,
        heatmaps: Tensor | None = None,
        token_labels: Tensor | None = None,
    ) -> None:
        if inputs.shape[0] != targets.shape[0]:
            raise ValueError(f"inputs ({inputs.shape[0]}) and targets ({targets.shape[0]}) differ")
        if masks is not None and (
            masks.dim() != 3
            or masks.shape[0] != inputs.shape[0]
            or tuple(masks.shape[1:]) != tuple(inputs.shape[-2:])
        ):
            raise ValueError(
                f"masks must be (N, H, W) = ({inputs.shape[0]}, {tuple(inputs.shape[-2:])}), "
                f"got {tuple(masks.shape)}"
            )
        self.masks = None if masks is None else masks.bool()
        if heatmaps is not None and (
            heatmaps.dim() != 3
            or heatmaps.shape[0] != inputs.shape[0]
            or tuple(heatmaps.shape[1:]) != tuple(inputs.shape[-2:])
            or heatmaps.dtype.is_floating_point
            or heatmaps.dtype == torch.bool
        ):
            raise ValueError(
                f"heatmaps must be (N, H, W) = ({inputs.shape[0]}, {tuple(inputs.shape[-2:])}) "
                f"integers, got {tuple(heatmaps.shape)} {heatmaps.dtype}"
            )
        self.heatmaps = heatmaps
        self.token_labels = _checked_token_labels(token_labels, inputs)
        if groups is not None and (groups.dim() != 1 or groups.shape[0] != inputs.shape[0]):
            raise ValueError(
                f"groups must be (N,) = ({inputs.shape[0]},), got {tuple(groups.shape)}"
            )
        self.groups = None if groups is None else groups.long()
        self.inputs = inputs
        self.targets = targets.long()
        self.info = info
        self.transform = transform
        self.augmented = transform is not None

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, int]:
        x = self.inputs[i]
        if self.transform is not None:
            x = self.transform(x.unsqueeze(0))[0]
        return x, self.targets[i], i

    def targets_tensor(self) -> Tensor:
        return self.targets

    def _hash_content(self, h: Any) -> None:
        # the stored tensors, un-augmented (SHA-256 runs at over 1 GB/s: 70,000 images in 0.2 s)
        stored = (
            ("inputs", self.inputs),
            ("masks", self.masks),
            ("groups", self.groups),
            ("heatmaps", self.heatmaps),
            ("token_labels", self.token_labels),
        )
        for name, t in stored:
            if t is not None:
                h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
                flat = t.detach().to("cpu").contiguous().reshape(-1)
                h.update(flat.view(torch.uint8).numpy() if flat.numel() else b"")

    def subset(self, indices: Sequence[int] | Tensor) -> TensorDataset:
        """A new dataset holding ``indices`` (re-indexed from 0)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        masks = None if self.masks is None else self.masks[idx]
        groups = None if self.groups is None else self.groups[idx]
        heatmaps = None if self.heatmaps is None else self.heatmaps[idx]
        labels = None if self.token_labels is None else self.token_labels[idx]
        return TensorDataset(
            self.inputs[idx],
            self.targets[idx],
            self.info,
            self.transform,
            masks,
            groups,
            heatmaps,
            labels,
        )


def _checked_token_labels(labels: Tensor | None, inputs: Tensor) -> Tensor | None:
    """``labels`` as int64 after checking they are ``(N, L)`` like the token ids ``inputs``
    and hold only :data:`~distillscope.contracts.NEGATIVE`, 0 and
    :data:`~distillscope.contracts.POSITIVE`."""
    if labels is None:
        return None
    if (
        labels.dim() != 2
        or inputs.dim() != 2
        or tuple(labels.shape) != tuple(inputs.shape)
        or labels.dtype.is_floating_point
        or labels.dtype.is_complex
        or labels.dtype == torch.bool
    ):
        raise ValueError(
            f"token_labels must be (N, L) integers like the token ids {tuple(inputs.shape)}, "
            f"got {tuple(labels.shape)} {labels.dtype}"
        )
    labels = labels.long()
    bad = (labels != NEGATIVE) & (labels != 0) & (labels != POSITIVE)
    if bool(bad.any()):
        raise ValueError(
            f"token_labels must hold {NEGATIVE}, 0 and {POSITIVE} only, got {int(labels[bad][0])}"
        )
    return labels


def _tensor_bytes(x: Tensor) -> bytes:
    return x.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()


def fingerprint_start(info: DatasetInfo, targets: Tensor) -> Any:
    """A SHA-256 over ``info`` (without ``source``), the item count and every target."""
    fields = asdict(info)
    del fields["source"]  # where the data was found is not what it is
    if fields["vocab"] is None:
        del fields["vocab"]  # data without a vocabulary keep the fingerprints they had
    h = hashlib.sha256(repr(sorted(fields.items())).encode())
    h.update(str(len(targets)).encode())
    h.update(targets.to("cpu", torch.int64).contiguous().numpy().tobytes())
    return h


def iter_batches(
    dataset: DistillDataset,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
    *,
    shard: tuple[int, int] = (0, 1),
    rows: Tensor | None = None,
    workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[Batch]:
    """Yield :class:`Batch` objects over ``dataset``.

    In-memory datasets are sliced directly (no per-item Python calls); other datasets go through
    a ``DataLoader``. With ``shuffle``, the order comes from ``generator`` only, so a seeded
    generator gives the same batches on every run (resume relies on this), whatever the
    number of ``workers``.

    Args:
        dataset: The items.
        batch_size: Items per batch (with ``shard``: per global batch, before it is shared).
        shuffle: Draw the order with ``torch.randperm(len(dataset), generator=generator)``.
        generator: The order's generator.
        drop_last: Leave out a last, short batch.
        shard: ``(rank, ranks)``: yield rank ``rank``'s share of every batch,
            :func:`rank_share` (data-parallel training: every rank draws the same order).
        rows: Only these dataset indices, in this order, instead of all (not with
            ``shuffle``).
        workers: DataLoader worker processes for a dataset not held in memory (in-memory ones
            are sliced in this process whatever it says).
        pin_memory: Yield batches in page-locked host memory, for asynchronous copies to CUDA
            (``batch.to(device, non_blocking=True)``); needs CUDA.

    Raises:
        ConfigError: ``pin_memory`` without CUDA, or ``workers`` with a dataset that augments
            in ``__getitem__`` (each worker would draw from its own generator).

    Example:
        >>> data = TensorDataset(torch.arange(10.0)[:, None], torch.zeros(10),
        ...                      DatasetInfo("toy", 1, (1,), ["a"]))
        >>> [b.index.tolist() for b in iter_batches(data, 4, shard=(1, 2))]
        [[1, 3], [5, 7], [9]]
    """
    if pin_memory and not torch.cuda.is_available():
        raise ConfigError("pinned batches need CUDA, which this machine lacks; pin only on CUDA")
    n = len(dataset)
    if rows is not None:
        order = rows
    else:
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    chunks = (order[start : start + batch_size] for start in range(0, stop, batch_size))
    if shard[1] > 1:
        chunks = (rank_share(idx, *shard) for idx in chunks)
    if isinstance(dataset, TensorDataset):
        for idx in chunks:
            transform = dataset.transform
            x = gather(dataset.inputs, idx, pin_memory and transform is None)
            params = None
            if isinstance(transform, GeometricTransform):  # keep the draw (frozen maps)
                params = transform.sample(len(idx), x.device)
                x = transform.apply(x, params)
            elif transform is not None:
                x = transform(x)
            if pin_memory and transform is not None and x.device.type == "cpu":
                x = x.pin_memory()  # the augmented batch is new memory: pin it as it is
            yield Batch(x, gather(dataset.targets, idx, pin_memory), idx, params)
        return
    if workers and dataset.augmented:
        raise ConfigError(
            f"train.loader_workers={workers} with {dataset.info.name}, which augments each item "
            "as it is read: every worker would draw from its own generator and results would "
            "depend on the number of workers; use loader_workers: 0"
        )
    loader = DataLoader(
        dataset,
        batch_sampler=[idx.tolist() for idx in chunks],
        num_workers=workers,
        pin_memory=pin_memory,
    )
    for x, y, i in loader:
        yield Batch(x, y.long(), i.long())


def gather(values: Tensor, idx: Tensor, pin_memory: bool = False) -> Tensor:
    """``values[idx]``, written straight into page-locked memory when ``pin_memory`` and
    ``values`` is on the CPU (one copy instead of a gather and a pin).

    Example:
        >>> gather(torch.tensor([5, 6, 7]), torch.tensor([2, 0])).tolist()
        [7, 5]
    """
    if not pin_memory or values.device.type != "cpu":
        return values[idx]
    out = torch.empty((len(idx), *values.shape[1:]), dtype=values.dtype, pin_memory=True)
    return torch.index_select(values, 0, idx, out=out)


def rank_share(index: Tensor, rank: int, ranks: int) -> Tensor:
    """Rank ``rank``'s share of one global batch ``index``: every ``ranks``-th item from
    ``rank`` on, as ``torch.utils.data.DistributedSampler`` deals an epoch's order.

    With a batch size divisible by ``ranks`` this is exactly DistributedSampler's batch (its
    shard is ``order[rank::ranks]``, cut into batches of ``B / ranks``); the shares of a
    batch partition it, so the ranks together see every item once per epoch. A short last
    batch leaves a rank no item when it has fewer than ``ranks``: that rank gets the batch's
    first item, which its trainer weighs 0 (:func:`share_weight`), so every rank still steps.

    Example:
        >>> rank_share(torch.tensor([7, 2, 9, 4, 0]), 1, 2).tolist()
        [2, 4]
        >>> rank_share(torch.tensor([7]), 1, 2).tolist()  # none left: a stand-in, weighted 0
        [7]
    """
    share = index[rank::ranks]
    return share if len(share) else index[:1]


def share_weight(global_size: int, rank: int, ranks: int) -> float:
    """The weight of rank ``rank``'s mean loss on a global batch of ``global_size`` items so
    that averaging the ranks' gradients (DDP) gives the gradient of the global batch's mean
    loss: ``n_r * ranks / global_size`` with ``n_r`` the items of its share (0 for a
    stand-in, :func:`rank_share`).

    ``(1 / R) sum_r grad(w_r L_r) = sum_r (n_r / n) grad(L_r) = grad(L)`` when every ``L_r``
    is the mean of a per-item loss over the share.

    Example:
        >>> [share_weight(5, r, 2) for r in (0, 1)], share_weight(1, 1, 2)
        ([1.2, 0.8], 0.0)
    """
    n_r = len(range(rank, global_size, ranks))
    return n_r * ranks / global_size


def num_batches(dataset: DistillDataset, batch_size: int, drop_last: bool = False) -> int:
    """How many batches :func:`iter_batches` yields."""
    n = len(dataset)
    return n // batch_size if drop_last else -(-n // batch_size)
