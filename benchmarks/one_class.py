"""One-class benchmark: ``python -m benchmarks.one_class --method M --dataset D [--classes ...] [--seeds ...] [--jobs N]``.

Runs the protocol of docs/design.md with the course_utils code (``course_utils.protocol``,
the same function the notebooks call) and writes
``benchmarks/results/<method>__<dataset>.json``; a run of a few classes merges into the
file. Then re-renders ``benchmarks/results/README.md`` from every JSON file there.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from course_utils import config
from course_utils.tables import summarize_per_class
from course_utils.protocol import METHODS, OneClassResults, method_settings, run_one_class

from .report import RESULTS_DIR, environment_info, peak_rss_mb, render_readme, update_main_readme, write_json_atomic

__all__ = ["results_to_record", "merge_records", "main"]


def results_to_record(results: OneClassResults, seeds: list[int]) -> dict:
    """The JSON record of one benchmark run: method, dataset, AUROC per class and seed, timings, environment."""
    by_class = results.auroc_by_class()
    train_s: dict[str, float] = {}
    score_s: dict[str, float] = {}
    n_train: dict[str, int] = {}
    for run in results.runs:
        key = str(run.normal_class)
        train_s.setdefault(key, []).append(run.train_seconds)  # type: ignore[arg-type]
        score_s.setdefault(key, []).append(run.score_seconds)  # type: ignore[arg-type]
        n_train[key] = run.n_train
    record = {
        "method": results.method,
        "dataset": results.dataset,
        "protocol": "one-class",
        "seeds": sorted(seeds),  # the order of every per-seed list below
        "auroc": {str(c): [round(v, 6) for v in values] for c, values in by_class.items()},
        "auprc": {
            str(c): [round(r.auprc, 6) for r in sorted(results.runs, key=lambda r: r.seed) if r.normal_class == c]
            for c in by_class
        },
        "train_seconds_per_class": {k: round(float(np.mean(v)), 3) for k, v in train_s.items()},
        "score_seconds_per_class": {k: round(float(np.mean(v)), 3) for k, v in score_s.items()},
        "n_train_per_class": n_train,
        "data_source": results.source,
        "full_data": results.source == "full",
    }
    return _with_summary(record)


def _with_summary(record: dict) -> dict:
    """(Re)compute mean_auroc / std_auroc from the per-class values."""
    rows = summarize_per_class(record["auroc"])
    record["mean_auroc"] = round(rows[-1]["mean"], 6)
    record["std_auroc"] = round(rows[-1]["std"], 6)
    return record


def merge_records(old: dict, new: dict) -> dict:
    """Merge a run into an existing record of the same method, dataset, data and settings.

    Two kinds of merge, chosen by the seeds:
    - the same seeds: a run of some classes; its classes are added or replaced (the new values win);
    - disjoint seeds over the same classes: more seeds of every class (``--seeds 1 2`` after a
      seed-0 run); per-class values are ordered by seed, timings become seed-weighted means, and
      ``seed_runs`` keeps each run's seeds, commit and machine. Seeded runs at one thread repeat
      exactly, so this equals one run with all the seeds.

    Raises:
        ValueError: the two runs used overlapping but different seeds, disjoint seeds on different
            classes, or different data sources or settings, so they cannot share a table: rerun
            all classes, or pass --overwrite.
    """
    # settings: only when both records stored them (records before 2026-12-02 did not)
    for key in ("data_source", "settings"):
        if key == "settings" and (old.get(key) is None or new.get(key) is None):
            continue
        if old.get(key) != new.get(key):
            raise ValueError(
                f"existing results for {new['method']} on {new['dataset']} used {key}={old.get(key)!r}, this run "
                f"{new.get(key)!r}: rerun all classes with the same settings, or pass --overwrite"
            )
    if old["seeds"] != new["seeds"]:
        if set(old["seeds"]) & set(new["seeds"]) or set(old["auroc"]) != set(new["auroc"]):
            raise ValueError(
                f"existing results for {new['method']} on {new['dataset']} used seeds={old['seeds']!r} on classes "
                f"{sorted(old['auroc'], key=int)}, this run seeds={new['seeds']!r} on classes "
                f"{sorted(new['auroc'], key=int)}: add seeds for the same classes with disjoint --seeds, "
                "or rerun all classes with the same seeds, or pass --overwrite"
            )
        return _merge_seeds(old, new)
    merged = dict(new)
    for field in ("auroc", "auprc", "train_seconds_per_class", "score_seconds_per_class", "n_train_per_class"):
        merged[field] = {**old.get(field, {}), **new.get(field, {})}
        merged[field] = dict(sorted(merged[field].items(), key=lambda kv: int(kv[0])))
    merged["peak_rss_mb"] = max(old.get("peak_rss_mb", 0.0), new.get("peak_rss_mb", 0.0))
    return _with_summary(merged)


def _merge_seeds(old: dict, new: dict) -> dict:
    """``merge_records`` for disjoint seeds over the same classes (see there)."""
    seeds = sorted(old["seeds"] + new["seeds"])
    merged = dict(new)
    merged["seeds"] = seeds
    for field in ("auroc", "auprc"):
        by_seed = {c: {**dict(zip(sorted(old["seeds"]), old[field][c])), **dict(zip(sorted(new["seeds"]), new[field][c]))}
                   for c in new[field]}
        merged[field] = {c: [by_seed[c][s] for s in seeds] for c in sorted(new[field], key=int)}
    n_old, n_new = len(old["seeds"]), len(new["seeds"])
    for field in ("train_seconds_per_class", "score_seconds_per_class"):
        merged[field] = {c: round((old[field][c] * n_old + new[field][c] * n_new) / (n_old + n_new), 3)
                         for c in sorted(new[field], key=int)}
    merged["peak_rss_mb"] = max(old.get("peak_rss_mb", 0.0), new.get("peak_rss_mb", 0.0))
    provenance = ("git_commit", "machine", "jobs", "fast_mode")
    merged["seed_runs"] = old.get("seed_runs", [{"seeds": old["seeds"], **{k: old.get(k) for k in provenance}}]) + [
        {"seeds": new["seeds"], **{k: new.get(k) for k in provenance}}]
    return _with_summary(merged)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.one_class", description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", required=True, choices=sorted(METHODS))
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--classes", type=int, nargs="+", default=None, help="normal classes (default: all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-train", type=int, default=None, help="cap on training images per class")
    parser.add_argument("--source", choices=("auto", "full", "sample"), default="full",
                        help="data source (default: full, so a missing dataset is an error, not a sample)")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--overwrite", action="store_true", help="replace the existing results file")
    parser.add_argument("--jobs", type=int, default=1,
                        help="worker processes, one PyTorch thread each (default 1: everything in this process); "
                             "the numbers equal a --jobs 1 run with OMP_NUM_THREADS=1")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")

    fast = config.is_fast()
    if args.jobs > 1:
        import torch

        torch.set_num_threads(1)  # as in every worker, so the recorded thread count is the one that trained
    results = run_one_class(args.method, args.dataset, args.classes, args.seeds, fast=fast,
                            n_train=args.n_train, source=args.source, jobs=args.jobs)
    record = results_to_record(results, args.seeds)
    record["fast_mode"] = fast
    # what the current code runs (protocol, method, detector settings): results.BenchmarkTable.check_protocol
    # compares a notebook's current settings with it
    record["settings"] = method_settings(args.method, dataset=results.dataset, fast=fast, source=args.source)
    record["jobs"] = args.jobs
    record["peak_rss_mb"] = round(peak_rss_mb(), 1)
    record.update(environment_info())
    out = args.out_dir / f"{args.method}__{results.dataset}.json"
    if out.exists() and not args.overwrite:
        try:
            record = merge_records(json.loads(out.read_text()), record)
        except ValueError as err:
            print(f"ERROR: {err}", file=sys.stderr)
            return 1
    write_json_atomic(out, record)
    readme = render_readme(args.out_dir)
    if args.out_dir.resolve() == RESULTS_DIR.resolve():
        update_main_readme()
    print(f"{args.method} on {results.dataset}: mean AUROC {record['mean_auroc']:.4f} ± {record['std_auroc']:.4f} "
          f"over {len(record['auroc'])} classes; wrote {out} and {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
