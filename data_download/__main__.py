"""Command line: ``python -m data_download NAME... [--from-dir DIR] [--verify] [--list] [--build-sample]``.

Examples::

    python -m data_download --list
    python -m data_download mnist fashion-mnist              # download (checksums checked)
    python -m data_download fashion-mnist --from-dir /usr/share/datasets/fashion-mnist
    python -m data_download pneumoniamnist --from-dir ~/Downloads
    python -m data_download mvtec-bottle --from-dir ~/Downloads/mvtec_anomaly_detection   # image folders (+ masks)
    python -m data_download mnist --verify                   # check; remove corrupt files
    python -m data_download mnist --build-sample             # rebuild the bundled sample

Exit status: 0 when every named dataset is usable, 1 otherwise, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from course_utils import config
from course_utils.datasets import DATASETS, SAMPLE_DIR, build_sample, download, get_spec, import_from_dir, status, verify


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_download",
        description="Fetch, import from a local folder, verify, or sample the course datasets.",
        epilog=f"Data folder: {config.data_dir()} (set COURSE_DATA_DIR to change it).",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"datasets: {', '.join(DATASETS)}")
    parser.add_argument("--from-dir", type=Path, metavar="DIR", help="import from a local folder instead of downloading")
    parser.add_argument("--verify", action="store_true", help="check the local copies; remove corrupt files")
    parser.add_argument("--list", action="store_true", help="list the datasets and what is present locally")
    parser.add_argument("--build-sample", action="store_true", help="rebuild the bundled sample from the full local copy")
    parser.add_argument("--size", type=int, default=None,
                        help="image size of the file to fetch, for datasets stored per size (PneumoniaMNIST: 28, 64, 128, 224)")
    parser.add_argument("--data-dir", type=Path, default=None, help="override COURSE_DATA_DIR")
    parser.add_argument("--sample-dir", type=Path, default=SAMPLE_DIR, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    data_dir = (args.data_dir or config.data_dir()).expanduser()
    if args.list:
        print(f"data folder: {data_dir}")
        print(f"{'name':20} {'format':18} {'classes':>7}  {'splits':30} {'local copy':28} license")
        for name, spec in DATASETS.items():
            splits = ", ".join(f"{k} {v:,}" for k, v in spec.split_sizes.items())
            kind = spec.format.kind + ("+masks" if spec.has_masks else "")
            print(f"{name:20} {kind:18} {spec.n_classes:>7}  {splits:30} {status(name, data_dir):28} {spec.license}")
        if not args.names:
            return 0
    if not args.names:
        parser.error("name at least one dataset (or use --list)")
    try:
        names = [get_spec(n).name for n in args.names]
        if args.size is not None:
            for name in names:
                get_spec(name).check_size(args.size)
    except ValueError as err:
        parser.error(str(err))
    all_ok = True
    for name in names:
        print(f"== {name}")
        if args.build_sample:
            try:
                path, counts = build_sample(name, data_dir, args.sample_dir)
            except (FileNotFoundError, ValueError) as err:
                print(f"ERROR: cannot build the sample of {name}: {err}\n"
                      f"Get the full data first: python -m data_download {name} [--from-dir DIR]")
                all_ok = False
                continue
            print(f"wrote {path} ({', '.join(f'{k} {v}' for k, v in counts.items())} images)")
            continue
        if args.verify:
            report = verify(name, data_dir, size=args.size)
        elif args.from_dir is not None:
            report = import_from_dir(name, args.from_dir, data_dir, size=args.size)
        else:
            try:
                report = download(name, data_dir, size=args.size)
            except RuntimeError as err:
                print(f"ERROR: {err}")
                all_ok = False
                continue
        print(report)
        all_ok &= report.ok
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
