"""Synthetic shapes with ground-truth heat maps: the dataset of paper 000 5.1 (Tjoa & Guan 2020).

Paper 000 (5.1, appendix D, Fig. 11) scores saliency maps of scratch and KD students against
ground-truth heat maps on "a synthesized dataset ... proposed by Tjoa & Guan (2020)"
("Quantifying explainability of saliency methods in deep neural networks", arXiv 2009.02899):
ten classes in a hierarchy, each image on one of three random backgrounds, and a ternary ground
truth per pixel: **0** background, **1** localisation (where the object is), **2** the
distinguishing feature (what tells a class from its siblings). This module draws such images in
memory, vectorised over the images, after the classes of Tjoa & Guan's published generator
(``ericotjo001/explainable_ai``, ``xai_basic/pipeline/objgen``; read, not copied):

==  ================  ==========================================  ==========================
k   class             object (localisation, 1)                    distinguishing feature (2)
==  ================  ==========================================  ==========================
0   circle            a dark disc with a light border ring        the border ring
1   circle-bar        the same disc                               a bar across it
2   circle-cross      the same disc                               a bar and a pole (a cross)
3   rectangle-red     a dark rectangle                            its border, red
4   rectangle-green   a dark rectangle                            its border, green
5   rectangle-blue    a dark rectangle                            its border, blue
6   tail-1            the disc with its ring                      one tail
7   tail-3            the disc with its ring                      three tails, 120 degrees apart
8   tail-8            the disc with its ring                      eight tails, 45 degrees apart
9   no object         nothing                                     nothing
==  ================  ==========================================  ==========================

As in Tjoa & Guan: a circle's ring is its feature only in class 0 (in the others it is part of
the object); bars have the ring's colour, tails 0.75 of it; ring colours are drawn in
``[0.5, 0.9]`` per channel, the inside in ``[0.1, 0.3]`` (red, green) and ``[0.3, 0.5]``
(blue); a rectangle's border has ``[0.6, 0.9]`` in its own channel and ``[0, 0.2]`` in the
others (so the rectangles' siblings differ by colour: the images have three channels); tails
run from 0.8 to 1.5 radii from the centre (plus a thickness); objects turn by up to 60 degrees.
Where the feature lies on the object (a bar across the disc), the feature wins.

Ours, for small images (the authors draw 512x512): sizes are fractions of the side ``S``
(:data:`RADIUS`, :data:`HALF_SIDE`, :data:`THICKNESS`, at least :data:`MIN_THICKNESS` pixels so
every feature keeps pixels), discs are circles (theirs stretch vertically by 0.5 to 1.5),
shapes have hard, un-noised edges, every object lies wholly inside the image, and the heat map
marks exactly the pixels drawn. Backgrounds (paper 000's names; ``groups`` holds which):
``dark`` black (Tjoa & Guan's first type), ``blurred`` uniform ``[0.2, 0.7]`` values on a coarse
grid of side ``S / 8``, bilinearly enlarged (their second type), ``noisy`` i.i.d. uniform
``[0, 0.5]`` per pixel and channel (ours: their third type is a warped ring pattern in the same
range). Classes are balanced (``i % 10`` of a seeded order); backgrounds are drawn uniformly.
Inputs are ``(3, S, S)``, normalised with fixed mid-range constants (:data:`MEAN`,
:data:`STD`, not measured); ``heatmaps`` are ``(N, S, S)`` uint8.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from distillscope.data.base import DatasetInfo, TensorDataset
from distillscope.data.subsets import check_split
from distillscope.errors import ConfigError
from distillscope.registry import register_dataset

__all__ = ["BACKGROUNDS", "CATEGORIES", "CLASS_NAMES", "draw_shapes", "heatmap_shapes"]

#: The ten classes (module docstring), in label order.
CLASS_NAMES = (
    "circle",
    "circle-bar",
    "circle-cross",
    "rectangle-red",
    "rectangle-green",
    "rectangle-blue",
    "tail-1",
    "tail-3",
    "tail-8",
    "no object",
)
#: The hierarchy of paper 000 Fig. 11 (the class-similarity probe's categories).
CATEGORIES = {"circular": [0, 1, 2], "rectangular": [3, 4, 5], "tail": [6, 7, 8], "none": [9]}
#: The label of the class without an object.
NO_OBJECT = 9
#: Background types, in ``groups`` order.
BACKGROUNDS = ("dark", "blurred", "noisy")
#: Disc radius, as a fraction of the side (Tjoa & Guan: 90 to 110 of 512).
RADIUS = (0.16, 0.21)
#: Half side of a rectangle, as a fraction of the side (Tjoa & Guan: sides 100 to 200 of 512).
HALF_SIDE = (0.1, 0.19)
#: Thickness of rings, borders, bars and tails, as a fraction of the side (ours: theirs,
#: 10 to 30 of 512, would be under a pixel at 32).
THICKNESS = (0.05, 0.08)
#: Thinnest stroke in pixels, so that every feature keeps pixels on small images.
MIN_THICKNESS = 1.5
#: A tail runs from 0.8 to 1.5 radii from the centre, plus a thickness (Tjoa & Guan).
TAIL_SPAN = (0.8, 1.5)
#: Tail directions of the tail classes, in degrees.
TAILS = {6: (0.0,), 7: (0.0, 120.0, 240.0), 8: tuple(45.0 * i for i in range(8))}
#: Largest turn of an object, in degrees (Tjoa & Guan: -60 to 60).
MAX_TURN = 60.0
#: Fixed normalisation (mid-range constants, not measured on the data).
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
#: Default split sizes (paper 000 appendix D: 6,400 training and 1,600 test images).
N_TRAIN, N_TEST = 6400, 1600
#: Smallest image side (below it, strokes no longer fit).
MIN_SIZE = 16
#: Images drawn at once (bounds the memory of the ``(n, S, S)`` geometry).
CHUNK = 512


def _reach(labels: np.ndarray, r: np.ndarray, t: np.ndarray, a: np.ndarray, b: np.ndarray):
    """``(N,)`` how far each object reaches from its centre, in pixels."""
    reach = r.copy()
    rect = (labels >= 3) & (labels <= 5)
    reach[rect] = np.hypot(a[rect], b[rect])
    tail = (labels >= 6) & (labels <= 8)
    reach[tail] = np.hypot(TAIL_SPAN[1] * r[tail] + t[tail], t[tail] / 2)
    reach[labels == NO_OBJECT] = 0.0
    return reach


def draw_shapes(labels: np.ndarray, size: int, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """Draw each label's object (module docstring) on an empty image.

    Args:
        labels: ``(N,)`` classes in ``0..9``.
        size: Image side ``S`` in pixels.
        rng: The generator of every shape, place and colour (backgrounds use their own).

    Returns:
        ``(N, 3, S, S)`` float32 pixels (0 off the object, every object pixel above 0) and
        ``(N, S, S)`` uint8 heat maps: 0 background, 1 object, 2 distinguishing feature.

    Example:
        >>> pixels, heat = draw_shapes(np.array([0, 9]), 32, np.random.default_rng(0))
        >>> pixels.shape, heat.dtype, heat[1].max().item()
        (torch.Size([2, 3, 32, 32]), torch.uint8, 0)
        >>> bool(((pixels[0].amax(0) > 0) == (heat[0] > 0)).all())
        True
    """
    n = len(labels)
    s = float(size)
    r = rng.uniform(*RADIUS, n) * s  # (N,)
    a, b = (rng.uniform(*HALF_SIDE, n) * s for _ in range(2))  # (N,) half sides
    t = np.maximum(rng.uniform(*THICKNESS, n) * s, MIN_THICKNESS)  # (N,)
    turn = np.deg2rad(rng.uniform(-MAX_TURN, MAX_TURN, n))  # (N,)
    reach = _reach(labels, r, t, a, b) + 0.5  # (N,) half a pixel of margin
    cy, cx = (reach + rng.random(n) * (s - 2 * reach) for _ in range(2))  # (N,) inside
    ring = rng.uniform(0.5, 0.9, (n, 3))  # (N, 3) ring and bar colour
    inside = np.concatenate(
        [rng.uniform(0.1, 0.3, (n, 2)), rng.uniform(0.3, 0.5, (n, 1))], axis=1
    )  # (N, 3)
    border = rng.uniform(0.0, 0.2, (n, 3))  # (N, 3) a rectangle's border ...
    main = rng.uniform(0.6, 0.9, n)  # (N,) ... in its own channel
    rect = (labels >= 3) & (labels <= 5)
    border[rect, labels[rect] - 3] = main[rect]
    shape = (labels, r, a, b, t, turn, cy, cx)
    paints = (inside, ring, border, ring, 0.75 * ring)  # body, rim, frame, bar, tails
    pixels = torch.empty(n, 3, size, size)
    heat = torch.empty(n, size, size, dtype=torch.uint8)
    for start in range(0, n, CHUNK):  # chunks bound the memory; no per-image loop
        rows = slice(start, start + CHUNK)
        parts = _parts(*(x[rows] for x in shape), size)  # 5 x (n, S, S)
        feature = parts[1] & (labels[rows] == 0)[:, None, None] | parts[2] | parts[3] | parts[4]
        heat[rows] = torch.from_numpy(np.where(feature, 2, np.where(parts[0], 1, 0)))
        colour = np.zeros((len(parts[0]), size, size, 3))  # (n, S, S, 3)
        for part, paint in zip(parts, paints):  # later parts paint over earlier ones
            colour = np.where(part[..., None], paint[rows, None, None, :], colour)
        pixels[rows] = torch.from_numpy(colour.astype(np.float32)).permute(0, 3, 1, 2)
    return pixels, heat


def _parts(
    labels: np.ndarray,
    r: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    t: np.ndarray,
    turn: np.ndarray,
    cy: np.ndarray,
    cx: np.ndarray,
    size: int,
) -> tuple[np.ndarray, ...]:
    """``(body, rim, frame, bar, tails)``, each ``(n, S, S)`` bool: the object's whole body
    (disc or rectangle), a disc's ring, a rectangle's border, the bars, the tails."""
    grid = np.arange(size, dtype=np.float64) + 0.5  # pixel centres
    dy = grid[None, :, None] - cy[:, None, None]  # (n, S, 1)
    dx = grid[None, None, :] - cx[:, None, None]  # (n, 1, S)
    cos, sin = np.cos(turn)[:, None, None], np.sin(turn)[:, None, None]
    u = cos * dx + sin * dy  # (n, S, S) along the object's own axes
    v = cos * dy - sin * dx  # (n, S, S)
    r3, t3 = r[:, None, None], t[:, None, None]
    a3, b3 = a[:, None, None], b[:, None, None]
    k3 = labels[:, None, None]
    d2 = u**2 + v**2  # (n, S, S)
    disc = ((k3 <= 2) | ((k3 >= 6) & (k3 <= 8))) & (d2 <= r3**2)
    rim = disc & (d2 > (r3 - t3) ** 2)
    box = (k3 >= 3) & (k3 <= 5) & (np.abs(u) <= a3) & (np.abs(v) <= b3)
    frame = box & ~((np.abs(u) <= a3 - t3) & (np.abs(v) <= b3 - t3))
    bar = disc & (np.abs(v) <= t3 / 2) & ((k3 == 1) | (k3 == 2))
    bar |= disc & (np.abs(u) <= t3 / 2) & (k3 == 2)  # the pole of the cross
    tails = np.zeros_like(disc)
    for k, angles in TAILS.items():
        for angle in np.deg2rad(angles):
            along = np.sin(angle) * u + np.cos(angle) * v  # (n, S, S)
            across = np.cos(angle) * u - np.sin(angle) * v
            tails |= (
                (k3 == k)
                & (np.abs(across) <= t3 / 2)
                & (along >= TAIL_SPAN[0] * r3)
                & (along <= TAIL_SPAN[1] * r3 + t3)
            )
    return disc | box, rim, frame, bar, tails


def draw_backgrounds(kinds: np.ndarray, size: int, rng: np.random.Generator) -> Tensor:
    """``(N, 3, S, S)`` float32 backgrounds in ``[0, 1]`` of the given kinds (indices into
    :data:`BACKGROUNDS`; module docstring).

    Example:
        >>> back = draw_backgrounds(np.array([0, 1, 2]), 16, np.random.default_rng(0))
        >>> back[0].abs().max().item(), 0.2 <= back[1].min().item() <= back[1].max().item() <= 0.7
        (0.0, True)
    """
    n = len(kinds)
    coarse = max(2, size // 8)
    cells = torch.from_numpy(rng.uniform(0.2, 0.7, (n, 3, coarse, coarse)).astype(np.float32))
    blurred = F.interpolate(cells, size=(size, size), mode="bilinear", align_corners=False)
    noisy = torch.from_numpy(rng.uniform(0.0, 0.5, (n, 3, size, size)).astype(np.float32))
    kind = torch.from_numpy(np.asarray(kinds))[:, None, None, None]  # (N, 1, 1, 1)
    out = torch.where(kind == 1, blurred, torch.zeros(()))
    return torch.where(kind == 2, noisy, out)  # (N, 3, S, S)


def _check_count(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"heatmap-shapes.{key}={value!r} is invalid; use an integer >= 1")
    return value


def _check_backgrounds(value: object) -> list[int]:
    """Indices into :data:`BACKGROUNDS` of the chosen kinds (all three when ``None``)."""
    if value is None:
        return list(range(len(BACKGROUNDS)))
    names = value
    if (
        isinstance(names, str)
        or not isinstance(names, Sequence)
        or not names
        or any(not isinstance(k, str) or k not in BACKGROUNDS for k in names)
        or len(set(names)) != len(names)
    ):
        raise ConfigError(
            f"heatmap-shapes.backgrounds={value!r} is invalid; use a non-empty list of distinct "
            f"kinds among {', '.join(BACKGROUNDS)}"
        )
    return [BACKGROUNDS.index(k) for k in names]


@register_dataset("heatmap-shapes")
def heatmap_shapes(
    split: str,
    root: str | None = None,
    n_train: int = N_TRAIN,
    n_test: int = N_TEST,
    image_size: int = 32,
    backgrounds: Sequence[str] | None = None,
    data_seed: int = 0,
) -> TensorDataset:
    """Ten classes of shapes with ternary ground-truth heat maps (module docstring).

    Args:
        split: ``"train"`` or ``"test"``.
        root: Ignored (the data is generated).
        n_train: Images of the training split (paper 000: 6,400).
        n_test: Images of the held-out split (paper 000: 1,600).
        image_size: Side ``S`` of the square images, at least 16 (default 32).
        backgrounds: Background kinds to draw from, uniformly (default all of
            :data:`BACKGROUNDS`); the same seed draws the same shapes whatever the kinds.
        data_seed: Seed of the shapes, their places, colours and the backgrounds; the two
            splits are independent draws.

    Returns:
        ``(N, 3, S, S)`` normalised images with ``heatmaps`` (``(N, S, S)`` uint8: 0
        background, 1 object, 2 distinguishing feature), ``masks`` (the object: heat map
        above 0) and ``groups`` (the background kind).

    Example:
        >>> ds = heatmap_shapes("test", n_test=20)
        >>> tuple(ds.inputs.shape), torch.bincount(ds.targets).tolist()
        ((20, 3, 32, 32), [2, 2, 2, 2, 2, 2, 2, 2, 2, 2])
        >>> sorted(torch.unique(ds.heatmaps).tolist())
        [0, 1, 2]
    """
    train = check_split(split)
    n = _check_count("n_train" if train else "n_test", n_train if train else n_test)
    _check_count("n_test" if train else "n_train", n_test if train else n_train)
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < MIN_SIZE:
        raise ConfigError(
            f"heatmap-shapes.image_size={image_size!r} is invalid; use an integer >= {MIN_SIZE}"
        )
    kinds = _check_backgrounds(backgrounds)
    if isinstance(data_seed, bool) or not isinstance(data_seed, int) or data_seed < 0:
        raise ConfigError(f"heatmap-shapes.data_seed={data_seed!r} is invalid; use an integer >= 0")
    shapes_rng = np.random.default_rng([data_seed, int(train), 0])
    labels = shapes_rng.permutation(np.arange(n) % len(CLASS_NAMES))  # (N,) balanced
    pixels, heat = draw_shapes(labels, image_size, shapes_rng)  # (N, 3, S, S), (N, S, S)
    back_rng = np.random.default_rng([data_seed, int(train), 1])
    groups = np.asarray(kinds)[back_rng.integers(0, len(kinds), n)]  # (N,)
    back = draw_backgrounds(groups, image_size, back_rng)  # (N, 3, S, S)
    images = torch.where(heat[:, None] > 0, pixels, back)  # (N, 3, S, S) in [0, 1]
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    info = DatasetInfo(
        name="heatmap-shapes",
        num_classes=len(CLASS_NAMES),
        input_shape=(3, image_size, image_size),
        class_names=list(CLASS_NAMES),
        categories={name: list(v) for name, v in CATEGORIES.items()},
        mean=MEAN,
        std=STD,
        pixel_range=(0.0, 1.0),
        group_names=BACKGROUNDS,
    )
    return TensorDataset(
        (images - mean) / std,
        torch.from_numpy(labels.astype(np.int64)),
        info,
        masks=heat > 0,
        groups=torch.from_numpy(groups.astype(np.int64)),
        heatmaps=heat,
    )
