"""Markdown sections of the measurements with their own protocol (AE-FLOW, Glow bits/dim, Glow codecs).

Each function renders one JSON record of ``benchmarks/results``; the benchmark that writes the record
prints its section, and ``benchmarks/report.py`` puts every section into the results README. Kept
apart from both so that neither imports the other (no import cycle).
"""

from __future__ import annotations

import numpy as np

from course_utils.data import dataset_info
from course_utils.tables import mean_std_text
# the literature numbers live in course_utils (notebook 05 reads them too); re-exported here
from course_utils.models.aeflow.reported import AEFLOW_REPORTED_CHEST_XRAY, MEDMNIST_RESNET18_28_AUC, PAPER_CHEST_XRAY

__all__ = ["PAPER_CHEST_XRAY", "AEFLOW_REPORTED_CHEST_XRAY", "MEDMNIST_RESNET18_28_AUC", "render_aeflow_flowgmm", "render_aeflow", "render_aeflow_hardware", "LITERATURE_BPD", "render_glow_bpd",
           "REFERENCE_ROW", "render_glow_codecs", "render_selection", "render_aeflow_ablation"]

# Published test bpd on MNIST (dequantised 8-bit), for orientation: much larger models and GPU days.
LITERATURE_BPD = [
    ("Real NVP (as reported by Grathwohl et al. 2019, FFJORD, Table 2)", 1.06),
    ("Glow (as reported by Grathwohl et al. 2019, FFJORD, Table 2)", 1.05),
    ("FFJORD (Grathwohl et al. 2019, Table 2)", 0.99),
]
REFERENCE_ROW = "none"  # glow_codecs: the raw NLL, no complexity term


AEFLOW_VARIANT_LABELS = {
    "paper, S_flow log-density form": "paper's score, raw, S_flow = -mean log p(z') (log-density reading)",
    "paper, S_flow likelihood form": "paper's score, raw, S_flow = -exp(mean log p(z')) (likelihood reading)",
    "-L(x) only": "L(x) alone: minus the PNG length, no model",
}
"""How the results tables name the fixed variants of ``benchmarks.aeflow.HEADLINE_VARIANTS``."""


PROTOCOL_SEEDS = (0, 1, 2)   # the seeds of a complete record (benchmarks.one_class's default --seeds)


def mean_over_seeds(mean: float, std: float, seeds) -> str:
    """"0.871 ± 0.012" over the protocol's seeds 0, 1, 2; "0.871 (seed 0 only)" over one
    (``tables.mean_std_text``); any other set is named, "0.871 ± 0.012 (seeds 0, 1)", because the
    tables mix records with different seed counts."""
    seeds = list(seeds)
    text = mean_std_text(mean, std, len(seeds), single_seed=seeds[0])
    if len(seeds) > 1 and tuple(seeds) != PROTOCOL_SEEDS:
        text += f" (seeds {', '.join(str(s) for s in seeds)})"
    return text


def _aeflow_variant_label(name: str) -> str:
    if name in AEFLOW_VARIANT_LABELS:
        return AEFLOW_VARIANT_LABELS[name]
    if "L(x)" in name:
        return f"`{name}`: the course's complexity correction"
    return f"`{name}`"


def _aeflow_variant_order(names) -> list[str]:
    """The paper's raw score first (both readings), then each complexity-corrected variant with L(x) alone
    directly after the corrections, then the rest."""
    names = list(names)
    raw = [n for n in ("paper, S_flow log-density form", "paper, S_flow likelihood form", "paper: raw terms")
           if n in names]
    corrected = [n for n in names if "L(x)" in n and n != "-L(x) only"]
    alone = [n for n in ("-L(x) only",) if n in names]
    return raw + corrected + alone + [n for n in names if n not in raw + corrected + alone]


def render_aeflow(record: dict) -> str:
    """The results section for ``benchmarks/results/README.md`` (and the notebook): the paper's raw score in its
    two readings first, then the variant the val split chose, then L(x) alone, each at a best-F1 threshold
    chosen on val, beside the paper's numbers (which are for another model size and resolution)."""
    p = PAPER_CHEST_XRAY
    runs = record["runs"]

    def pct(values) -> str:
        return f"{100 * float(np.mean(values)):.2f}"

    def auroc_cell(name: str) -> str:
        values = [r["test_auroc_by_variant"][name] for r in runs]
        spread = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        return f"{100 * float(np.mean(values)):.2f} ± {100 * spread:.2f}"

    lines = [
        "## AE-FLOW on PneumoniaMNIST (notebook 05)",
        "",
        f"Train on the {record['n_train']:,} normal images of the train split ({record['image_size_data']} px data, "
        f"model input {record['config']['image_size']} px, {record['config']['encoder']} encoder, weights: "
        f"{record['config']['weights']}); test split {record['n_test']} images. Thresholds chosen on the val split "
        "(best F1); AUROC on continuous scores; mean ± std over seeds "
        f"{', '.join(map(str, record['seeds']))}. The paper's row is a 256 px model with an ImageNet WRN-50-2 "
        "encoder on the Kermany chest X-rays: the same method, not the same model or data size.",
        "",
        "| score | AUROC (%) | F1 | ACC | SEN | SPE |",
        "|---|---|---|---|---|---|",
    ]
    by_variant = record.get("mean_test_at_val_threshold_by_variant", {})
    for name in ("paper, S_flow log-density form", "paper, S_flow likelihood form"):
        if name in by_variant:
            lines.append(f"| {_aeflow_variant_label(name)} | {auroc_cell(name)} | "
                         + " | ".join(f"{100 * by_variant[name][k]:.2f}" for k in ("f1", "acc", "sen", "spe")) + " |")
    chosen = sorted({r["selected_variant"] for r in runs})
    lines.append(
        f"| chosen on val per seed ({', '.join(_aeflow_variant_label(c) for c in chosen)}) | "
        f"{100 * record['mean_auroc']:.2f} ± {100 * record['std_auroc']:.2f} | "
        + " | ".join(f"{100 * record[f'mean_{k}']:.2f}" for k in ("f1", "acc", "sen", "spe")) + " |")
    lines.append("| same, Youden threshold on val | same | "
                 + " | ".join(pct([r["test_at_val_threshold"]["youden"][k] for r in runs])
                              for k in ("f1", "acc", "sen", "spe")) + " |")
    if "-L(x) only" in by_variant:
        lines.append(f"| {_aeflow_variant_label('-L(x) only')} | {auroc_cell('-L(x) only')} | "
                     + " | ".join(f"{100 * by_variant['-L(x) only'][k]:.2f}" for k in ("f1", "acc", "sen", "spe"))
                     + " |")
    lines += [
        f"| paper (Kermany chest X-ray, 256 px, ImageNet WRN-50-2; Zhao et al. 2023) | {p['auroc']:.2f} | "
        f"{p['f1']:.2f} | {p['acc']:.2f} | {p['sen']:.2f} | ~{p['spe']:.0f} |",
        "",
    ]
    forms = record.get("mean_flow_forms_val")
    if forms:
        lines += [f"The two readings of S_flow rank images identically on their own; combined with 1 - SSIM at "
                  f"beta = {record['config']['beta']}, the log-density form's spread is {forms['spread_ratio']:.1f}x "
                  f"the likelihood form's (val split, mean over seeds), so S_flow's share of the combined score's spread, "
                  f"beta sd(S_flow) / (beta sd(S_flow) + (1 - beta) sd(1 - SSIM)), is "
                  f"{100 * forms['flow_share_log_density']:.0f} % in the first reading and "
                  f"{100 * forms['flow_share_likelihood']:.0f} % in the second; the two combined scores "
                  f"have a Spearman correlation of {forms['spearman_combined']:.3f}.", ""]
    lines += [
        f"Training: {record['mean_train_seconds']:.0f} s per seed. Test AUROC of every score variant (mean over "
        "seeds; the val AUROC picks the reported one among the combined scores):",
        "",
        "| variant | val AUROC | test AUROC |",
        "|---|---|---|",
    ]
    for k in _aeflow_variant_order(record["mean_test_auroc_by_variant"]):
        lines.append(f"| {_aeflow_variant_label(k)} | {record['mean_val_auroc_by_variant'][k]:.3f} | "
                     f"{record['mean_test_auroc_by_variant'][k]:.3f} |")
    lines += ["", f"Selected per seed: {', '.join(r['selected_variant'] for r in runs)}. "
              f"Machine: {record['machine']}; commit {record['git_commit']}.", ""]
    return "\n".join(lines)


def render_aeflow_flowgmm(record: dict) -> str:
    """The FlowGMM-AE-FLOW section: test AUROC over k labelled pneumonia images, with the baselines."""
    lines = [
        f"## FlowGMM-AE-FLOW on PneumoniaMNIST: a few labelled pneumonia images (`{record['method']}`)",
        "",
        f"Train on the {record['n_train_normal']:,} normal training images plus k of the "
        f"{record['n_train_pneumonia_available']:,} pneumonia training images (drawn with the run's seed; "
        f"unlabelled images: {record['unlabelled_images']}). Mixture means tried: {', '.join(record['means_tried'])}; "
        "means, score and threshold chosen on the val split. Test AUROC, mean ± std over seeds "
        f"{', '.join(map(str, record['seeds']))}.",
        "",
        "| k | FlowGMM-AE-FLOW | supervised on the same k (logistic regression) | L(x) alone | selected scores |",
        "|---|---|---|---|---|",
    ]
    for key, row in record["by_k"].items():
        fmt = lambda ms: "-" if ms is None else mean_over_seeds(ms[0], ms[1], row["seeds"])  # noqa: E731
        lines.append(f"| {key} ({row['n_labelled']}) | {fmt(row['test_auroc'])} | {fmt(row['supervised_test_auroc'])} | "
                     f"{fmt(row['l_only_test_auroc'])} | {', '.join(dict.fromkeys(row['selected']))} |")
    lines += ["", f"Ceiling (published, not rerun): MedMNIST v2 ResNet-18 at 28 px with every training label, "
              f"test AUC {record['ceiling_medmnist_resnet18_28_auc']:.3f}. Machine: {record['machine']}; "
              f"commit {record['git_commit']}; torch threads {record['torch_threads']}.", ""]
    return "\n".join(lines)


def render_aeflow_hardware(memory: dict | None, gpu: dict | None) -> str:
    """The "full 256 px model" section: the float32 step bytes (``--memory``) and, if a GPU was
    lent, the measured images/s and peak memory (``--gpu``)."""
    lines = ["## AE-FLOW full model (256 px, Wide-ResNet-50-2 encoder): memory and speed", ""]
    if memory is not None:
        g = memory["gib"]
        lines += [
            f"One float32 Adam training step at batch {memory['batch_size']} (trainable encoder: "
            f"{memory['trainable_encoder']}), exact tensor bytes: parameters {g['parameters']:.2f} GiB, gradients "
            f"{g['gradients']:.2f}, Adam moments {g['adam_state']:.2f}, tensors saved for backward "
            f"{g['saved_activations']:.2f}; **total {g['total']:.2f} GiB**. A GPU adds allocator and cuDNN "
            "workspace overhead; mixed precision stores most activations in 16 bits and needs less. "
            f"(Counted on {memory['machine']}, where the step took {memory['cpu_step_seconds']:.0f} s; "
            f"commit {memory['git_commit']}.)",
            "",
        ]
    if gpu is not None:
        lines += [f"Measured on {gpu['gpu']} at batch {gpu['batch_size']} with AMP: "
                  f"{gpu['train_images_per_second']} training images/s, peak "
                  f"`torch.cuda.max_memory_allocated` {gpu['max_memory_allocated_mb']:.0f} MiB.", ""]
    else:
        lines += ["GPU images/s and peak GPU memory: not measured yet (no GPU was lent to this project); run "
                  "`python -m benchmarks.aeflow --gpu` on a CUDA machine to add them here.", ""]
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


GLOW_BPD_TARGET_BPD = 1.25               # test bits/dim, one dequantization draw, all test images
GLOW_BPD_TARGET_TRAIN_SECONDS = 1200.0   # "within 20 minutes" of training on 2 CPU cores


def glow_bpd_target_halves(record: dict) -> tuple[bool, bool]:
    """(bits/dim met, training time met) of a ``glow_bpd`` record: the target's two halves, judged in one place.

    Records before 2026-12-02 stored neither the time half nor a flag that includes it, so a missing
    ``target_train_seconds`` means the 20 minutes of ``GLOW_BPD_TARGET_TRAIN_SECONDS``.
    """
    target_seconds = record.get("target_train_seconds", GLOW_BPD_TARGET_TRAIN_SECONDS)
    return record["test_bpd"] <= record["target_bpd"], record["train_seconds"] <= target_seconds


def render_glow_bpd(record: dict) -> str:
    """The Glow bits/dim section of ``benchmarks/results/README.md``."""
    c = record["config"]
    schedule = c.get("lr_schedule", "constant")  # older records have neither key: the defaults
    # judged from the numbers, not from the stored flag, so older records render the same way
    target_seconds = record.get("target_train_seconds", GLOW_BPD_TARGET_TRAIN_SECONDS)
    bpd_met, time_met = glow_bpd_target_halves(record)
    lines = [
        "## Glow bits per dimension on MNIST (notebook 03)",
        "",
        f"All ten digits, {record['n_train']:,} training images ({record['data_source']}"
        f"{'' if record.get('full_data') else ', NOT the full 60,000'}), test bpd on the {record['n_test']:,} test "
        f"images (dequantization noise seeded with 0). Model: {c['n_levels']} levels x {c['steps_per_level']} steps, "
        f"{c['hidden']} hidden channels, {c['mixing']} mixing, {c.get('dequantization', 'uniform')} dequantization; "
        f"batch {c['batch_size']}, lr {c['lr']:g} ({schedule}"
        f"{'' if schedule == 'constant' else ', horizon ' + format(c['steps'], ',') + ' steps'}"
        f"{'' if record['steps_run'] >= c['steps'] else ', cut short by the budget'}).",
        "",
        "| test bpd (mean) | median | test images > 8 bpd | target | train bpd (last epoch) | training time | steps | "
        "images seen | threads |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| **{record['test_bpd']:.3f}** | {_fmt(record.get('test_bpd_median'))} | "
        f"{record.get('test_images_above_8_bpd', 'n/a')} | "
        f"<= {record['target_bpd']} in {target_seconds / 60:.0f} min ({'met' if bpd_met and time_met else 'NOT met'}"
        f"{'' if bpd_met == time_met else ': bpd met, time NOT met' if bpd_met else ': time met, bpd NOT met'}) | "
        f"{record['final_train_bpd']:.3f} | {record['train_seconds'] / 60:.1f} min (budget "
        f"{(record['budget_s'] or 0) / 60:.0f} min) | {record['steps_run']:,} | {record['images_seen']:,} | "
        f"{record['torch_threads']} |",
        "",
        "Training curve (test bpd on the first "
        f"{record['n_eval_subset']:,} test images):",
        "",
        "| epoch | steps | train s | train bpd | test bpd (subset) |",
        "|---|---|---|---|---|",
    ]
    points = [p for p in record["curve"] if "test_bpd_subset" in p]
    for p in points:
        lines.append(f"| {p['epoch']} | {p['steps']:,} | {p['train_seconds']:.0f} | {p['train_bpd']:.3f} | "
                     f"{p['test_bpd_subset']:.3f} |")
    iw = record.get("test_bpd_importance_weighted")
    if iw:
        lines += ["", f"Importance-weighted test bpd ({iw['draws']} dequantization draws per image, log-mean-exp; "
                  f"first {iw['n_images']:,} test images): **{iw['test_bpd_iw']:.3f}**, against "
                  f"{iw['test_bpd_one_draw_same_images']:.3f} with one draw on the same images. Both are upper "
                  "bounds on the true bpd in expectation; more draws give a tighter one."]
    lines += ["", "Published MNIST test bpd, for orientation (far larger models, GPU training):", ""]
    lines += [f"- {name}: {value}" for name, value in LITERATURE_BPD]
    command = (f"python -m benchmarks.glow_bpd --threads {record['torch_threads']} --seed {record['seed']}"
               f"{' --budget-s ' + format(record['budget_s'], 'g') if record.get('budget_s') else ''}"
               f" --max-steps {record['max_steps']}"
               + (f" --iw-draws {iw['draws']} --iw-n {iw['n_images']}" if iw else ""))
    lines += ["", f"Machine: {record['machine']}; commit {record['git_commit']}. Made by `{command}`.", ""]
    return "\n".join(lines)


def render_glow_codecs(record: dict) -> str:
    """The codec-comparison section of ``benchmarks/results/README.md`` for one dataset."""
    classes = [str(c) for c in record["classes"]]
    names = dataset_info(record["dataset"]).class_names
    lines = [
        f"## Glow complexity score on {record['dataset']}: which compressor? (notebook 04)",
        "",
        "S(x) = NLL_bits(x) - L(x) with L(x) from each lossless codec, on the `glow-nll` models "
        f"(one-class protocol, seeds {' '.join(map(str, record['seeds']))}, data: {record['data_source']}); "
        f"`{REFERENCE_ROW}` is the raw NLL. AUROC per normal class (mean over seeds); `mean` ± the spread over "
        "seeds of the class mean. L(x) bits: mean over the test split.",
        "",
        "| L(x) | " + " | ".join(c if names[int(c)] == c else f"{c} {names[int(c)]}" for c in classes)
        + " | mean | L(x) bits | ms / image |",
        "|---|" + "---|" * (len(classes) + 3),
    ]
    best = max((r for r in record["codecs"] if r != REFERENCE_ROW), key=lambda r: record["codecs"][r]["mean_auroc"])
    for row, r in record["codecs"].items():
        cells = [f"{np.mean(r['auroc'][c]):.3f}" for c in classes]
        mean = f"{r['mean_auroc']:.3f} ± {r['std_auroc']:.3f}"
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {'**' + mean + '**' if row == best else mean} | "
                     f"{'-' if r['mean_test_bits'] is None else format(r['mean_test_bits'], ',.0f')} | "
                     f"{'-' if r['ms_per_image'] is None else format(r['ms_per_image'], '.2f')} |")
    lines += ["", "Ceiling, not a result: choosing for every class the codec that does best on its TEST labels "
              f"would give a mean AUROC of {record['oracle_best_codec_per_class_mean_auroc']:.3f}. The codec "
              "reshuffles which classes fail more than it raises the mean.",
              "", f"Machine: {record['machine']}; commit {record['git_commit']}.", ""]
    return "\n".join(lines)


def render_selection(record: dict) -> str:
    """The section of ``benchmarks/results/README.md`` for one ``benchmarks.select_settings`` record: every
    candidate's criterion on the training split's held-out part, the chosen one, and whether the code uses it."""
    groups = ", ".join(f"{g}: fit {v['n_fit']:,}, held-out normal {v['n_held_out_normal']:,}, other classes "
                       f"{v['n_held_out_other']:,}" for g, v in record["groups"].items())
    lines = [
        f"## Settings selection: {record['method']} ({record['dataset']}, training split only)",
        "",
        f"Criterion: {record['criterion']}. Normal classes and held-out images ({groups}); seed {record['seed']}, "
        f"data {record['data_source']}{', fast mode' if record.get('fast_mode') else ''}"
        f"{', ' + format(record['bpd_steps'], ',') + ' steps at batch 64 (or the same images seen)' if record.get('bpd_steps') else ''}.",
        "",
        "| candidate | criterion (mean) | per group | train s | |",
        "|---|---|---|---|---|",
    ]
    for row in record["candidates"]:
        per = "; ".join(f"{g}: " + (_fmt(r["criterion"]) if r["criterion"] is not None else r.get("failed", "failed"))
                        for g, r in row["per_group"].items())
        mark = " ".join(m for m, on in (("**chosen**", row["name"] == record["chosen"]),
                                       ("in the code of the run", row["in_code"])) if on)
        lines.append(f"| {row['name']} | {_fmt(row['criterion_mean'])} | {per} | "
                     f"{sum(row['seconds'].values()):.0f} | {mark} |")
    lines += ["", (f"The protocol chose the setting the code used at commit {record.get('git_commit')}."
                   if record["matches_code"] else
                   f"The protocol chose **{record['chosen']}**, not **{record['in_code']}**, which the code used at "
                   f"commit {record.get('git_commit')}; the code must use the protocol's choice (the tests check that "
                   f"it does) and the affected benchmarks are rerun with it."),
              "", f"Machine: {record.get('machine', '?')}; {record.get('torch_threads')} thread(s); commit "
                  f"{record.get('git_commit')}."]
    return "\n".join(lines)


def render_aeflow_ablation(record: dict) -> str:
    """The AE-FLOW ablation section (``benchmarks.aeflow --ablation``): val and test AUROC of the paper's raw
    score and of the val-best combined variant for each (subnet, alpha); settings are compared on val only."""
    lines = [
        f"## AE-FLOW ablation on PneumoniaMNIST: subnet and loss weight (`{record['method']}`, notebook 05)",
        "",
        f"Each (subnet, alpha) trains the reduced model for {record['config']['epochs']} epochs on the "
        f"{record['n_train']:,} normal training images; seeds {', '.join(map(str, record['seeds']))}. "
        f"Selection: {record['selection']}.",
        "",
        "| subnet | alpha | seed | val AUROC, paper's raw score | test AUROC, paper's raw score | train s |",
        "|---|---|---|---|---|---|",
    ]
    for run in record["runs"]:
        lines.append(f"| {run['subnet']} | {run['alpha']} | {run['seed']} | "
                     f"{run['val_auroc_by_variant']['paper: raw terms']:.3f} | "
                     f"{run['test_auroc_by_variant']['paper: raw terms']:.3f} | {run['train_seconds']} |")
    lines += ["", f"Machine: {record.get('machine', '?')}; {record.get('torch_threads')} thread(s); commit "
                  f"{record.get('git_commit')}."]
    return "\n".join(lines)
