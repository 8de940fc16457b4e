"""Rerun committed one-class results and compare: ``python -m benchmarks.reproduce [--methods M ...]``.

A refactor must not change a number. This command reruns, for every committed
``benchmarks/results/<method>__<dataset>.json`` of the one-class protocol (or the methods and
datasets given), ONE normal class with ONE seed, in full mode, with the same protocol function
as ``benchmarks.one_class``, and prints the committed AUROC beside the rerun. It writes nothing
into ``benchmarks/results`` unless ``--out`` names a file (a JSON record of the comparison).

Run it with the thread count of the committed results (``OMP_NUM_THREADS=1``, recorded in each
JSON's ``machine``) and, to test that training reproduces, an empty ``COURSE_CACHE_DIR``:
seeded training repeats exactly only at a fixed thread count.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from course_utils.protocol import METHODS, evaluate_one_class

from .report import RESULTS_DIR, environment_info, write_json_atomic

__all__ = ["Reproduction", "committed_records", "reproduce", "main"]


@dataclass(frozen=True)
class Reproduction:
    """One rerun (method, dataset, class, seed) beside its committed AUROC."""

    method: str
    dataset: str
    normal_class: int
    seed: int
    committed_auroc: float
    rerun_auroc: float
    committed_commit: str
    seconds: float

    @property
    def difference(self) -> float:
        """rerun − committed AUROC (the committed value is rounded to 6 decimals)."""
        return self.rerun_auroc - self.committed_auroc


def committed_records(results_dir: Path = RESULTS_DIR, methods: list[str] | None = None,
                      datasets: list[str] | None = None) -> list[dict]:
    """The committed one-class records, filtered by method and dataset, in file-name order."""
    records = []
    for path in sorted(results_dir.glob("*__*.json")):
        record = json.loads(path.read_text())
        if record.get("protocol") != "one-class":
            continue
        if (methods and record["method"] not in methods) or (datasets and record["dataset"] not in datasets):
            continue
        if record["method"] not in METHODS:
            raise ValueError(f"{path.name}: method {record['method']!r} is no longer registered; known: "
                             f"{', '.join(sorted(METHODS))}")
        records.append(record)
    return records


def reproduce(record: dict, normal_class: int, seed: int, source: str = "full") -> Reproduction:
    """Rerun one class and seed of a committed record (full mode) and compare its AUROC."""
    key = str(normal_class)
    if key not in record["auroc"]:
        raise ValueError(f"{record['method']} on {record['dataset']} has no committed class {normal_class}; "
                         f"committed: {', '.join(record['auroc'])}")
    if seed not in record["seeds"]:
        raise ValueError(f"{record['method']} on {record['dataset']} was run with seeds {record['seeds']}, not {seed}")
    committed = record["auroc"][key][record["seeds"].index(seed)]
    start = time.perf_counter()
    result, _ = evaluate_one_class(record["method"], record["dataset"], normal_class, seed=seed, fast=False,
                                   source=source)
    return Reproduction(record["method"], record["dataset"], normal_class, seed, committed, round(result.auroc, 6),
                        record.get("git_commit", "?"), round(time.perf_counter() - start, 1))


def _markdown(rows: list[Reproduction], tolerance: float) -> str:
    lines = ["| method | dataset | class | seed | committed (commit) | rerun | difference | seconds |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mark = "" if abs(r.difference) <= tolerance else " **differs**"
        lines.append(f"| {r.method} | {r.dataset} | {r.normal_class} | {r.seed} | {r.committed_auroc:.6f} "
                     f"({r.committed_commit}) | {r.rerun_auroc:.6f} | {r.difference:+.6f}{mark} | {r.seconds:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reproduce", description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=None, help="default: every committed one-class method")
    parser.add_argument("--datasets", nargs="+", default=None, help="default: every committed dataset")
    parser.add_argument("--class", dest="normal_class", type=int, default=0, help="normal class to rerun (default 0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tolerance", type=float, default=1e-6,
                        help="largest |rerun - committed| that counts as reproduced (the JSON rounds to 6 decimals)")
    parser.add_argument("--out", type=Path, default=None, help="also write the comparison as JSON here")
    args = parser.parse_args(argv)

    records = committed_records(methods=args.methods, datasets=args.datasets)
    if not records:
        print("no committed one-class results match", file=sys.stderr)
        return 2
    rows = []
    for record in records:
        row = reproduce(record, args.normal_class, args.seed)
        print(f"{row.method} on {row.dataset}: committed {row.committed_auroc:.6f}, rerun {row.rerun_auroc:.6f} "
              f"({row.seconds:.0f} s)", flush=True)
        rows.append(row)
    print()
    print(_markdown(rows, args.tolerance))
    if args.out is not None:
        write_json_atomic(args.out, {"protocol": "reproduction", "tolerance": args.tolerance,
                                     "rows": [asdict(r) | {"difference": round(r.difference, 6)} for r in rows],
                                     **environment_info()})
    failed = [r for r in rows if abs(r.difference) > args.tolerance]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
