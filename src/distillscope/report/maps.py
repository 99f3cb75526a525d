"""Image panels of the report: decision maps on 2-D data [004 5.1], labelled heat maps (the
cka probe's layer-by-layer matrices [003 Fig. 8]), grids of input gradients (the loss_gradients
probe [000 Figs. 8, 13]), generic arrays, and the sorting of a probe's ``images`` into them
(sentences coloured by attribution are drawn by :mod:`distillscope.report.tokens`).

A decision map colours each grid point by mixing the K class colours in proportion to the
model's predicted probabilities: where a model is sure, the colour is pure and the boundary
crisp; in the "twilight zone" where several classes are likely, colours blend and the boundary
looks blurry, which is what paper 004 reads the hardness of a boundary from (by eye; the
hardness number in the titles is this project's measure, see ``functional.boundary``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from distillscope.report.plots import Palette, grid, plot_style, to_data_uri
from distillscope.report.tables import order_rows
from distillscope.report.tokens import TokenFigure, parse_token_figure


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
class Heatmap:
    """A labelled matrix: ``values[i, j]`` for row ``rows[i]`` and column ``columns[j]``.

    Attributes:
        values: ``(R, C)`` numbers, NaN where undefined.
        rows: Row labels (top to bottom).
        columns: Column labels (left to right).
        row_label: Title of the vertical axis.
        column_label: Title of the horizontal axis.
        marked: ``(i, j)`` cells outlined in the figure (the cka probe's aligned layers).
    """

    values: np.ndarray
    rows: list[str]
    columns: list[str]
    row_label: str = ""
    column_label: str = ""
    marked: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class GradientGrid:
    """Input gradients of several models on the same images: rows images, columns models.

    Attributes:
        gradients: Model -> one ``(H, W)`` or ``(H, W, 3)`` gradient per image.
        inputs: The images, drawable (``(H, W)`` or ``(H, W, 3)`` in ``[0, 1]``), or empty.
        labels: One label per image (its class).
    """

    gradients: dict[str, list[np.ndarray]]
    inputs: list[np.ndarray]
    labels: list[str]


@dataclass
class ProbeImages:
    """A probe's ``images``, sorted into what the report can draw.

    Attributes:
        maps: Model -> ``(H, W, K)`` class probabilities (row 0 at the bottom of the extent).
        extents: Model -> ``[xmin, xmax, ymin, ymax]`` of its map, ``None`` if not given.
        points: ``((N, 2) coordinates, (N,) labels)`` of the data, or ``None``.
        heatmaps: Labelled matrices (``{"heatmap": [[...]], "rows": [...], ...}``).
        gradients: Gradient grids (``{"gradients": {model: [...]}, "inputs": [...], ...}``).
        tokens: Sentences with their words' attributions per model
            (``{"tokens": [[...]], "attributions": {model: [[...]]}, ...}``, see
            :mod:`distillscope.report.tokens`).
        arrays: Other drawable images: 2-D, or 3-D RGB(A) in ``[0, 1]``.
        skipped: Names of entries that are none of these (listed in the report, not drawn).
    """

    maps: dict[str, np.ndarray] = field(default_factory=dict)
    extents: dict[str, list[float] | None] = field(default_factory=dict)
    points: tuple[np.ndarray, np.ndarray] | None = None
    heatmaps: dict[str, Heatmap] = field(default_factory=dict)
    gradients: dict[str, GradientGrid] = field(default_factory=dict)
    tokens: dict[str, TokenFigure] = field(default_factory=dict)
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
        elif isinstance(value, Mapping) and "heatmap" in value:
            heatmap = _heatmap(value)
            if heatmap is None:
                out.skipped.append(name)
            else:
                out.heatmaps[name] = heatmap
        elif isinstance(value, Mapping) and "gradients" in value:
            gradients = _gradient_grid(value)
            if gradients is None:
                out.skipped.append(name)
            else:
                out.gradients[name] = gradients
        elif isinstance(value, Mapping) and "tokens" in value:
            tokens = parse_token_figure(value)
            if tokens is None:
                out.skipped.append(name)
            else:
                out.tokens[name] = tokens
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


def _heatmap(value: Mapping[str, Any]) -> Heatmap | None:
    """A labelled matrix, ``None`` when it is not a non-empty 2-D numeric one; labels that do not
    match its shape are replaced by indices, marked cells outside it are dropped."""
    values = _array(value["heatmap"])
    if values is None or values.ndim != 2 or values.size == 0:
        return None
    n_rows, n_cols = values.shape

    def labels(key: str, n: int) -> list[str]:
        given = value.get(key)
        ok = isinstance(given, Sequence) and not isinstance(given, str) and len(given) == n
        return [str(v) for v in given] if ok else [str(i) for i in range(n)]

    cells = [c for c in value.get("aligned") or [] if isinstance(c, Sequence) and len(c) == 2]
    marked = [
        (i, j)
        for i, j in cells
        if isinstance(i, int) and isinstance(j, int) and 0 <= i < n_rows and 0 <= j < n_cols
    ]
    return Heatmap(
        values,
        labels("rows", n_rows),
        labels("columns", n_cols),
        str(value.get("row_label") or ""),
        str(value.get("column_label") or ""),
        marked,
    )


def _drawable(array: np.ndarray | None) -> bool:
    """Whether ``array`` is a non-empty ``(H, W)`` or ``(H, W, 3)`` image."""
    if array is None or array.size == 0:
        return False
    return array.ndim == 2 or (array.ndim == 3 and array.shape[-1] == 3)


def _gradient_grid(value: Mapping[str, Any]) -> GradientGrid | None:
    """A gradient grid, ``None`` unless every model has the same number (>= 1) of drawable
    gradients; inputs are dropped unless there is one drawable input per image, labels that do
    not match are replaced by indices."""
    given = value["gradients"]
    if not isinstance(given, Mapping) or not given:
        return None
    gradients: dict[str, list[np.ndarray]] = {}
    for model, panels in given.items():
        if not isinstance(panels, Sequence) or isinstance(panels, str):
            return None
        arrays = [_array(p) for p in panels]
        if not arrays or not all(_drawable(a) for a in arrays):
            return None
        gradients[str(model)] = [a for a in arrays if a is not None]
    n = {len(panels) for panels in gradients.values()}
    if len(n) != 1:
        return None
    (rows,) = n
    raw = value.get("inputs")
    inputs = [_array(x) for x in raw] if isinstance(raw, Sequence) and len(raw) == rows else []
    inputs = [x for x in inputs if x is not None] if all(_drawable(x) for x in inputs) else []
    labels = value.get("labels")
    ok = isinstance(labels, Sequence) and not isinstance(labels, str) and len(labels) == rows
    return GradientGrid(
        gradients, inputs, [str(v) for v in labels] if ok else [str(i) for i in range(rows)]
    )


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


#: Largest matrix whose cells carry their value as text.
ANNOTATED_CELLS = 12


def heatmap_grid(heatmaps: Mapping[str, Heatmap], vmax: float = 1.0) -> str | None:
    """One panel per labelled matrix, on one colour scale from ``min(0, lowest value)`` to
    ``vmax``; values written in the cells (two decimals, up to 12 x 12 cells), undefined cells
    grey, marked cells outlined.

    Returns:
        A PNG data URI, or ``None`` when ``heatmaps`` is empty.
    """
    if not heatmaps:
        return None
    finite = [h.values[np.isfinite(h.values)] for h in heatmaps.values()]
    lowest = min((float(v.min()) for v in finite if v.size), default=0.0)
    vmin, top = min(0.0, lowest), max(vmax, *(float(v.max()) for v in finite if v.size))
    n_rows = max(len(h.rows) for h in heatmaps.values())
    n_cols = max(len(h.columns) for h in heatmaps.values())
    width, height = max(3.2, 0.6 * n_cols + 2.2), max(2.8, 0.45 * n_rows + 2.0)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")
    with plot_style():
        fig, axes = grid(len(heatmaps), 3, width, height)
        for ax, (name, h) in zip(axes, heatmaps.items()):
            image = ax.imshow(
                np.ma.masked_invalid(h.values), cmap=cmap, vmin=vmin, vmax=top, aspect="auto"
            )
            ax.set_title(name)
            ax.grid(False)
            ax.set_xticks(range(len(h.columns)), h.columns, rotation=45, ha="right")
            ax.set_yticks(range(len(h.rows)), h.rows)
            ax.set_xlabel(h.column_label)
            ax.set_ylabel(h.row_label)
            if h.values.shape[0] <= ANNOTATED_CELLS and h.values.shape[1] <= ANNOTATED_CELLS:
                for (i, j), v in np.ndenumerate(h.values):
                    text = f"{v:.2f}" if math.isfinite(v) else "n/a"
                    dark = math.isfinite(v) and (v - vmin) / ((top - vmin) or 1.0) > 0.6
                    colour = "black" if dark or not math.isfinite(v) else "white"
                    ax.text(j, i, text, ha="center", va="center", fontsize=8, color=colour)
            for i, j in h.marked:
                box = Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", lw=1.5)
                ax.add_patch(box)
        fig.colorbar(image, ax=axes, shrink=0.8)
        return to_data_uri(fig)


#: Tsipras et al.'s clip for RGB gradients: the mean +- 3 standard deviations.
CLIP_STD = 3.0


def clip_rescale(grad: np.ndarray, n_std: float = CLIP_STD) -> np.ndarray:
    """Tsipras et al. 2019 (Fig. 2 caption)'s display of an RGB gradient: clip every entry to
    ``mean +- n_std * std`` (over all entries of the gradient) and rescale that range to
    ``[0, 1]``; a constant gradient is mid-grey.

    Example:
        >>> clip_rescale(np.array([-10.0, 0.0, 0.0, 0.0, 10.0]), n_std=0.5).round(3).tolist()
        [0.0, 0.5, 0.5, 0.5, 1.0]
    """
    g = np.asarray(grad, dtype=float)
    spread = n_std * g.std()
    if not spread > 0:
        return np.full_like(g, 0.5)
    low = g.mean() - spread
    return (np.clip(g, low, low + 2 * spread) - low) / (2 * spread)


def gradient_grid(panels: GradientGrid, palette: Palette) -> str | None:
    """Rows images, columns the input and each model's gradient (Tsipras et al. 2019, Fig. 2).

    One-channel gradients are drawn signed, blue positive and red negative, on the symmetric
    range ``+-max |g|`` of each panel; RGB gradients by :func:`clip_rescale`. Models are in the
    report's order, their names in their colours.

    Returns:
        A PNG data URI, or ``None`` when the grid has no model.
    """
    models = order_rows(list(panels.gradients), list(palette.colours))
    if not models:
        return None
    rows = len(panels.labels)
    columns = [*(["input"] if panels.inputs else []), *models]
    signed = panels.gradients[models[0]][0].ndim == 2
    note = (
        "blue: positive, red: negative loss gradient; each panel scaled to its largest |g|"
        if signed
        else "loss gradient clipped to mean ± 3 std and rescaled to [0, 1] (Tsipras et al.)"
    )
    with plot_style():
        fig = Figure(figsize=(1.3 * len(columns), 1.3 * rows + 0.5), layout="constrained")
        axes = fig.subplots(rows, len(columns), squeeze=False)
        for r in range(rows):
            for c, column in enumerate(columns):
                ax = axes[r][c]
                if column == "input":
                    x = panels.inputs[r]
                    ax.imshow(np.clip(x, 0.0, 1.0), cmap="gray", vmin=0.0, vmax=1.0)
                else:
                    g = panels.gradients[column][r]
                    if g.ndim == 2:
                        top = float(np.abs(g).max()) or 1.0
                        ax.imshow(g, cmap="RdBu", vmin=-top, vmax=top)
                    else:
                        ax.imshow(clip_rescale(g))
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                if r == 0:
                    colour = "black" if column == "input" else palette.colour(column)
                    ax.set_title(column, color=colour, fontweight="bold")
            axes[r][0].set_ylabel(panels.labels[r])
        fig.supxlabel(note, fontsize=7)
        return to_data_uri(fig)
