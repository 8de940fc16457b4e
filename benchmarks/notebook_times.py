"""Wall time of each notebook in full mode: ``python -m benchmarks.notebook_times [--bundle FILE] [NN ...]``.

Protocol (the course map's "CPU (full mode)" column; issue targets: at most 10 minutes from an
empty checkpoint cache, at most 3 minutes after a bundle import, on 2 CPU cores):

- each notebook runs top to bottom in a fresh Jupyter kernel (``nbclient``, as ``jupyter nbconvert
  --execute`` does), in full mode (``COURSE_FAST`` unset), with PyTorch's default thread count, from
  the notebooks folder;
- each gets its own checkpoint cache in a temporary folder: empty, or, with ``--bundle FILE``, filled
  by ``course_utils.bundles.import_bundle`` first (the import is timed separately, not counted);
- the wall time covers kernel start to the last cell; the five slowest cells are kept (the kernel's
  own execution timestamps), so a slow notebook says where its time goes.

Datasets come from ``COURSE_DATA_DIR`` as for a student (``python -m data_download ...`` first).
Run it on an otherwise idle machine: two jobs on two cores double every time.
Writes ``benchmarks/results/notebook_times.json``, one entry per (cache kind, notebook); a later run
replaces only the notebooks it ran. ``--keep-caches DIR`` copies every checkpoint the notebooks trained
into ``DIR`` (one folder for all notebooks), so that ``python -m course_utils.bundles export FILE
--cache-dir DIR`` makes the bundle for the second kind of run without training anything twice.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from course_utils.files import atomic_write

from .report import RESULTS_DIR, environment_info, write_json_atomic

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
OUT = RESULTS_DIR / "notebook_times.json"
TARGET_SECONDS = {"empty cache": 600.0, "bundle": 180.0}


def _cell_seconds(cell) -> float | None:
    """Seconds between the kernel receiving a cell and replying (nbclient's recorded timestamps)."""
    execution = cell.get("metadata", {}).get("execution", {})
    start, end = execution.get("iopub.execute_input"), execution.get("shell.execute_reply")
    if not (start and end):
        return None
    parse = lambda text: dt.datetime.fromisoformat(text.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


def time_notebook(path: Path, cache: Path) -> dict:
    """Run ``path`` in full mode with ``COURSE_CACHE_DIR=cache``; returns seconds, ok, error and slowest cells."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    # the kernel's environment only (this process's stays as it is): full mode, this cache
    kernel_env = {k: v for k, v in os.environ.items() if k != "COURSE_FAST"} | {"COURSE_CACHE_DIR": str(cache)}
    client = NotebookClient(nb, timeout=None, kernel_name="python3", record_timing=True,
                            resources={"metadata": {"path": str(path.parent)}})
    error = None
    start = time.perf_counter()
    try:
        client.execute(env=kernel_env)
    except CellExecutionError as err:  # the time up to the failure is still reported, with the error
        error = str(err).strip().splitlines()[-1][:300]
    seconds = time.perf_counter() - start
    cells = [(s, c.get("id", "?")) for c in nb.cells if c.cell_type == "code" and (s := _cell_seconds(c)) is not None]
    slowest = [{"cell": cid, "seconds": round(s, 1)} for s, cid in sorted(cells, reverse=True)[:5]]
    return {"seconds": round(seconds, 1), "ok": error is None, "error": error, "slowest_cells": slowest}


def keep_checkpoints(cache: Path, keep: Path) -> list[str]:
    """Copy the ``*.pt`` checkpoints of ``cache`` into ``keep`` (created if needed); returns the names copied.

    A name already in ``keep`` is left alone: the name is the hash of the settings and seed, so another
    notebook trained the same model (and ``bundles.export_bundle`` checks every file it writes)."""
    keep.mkdir(parents=True, exist_ok=True)
    copied = []
    for checkpoint in sorted(cache.glob("*.pt")):
        if not (keep / checkpoint.name).exists():
            with checkpoint.open("rb") as source:  # never a half-copied checkpoint under its real name
                atomic_write(keep / checkpoint.name, lambda handle: shutil.copyfileobj(source, handle))
            copied.append(checkpoint.name)
    return copied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.notebook_times", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="notebook numbers, e.g. 00 04 (default: all)")
    parser.add_argument("--bundle", type=Path, default=None,
                        help="import this checkpoint bundle into each notebook's cache first (default: empty cache)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--keep-caches", type=Path, default=None, metavar="DIR",
                        help="copy the checkpoints each notebook trained into DIR (to export a bundle from)")
    args = parser.parse_args(argv)
    if os.environ.get("COURSE_FAST", "0") not in ("", "0"):
        parser.error("COURSE_FAST is set: this benchmark times full mode; unset it")
    paths = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    if args.notebooks:
        unknown = set(args.notebooks) - {p.name[:2] for p in paths}
        if unknown:
            parser.error(f"no notebook numbered {', '.join(sorted(unknown))} in {NOTEBOOK_DIR}")
        paths = [p for p in paths if p.name[:2] in args.notebooks]
    if args.bundle is not None and not args.bundle.is_file():
        parser.error(f"no bundle at {args.bundle}: export one with `python -m course_utils.bundles export FILE`")
    kind = "bundle" if args.bundle else "empty cache"
    record = json.loads(args.out.read_text()) if args.out.exists() else {"protocol": "notebook-times", "runs": {}}
    runs = record["runs"].setdefault(kind, {})
    for path in paths:
        # 1-min load average before the run: near 0 on an idle machine for the first notebook; it decays slowly, so
        # right after a notebook it still reads about 2 on 2 cores without any other job
        load_before = round(os.getloadavg()[0], 2)
        with tempfile.TemporaryDirectory(prefix="course-times-") as tmp:
            cache = Path(tmp) / "cache"
            cache.mkdir()
            import_seconds = None
            if args.bundle is not None:
                from course_utils.bundles import import_bundle

                start = time.perf_counter()
                import_bundle(args.bundle, cache)
                import_seconds = round(time.perf_counter() - start, 1)
            result = time_notebook(path, cache)
            if args.keep_caches is not None:
                keep_checkpoints(cache, args.keep_caches)
        result.update(import_seconds=import_seconds, target_seconds=TARGET_SECONDS[kind],
                      meets_target=result["ok"] and result["seconds"] <= TARGET_SECONDS[kind],
                      date=dt.date.today().isoformat(), load_before=load_before, **environment_info())
        runs[path.stem] = result
        write_json_atomic(args.out, record)  # after every notebook: an interrupted run keeps what it measured
        print(f"{path.stem} ({kind}): {result['seconds']:.0f} s, target {TARGET_SECONDS[kind]:.0f} s "
              f"{'met' if result['meets_target'] else 'NOT met'}" + (f"; ERROR {result['error']}" if result["error"] else ""),
              flush=True)
    return 0 if all(runs[p.stem]["ok"] for p in paths) else 1


if __name__ == "__main__":
    sys.exit(main())
