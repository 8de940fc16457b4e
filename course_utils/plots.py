"""Plots for anomaly scores and images: histograms, ROC / PR curves, image grids, heat maps.

Every plotting function draws into ``ax`` when given one (so notebooks can compose
figures) or into a new figure otherwise, and returns the Axes. Conventions as in
``course_utils.metrics``: label 1 = anomaly, higher score = more anomalous, and a
threshold predicts "anomaly" for ``scores >= threshold``.

Images are channel-first, as torch gives them: (N, H, W), (N, 1, H, W) or (N, 3, H, W)
for a batch, values in [0, 1]; numpy arrays and torch tensors (any device) are accepted.
Only matplotlib is required; seaborn, if installed, is not needed here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from sklearn.metrics import precision_recall_curve, roc_curve

from course_utils.metrics import auprc, auroc, counts_at_threshold, validate_scores_labels, validate_threshold

__all__ = [
    "images_to_nhwc",
    "ScoreRange",
    "score_range",
    "mark_outside",
    "apply_score_range",
    "score_histogram",
    "roc_curve_plot",
    "pr_curve_plot",
    "tile_images",
    "image_grid",
    "heatmap_overlay",
]

NORMAL_COLOR = "tab:green"
ANOMALY_COLOR = "tab:red"
THRESHOLD_STYLE = {"color": "black", "linestyle": "--", "linewidth": 1.2}
# gid of the chance line, so overlaying several curves on one Axes draws it only once.
_CHANCE_GID = "course_utils-chance"
# gid of the marks that say how many scores lie outside the shown range.
_OUTSIDE_GID = "course_utils-outside"


def _axes_or_new(ax: Axes | None, figsize: tuple[float, float] = (5.0, 4.0)) -> Axes:
    """The given Axes, or the Axes of a new figure of ``figsize`` inches."""
    if ax is not None:
        return ax
    _, new_ax = plt.subplots(figsize=figsize)
    return new_ax


def _as_numpy(x: Any) -> np.ndarray:
    """numpy array from a numpy array, list or torch tensor on any device."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


# --------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreRange:
    """The part of a score axis worth showing, and what lies outside it.

    Attributes:
        low, high: the shown interval (low < high), in score units.
        log: True when the axis is logarithmic (every score > 0 and the bulk spans orders of magnitude).
        n_below, n_above: how many scores lie outside ``[low, high]`` and are not drawn.
    """

    low: float
    high: float
    log: bool
    n_below: int
    n_above: int

    def bin_edges(self, bins: int) -> np.ndarray:
        """``bins + 1`` edges over the range: equally spaced, in log space on a log axis."""
        if self.log:
            return np.logspace(np.log10(self.low), np.log10(self.high), bins + 1)
        return np.linspace(self.low, self.high, bins + 1)


def score_range(
    scores: Any,
    *,
    fence: float = 5.0,
    log: bool | None = None,
    log_decades: float = 3.0,
) -> ScoreRange:
    """A readable axis range for scores with (possibly) heavy tails.

    The bulk's scale is the interquartile range IQR = q75 - q25 (the 0.5-99.5 % range when more than
    half of the scores are equal, so IQR = 0). Scores beyond the fences q25 - ``fence`` IQR and
    q75 + ``fence`` IQR are not shown, and the shown range ends at the most extreme score inside the
    fences. With ``fence=5``, Gaussian scores (the fences lie beyond 7 sigma) and uniform ones are shown
    whole, exponential ones lose about 0.1 %, and an outlier at 335 beside scores in [0, 1], however
    many there are, is cut off. With ``log=None`` the axis is logarithmic when every score is positive and
    the middle 90 % of the scores spans at least ``log_decades`` powers of ten; the fences are then
    computed on log10 of the scores.

    Args:
        scores: shape (N,), finite.
        fence: the fences' distance from the quartiles, in IQRs; ``inf`` never cuts.
        log: force a log (True) or linear (False) axis; None chooses.
        log_decades: powers of ten of the middle 90 % above which ``log=None`` chooses a log axis.

    Returns:
        The :class:`ScoreRange`, with the counts of scores left outside it.
    """
    values = np.asarray(_as_numpy(scores), dtype=np.float64).ravel()
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise ValueError("scores must be a non-empty array of finite numbers")
    if not fence > 0:
        raise ValueError(f"fence must be > 0 (in interquartile ranges); got {fence!r}")
    positive = bool(np.all(values > 0))
    if log and not positive:
        raise ValueError("a log axis needs every score > 0")
    if log is None:  # the middle 90 % spans orders of magnitude: a few tiny scores alone do not decide it
        middle_low, middle_high = np.percentile(values, [5.0, 95.0])
        log = positive and middle_high / middle_low >= 10.0**log_decades
    t = np.log10(values) if log else values
    q_lo, q25, q75, q_hi = np.percentile(t, [0.5, 25.0, 75.0, 99.5])
    scale = (q75 - q25) or (q_hi - q_lo)
    inside = (t >= q25 - fence * scale) & (t <= q75 + fence * scale) if scale > 0 else np.ones_like(t, bool)
    low, high = float(values[inside].min()), float(values[inside].max())
    n_below, n_above = int(np.sum(values < low)), int(np.sum(values > high))
    if high <= low:  # every shown score is equal: a window around them
        low, high = (low / 2, high * 2) if log else (low - 0.5, high + 0.5)
    return ScoreRange(low=low, high=high, log=bool(log), n_below=n_below, n_above=n_above)


def _points(n: int) -> str:
    return f"{n} point{'s' if n != 1 else ''}"


_NOTE_LINE = 0.085  # height of one line of mark_outside's note, in axes coordinates (fontsize 8 on a small panel)


def mark_outside(ax: Axes, shown: ScoreRange, *, axis: str = "x") -> list[Any]:
    """Say on ``ax`` how many scores lie outside ``shown``: a triangle at each cut edge of the axis and
    a text such as "3 points > 335 not shown". Returns the artists drawn (gid ``course_utils-outside``)."""
    if axis not in ("x", "y"):
        raise ValueError(f"axis must be 'x' or 'y'; got {axis!r}")
    drawn = []
    for n, edge, text_position, marker, sign, value in (
        (shown.n_below, 0.0, 0.01, "<" if axis == "x" else "v", "<", shown.low),
        (shown.n_above, 1.0, 0.99, ">" if axis == "x" else "^", ">", shown.high),
    ):
        if n == 0:
            continue
        xy = (edge, 0.0) if axis == "x" else (0.0, edge)
        (tip,) = ax.plot(*xy, marker=marker, markersize=9, color="black", transform=ax.transAxes, clip_on=False,
                         linestyle="none")
        tip.set_gid(_OUTSIDE_GID)
        # x: the note goes at the top of the panel, above the bars (score_histogram leaves headroom there);
        # with both tails cut, the right note goes one line lower, so that on a narrow panel the two do not overlap
        stagger = _NOTE_LINE if edge == 1.0 and shown.n_below else 0.0
        text_xy = (text_position, 0.97 - stagger) if axis == "x" else (0.02, text_position)
        note = ax.text(*text_xy, f"{_points(n)} {sign} {value:.4g} not shown", transform=ax.transAxes,
                       ha="left" if edge == 0.0 or axis == "y" else "right",
                       va="top" if axis == "x" or edge == 1.0 else "bottom", fontsize=8,
                       bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1.5})
        note.set_gid(_OUTSIDE_GID)
        drawn += [tip, note]
    return drawn


def apply_score_range(ax: Axes, scores: Any, *, axis: str = "x", **range_options: Any) -> ScoreRange:
    """Give ``ax``'s x (or y) axis the readable range of ``scores`` (:func:`score_range`): limits, log
    scale when chosen, and the count of hidden points (:func:`mark_outside`). For scatter plots of scores."""
    shown = score_range(scores, **range_options)
    set_limits, set_scale = (ax.set_xlim, ax.set_xscale) if axis == "x" else (ax.set_ylim, ax.set_yscale)
    if shown.log:
        set_scale("log")
    set_limits(shown.low, shown.high)
    mark_outside(ax, shown, axis=axis)
    return shown


HISTOGRAM_HEADROOM = 1.4
"""score_histogram's y axis ends at least this many times above its tallest bar: the top part (about 30 %)
holds the legend, and each "not shown" note adds one line above it."""


def _notes(shown: ScoreRange) -> int:
    """How many "not shown" notes mark_outside writes at the top of a histogram (0, 1 or 2)."""
    return int(shown.n_below > 0) + int(shown.n_above > 0)


def _histogram_headroom(shown: ScoreRange) -> float:
    """Top of the y axis / tallest bar: room for the legend and, above it, one line per note."""
    return 1.0 / (1.0 / HISTOGRAM_HEADROOM - _notes(shown) * _NOTE_LINE)


def score_histogram(
    scores: Any,
    labels: Any,
    *,
    ax: Axes | None = None,
    bins: int | Sequence[float] = 50,
    threshold: float | None = None,
    title: str | None = None,
    names: tuple[str, str] = ("normal", "anomaly"),
    density: bool = True,
    clip: bool = True,
    log: bool | None = None,
) -> Axes:
    """Overlaid histograms of normal (green) and anomalous (red) scores on a readable axis.

    Both histograms use the SAME bin edges, computed from all scores together, so
    the bars are directly comparable. Heavy tails do not squeeze the bulk into one bar: with
    ``clip`` the axis covers :func:`score_range` (far tails cut at fences 5 interquartile ranges
    beyond the quartiles, a log axis when the scores span orders of magnitude) and the figure says how many points lie
    outside ("3 points > 335 not shown", with a triangle at that edge). Densities stay those of
    all scores of a class (the hidden points keep their share of the area); on a log axis they are
    per power of ten, so equal bars hold equal mass. The y axis leaves room above the tallest bar
    (:data:`HISTOGRAM_HEADROOM`) for the legend and those notes, so none of them covers a bar; a
    notebook never has to move the legend or stretch the axis itself.

    Args:
        scores: shape (N,), finite; higher = more anomalous.
        labels: shape (N,), 1 = anomaly, 0 = normal; one class alone is allowed.
        ax: Axes to draw into; a new figure when None.
        bins: number of bins over the shown range, or the bin edges themselves (then the range is
            theirs, and points outside them are counted as not shown).
        threshold: if given, drawn as a dashed vertical line (off the shown range: named in the legend).
        title: Axes title.
        names: legend names of the (normal, anomaly) classes; counts are appended.
        density: True normalises each class's histogram to unit area (compares shapes
            when the classes have very different sizes); False shows counts.
        clip: False draws every score on a linear axis from the minimum to the maximum.
        log: force a log (True) or linear (False) axis; None lets :func:`score_range` choose.

    Returns:
        The Axes.
    """
    scores_array, labels_array = validate_scores_labels(scores, labels, require_both_classes=False)
    if len(names) != 2:
        raise ValueError(f"names must be two strings (normal, anomaly); got {names!r}")
    if not isinstance(bins, (int, np.integer)):
        edges = np.asarray(bins, dtype=np.float64)
        shown = ScoreRange(float(edges[0]), float(edges[-1]), bool(log),
                           int(np.sum(scores_array < edges[0])), int(np.sum(scores_array > edges[-1])))
    elif clip:
        shown = score_range(scores_array, log=log)
        edges = shown.bin_edges(int(bins))
    else:
        edges = np.histogram_bin_edges(scores_array, bins=bins)
        shown = ScoreRange(float(edges[0]), float(edges[-1]), False, 0, 0)
    ax = _axes_or_new(ax)
    tallest_bar = 0.0
    for class_value, name, color in ((0, names[0], NORMAL_COLOR), (1, names[1], ANOMALY_COLOR)):
        class_scores = scores_array[labels_array == class_value]
        if len(class_scores) == 0:
            continue
        weights = None
        if density:  # unit area over ALL of the class's scores, also those outside the shown range
            # per unit of score on a linear axis, per power of ten on a log axis (equal bars = equal mass)
            widths = np.diff(np.log10(edges)) if shown.log else np.diff(edges)
            bin_of = np.clip(np.searchsorted(edges, class_scores, side="right") - 1, 0, len(edges) - 2)
            weights = 1.0 / (len(class_scores) * widths[bin_of])
        heights, _, _ = ax.hist(
            class_scores,
            bins=edges,
            weights=weights,
            alpha=0.5,
            color=color,
            edgecolor=color,
            label=f"{name} (n={len(class_scores)})",
        )
        tallest_bar = max(tallest_bar, float(np.max(heights)))
    if shown.log:
        ax.set_xscale("log")
    ax.set_xlim(shown.low, shown.high)
    if threshold is not None:
        value = validate_threshold(threshold)
        if shown.low <= value <= shown.high:
            ax.axvline(value, label=f"threshold = {value:.4g}", **THRESHOLD_STYLE)
        else:
            side = "right" if value > shown.high else "left"
            ax.plot([], [], label=f"threshold = {value:.4g} (off the axis, {side})", **THRESHOLD_STYLE)
    # Headroom above the tallest bar: the legend and the "not shown" note (mark_outside) sit there, not on the bars.
    # Measured from this call's bars, not by scaling the current limit, so panels that share a y axis (each
    # call sees the limit the previous one set) do not compound it; max keeps the other panels' bars in view.
    ax.set_ylim(top=max(tallest_bar * _histogram_headroom(shown), ax.get_ylim()[1]))
    mark_outside(ax, shown)
    ax.set_xlabel("anomaly score (higher = more anomalous)" + (", log scale" if shown.log else ""))
    ax.set_ylabel(("density per power of ten" if shown.log else "density") if density else "count")
    # the legend goes in the top right corner, below the notes (one line each), so that the three never overlap
    ax.legend(loc="upper right", bbox_to_anchor=(1.0, 1.0 - _notes(shown) * _NOTE_LINE), fontsize="small")
    if title is not None:
        ax.set_title(title)
    return ax


def _draw_chance_line_once(ax: Axes, x: Sequence[float], y: Sequence[float], label: str) -> None:
    """Draw a dashed grey reference line unless this Axes already has one."""
    if any(line.get_gid() == _CHANCE_GID for line in ax.get_lines()):
        return
    (line,) = ax.plot(x, y, color="grey", linestyle=":", linewidth=1, label=label)
    line.set_gid(_CHANCE_GID)


def _legend_text(label: str | None, metric: str, value: float) -> str:
    return f"{label} ({metric} = {value:.3f})" if label else f"{metric} = {value:.3f}"


def _mark_operating_point(ax: Axes, x: float, y: float, color: str, threshold: float) -> None:
    """The point a threshold picks on a curve: a large dot in the curve's colour."""
    ax.plot(x, y, marker="o", markersize=8, color=color, markeredgecolor="black", linestyle="none",
            label=f"threshold {threshold:.4g}")


def roc_curve_plot(
    scores: Any,
    labels: Any,
    *,
    ax: Axes | None = None,
    threshold: float | None = None,
    label: str | None = None,
) -> Axes:
    """ROC curve with the AUROC in the legend and the chance diagonal.

    Calling it again with the same ``ax`` overlays another curve (for comparing
    methods); the diagonal is drawn once.

    Args:
        scores: shape (N,), finite; higher = more anomalous.
        labels: shape (N,), 1 = anomaly, 0 = normal; both classes present.
        ax: Axes to draw into; a new figure when None.
        threshold: if given, the operating point (FPR, TPR) of ``scores >= threshold``
            is marked on the curve.
        label: curve name in the legend (e.g. the method).

    Returns:
        The Axes.
    """
    scores_array, labels_array = validate_scores_labels(scores, labels, metric="a ROC curve")
    fpr, tpr, _ = roc_curve(labels_array, scores_array)
    ax = _axes_or_new(ax, figsize=(4.5, 4.5))
    _draw_chance_line_once(ax, [0, 1], [0, 1], "chance")
    (curve,) = ax.plot(fpr, tpr, label=_legend_text(label, "AUROC", auroc(scores_array, labels_array)))
    if threshold is not None:
        value = validate_threshold(threshold)
        tp, fp, tn, fn = counts_at_threshold(scores_array, labels_array, value)
        _mark_operating_point(ax, fp / (fp + tn), tp / (tp + fn), curve.get_color(), value)
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.legend(loc="lower right")
    return ax


def pr_curve_plot(
    scores: Any,
    labels: Any,
    *,
    ax: Axes | None = None,
    threshold: float | None = None,
    label: str | None = None,
) -> Axes:
    """Precision-recall curve (anomaly = positive) with the AUPRC in the legend.

    The chance baseline is a horizontal line at the anomaly prevalence (a random
    detector's precision), drawn in the curve's colour because it depends on the data;
    curves overlaid with the same prevalence share the first one's line.

    Args:
        scores: shape (N,), finite; higher = more anomalous.
        labels: shape (N,), 1 = anomaly, 0 = normal; both classes present.
        ax: Axes to draw into (calling again overlays curves); a new figure when None.
        threshold: if given, the operating point (recall, precision) is marked.
        label: curve name in the legend.

    Returns:
        The Axes.
    """
    scores_array, labels_array = validate_scores_labels(scores, labels, metric="a PR curve")
    precision, recall, _ = precision_recall_curve(labels_array, scores_array)
    ax = _axes_or_new(ax, figsize=(4.5, 4.5))
    # steps-post matches how average precision integrates the curve.
    (curve,) = ax.plot(
        recall,
        precision,
        drawstyle="steps-post",
        label=_legend_text(label, "AUPRC", auprc(scores_array, labels_array)),
    )
    prevalence = float(labels_array.mean())
    chance_label = f"chance (prevalence {prevalence:.2f})"
    # Curves overlaid on the same test set share one chance line (one legend entry, not one per curve).
    if not any(line.get_label() == chance_label for line in ax.get_lines()):
        ax.axhline(prevalence, color=curve.get_color(), linestyle=":", linewidth=1, label=chance_label)
    if threshold is not None:
        value = validate_threshold(threshold)
        tp, fp, _, fn = counts_at_threshold(scores_array, labels_array, value)
        # Nothing predicted anomalous: precision is 0/0; use 1, the curve's end point.
        precision_at = tp / (tp + fp) if tp + fp > 0 else 1.0
        _mark_operating_point(ax, tp / (tp + fn), precision_at, curve.get_color(), value)
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("recall (sensitivity)")
    ax.set_ylabel("precision (PPV)")
    ax.legend(loc="lower left")
    return ax


# --------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------


def images_to_nhwc(images: Any, name: str = "images") -> np.ndarray:
    """Batch of channel-first images -> float array (N, H, W) (gray) or (N, H, W, 3) (RGB).

    Accepts (N, H, W), (N, 1, H, W) and (N, 3, H, W), numpy or torch.
    """
    array = _as_numpy(images)
    try:
        array = array.astype(np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric; got dtype {array.dtype}") from None
    expected = "(N, H, W), (N, 1, H, W) or (N, 3, H, W)"
    if array.ndim == 3:
        result = array
    elif array.ndim == 4 and array.shape[1] == 1:
        result = array[:, 0]
    elif array.ndim == 4 and array.shape[1] == 3:
        result = np.moveaxis(array, 1, -1)
    else:
        hint = ""
        if array.ndim == 4 and array.shape[-1] in (1, 3):
            hint = (
                " It looks channel-last: use images.permute(0, 3, 1, 2) (torch) "
                "or np.moveaxis(images, -1, 1) (numpy)."
            )
        elif array.ndim == 2:
            hint = " For a single image, add a batch dimension: images[None]."
        raise ValueError(f"{name} must have shape {expected}; got shape {array.shape}.{hint}")
    if result.shape[0] == 0:
        raise ValueError(f"{name} are empty (shape {array.shape}): pass at least one image")
    if result.shape[1] == 0 or result.shape[2] == 0:
        raise ValueError(f"{name} have zero height or width: shape {array.shape}")
    return result


def _check_nrow(nrow: int) -> None:
    if not isinstance(nrow, (int, np.integer)) or nrow < 1:
        raise ValueError(f"nrow (images per row) must be a positive integer; got {nrow!r}")


def tile_images(images: Any, nrow: int = 8, pad: int = 1, pad_value: float = 1.0) -> np.ndarray:
    """Tile a batch of images into one array, row by row, with separators between tiles.

    Args:
        images: (N, H, W), (N, 1, H, W) or (N, 3, H, W), numpy or torch.
        nrow: images per row (as ``torchvision.utils.make_grid``).
        pad: separator width in pixels between tiles (no border around the grid).
        pad_value: separator colour, and the fill of empty cells in the last row
            (1.0 = white for images in [0, 1]).

    Returns:
        ``(H', W')`` for grayscale or ``(H', W', 3)`` for RGB, where with
        ``cols = min(nrow, N)`` and ``rows = ceil(N / cols)``:
        ``H' = rows * H + (rows - 1) * pad`` and ``W' = cols * W + (cols - 1) * pad``.
    """
    batch = images_to_nhwc(images)
    _check_nrow(nrow)
    if not isinstance(pad, (int, np.integer)) or pad < 0:
        raise ValueError(f"pad must be a non-negative integer number of pixels; got {pad!r}")
    n_images, height, width = batch.shape[:3]
    cols = min(int(nrow), n_images)
    rows = -(-n_images // cols)  # ceiling division
    grid_shape = (rows * height + (rows - 1) * pad, cols * width + (cols - 1) * pad) + batch.shape[3:]
    grid = np.full(grid_shape, pad_value, dtype=np.float64)
    for index, image in enumerate(batch):
        top = (index // cols) * (height + pad)
        left = (index % cols) * (width + pad)
        grid[top : top + height, left : left + width] = image
    return grid


def image_grid(
    images: Any,
    *,
    nrow: int = 8,
    titles: Sequence[str] | None = None,
    ax: Axes | None = None,
    cmap: str = "gray",
    vmin: float = 0.0,
    vmax: float = 1.0,
    title: str | None = None,
) -> Axes:
    """Show a batch of images as a grid, ``nrow`` images per row.

    Without ``titles`` the images are tiled into one picture (``tile_images``, 1-px
    white separators) and shown in a single Axes. With ``titles`` (one per image) each
    image gets its own small inset Axes with its title, laid out inside ``ax``.

    Args:
        images: (N, H, W), (N, 1, H, W) or (N, 3, H, W), values in [0, 1], numpy or torch.
        nrow: images per row.
        titles: optional list of N short strings (e.g. score and label).
        ax: Axes to draw into (its area is used for the grid); a new figure when None.
        cmap, vmin, vmax: grayscale colour mapping (RGB images are clipped to [0, 1]).
        title: title above the whole grid.

    Returns:
        The Axes holding the grid (its axis is off); ``ax.figure`` is the figure.
    """
    batch = images_to_nhwc(images)
    _check_nrow(nrow)
    n_images = batch.shape[0]
    cols = min(int(nrow), n_images)
    rows = -(-n_images // cols)
    if titles is not None and len(titles) != n_images:
        raise ValueError(
            f"titles must have one entry per image: got {len(titles)} titles for {n_images} images"
        )
    if ax is None:
        scale = 1.3 if titles is None else 1.6
        ax = _axes_or_new(None, figsize=(min(14.0, scale * cols + 0.5), scale * rows + 0.6))
    ax.set_axis_off()
    if title is not None:
        ax.set_title(title)
    if titles is None:
        _show_image(ax, tile_images(batch, nrow=nrow), cmap, vmin, vmax)
    else:
        _titled_insets(ax, batch, titles, rows, cols, cmap, vmin, vmax)
    return ax


def _show_image(ax: Axes, image: np.ndarray, cmap: str, vmin: float, vmax: float) -> None:
    """imshow a (H, W) or (H, W, 3) array without axes."""
    if image.ndim == 3:
        ax.imshow(np.clip(image, 0.0, 1.0), interpolation="nearest")
    else:
        ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_axis_off()


def _titled_insets(
    ax: Axes,
    batch: np.ndarray,
    titles: Sequence[str],
    rows: int,
    cols: int,
    cmap: str,
    vmin: float,
    vmax: float,
) -> None:
    """One inset Axes per image inside ``ax``, each with its own title.

    Insets work inside any Axes (also one not made by plt.subplots), so the widgets
    can place a titled grid in a figure they laid out themselves.
    """
    cell_width, cell_height = 1.0 / cols, 1.0 / rows
    title_room = 0.28 * cell_height  # keep space for up to two short title lines
    for index, image in enumerate(batch):
        row, col = divmod(index, cols)
        bounds = [
            col * cell_width + 0.04 * cell_width,
            1.0 - (row + 1) * cell_height,
            0.92 * cell_width,
            cell_height - title_room,
        ]
        inset = ax.inset_axes(bounds)
        _show_image(inset, image, cmap, vmin, vmax)
        inset.set_title(str(titles[index]), fontsize=8)


def heatmap_overlay(
    image: Any,
    heat: Any,
    *,
    ax: Axes | None = None,
    alpha: float = 0.5,
    cmap: str = "jet",
    title: str | None = None,
    colorbar: bool = False,
) -> Axes:
    """A grayscale image with an anomaly heat map on top.

    Args:
        image: (H, W) or (1, H, W), values in [0, 1], numpy or torch.
        heat: (h, w), (1, h, w) or (1, 1, h, w), finite. A smaller map (for example a
            latent-resolution map) is upsampled bilinearly to (H, W); it must have the
            image's aspect ratio. It is min-max normalised to [0, 1] per image, so
            colours show WHERE the map is high, not how high compared to other images.
        ax: Axes to draw into; a new figure when None.
        alpha: opacity of the heat map in [0, 1].
        cmap: colour map of the heat map.
        title: Axes title.
        colorbar: add a colour bar for the normalised heat values.

    Returns:
        The Axes.
    """
    gray = _grayscale_image(image)
    heat_map = _heat_to_image_size(heat, gray.shape)
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha (heat map opacity) must be in [0, 1]; got {alpha!r}")
    ax = _axes_or_new(ax, figsize=(3.5, 3.5))
    ax.imshow(gray, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    overlay = ax.imshow(
        _normalise01(heat_map), cmap=cmap, vmin=0.0, vmax=1.0, alpha=alpha, interpolation="bilinear"
    )
    ax.set_axis_off()
    if colorbar:
        ax.figure.colorbar(overlay, ax=ax, fraction=0.046, pad=0.04, label="anomaly map (normalised)")
    if title is not None:
        ax.set_title(title)
    return ax


def _grayscale_image(image: Any) -> np.ndarray:
    """(H, W) or (1, H, W) -> float (H, W); anything else is a ValueError."""
    array = _as_numpy(image).astype(np.float64)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(
            f"image must be one grayscale image of shape (H, W) or (1, H, W); got shape {array.shape}"
        )
    return array


def _heat_to_image_size(heat: Any, image_shape: tuple[int, int]) -> np.ndarray:
    """Heat map -> float (H, W), upsampled bilinearly when smaller than the image."""
    array = _as_numpy(heat).astype(np.float64)
    original_shape = array.shape
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(
            f"heat must be one map of shape (h, w), (1, h, w) or (1, 1, h, w); got shape {original_shape}"
        )
    if not np.all(np.isfinite(array)):
        raise ValueError("heat contains NaN / inf values: check the model's anomaly map")
    height, width = image_shape
    if array.shape == (height, width):
        return array
    if array.shape[0] * width != array.shape[1] * height:
        raise ValueError(
            f"heat map shape {array.shape} does not have the image's aspect ratio {image_shape}: "
            "is it transposed, or from a different image?"
        )
    import torch  # imported here so that plotting scores does not pay torch's import time
    import torch.nn.functional as F

    resized = F.interpolate(
        torch.from_numpy(array)[None, None], size=(height, width), mode="bilinear", align_corners=False
    )
    return resized[0, 0].numpy()


def _normalise01(values: np.ndarray) -> np.ndarray:
    """Min-max scale to [0, 1]; a constant map becomes all zeros (nothing stands out)."""
    low, high = float(values.min()), float(values.max())
    if high == low:
        return np.zeros_like(values)
    return (values - low) / (high - low)

