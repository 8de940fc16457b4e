"""Tests for course_utils.plots and course_utils.widgets (headless: Agg backend, no kernel)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported anywhere in this process

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from course_utils import plots  # noqa: E402
from course_utils.metrics import binary_metrics  # noqa: E402
from course_utils.widgets import (  # noqa: E402
    ScoreExplorer,
    explorer_state,
    nearest_to_threshold,
    threshold_grid,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture()
def scored_data() -> tuple[np.ndarray, np.ndarray]:
    """60 normal scores around 0 and 20 anomalous ones around 2."""
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(60, dtype=int), np.ones(20, dtype=int)]
    scores = rng.normal(size=80) + 2.0 * labels
    return scores, labels


def _bin_edges(container) -> np.ndarray:
    patches = list(container)
    return np.array([p.get_x() for p in patches] + [patches[-1].get_x() + patches[-1].get_width()])


# --------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------


def test_score_histogram_uses_shared_bin_edges_and_draws_threshold(scored_data):
    scores, labels = scored_data
    ax = plots.score_histogram(scores, labels, bins=20, threshold=1.0)
    assert isinstance(ax, Axes)
    normal_bars, anomaly_bars = ax.containers
    assert len(normal_bars) == len(anomaly_bars) == 20
    np.testing.assert_allclose(_bin_edges(normal_bars), _bin_edges(anomaly_bars))
    np.testing.assert_allclose(_bin_edges(normal_bars), np.histogram_bin_edges(scores, bins=20))
    assert any(list(line.get_xdata()) == [1.0, 1.0] for line in ax.get_lines())
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "normal (n=60)" in legend and "anomaly (n=20)" in legend


def test_score_histogram_normals_only_and_given_axes(scored_data):
    scores, _ = scored_data
    _, ax = plt.subplots()
    assert plots.score_histogram(torch.tensor(scores), np.zeros(80), ax=ax, density=False) is ax
    assert len(ax.containers) == 1 and ax.get_ylabel() == "count"


def _outside_texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts if t.get_gid() == plots._OUTSIDE_GID]


def _heavy_tailed() -> tuple[np.ndarray, np.ndarray]:
    """Nearly all scores in [0, 1] and one anomaly at 335: on a min-max axis they all share one bar."""
    rng = np.random.default_rng(1)
    labels = np.r_[np.zeros(150, dtype=int), np.ones(50, dtype=int)]
    scores = rng.random(200) * 0.5 + 0.4 * labels
    scores[-1] = 335.0
    return scores, labels


def test_a_heavy_tail_is_cut_and_the_figure_says_how_many_points_are_hidden():
    scores, labels = _heavy_tailed()
    ax = plots.score_histogram(scores, labels, bins=30)
    low, high = ax.get_xlim()
    assert high < 1.0 and low <= scores.min()  # the axis covers the bulk, not the outlier
    normal_bars, anomaly_bars = ax.containers
    heights = np.array([p.get_height() for p in normal_bars])
    assert (heights > 0).sum() >= 10  # the normal scores spread over many bars, not one
    assert _outside_texts(ax) == [f"1 point > {high:.4g} not shown"]
    assert any(line.get_gid() == plots._OUTSIDE_GID and line.get_marker() == ">" for line in ax.get_lines())
    # the min-max histogram this replaces: every normal score in the first of 30 bars
    assert np.histogram(scores[labels == 0], bins=np.histogram_bin_edges(scores, 30))[0][0] == 150


def test_several_outliers_are_cut_too():
    scores, labels = _heavy_tailed()
    scores[-3:] = [200.0, 250.0, 335.0]
    shown = plots.score_range(scores)
    assert shown.high < 1.0 and shown.n_above == 3
    ax = plots.score_histogram(scores, labels)
    assert _outside_texts(ax) == [f"3 points > {shown.high:.4g} not shown"]


def test_exponential_scores_lose_almost_nothing():
    scores = np.random.default_rng(5).exponential(size=10_000)
    shown = plots.score_range(scores)
    assert not shown.log and shown.n_above <= 0.003 * len(scores)


def test_clip_false_shows_every_score_and_nothing_is_hidden():
    scores, labels = _heavy_tailed()
    ax = plots.score_histogram(scores, labels, bins=30, clip=False)
    assert ax.get_xlim()[1] >= 335.0 and _outside_texts(ax) == []


def test_ordinary_scores_are_not_cut(scored_data):
    scores, _ = scored_data
    shown = plots.score_range(scores)
    assert (shown.low, shown.high, shown.log) == (scores.min(), scores.max(), False)
    assert shown.n_below == shown.n_above == 0
    gaussian = np.random.default_rng(2).normal(size=20_000)
    assert plots.score_range(gaussian).n_above == 0


def test_scores_over_orders_of_magnitude_get_a_log_axis():
    scores = 10.0 ** np.random.default_rng(3).uniform(-2, 4, size=500)
    labels = (np.arange(500) % 5 == 0).astype(int)
    shown = plots.score_range(scores)
    assert shown.log and shown.n_below == shown.n_above == 0
    ax = plots.score_histogram(scores, labels, bins=24)
    assert ax.get_xscale() == "log" and "log scale" in ax.get_xlabel()
    edges = _bin_edges(ax.containers[0])
    np.testing.assert_allclose(np.diff(np.log10(edges)), np.diff(np.log10(edges))[0])
    assert not plots.score_range(-scores).log  # negative scores never get a log axis
    uniform = np.r_[np.random.default_rng(4).random(300), 1e-6]  # a few scores near 0 do not make a log axis
    assert uniform.min() < 1e-3 and not plots.score_range(uniform).log
    log_area = sum(p.get_height() * np.log10((p.get_x() + p.get_width()) / p.get_x()) for p in ax.containers[0])
    assert log_area == pytest.approx(1.0)  # density per power of ten
    with pytest.raises(ValueError, match="> 0"):
        plots.score_range(-scores, log=True)


def test_a_low_tail_is_counted_on_the_left():
    scores = np.r_[np.linspace(10, 11, 300), [-500.0, -400.0]]
    shown = plots.score_range(scores)
    assert shown.low >= 10 and shown.n_below == 2 and shown.n_above == 0
    ax = plots.score_histogram(scores, np.zeros(302), bins=10)
    assert _outside_texts(ax) == [f"2 points < {shown.low:.4g} not shown"]


def test_density_keeps_the_hidden_points_share_of_the_area():
    scores, labels = _heavy_tailed()
    ax = plots.score_histogram(scores, labels, bins=30)
    anomaly_bars = ax.containers[1]
    area = sum(p.get_height() * p.get_width() for p in anomaly_bars)
    assert area == pytest.approx(49 / 50)  # one of the 50 anomalies is off the axis


def test_a_threshold_off_the_axis_is_named_in_the_legend():
    scores, labels = _heavy_tailed()
    ax = plots.score_histogram(scores, labels, threshold=300.0)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "threshold = 300 (off the axis, right)" in legend
    assert ax.get_xlim()[1] < 1.0


def test_given_bin_edges_count_the_points_outside_them():
    scores, labels = _heavy_tailed()
    ax = plots.score_histogram(scores, labels, bins=np.linspace(0, 0.5, 11))
    hidden = int(np.sum(scores > 0.5))
    assert _outside_texts(ax) == [f"{hidden} points > 0.5 not shown"]


def test_apply_score_range_for_a_scatter_axis():
    scores, _ = _heavy_tailed()
    _, ax = plt.subplots()
    ax.scatter(np.arange(200), scores)
    shown = plots.apply_score_range(ax, scores, axis="y")
    assert ax.get_ylim() == (shown.low, shown.high) and shown.n_above == 1
    assert _outside_texts(ax) == [f"1 point > {shown.high:.4g} not shown"]
    with pytest.raises(ValueError, match="axis"):
        plots.mark_outside(ax, shown, axis="z")


def test_score_range_rejects_bad_input():
    with pytest.raises(ValueError, match="finite"):
        plots.score_range([1.0, np.nan])
    with pytest.raises(ValueError, match="fence"):
        plots.score_range([1.0, 2.0], fence=0)
    constant = plots.score_range(np.full(5, 3.0))
    assert constant.low < 3.0 < constant.high


def test_roc_curve_plot_overlays_and_marks_operating_point(scored_data):
    scores, labels = scored_data
    ax = plots.roc_curve_plot(scores, labels, threshold=1.0, label="A")
    assert plots.roc_curve_plot(-scores, labels, ax=ax, label="B") is ax
    chance_lines = [line for line in ax.get_lines() if line.get_gid() == plots._CHANCE_GID]
    assert len(chance_lines) == 1
    expected = binary_metrics(scores, labels, 1.0)
    markers = [line for line in ax.get_lines() if line.get_marker() == "o"]
    assert len(markers) == 1
    assert markers[0].get_xdata()[0] == pytest.approx(expected["fpr"])
    assert markers[0].get_ydata()[0] == pytest.approx(expected["tpr"])
    legend = " ".join(t.get_text() for t in ax.get_legend().get_texts())
    assert "A (AUROC =" in legend and "B (AUROC =" in legend


def test_pr_curve_plot_has_prevalence_baseline(scored_data):
    scores, labels = scored_data
    ax = plots.pr_curve_plot(scores, labels, threshold=1.0)
    assert isinstance(ax, Axes)
    baselines = [line for line in ax.get_lines() if list(line.get_ydata()) == [0.25, 0.25]]
    assert len(baselines) == 1  # 20 anomalies out of 80
    assert "AUPRC" in " ".join(t.get_text() for t in ax.get_legend().get_texts())


def test_overlaid_pr_curves_share_one_chance_line_per_prevalence(scored_data):
    scores, labels = scored_data
    ax = plots.pr_curve_plot(scores, labels, label="A")
    plots.pr_curve_plot(-scores, labels, ax=ax, label="B")  # same test set: same prevalence
    plots.pr_curve_plot(scores[20:], labels[20:], ax=ax, label="C")  # another prevalence: its own line
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sum(text.startswith("chance") for text in legend) == 2, legend


def test_curves_need_both_classes(scored_data):
    scores, _ = scored_data
    with pytest.raises(ValueError, match="only class 0"):
        plots.roc_curve_plot(scores, np.zeros(80))
    with pytest.raises(ValueError, match="only class 1"):
        plots.pr_curve_plot(scores, np.ones(80))


def test_tile_images_shape_and_placement():
    images = np.random.default_rng(0).random((10, 5, 6))
    grid = plots.tile_images(images, nrow=4, pad=1, pad_value=1.0)
    assert grid.shape == (3 * 5 + 2, 4 * 6 + 3)
    np.testing.assert_array_equal(grid[0:5, 0:6], images[0])
    np.testing.assert_array_equal(grid[6:11, 7:13], images[5])  # row 1, column 1
    assert np.all(grid[5, :] == 1.0) and np.all(grid[:, 6] == 1.0)  # separators
    assert np.all(grid[12:, 2 * 7 :] == 1.0)  # empty cells of the last row


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((3, 1, 4, 4), (4, 14)),
        ((3, 3, 4, 4), (4, 14, 3)),
        ((9, 4, 4), (14, 14)),
    ],
)
def test_tile_images_accepts_torch_and_channel_layouts(shape, expected):
    assert plots.tile_images(torch.rand(shape), nrow=3).shape == expected


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((4, 2, 8, 8), r"\(N, H, W\), \(N, 1, H, W\) or \(N, 3, H, W\); got shape \(4, 2, 8, 8\)"),
        ((4, 8, 8, 3), r"channel-last"),
        ((8, 8), r"add a batch dimension"),
        ((0, 8, 8), r"images are empty"),
    ],
)
def test_image_shape_errors(shape, message):
    with pytest.raises(ValueError, match=message):
        plots.tile_images(np.zeros(shape))
    with pytest.raises(ValueError, match=message):
        plots.image_grid(np.zeros(shape))


def test_image_grid_plain_and_with_titles():
    images = torch.rand(5, 1, 8, 8)
    ax = plots.image_grid(images, nrow=3, title="samples")
    assert isinstance(ax, Axes) and ax.get_images()[0].get_array().shape == (2 * 8 + 1, 3 * 8 + 2)
    titled = plots.image_grid(images, titles=[f"#{i}" for i in range(5)])
    insets = titled.child_axes  # inset Axes live inside the grid Axes
    assert [a.get_title() for a in insets] == [f"#{i}" for i in range(5)]
    with pytest.raises(ValueError, match="one entry per image: got 2 titles for 5 images"):
        plots.image_grid(images, titles=["a", "b"])


def test_heatmap_overlay_upsamples_a_smaller_map():
    image, heat = torch.rand(1, 28, 28), torch.rand(1, 1, 7, 7)
    ax = plots.heatmap_overlay(image, heat, colorbar=True, title="map")
    assert isinstance(ax, Axes)
    gray, overlay = ax.get_images()
    assert overlay.get_array().shape == (28, 28)
    assert overlay.get_array().min() == 0.0 and overlay.get_array().max() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("image_shape", "heat_shape", "message"),
    [
        ((3, 28, 28), (28, 28), r"image must be one grayscale image .* got shape \(3, 28, 28\)"),
        ((28, 28), (2, 7, 7), r"heat must be one map .* got shape \(2, 7, 7\)"),
        ((28, 28), (7, 14), r"does not have the image's aspect ratio"),
    ],
)
def test_heatmap_overlay_shape_errors(image_shape, heat_shape, message):
    with pytest.raises(ValueError, match=message):
        plots.heatmap_overlay(np.zeros(image_shape), np.zeros(heat_shape))


# --------------------------------------------------------------------------------------
# widgets: pure functions
# --------------------------------------------------------------------------------------


def test_threshold_grid_spans_the_scores():
    grid = threshold_grid([3.0, -1.0, 2.0], n=5)
    np.testing.assert_allclose(grid, [-1.0, 0.0, 1.0, 2.0, 3.0])
    np.testing.assert_allclose(threshold_grid([2.0, 2.0], n=3), [1.5, 2.0, 2.5])  # constant scores
    with pytest.raises(ValueError, match="n .* must be an integer >= 2"):
        threshold_grid([1.0, 2.0], n=1)


def test_explorer_state_is_binary_metrics_plus_confusion(scored_data):
    scores, labels = scored_data
    state = explorer_state(scores, labels, 1.0)
    expected = binary_metrics(scores, labels, 1.0)
    assert {k: state[k] for k in expected} == expected
    assert state["confusion"] == [[expected["tn"], expected["fp"]], [expected["fn"], expected["tp"]]]
    assert state["operating_point"] == (expected["fpr"], expected["tpr"])
    assert state["threshold"] == 1.0


def test_nearest_to_threshold_hand_case():
    scores = [0.1, 0.5, 0.45, 0.9, 0.55, 0.2]
    below, above = nearest_to_threshold(scores, 0.5, k=2)
    assert below.tolist() == [2, 5]  # 0.45, 0.2: closest first
    assert above.tolist() == [1, 4]  # 0.5 (at the threshold counts as above), 0.55
    below, above = nearest_to_threshold(scores, 0.0, k=4)
    assert below.tolist() == [] and above.tolist() == [0, 5, 2, 1]


# --------------------------------------------------------------------------------------
# widgets: ScoreExplorer (constructed and driven without a notebook)
# --------------------------------------------------------------------------------------


def test_score_explorer_with_two_methods_and_images(scored_data):
    scores, labels = scored_data
    images = torch.rand(80, 1, 8, 8)
    explorer = ScoreExplorer({"good": scores, "bad": torch.tensor(-scores)}, labels, images)
    assert explorer.method == "good"
    assert explorer.state["threshold"] == pytest.approx(np.median(scores))
    first_text = explorer.metrics_text

    state = explorer.update(2.5)
    assert state == explorer.state and state["threshold"] == 2.5
    assert state == explorer_state(scores, labels, 2.5)
    assert explorer.metrics_text != first_text and "threshold = 2.5" in explorer.metrics_text
    assert explorer.image_figure is not None and explorer.figure is not None

    explorer.threshold_slider.value = 0.5  # what a user's slider move does
    assert explorer.state["threshold"] == 0.5

    explorer.method_dropdown.value = "bad"
    assert explorer.method == "bad" and "<b>bad</b>" in explorer.metrics_text
    assert explorer.threshold_slider.max == pytest.approx(-scores.min())
    assert plt.get_fignums() == []  # every drawn figure was closed


def test_score_explorer_single_method_without_images(scored_data):
    scores, labels = scored_data
    explorer = ScoreExplorer(scores, labels, initial_threshold=1.0)
    assert explorer.state["threshold"] == 1.0
    assert explorer.image_figure is None
    assert len(explorer.widget.children) == 3  # controls, metrics line, figure


def test_score_explorer_rejects_inconsistent_inputs(scored_data):
    scores, labels = scored_data
    with pytest.raises(ValueError, match=r"method 'short': scores and labels have different lengths: 79 scores and 80"):
        ScoreExplorer({"ok": scores, "short": scores[:-1]}, labels)
    with pytest.raises(ValueError, match="images has 79 images but there are 80 scores"):
        ScoreExplorer(scores, labels, images=np.zeros((79, 8, 8)))
    with pytest.raises(ValueError, match="initial_threshold 99 is outside the score range"):
        ScoreExplorer(scores, labels, initial_threshold=99.0)
    with pytest.raises(ValueError, match="only class 0"):
        ScoreExplorer(scores, np.zeros(80))


def _extent(fig, artist):
    return artist.get_window_extent(fig.canvas.get_renderer())


@pytest.mark.parametrize("tails", ["none", "high", "both"])
def test_histogram_legend_and_notes_sit_above_the_bars_without_overlapping(tails):
    scores, labels = _heavy_tailed()
    if tails == "none":
        scores, labels = scores[:-1], labels[:-1]
    if tails == "both":
        scores, labels = np.r_[scores, -500.0], np.r_[labels, 0]
    fig, ax = plt.subplots(figsize=(3.2, 3.0))  # a narrow panel, as in a row of five
    plots.score_histogram(scores, labels, ax=ax, bins=30)
    fig.canvas.draw()
    notes = [t for t in ax.texts if t.get_gid() == plots._OUTSIDE_GID]
    assert len(notes) == {"none": 0, "high": 1, "both": 2}[tails]
    legend, bars = _extent(fig, ax.get_legend()), [_extent(fig, p) for c in ax.containers for p in c]
    assert legend.y0 >= max(b.y1 for b in bars)  # the legend covers no bar
    for i, note in enumerate(notes):
        assert not legend.overlaps(_extent(fig, note))
        assert all(not _extent(fig, note).overlaps(_extent(fig, other)) for other in notes[i + 1:])
    plt.close(fig)


def test_histograms_on_a_shared_y_axis_do_not_compound_the_headroom():
    rng = np.random.default_rng(0)
    _, axes = plt.subplots(1, 4, sharey=True)
    for ax in axes:
        plots.score_histogram(rng.normal(size=400), np.r_[np.zeros(200), np.ones(200)], ax=ax, bins=20)
    tallest = max(p.get_height() for ax in axes for container in ax.containers for p in container)
    assert axes[-1].get_ylim()[1] <= plots.HISTOGRAM_HEADROOM * tallest * 1.0001
