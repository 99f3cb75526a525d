"""Image panels of the report: decision maps on 2-D data [004 5.1] and generic arrays.

A decision map colours each grid point by mixing the K class colours in proportion to the
model's predicted probabilities: where a model is sure, the colour is pure and the boundary
crisp; in the "twilight zone" where several classes are likely, colours blend and the boundary
looks blurry, which is what paper 004 reads the hardness of a boundary from (by eye; the
hardness number in the titles is this project's measure, see ``functional.boundary``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib
import numpy as np
from matplotlib.patches import Patch

from distillscope.report.plots import Palette, grid, plot_style, to_data_uri
from distillscope.report.tables import order_rows


def class_colours(k: int) -> np.ndarray:
    """``(k, 3)`` RGB colours of ``k`` classes: tab10 up to ten classes, evenly spaced hues above.

    Example:
        >>> class_colours(2).round(3).tolist()
        [[0.122, 0.467, 0.706], [1.0, 0.498, 0.055]]
    """
    if k <= 10:
        return np.asarray(matplotlib.colormaps["tab10"].colors[:k], dtype=float)
    return matplotlib.colormaps["hsv"](np.linspace(0.0, 1.0, k, endpoint=False))[:, :3]


def mix_class_colours(probs: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Blend class colours by probability.

    Args:
        probs: ``(H, W, K)`` class probabilities (renormalised; negative entries count as 0).
        colours: ``(K, 3)`` RGB colours in ``[0, 1]``.

    Returns:
        ``(H, W, 3)`` RGB image in ``[0, 1]``; black where every probability is 0.

    Example:
        >>> c = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
        >>> mix_class_colours(np.array([[[1.0, 0.0], [0.5, 0.5]]]), c).tolist()
        [[[1.0, 0.0, 0.0], [0.5, 0.0, 0.5]]]
    """
    p = np.clip(np.asarray(probs, dtype=float), 0.0, None)  # (H, W, K)
    total = p.sum(axis=-1, keepdims=True)  # (H, W, 1)
    p = p / np.where(total > 0, total, 1.0)
    return np.clip(p @ colours, 0.0, 1.0)  # (H, W, 3)


@dataclass
class ProbeImages:
    """A probe's ``images``, sorted into what the report can draw.

    Attributes:
        maps: Model -> ``(H, W, K)`` class probabilities (row 0 at the bottom of the extent).
        extents: Model -> ``[xmin, xmax, ymin, ymax]`` of its map, ``None`` if not given.
        points: ``((N, 2) coordinates, (N,) labels)`` of the data, or ``None``.
        arrays: Other drawable images: 2-D, or 3-D RGB(A) in ``[0, 1]``.
        skipped: Names of entries that are none of these (listed in the report, not drawn).
    """

    maps: dict[str, np.ndarray] = field(default_factory=dict)
    extents: dict[str, list[float] | None] = field(default_factory=dict)
    points: tuple[np.ndarray, np.ndarray] | None = None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def parse_images(images: Mapping[str, Any]) -> ProbeImages:
    """Sort a probe's images into decision maps, data points, plain arrays and the rest.

    Example:
        >>> parsed = parse_images({"m": {"probs": [[[0.2, 0.8]]]}, "a": [[0, 1]], "b": "text"})
        >>> list(parsed.maps), list(parsed.arrays), parsed.skipped
        (['m'], ['a'], ['b'])
    """
    out = ProbeImages()
    for name, value in images.items():
        if isinstance(value, Mapping) and "probs" in value:
            probs = _array(value["probs"])
            if probs is None or probs.ndim != 3:
                out.skipped.append(name)
                continue
            out.maps[name] = probs
            extent = _array(value.get("extent"))
            out.extents[name] = extent.tolist() if extent is not None and extent.size == 4 else None
        elif name == "points" and isinstance(value, Mapping):
            xy, labels = _points(value)
            if xy is None or labels is None or xy.shape != (len(labels), 2):
                out.skipped.append(name)
                continue
            out.points = (xy, labels.astype(int))
        else:
            array = _array(value)
            drawable = array is not None and (
                array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))
            )
            if drawable:
                out.arrays[name] = array
            else:
                out.skipped.append(name)
    return out


def _points(value: Mapping[str, Any]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Coordinates and labels of the decision-map probe's points.

    The probe writes ``{"x": [x0...], "y": [x1...], "label": [...]}``; the older
    ``{"x": [[x0, x1], ...], "y": [labels]}`` form is read too.
    """
    if "label" in value:
        x0, x1, labels = _array(value.get("x")), _array(value.get("y")), _array(value["label"])
        if x0 is None or x1 is None or x0.shape != x1.shape or x0.ndim != 1:
            return None, labels
        return np.stack([x0, x1], 1), labels
    return _array(value.get("x")), _array(value.get("y"))


def _array(value: object) -> np.ndarray | None:
    """``value`` as a float array, ``None`` when it is not a regular numeric nest of lists."""
    if value is None:
        return None
    try:
        return np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return None


def decision_map_grid(
    images: ProbeImages,
    titles: Mapping[str, str],
    palette: Palette,
    class_names: Sequence[str] = (),
) -> str | None:
    """A grid of decision maps, one per model, with the data points on top.

    Args:
        images: The probe's parsed images.
        titles: Model -> panel title (name and hardness).
        palette: The report's model colours, used for each panel's frame.
        class_names: Names for the class legend; classes are numbered when absent.

    Returns:
        A PNG data URI, or ``None`` when there is no decision map.
    """
    if not images.maps:
        return None
    names = order_rows(list(images.maps), list(palette.colours))
    k = max(probs.shape[-1] for probs in images.maps.values())
    colours = class_colours(k)
    with plot_style():
        fig, axes = grid(len(names), 4, 2.4, 2.4)
        for ax, name in zip(axes, names):
            probs = images.maps[name]  # (H, W, K)
            rgb = mix_class_colours(probs, colours[: probs.shape[-1]])  # (H, W, 3)
            extent = images.extents.get(name)
            ax.imshow(rgb, origin="lower", extent=extent, aspect="auto", interpolation="nearest")
            if images.points is not None:
                xy, labels = images.points
                point_colours = colours[labels % k]  # (N, 3)
                ax.scatter(*xy.T, c=point_colours, s=8, edgecolors="white", linewidths=0.4)
            ax.set_title(titles.get(name, name))
            ax.grid(False)
            for spine in ax.spines.values():
                spine.set(visible=True, color=palette.colour(name), linewidth=2)
        labels = [*class_names[:k], *(f"class {i}" for i in range(len(class_names), k))]
        handles = [Patch(color=colours[i]) for i in range(k)]
        fig.legend(handles, labels, loc="outside lower center", ncols=min(k, 10))
        return to_data_uri(fig)


def array_grid(arrays: Mapping[str, np.ndarray]) -> str | None:
    """A grid of arrays: 2-D ones in viridis with a colour bar, 3-D ones as RGB(A) in ``[0, 1]``.

    Returns:
        A PNG data URI, or ``None`` when ``arrays`` is empty.
    """
    if not arrays:
        return None
    with plot_style():
        fig, axes = grid(len(arrays), 4, 2.4, 2.2)
        for ax, (name, array) in zip(axes, arrays.items()):
            if array.ndim == 2:
                fig.colorbar(ax.imshow(array, cmap="viridis"), ax=ax, shrink=0.8)
            else:
                ax.imshow(np.clip(array, 0.0, 1.0))
            ax.set_title(name)
            ax.grid(False)
            ax.set_xticks([])
            ax.set_yticks([])
        return to_data_uri(fig)
