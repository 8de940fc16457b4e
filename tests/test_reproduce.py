"""benchmarks.reproduce: reruns a committed one-class result and reports the difference."""

from __future__ import annotations

import json

import pytest

from benchmarks import reproduce as repro
from course_utils.protocol import evaluate_one_class


def _record(auroc: float, method: str = "pca") -> dict:
    return {"method": method, "dataset": "mnist", "protocol": "one-class", "seeds": [0, 1],
            "auroc": {"0": [auroc, 0.5]}, "git_commit": "abc1234"}


def test_reproduce_reruns_the_protocol_and_reports_the_difference():
    expected, _ = evaluate_one_class("pca", "mnist", 0, seed=0, fast=False, source="sample")
    row = repro.reproduce(_record(0.25), 0, 0, source="sample")
    assert row.rerun_auroc == pytest.approx(expected.auroc, abs=1e-6)
    assert row.difference == pytest.approx(expected.auroc - 0.25, abs=1e-6)
    assert row.committed_commit == "abc1234"


def test_reproduce_refuses_a_class_or_seed_that_was_not_committed():
    with pytest.raises(ValueError, match="no committed class 3"):
        repro.reproduce(_record(0.9), 3, 0, source="sample")
    with pytest.raises(ValueError, match="seeds \\[0, 1\\], not 2"):
        repro.reproduce(_record(0.9), 0, 2, source="sample")


def test_committed_records_filters_and_skips_other_protocols(tmp_path):
    (tmp_path / "pca__mnist.json").write_text(json.dumps(_record(0.9)))
    (tmp_path / "knn__mnist.json").write_text(json.dumps(_record(0.9, "knn")))
    (tmp_path / "aeflow__pneumoniamnist.json").write_text(json.dumps({"protocol": "normal-vs-pneumonia"}))
    assert [r["method"] for r in repro.committed_records(tmp_path)] == ["knn", "pca"]
    assert [r["method"] for r in repro.committed_records(tmp_path, methods=["pca"])] == ["pca"]
    assert repro.committed_records(tmp_path, datasets=["fashion-mnist"]) == []


def test_committed_records_names_a_method_that_is_no_longer_registered(tmp_path):
    (tmp_path / "gone__mnist.json").write_text(json.dumps(_record(0.9, "gone")))
    with pytest.raises(ValueError, match="gone__mnist.json: method 'gone' is no longer registered"):
        repro.committed_records(tmp_path)
