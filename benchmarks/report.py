"""Shared pieces of the benchmarks: environment facts, peak memory, atomic JSON, README rendering.

``python -m benchmarks.report`` re-renders ``benchmarks/results/README.md`` from the JSON files.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
from pathlib import Path

from course_utils.data import dataset_info
from course_utils.tables import compare_table
from course_utils.bundles import git_commit
from course_utils.files import atomic_write_bytes

from .sections import (render_aeflow, render_aeflow_ablation, render_aeflow_flowgmm, render_aeflow_hardware, render_glow_bpd,
                       render_glow_codecs, render_selection, mean_over_seeds)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MAIN_README = Path(__file__).resolve().parents[1] / "README.md"
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"

# How the main README names each method, and the notebook that teaches it.
METHOD_INFO = {
    "pca": ("PCA reconstruction error (90 % variance)", "00"),
    "knn": ("5-NN distance in pixel space", "00"),
    "ae-l2": ("convolutional autoencoder, L2 loss, MSE score", "01"),
    "ae-ssim": ("convolutional autoencoder, SSIM loss, 1 - SSIM score", "01"),
    "glow-nll": ("Glow (FrEIA), negative log-likelihood in bits", "04"),
    "glow-complexity": ("Glow, NLL bits minus PNG length (Serra et al. 2020)", "04"),
    "glow-ratio": ("Glow, NLL bits minus those of a Glow trained on the other dataset (uses extra data)", "04"),
    "glow-final-scale": ("Glow, 5 levels on 32 px: bits of the final scale only (Schirrmeister et al. 2020)", "04"),
    "fanogan": ("f-AnoGAN: WGAN-GP + izif encoder, MSE + critic-feature score", "02"),
    "fanogan-ssim": ("f-AnoGAN, same models, (1 - SSIM) + critic-feature score", "02"),
}

# What a "train s / class" cell does not say by itself (measurement notes, not numbers).
TIMING_NOTES = {
    "fanogan": "f-AnoGAN's 3-seed run found seed 0 in the checkpoint cache (trained by the earlier seed-0 run), "
               "so its `train s / class` averages one cache load (< 1 s) with two trainings; one GAN + encoder "
               "training took 60–70 s on one thread with one other job on the second core.",
    "glow-nll": "the 3-seed run of 2026-12-01 shared the 2 cores with 2-3 other jobs; one model trains in 20-35 s "
                "on one thread with one other job on the second core.",
    "glow-complexity": "shares glow-nll's models, so its training time is a cache load.",
    "glow-ratio": "shares glow-nll's one-class models; its general-domain model (one per seed, trained on the other "
                  "dataset) is trained during the first class of each seed and loaded from the cache afterwards.",
    "fanogan-ssim": "shares fanogan's models, so its training time is a cache load.",
    "glow-final-scale": "rerun 2026-12-02 with the 5-level model the selection protocol chose. Seed 0: MNIST and "
                        "Fashion-MNIST ran side by side with 2-3 other jobs on the 2 cores (load about 4), so a model "
                        "took about 8 min instead of about 2 min on an idle thread; MNIST's class 0 of seed 0 came "
                        "from the cache, so its `train s / class` averages a cache load with trainings. MNIST seeds 1 "
                        "and 2: one run each with `--jobs 2` (one thread per job) on a slower CPU; seed 1 shared the "
                        "cores with test runs for most of its 61 min (7-14 min per model), seed 2 took 30 min (about "
                        "6 min per model, mostly alone). Fashion-MNIST seeds 1 and 2: one run with `--jobs 2` at "
                        "aee5848 on an idle machine with another CPU (AMD EPYC with AVX-512; the slower CPU has "
                        "AVX2 only): 35 min for the 20 models, about 3.5 min per model.",
}

# Mean one-class AUROC (%) reported in the literature on the same protocol (train on one
# class of the official train split, test on the whole test split).
LITERATURE = {
    "mnist": [
        ("Deep conv. autoencoder (DCAE)", 89.7, "Ruff et al. 2018, Deep SVDD, Table 1"),
        ("AnoGAN", 91.3, "Ruff et al. 2018, Table 1"),
        ("One-class Deep SVDD", 94.8, "Ruff et al. 2018, Table 1"),
    ],
}


def peak_rss_mb() -> float:
    """Peak resident memory in MiB of this process or of its largest finished worker process
    (``--jobs``), whichever is larger (Linux reports ru_maxrss in KiB)."""
    peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return peak / 1024.0 if sys.platform != "darwin" else peak / 2**20


def cpu_model() -> str:
    """The CPU's name and the widest vector instructions PyTorch uses on it, e.g. "AMD EPYC (AVX512)".

    Two 2-core machines of the same kind have trained the same Glow 4x apart, so a time means
    little without the CPU it was measured on."""
    import torch

    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:  # not Linux: platform.processor() is the best there is
        pass
    return f"{name} ({torch.backends.cpu.get_cpu_capability()})"


def environment_info() -> dict:
    """Machine and software facts stored with every result."""
    import torch

    commit = git_commit(Path(__file__).parent, short=True)
    device = "cuda: " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return {
        "machine": f"{platform.machine()}, {cpu_model()}, {os.cpu_count()} cores, {platform.system()} "
                   f"{platform.release()}, {device}, torch {torch.__version__} ({torch.get_num_threads()} threads)",
        "git_commit": commit,
    }


def write_json_atomic(path: Path, record: dict) -> None:
    atomic_write_bytes(path, (json.dumps(record, indent=2, sort_keys=False) + "\n").encode())


def publish(record: dict, out: Path, markdown: str) -> None:
    """Write one benchmark's JSON atomically, print its markdown section and, when ``out`` lies in
    :data:`RESULTS_DIR`, re-render ``benchmarks/results/README.md`` (a run into another folder, such
    as a test's, leaves the committed tables alone)."""
    write_json_atomic(out, record)
    print(markdown)
    print(f"wrote {out}")
    if out.parent.resolve() == RESULTS_DIR.resolve():
        render_readme(out.parent)


def _load_records(results_dir: Path) -> list[dict]:
    records = []
    for path in sorted(results_dir.glob("*__*.json")):
        record = json.loads(path.read_text())
        if record.get("protocol") == "one-class":
            records.append(record)
    return records


def render_readme(results_dir: Path = RESULTS_DIR) -> Path:
    """Write ``README.md`` in ``results_dir`` from every one-class JSON file there."""
    records = _load_records(results_dir)
    lines = [
        "# Benchmark results",
        "",
        "Generated by `python -m benchmarks.report` from the JSON files in this folder; do not edit by hand.",
        "",
        "Protocol: one-class. For each normal class, train on that class of the official train split, score the",
        "whole official test split, report AUROC (mean ± sample std over seeds). The `mean` row averages the",
        "classes; its ± is the spread over seeds of the class-averaged AUROC.",
        "",
    ]
    datasets = sorted({r["dataset"] for r in records})
    for dataset in datasets:
        spec = dataset_info(dataset)
        group = [r for r in records if r["dataset"] == dataset]
        partial = [r["method"] for r in group if not r.get("full_data")]
        lines += [f"## {dataset}", ""]
        lines.append(compare_table({r["method"]: r["auroc"] for r in group}, class_names=list(spec.class_names)))
        lines.append("")
        lines.append("| method | mean AUROC | train s / class | score s / class | train images / class | peak RSS MB | data | seeds | commit |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for r in group:
            train_s = _mean(r["train_seconds_per_class"].values())
            score_s = _mean(r["score_seconds_per_class"].values())
            n_train = _mean(r["n_train_per_class"].values())
            lines.append(
                f"| {r['method']} | {mean_over_seeds(r['mean_auroc'], r['std_auroc'], r['seeds'])} | {train_s:.2f} | {score_s:.2f} | "
                f"{n_train:,.0f} | {r.get('peak_rss_mb', float('nan')):.0f} | {r.get('data_source')} | "
                f"{' '.join(map(str, r['seeds']))} | {r.get('git_commit')} |"
            )
        lines.append("")
        notes = [f"- `{r['method']}`: {TIMING_NOTES[r['method']]}" for r in group if r["method"] in TIMING_NOTES]
        if notes:
            lines += ["Timing notes:", "", *notes, ""]
        if partial:
            lines.append(f"Note: {', '.join(partial)} ran on a partial or sample copy of {dataset}; see `data_source`.")
            lines.append("")
        if dataset in LITERATURE:
            lines.append("Reference numbers (mean AUROC %, same protocol):")
            lines.append("")
            for name, value, cite in LITERATURE[dataset]:
                lines.append(f"- {name}: {value} ({cite})")
            lines.append("")
        machines = sorted({r.get("machine", "?") for r in group})
        lines.append("Machine: " + "; ".join(machines))
        lines.append("")
    # measurements with their own protocol (one JSON each, rendered here too; see benchmarks/sections.py)
    for path in sorted(results_dir.glob("aeflow*__*.json")):
        record = json.loads(path.read_text())
        if record.get("protocol") == "normal-vs-pneumonia":
            lines += [render_aeflow(record), ""]
        elif record.get("protocol") == "normal-vs-pneumonia-few-labels":
            lines += [render_aeflow_flowgmm(record), ""]
        elif record.get("protocol") == "normal-vs-pneumonia-ablation":
            lines += [render_aeflow_ablation(record), ""]
    hardware = {name: json.loads((results_dir / f"{name}.json").read_text())
                for name in ("aeflow_memory", "aeflow_gpu") if (results_dir / f"{name}.json").exists()}
    if hardware:
        lines += [render_aeflow_hardware(hardware.get("aeflow_memory"), hardware.get("aeflow_gpu")), ""]
    for path in sorted(results_dir.glob("glow_bpd__*.json")):
        record = json.loads(path.read_text())
        if record.get("protocol") == "bits-per-dim":
            lines += [render_glow_bpd(record), ""]
    for path in sorted(results_dir.glob("glow_codecs__*.json")):
        record = json.loads(path.read_text())
        if record.get("protocol") == "complexity-codecs":
            lines += [render_glow_codecs(record), ""]
    for path in sorted(results_dir.glob("selection__*.json")):
        record = json.loads(path.read_text())
        if record.get("protocol") == "settings-selection":
            lines += [render_selection(record), ""]
    out = results_dir / "README.md"
    atomic_write_bytes(out, "\n".join(lines).encode())
    return out


def results_summary_table(results_dir: Path = RESULTS_DIR) -> str:
    """Markdown table of mean one-class AUROC, one row per method, one column per dataset."""
    records = _load_records(results_dir)
    datasets = sorted({r["dataset"] for r in records}, key=lambda d: ("mnist", "fashion-mnist").index(d)
                      if d in ("mnist", "fashion-mnist") else 99)
    methods = sorted({r["method"] for r in records}, key=lambda m: (METHOD_INFO.get(m, (m, "99"))[1], m))
    by_key = {(r["method"], r["dataset"]): r for r in records}
    header = "| method | " + " | ".join(datasets) + " | notebook |"
    lines = [header, "|" + "---|" * (len(datasets) + 2)]
    for method in methods:
        name, notebook = METHOD_INFO.get(method, (method, "?"))
        cells = []
        for dataset in datasets:
            r = by_key.get((method, dataset))
            if r is None:
                cells.append("-")
            else:
                cells.append(mean_over_seeds(r["mean_auroc"], r["std_auroc"], r["seeds"]))
        lines.append(f"| {name} (`{method}`) | " + " | ".join(cells) + f" | {notebook} |")
    return "\n".join(lines)


def update_main_readme(readme: Path = MAIN_README, results_dir: Path = RESULTS_DIR) -> bool:
    """Replace the block between the results markers of the main README; True if it changed."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise ValueError(f"{readme} lacks the {README_START} / {README_END} markers")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    new = f"{head}{README_START}\n{results_summary_table(results_dir)}\n{README_END}{tail}"
    if new != text:
        atomic_write_bytes(readme, new.encode())
    return new != text


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


if __name__ == "__main__":
    print(render_readme())
    print("README.md updated" if update_main_readme() else "README.md already up to date")
