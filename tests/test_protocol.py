"""Pixel-space baselines, the one-class protocol, and the benchmark harness."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmarks import one_class
from benchmarks.report import render_readme
from course_utils import protocol
from course_utils.models.baselines import KNNDetector, PCADetector


def _subspace_images(n: int, seed: int, rank: int = 3) -> torch.Tensor:
    """Images on a `rank`-dimensional affine subspace of [0, 1]^(1x8x8)."""
    gen = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(64, rank, generator=gen, dtype=torch.float64))[0]
    coeffs = 0.05 * torch.randn(n, rank, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    return (0.5 + coeffs @ basis.T).float().reshape(n, 1, 8, 8)


def test_pca_scores_zero_on_the_subspace_and_high_off_it():
    train = _subspace_images(200, seed=0)
    pca = PCADetector(n_components=3).fit(train)
    on = _subspace_images(20, seed=0)[:10]
    off = (on + 0.2 * torch.eye(64)[:10].reshape(10, 1, 8, 8)).clamp(0, 1)
    assert pca.score(on).max() < 1e-8
    assert pca.score(off).min() > 1e-3
    assert torch.allclose(pca.reconstruct(on), on, atol=1e-5)


def test_pca_variance_fraction_selects_k():
    train = _subspace_images(200, seed=0, rank=5)
    assert PCADetector(n_components=0.999999).fit(train).k == 5
    assert PCADetector(n_components=0.3).fit(train).k < 5


def test_knn_equals_brute_force():
    gen = torch.Generator().manual_seed(0)
    train, test = torch.rand(50, 1, 4, 4, generator=gen), torch.rand(7, 1, 4, 4, generator=gen)
    scores = KNNDetector(k=3, chunk_size=2).fit(train).score(test)
    d = torch.cdist(test.reshape(7, -1).double(), train.reshape(50, -1).double())
    expected = d.sort(dim=1).values[:, :3].mean(1)
    assert torch.allclose(scores, expected, atol=1e-5)


@pytest.mark.parametrize("make", [lambda: PCADetector(0.9), lambda: KNNDetector(3)])
def test_detectors_validate(make):
    detector = make()
    with pytest.raises(RuntimeError, match="fit"):
        detector.score(torch.rand(2, 1, 4, 4))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        detector.fit(torch.rand(5, 1, 4, 4) * 3)
    with pytest.raises(ValueError, match="shape"):
        detector.fit(torch.rand(5, 4, 4))


def test_bad_detector_settings():
    with pytest.raises(ValueError):
        PCADetector(1.5)
    with pytest.raises(ValueError):
        KNNDetector(0)


def test_run_one_class_on_sample_is_reproducible_and_sane():
    first = protocol.run_one_class("pca", "mnist", [0, 1], seeds=[0], source="sample", progress=False)
    again = protocol.run_one_class("pca", "mnist", [0, 1], seeds=[0], source="sample", progress=False)
    assert first.auroc_by_class() == again.auroc_by_class()
    assert set(first.auroc_by_class()) == {0, 1}
    assert first.source == "sample"
    run = first.run(1)
    assert run.labels.sum() == len(run.labels) - 100  # sample test set: 100 images per class
    assert 0.8 < run.auroc <= 1.0  # digit 1 vs the rest is easy even for PCA
    assert run.n_train == 300


def test_unknown_method_and_registration():
    with pytest.raises(ValueError, match="unknown method"):
        protocol.run_one_class("nope", "mnist", [0], progress=False)
    with pytest.raises(ValueError, match="lowercase"):
        protocol.register_method("Bad Name", lambda context: PCADetector())


def _record(classes, seeds=(0,), source="sample"):
    results = protocol.OneClassResults("pca", "mnist", source)
    for c in classes:
        for s in seeds:
            results.runs.append(protocol.ClassResult(c, s, 0.5 + 0.01 * c + 0.001 * s, 0.4, 1.0, 0.1, 300,
                                                     np.zeros(3), np.zeros(3)))
    return one_class.results_to_record(results, list(seeds))


def test_record_has_the_design_fields():
    record = _record([0, 1], seeds=(0, 1))
    for field in ("method", "dataset", "protocol", "seeds", "auroc", "mean_auroc", "std_auroc",
                  "train_seconds_per_class", "score_seconds_per_class", "full_data", "n_train_per_class"):
        assert field in record
    assert record["auroc"] == {"0": [0.5, 0.501], "1": [0.51, 0.511]}
    assert record["mean_auroc"] == pytest.approx(0.5055)
    assert record["std_auroc"] == pytest.approx(np.std([0.505, 0.506], ddof=1), abs=1e-6)
    assert record["full_data"] is False


def test_merge_keeps_other_classes_and_refuses_mixed_settings():
    merged = one_class.merge_records(_record([0, 1]), _record([1, 2]))
    assert set(merged["auroc"]) == {"0", "1", "2"}
    assert merged["mean_auroc"] == pytest.approx(np.mean([0.5, 0.51, 0.52]))
    with pytest.raises(ValueError, match="seeds"):
        one_class.merge_records(_record([0], seeds=(0,)), _record([1], seeds=(0, 1)))
    with pytest.raises(ValueError, match="disjoint"):  # new seeds, but on other classes
        one_class.merge_records(_record([0], seeds=(0,)), _record([1], seeds=(1, 2)))
    with pytest.raises(ValueError, match="data_source"):
        one_class.merge_records(_record([0]), _record([1], source="full"))


def test_merging_disjoint_seeds_equals_one_run_with_all_seeds():
    merged = one_class.merge_records(_record([0, 1], seeds=(0,)), _record([0, 1], seeds=(2, 1)))
    whole = _record([0, 1], seeds=(0, 1, 2))
    assert merged["seeds"] == [0, 1, 2]
    for field in ("auroc", "auprc", "mean_auroc", "std_auroc", "train_seconds_per_class", "score_seconds_per_class"):
        assert json.dumps(merged[field]) == json.dumps(whole[field]), field
    assert [run["seeds"] for run in merged["seed_runs"]] == [[0], [1, 2]]


def test_benchmark_cli_writes_json_and_readme(tmp_path, capsys):
    args = ["--method", "knn", "--dataset", "mnist", "--seeds", "0", "--source", "sample", "--out-dir", str(tmp_path)]
    assert one_class.main(args + ["--classes", "0"]) == 0
    assert one_class.main(args + ["--classes", "1"]) == 0  # merges into the same file
    record = json.loads((tmp_path / "knn__mnist.json").read_text())
    assert set(record["auroc"]) == {"0", "1"}
    assert record["peak_rss_mb"] > 0 and record["machine"] and record["data_source"] == "sample"
    readme = (tmp_path / "README.md").read_text()
    assert "knn" in readme and "## mnist" in readme and "Deep SVDD" in readme
    # the README is a pure function of the JSON files
    assert render_readme(tmp_path).read_text() == readme


def test_main_readme_results_table_is_rendered_from_the_json_files():
    from benchmarks.report import MAIN_README, README_END, README_START, results_summary_table

    text = MAIN_README.read_text()
    block = text.split(README_START, 1)[1].split(README_END, 1)[0].strip()
    assert block == results_summary_table(), "README results are stale: run `python -m benchmarks.report`"


class _TwoScoreDetector:
    """Mean intensity as the method's score, plus a second kind (its negative) via scores()."""

    def __init__(self, score_kind=None):
        self.score_kind, self.passes = score_kind, 0

    def fit(self, train_images):
        return self

    def score(self, images):
        self.passes += 1
        return images.flatten(1).mean(1).double()

    def scores(self, images):
        self.passes += 1
        mean = images.flatten(1).mean(1).double()
        return {"mean": mean, "negative": -mean}


@pytest.mark.parametrize("score_kind, passes", [(None, 2), ("mean", 1)])
def test_the_own_score_comes_from_the_same_pass_when_the_detector_names_it(monkeypatch, score_kind, passes):
    detector = _TwoScoreDetector(score_kind)
    monkeypatch.setitem(protocol.METHODS, "two-score-test", lambda context: detector)
    run = protocol.run_one_class("two-score-test", "mnist", [0], seeds=[0], progress=False).run(0)
    assert detector.passes == passes
    np.testing.assert_allclose(run.scores, run.scores_by_kind["mean"])


def test_run_one_class_keeps_every_score_kind_of_a_detector(monkeypatch):
    monkeypatch.setitem(protocol.METHODS, "two-score-test", lambda context: _TwoScoreDetector())
    run = protocol.run_one_class("two-score-test", "mnist", [0], seeds=[0], progress=False).run(0)
    assert set(run.scores_by_kind) == {"mean", "negative"}
    np.testing.assert_allclose(run.scores_by_kind["mean"], run.scores)
    # the negated score ranks every pair the other way round
    assert run.auroc_of("negative") == pytest.approx(1.0 - run.auroc, abs=1e-12)
    with pytest.raises(KeyError, match="known: mean, negative"):
        run.auroc_of("ssim")


class _OneScoreDetector:
    """A duck-typed detector (not on the course's base) with ``score`` only: mean intensity."""

    def fit(self, train_images):
        return self

    def score(self, images):
        return images.flatten(1).mean(1).double()


def test_a_detector_without_scores_has_no_extra_kinds(monkeypatch):
    monkeypatch.setitem(protocol.METHODS, "one-score-test", lambda context: _OneScoreDetector())
    run = protocol.run_one_class("one-score-test", "mnist", [0], seeds=[0], progress=False).run(0)
    assert run.scores_by_kind == {}
    with pytest.raises(KeyError, match="no scores"):
        run.auroc_of("mse")
