"""Per-class result tables: ``{class: [one value per seed]}`` -> GitHub markdown.

``summarize_per_class``, ``format_table``, ``per_class_table`` and ``compare_table`` make the
tables of the notebooks (``IPython.display.Markdown``) and of the benchmark READMEs. No pandas.
Values are validated with :func:`course_utils.metrics.finite_scores`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .metrics import finite_scores

__all__ = ["summarize_per_class", "format_table", "per_class_table", "compare_table", "mean_std_text"]

ClassKey = str | int


def _validated_results(results: Any) -> dict[ClassKey, np.ndarray]:
    """Check ``{class: [one value per seed]}`` and return it with float arrays."""
    if not isinstance(results, Mapping):
        raise ValueError(
            f"results must be a dict {{class: [one value per seed]}}; got {type(results).__name__}"
        )
    if len(results) == 0:
        raise ValueError("results are empty: pass {class: [one value per seed]} for at least one class")
    checked: dict[ClassKey, np.ndarray] = {}
    for class_key, values in results.items():
        if isinstance(values, (int, float, np.number)):
            values = [values]  # a single run stored as a bare number
        array = finite_scores(values, f"results[{class_key!r}]")
        if array.size == 0:
            raise ValueError(
                f"class {class_key!r} has no values: run at least one seed for it or "
                "remove it from the results"
            )
        checked[class_key] = array
    return checked


def _ordered_keys(keys: Sequence[ClassKey]) -> list[ClassKey]:
    """Integer-like class keys (``3`` or ``"3"``) sorted numerically; others as given.

    Numeric order keeps tables stable when a partial benchmark run merged classes
    into a JSON file out of order.
    """
    if all(_is_int_like(key) for key in keys):
        return sorted(keys, key=lambda key: int(key))
    return list(keys)


def _is_int_like(key: Any) -> bool:
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return True
    return isinstance(key, str) and key.strip().lstrip("-").isdigit()


def _seed_std(values: np.ndarray) -> float:
    """Sample standard deviation (ddof=1) over seeds; 0.0 for a single seed."""
    return float(np.std(values, ddof=1)) if len(values) >= 2 else 0.0


def summarize_per_class(results: Mapping[ClassKey, Sequence[float]]) -> list[dict[str, Any]]:
    """Mean and std over seeds for each class, plus a final ``"mean"`` row.

    Args:
        results: ``{class: [value for seed 0, value for seed 1, ...]}``, for example the
            ``"auroc"`` field of a benchmark JSON. Keys may be ints or strings; values
            finite. The i-th value of every class is assumed to come from the i-th seed.

    Returns:
        One dict per class, integer-like classes in numeric order, with keys
        ``class`` (the key as given), ``mean``, ``std``, ``n_seeds``, ``values`` (list of
        floats). ``std`` is the sample std (ddof=1, the seed-to-seed spread) when there
        are >= 2 seeds, else 0.0.

        The last row has ``class="mean"``: ``mean`` is the mean over classes of the
        per-class means; ``values`` are the per-seed averages over classes and ``std``
        is their sample std (how much the class-averaged result moves between seeds).
        When classes have different numbers of seeds the per-seed averages are
        undefined: then that row's ``values`` is empty, its ``std`` is NaN and its
        ``n_seeds`` is the smallest seed count.
    """
    checked = _validated_results(results)
    rows = [
        {
            "class": key,
            "mean": float(np.mean(checked[key])),
            "std": _seed_std(checked[key]),
            "n_seeds": int(len(checked[key])),
            "values": [float(v) for v in checked[key]],
        }
        for key in _ordered_keys(list(checked))
    ]
    rows.append(_mean_row(rows))
    return rows


def _mean_row(class_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``class="mean"`` row computed from the per-class rows."""
    seed_counts = {row["n_seeds"] for row in class_rows}
    mean_of_means = float(np.mean([row["mean"] for row in class_rows]))
    if len(seed_counts) == 1:
        per_seed_average = np.mean([row["values"] for row in class_rows], axis=0)
        return {
            "class": "mean",
            "mean": mean_of_means,
            "std": _seed_std(per_seed_average),
            "n_seeds": seed_counts.pop(),
            "values": [float(v) for v in per_seed_average],
        }
    return {
        "class": "mean",
        "mean": mean_of_means,
        "std": float("nan"),
        "n_seeds": min(seed_counts),
        "values": [],
    }


def _class_label(class_key: ClassKey, class_names: Any) -> str:
    """``"3"`` or, with names, ``"3 (dress)"``; names are a sequence or a mapping."""
    if class_key == "mean" or class_names is None:
        return str(class_key)
    name = None
    if isinstance(class_names, Mapping):
        name = class_names.get(class_key, class_names.get(str(class_key)))
        if name is None and _is_int_like(class_key):
            name = class_names.get(int(class_key))
    elif _is_int_like(class_key) and 0 <= int(class_key) < len(class_names):
        name = class_names[int(class_key)]
    # MNIST's class names are the digits themselves: "3 (3)" would only add noise
    return f"{class_key} ({name})" if name is not None and str(name) != str(class_key) else str(class_key)


def _markdown_cell(text: str) -> str:
    """Escape the pipe so a class or method name cannot break the table."""
    return str(text).replace("|", "\\|")


def mean_std_text(mean: float, std: float, n_seeds: int, *, decimals: int = 3, single_seed: int | None = None) -> str:
    """``"0.953 ± 0.004"``; only the mean when the std is undefined (NaN) or there is one seed
    (a "± 0.000" would read as a measured spread). With ``single_seed`` a one-seed mean names its seed,
    ``"0.909 (seed 0 only)"``: for tables whose cells mix one-seed and several-seed records."""
    if math.isnan(std) or n_seeds < 2:
        return f"{mean:.{decimals}f}" + (f" (seed {single_seed} only)" if single_seed is not None and n_seeds == 1 else "")
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def _mean_std_text(row: Mapping[str, Any], decimals: int) -> str:
    return mean_std_text(row["mean"], row["std"], row["n_seeds"], decimals=decimals)


def _seeds_text(row: Mapping[str, Any], class_rows: list[Mapping[str, Any]]) -> str:
    """Seed count; for a mean row over classes with unequal counts, ``"1–3"``."""
    if row["class"] == "mean" and math.isnan(row["std"]) and class_rows:
        counts = [r["n_seeds"] for r in class_rows]
        return f"{min(counts)}–{max(counts)}"
    return str(row["n_seeds"])


def _check_decimals(decimals: int) -> None:
    if not isinstance(decimals, (int, np.integer)) or decimals < 0:
        raise ValueError(f"decimals must be a non-negative integer; got {decimals!r}")


def format_table(
    rows: Sequence[Mapping[str, Any]],
    *,
    title: str | None = None,
    class_names: Sequence[str] | Mapping[Any, str] | None = None,
    metric: str = "AUROC",
    decimals: int = 3,
) -> str:
    """Render ``summarize_per_class`` rows as a GitHub markdown table.

    Example::

        | class | AUROC (mean ± std) | seeds |
        |---|---|---|
        | 0 (T-shirt/top) | 0.953 ± 0.004 | 3 |
        | mean | 0.901 ± 0.002 | 3 |

    Args:
        rows: output of ``summarize_per_class`` (dicts with class, mean, std, n_seeds).
        title: optional bold line above the table.
        class_names: names shown next to integer-like class keys: a sequence indexed
            by class id, or a mapping {class: name}.
        metric: the metric's name in the header.
        decimals: digits after the decimal point.

    Returns:
        The markdown text (newline-terminated), for ``IPython.display.Markdown`` or a README.
    """
    _check_decimals(decimals)
    if len(rows) == 0:
        raise ValueError("rows are empty: pass the output of summarize_per_class(results)")
    missing = [key for key in ("class", "mean", "std", "n_seeds") if key not in rows[0]]
    if missing:
        raise ValueError(
            f"rows lack the keys {missing}: pass the output of summarize_per_class(results)"
        )
    class_rows = [row for row in rows if row["class"] != "mean"]
    lines = [] if title is None else [f"**{title}**", ""]
    lines += [f"| class | {_markdown_cell(metric)} (mean ± std) | seeds |", "|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {_markdown_cell(_class_label(row['class'], class_names))} "
            f"| {_mean_std_text(row, decimals)} | {_seeds_text(row, class_rows)} |"
        )
    return "\n".join(lines) + "\n"


def per_class_table(
    results: Mapping[ClassKey, Sequence[float]],
    *,
    decimals: int = 3,
    title: str | None = None,
    class_names: Sequence[str] | Mapping[Any, str] | None = None,
    metric: str = "AUROC",
) -> str:
    """``{class: [value per seed]}`` -> markdown table; ``format_table(summarize_per_class(...))``.

    The pandas-free way to show per-class results: the returned string renders in a
    notebook with ``IPython.display.Markdown`` and pastes into a README as is.
    """
    return format_table(
        summarize_per_class(results),
        title=title,
        class_names=class_names,
        metric=metric,
        decimals=decimals,
    )


def compare_table(
    results_by_method: Mapping[str, Mapping[ClassKey, Sequence[float]]],
    class_names: Sequence[str] | Mapping[Any, str] | None = None,
    *,
    metric: str = "AUROC",
    decimals: int = 3,
    title: str | None = None,
) -> str:
    """Markdown table with one column per method (mean ± std over seeds) and a mean row.

    Args:
        results_by_method: ``{method: {class: [value per seed]}}``.
        class_names: as in ``format_table``.
        metric, decimals, title: as in ``format_table``.

    Returns:
        Markdown text. Rows are the union of all methods' classes; a class a method
        was not run on shows "—". A method's mean row averages only the classes it
        has; when that is not all of them the cell says so ("(7/10 classes)"),
        because means over different class sets are not comparable.
    """
    _check_decimals(decimals)
    if not isinstance(results_by_method, Mapping) or len(results_by_method) == 0:
        raise ValueError(
            "results_by_method must be a non-empty dict {method: {class: [value per seed]}}"
        )
    summaries: dict[str, dict[ClassKey, dict[str, Any]]] = {}
    for method, results in results_by_method.items():
        try:
            rows = summarize_per_class(results)
        except ValueError as error:
            raise ValueError(f"method {method!r}: {error}") from None
        summaries[method] = {_key_id(row["class"]): row for row in rows}
    all_classes = _ordered_union(results_by_method)
    n_classes = len(all_classes)

    one_seed = all(row["n_seeds"] == 1 for summary in summaries.values() for row in summary.values())
    header = [f"class ({metric}, {'one seed' if one_seed else 'mean ± std'})"] + [str(method) for method in summaries]
    lines = [] if title is None else [f"**{title}**", ""]
    lines.append("| " + " | ".join(_markdown_cell(h) for h in header) + " |")
    lines.append("|" + "---|" * len(header))
    for class_key in all_classes:
        cells = [_class_label(class_key, class_names)]
        for summary in summaries.values():
            row = summary.get(_key_id(class_key))
            cells.append("—" if row is None else _mean_std_text(row, decimals))
        lines.append("| " + " | ".join(_markdown_cell(c) for c in cells) + " |")
    mean_cells = ["mean"]
    for summary in summaries.values():
        text = _mean_std_text(summary[_key_id("mean")], decimals)
        n_present = len(summary) - 1  # minus the mean row itself
        if n_present < n_classes:
            text += f" ({n_present}/{n_classes} classes)"
        mean_cells.append(text)
    lines.append("| " + " | ".join(_markdown_cell(c) for c in mean_cells) + " |")
    return "\n".join(lines) + "\n"


def _key_id(class_key: ClassKey) -> str:
    """Compare class keys across methods as strings, so ``3`` and ``"3"`` match (JSON)."""
    return str(class_key).strip()


def _ordered_union(results_by_method: Mapping[str, Mapping[ClassKey, Any]]) -> list[ClassKey]:
    """All class keys of all methods, each once (first spelling seen), ordered."""
    seen: dict[str, ClassKey] = {}
    for results in results_by_method.values():
        for class_key in results:
            seen.setdefault(_key_id(class_key), class_key)
    return _ordered_keys(list(seen.values()))
