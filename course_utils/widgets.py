"""Interactive explorers for anomaly scores: a thin ipywidgets layer over pure functions.

The pure functions (``threshold_grid``, ``explorer_state``, ``nearest_to_threshold``)
do all the computing and are unit tested; ``ScoreExplorer`` only wires them to a
slider, a dropdown and matplotlib figures. Importing this module creates no widget.

Typical notebook use::

    from course_utils.widgets import ScoreExplorer
    ScoreExplorer({"AE (L2)": scores_l2, "AE (SSIM)": scores_ssim}, test_labels,
                  images=test_images).display()

Conventions as in ``course_utils.metrics``: label 1 = anomaly, higher score = more
anomalous, ``scores >= threshold`` is predicted anomalous. Moving the slider over the
TEST scores is for exploring the trade-off; a threshold you report must still come from
validation data (``metrics.threshold_from_normal_scores`` and friends).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from course_utils.metrics import auroc, binary_metrics, finite_scores, validate_scores_labels, validate_threshold
from course_utils.plots import images_to_nhwc, image_grid, roc_curve_plot, score_histogram

__all__ = ["threshold_grid", "explorer_state", "nearest_to_threshold", "ScoreExplorer"]


# --------------------------------------------------------------------------------------
# Pure functions (tested; no widgets)
# --------------------------------------------------------------------------------------


def threshold_grid(scores: Any, n: int = 201) -> np.ndarray:
    """``n`` evenly spaced threshold values from the smallest to the largest score.

    Args:
        scores: shape (N,), finite.
        n: number of values, >= 2.

    Returns:
        float array of shape (n,), increasing. When all scores are equal the range is
        widened to ``value +- 0.5`` so that a slider still has room to move.
    """
    scores_array = finite_scores(scores, "scores", allow_empty=False)
    if not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n (number of threshold values) must be an integer >= 2; got {n!r}")
    low, high = float(scores_array.min()), float(scores_array.max())
    if low == high:
        low, high = low - 0.5, high + 0.5
    return np.linspace(low, high, int(n))


def explorer_state(scores: Any, labels: Any, threshold: float) -> dict[str, Any]:
    """Everything the explorer shows for one threshold.

    Args:
        scores: shape (N,), finite; higher = more anomalous.
        labels: shape (N,), 1 = anomaly, 0 = normal.
        threshold: ``scores >= threshold`` is predicted anomalous.

    Returns:
        ``metrics.binary_metrics`` (tp, fp, tn, fn, f1, acc, sen, spe, ppv, fpr, tpr) plus
        ``threshold`` (float), ``confusion`` = ``[[tn, fp], [fn, tp]]`` (rows: true
        normal / anomaly, columns: predicted normal / anomaly) and ``operating_point`` =
        ``(fpr, tpr)``, the threshold's point on the ROC curve.
    """
    state: dict[str, Any] = dict(binary_metrics(scores, labels, threshold))
    state["threshold"] = validate_threshold(threshold)
    state["confusion"] = [[state["tn"], state["fp"]], [state["fn"], state["tp"]]]
    state["operating_point"] = (state["fpr"], state["tpr"])
    return state


def nearest_to_threshold(scores: Any, threshold: float, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the images whose scores lie closest to the threshold, on each side.

    Args:
        scores: shape (N,), finite.
        threshold: the decision threshold.
        k: how many per side, >= 1.

    Returns:
        ``(below, above)``: int arrays of at most ``k`` indices each. ``below`` holds
        images with ``score < threshold`` (predicted normal), ``above`` those with
        ``score >= threshold`` (predicted anomalous); each is sorted closest to the
        threshold first, ties by index. Fewer than ``k`` when a side has fewer images.
    """
    scores_array = finite_scores(scores, "scores", allow_empty=False)
    value = validate_threshold(threshold)
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k (images per side) must be a positive integer; got {k!r}")
    below = np.flatnonzero(scores_array < value)
    above = np.flatnonzero(scores_array >= value)
    below = below[np.argsort(value - scores_array[below], kind="stable")][:k]
    above = above[np.argsort(scores_array[above] - value, kind="stable")][:k]
    return below.astype(np.int64), above.astype(np.int64)


# --------------------------------------------------------------------------------------
# Input checks for the widget
# --------------------------------------------------------------------------------------


def _scores_by_method(scores: Any, labels: Any) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``scores`` (array or ``{method: array}``) -> validated ``{method: (N,) array}``, labels."""
    if isinstance(scores, Mapping):
        if len(scores) == 0:
            raise ValueError("scores is an empty dict: pass {method_name: scores} with at least one method")
        named = {str(name): method_scores for name, method_scores in scores.items()}
    else:
        named = {"scores": scores}
    checked: dict[str, np.ndarray] = {}
    labels_array: np.ndarray | None = None
    for name, method_scores in named.items():
        try:
            checked[name], labels_array = validate_scores_labels(
                method_scores, labels, metric="the score explorer (its ROC curve)"
            )
        except ValueError as error:
            prefix = f"method {name!r}: " if isinstance(scores, Mapping) else ""
            raise ValueError(f"{prefix}{error}") from None
    assert labels_array is not None  # at least one method was validated above
    return checked, labels_array


def _checked_images(images: Any, n_scores: int) -> np.ndarray | None:
    """Images as (N, H, W) or (N, H, W, 3) floats, one per score; None stays None."""
    if images is None:
        return None
    batch = images_to_nhwc(images)
    if batch.shape[0] != n_scores:
        raise ValueError(
            f"images has {batch.shape[0]} images but there are {n_scores} scores: pass the "
            "test images in the same order as their scores"
        )
    return batch


def _in_ipython() -> bool:
    """True inside IPython / Jupyter, where figures can be displayed."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None


def _confusion_matrix_plot(ax: Axes, confusion: list[list[int]], class_names: tuple[str, str]) -> None:
    """2x2 confusion matrix ``[[tn, fp], [fn, tp]]`` as an image with the counts written in."""
    matrix = np.asarray(confusion)
    # Colour by the share of each true class (row), so that a rare anomaly class is as
    # visible as the common normal class.
    row_share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    ax.imshow(row_share, cmap="Blues", vmin=0.0, vmax=1.0)
    for (row, col), count in np.ndenumerate(matrix):
        share = row_share[row, col]
        colour = "white" if share > 0.6 else "black"
        ax.text(col, row, f"{count}\n({share:.0%})", ha="center", va="center", color=colour)
    ax.set_xticks([0, 1], [f"pred. {name}" for name in class_names])
    ax.set_yticks([0, 1], [f"true {name}" for name in class_names])
    ax.set_title("confusion matrix (row %)")


# --------------------------------------------------------------------------------------
# The widget
# --------------------------------------------------------------------------------------


class ScoreExplorer:
    """Threshold slider over the test scores: histogram, ROC point, confusion matrix, metrics.

    Args:
        scores: shape (N,) scores, or ``{method_name: (N,) scores}`` to compare methods
            with a dropdown; finite, higher = more anomalous.
        labels: shape (N,), 1 = anomaly, 0 = normal; both classes present.
        images: optional (N, H, W), (N, 1, H, W) or (N, 3, H, W) in [0, 1], in the order
            of the scores; then the images closest to the threshold on each side are
            shown, titled with score and true class.
        class_names: display names of (normal, anomaly).
        initial_threshold: starting threshold for the first method; by default the
            median of all its scores (deliberately not computed from the labels).
        n_nearest: images shown per side of the threshold.

    Attributes (read them in tests or to reuse the numbers):
        method: the method shown; ``state``: ``explorer_state`` at the current
        threshold; ``metrics_text``: the HTML metrics line; ``figure`` /
        ``image_figure``: the last figures drawn (already closed); ``widget``: the
        ipywidgets VBox; ``threshold_slider`` / ``method_dropdown``: its controls.
    """

    def __init__(
        self,
        scores: Any,
        labels: Any,
        images: Any = None,
        *,
        class_names: tuple[str, str] = ("normal", "anomaly"),
        initial_threshold: float | None = None,
        n_nearest: int = 4,
    ) -> None:
        self._scores, self._labels = _scores_by_method(scores, labels)
        self._images = _checked_images(images, len(self._labels))
        if len(class_names) != 2:
            raise ValueError(f"class_names must be two names (normal, anomaly); got {class_names!r}")
        if not isinstance(n_nearest, (int, np.integer)) or n_nearest < 1:
            raise ValueError(f"n_nearest must be a positive integer; got {n_nearest!r}")
        self._class_names = (str(class_names[0]), str(class_names[1]))
        self._n_nearest = int(n_nearest)
        self._auroc = {name: auroc(values, self._labels) for name, values in self._scores.items()}
        self.method = next(iter(self._scores))
        self.state: dict[str, Any] = {}
        self.metrics_text = ""
        self.figure: Figure | None = None
        self.image_figure: Figure | None = None
        self._syncing = False  # True while code (not the user) moves the slider
        self._build_widgets()
        start = self._initial_threshold(initial_threshold)
        self._set_slider_range(self.method, start)
        self.update(start)

    # ----- layout --------------------------------------------------------------------

    def _build_widgets(self) -> None:
        """Create the controls and outputs and wire the observers."""
        grid = threshold_grid(self._scores[self.method])
        self.threshold_slider = widgets.FloatSlider(
            value=float(np.median(grid)),
            min=float(grid[0]),
            max=float(grid[-1]),
            step=float(grid[1] - grid[0]),
            description="threshold",
            readout_format=".4g",
            continuous_update=False,  # redraw on release: a full redraw takes ~0.3 s
            layout=widgets.Layout(width="70%"),
        )
        self.threshold_slider.observe(self._on_threshold_change, names="value")
        self.method_dropdown = widgets.Dropdown(
            options=list(self._scores), value=self.method, description="method"
        )
        self.method_dropdown.observe(self._on_method_change, names="value")
        self._metrics_html = widgets.HTML()
        self._figure_output = widgets.Output()
        self._image_output = widgets.Output()
        controls = [self.threshold_slider]
        if len(self._scores) > 1:  # a dropdown with one entry would only be clutter
            controls.insert(0, self.method_dropdown)
        children = [widgets.HBox(controls), self._metrics_html, self._figure_output]
        if self._images is not None:
            children.append(self._image_output)
        self.widget = widgets.VBox(children)

    def _initial_threshold(self, initial_threshold: float | None) -> float:
        """The given threshold (checked against the score range) or the median score."""
        scores = self._scores[self.method]
        if initial_threshold is None:
            return float(np.median(scores))
        value = validate_threshold(initial_threshold)
        grid = threshold_grid(scores)
        if not grid[0] <= value <= grid[-1]:
            raise ValueError(
                f"initial_threshold {value:.4g} is outside the score range "
                f"[{grid[0]:.4g}, {grid[-1]:.4g}] of method {self.method!r}"
            )
        return value

    def _set_slider_range(self, method: str, value: float) -> None:
        """Move the slider to ``method``'s score range and ``value`` without redrawing."""
        grid = threshold_grid(self._scores[method])
        low, high = float(grid[0]), float(grid[-1])
        self._syncing = True
        try:
            # ipywidgets refuses min > max at every step, so widen before narrowing.
            if low > self.threshold_slider.max:
                self.threshold_slider.max, self.threshold_slider.min = high, low
            else:
                self.threshold_slider.min, self.threshold_slider.max = low, high
            self.threshold_slider.step = float(grid[1] - grid[0])
            self.threshold_slider.value = value
        finally:
            self._syncing = False

    # ----- events --------------------------------------------------------------------

    def _on_threshold_change(self, change: dict[str, Any]) -> None:
        if not self._syncing:
            self.update(change["new"])

    def _on_method_change(self, change: dict[str, Any]) -> None:
        if not self._syncing:
            self.set_method(change["new"])

    def set_method(self, method: str) -> dict[str, Any]:
        """Show ``method``'s scores, starting at the median of its scores; returns the state."""
        if method not in self._scores:
            raise ValueError(f"unknown method {method!r}; choose one of {list(self._scores)}")
        self.method = method
        self._syncing = True
        try:
            self.method_dropdown.value = method
        finally:
            self._syncing = False
        start = float(np.median(self._scores[method]))
        self._set_slider_range(method, start)
        return self.update(start)

    def update(self, threshold: float | None = None) -> dict[str, Any]:
        """Recompute and redraw at ``threshold`` (default: the slider's value).

        The slider is moved to the threshold (clamped to the score range), so what is
        displayed and ``self.state`` always agree. Returns ``self.state``.
        """
        if threshold is not None:
            value = validate_threshold(threshold)
            self._syncing = True
            try:
                self.threshold_slider.value = value
            finally:
                self._syncing = False
        threshold_value = float(self.threshold_slider.value)
        self.state = explorer_state(self._scores[self.method], self._labels, threshold_value)
        self.metrics_text = self._format_metrics()
        self._metrics_html.value = self.metrics_text
        self._redraw_scores()
        if self._images is not None:
            self._redraw_images()
        return self.state

    # ----- drawing -------------------------------------------------------------------

    def _format_metrics(self) -> str:
        """One HTML line with the metrics at the current threshold."""
        s = self.state
        return (
            f"<b>{self.method}</b> &nbsp; threshold = {s['threshold']:.4g} &nbsp; "
            f"(AUROC = {self._auroc[self.method]:.3f}, threshold-free)<br>"
            f"F1 = {s['f1']:.3f} &nbsp; ACC = {s['acc']:.3f} &nbsp; "
            f"SEN = {s['sen']:.3f} &nbsp; SPE = {s['spe']:.3f} &nbsp; "
            f"(TP {s['tp']}, FP {s['fp']}, TN {s['tn']}, FN {s['fn']})"
        )

    def _draw_scores_figure(self) -> Figure:
        """Histogram with threshold, ROC with operating point, confusion matrix."""
        scores, threshold = self._scores[self.method], self.state["threshold"]
        figure, (ax_hist, ax_roc, ax_confusion) = plt.subplots(
            1, 3, figsize=(14, 4), gridspec_kw={"width_ratios": [1.6, 1.0, 0.9]}
        )
        score_histogram(
            scores,
            self._labels,
            ax=ax_hist,
            threshold=threshold,
            names=self._class_names,
            title=f"{self.method}: test scores",
        )
        roc_curve_plot(scores, self._labels, ax=ax_roc, threshold=threshold, label=self.method)
        _confusion_matrix_plot(ax_confusion, self.state["confusion"], self._class_names)
        figure.tight_layout()
        return figure

    def _draw_image_figure(self) -> Figure:
        """The images nearest the threshold: predicted normal left, predicted anomalous right."""
        assert self._images is not None
        scores = self._scores[self.method]
        below, above = nearest_to_threshold(scores, self.state["threshold"], k=self._n_nearest)
        # Closest-to-threshold images meet in the middle of the row.
        indices = np.concatenate([below[::-1], above])
        titles = [f"{scores[i]:.3g}\n{self._class_names[self._labels[i]]}" for i in indices]
        figure, ax = plt.subplots(figsize=(min(1.5 * len(indices) + 0.5, 14.0), 2.4))
        image_grid(
            self._images[indices],
            nrow=len(indices),
            titles=titles,
            ax=ax,
            title=(
                f"{len(below)} just below (predicted normal)  |  "
                f"{len(above)} at / above (predicted anomalous)"
            ),
        )
        return figure

    def _redraw_scores(self) -> None:
        self.figure = self._show_in(self._figure_output, self.figure, self._draw_scores_figure)

    def _redraw_images(self) -> None:
        self.image_figure = self._show_in(
            self._image_output, self.image_figure, self._draw_image_figure
        )

    @staticmethod
    def _show_in(output: widgets.Output, previous: Figure | None, draw: Any) -> Figure:
        """Replace ``output``'s content by a freshly drawn figure, then close the figure.

        Closing right after displaying keeps pyplot from holding every figure ever drawn
        (memory stays flat while the slider moves) and stops the inline backend from
        showing it a second time. Outside IPython nothing is displayed.
        """
        if previous is not None:
            plt.close(previous)
        figure = draw()
        if _in_ipython():
            from IPython.display import display

            with output:
                output.clear_output(wait=True)
                display(figure)
        plt.close(figure)
        return figure

    # ----- display -------------------------------------------------------------------

    def display(self) -> None:
        """Show the explorer in a notebook."""
        from IPython.display import display

        display(self.widget)

    def _ipython_display_(self) -> None:
        # Lets a bare `ScoreExplorer(...)` at the end of a cell show the widget.
        self.display()
