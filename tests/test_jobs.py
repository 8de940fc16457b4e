"""Parallel benchmark jobs: ``run_one_class(..., jobs=N)`` / ``python -m benchmarks.one_class --jobs N``
give the numbers of a one-thread sequential run, and jobs that need the same checkpoint take turns."""

from __future__ import annotations

import sys
import threading
import time

import pytest
import torch
from torch import nn

from benchmarks import one_class
from course_utils import protocol
from course_utils.checkpoints import checkpoint_path, lock_path, train_or_load
from course_utils.models.baselines import PCADetector


@pytest.fixture()
def one_thread():
    """Sequential runs with one PyTorch thread, as every worker has."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _runs(results: protocol.OneClassResults) -> list[tuple[int, int, float, int]]:
    return [(r.normal_class, r.seed, r.auroc, r.n_train) for r in results.runs]


def _weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def test_two_jobs_give_exactly_the_sequential_aurocs_in_the_same_order(tmp_path, monkeypatch, one_thread):
    # ae-l2 trains and caches a network per (class, seed); each run gets an empty cache, so both train
    kwargs = dict(classes=[1, 0], seeds=[0], fast=True, source="sample", progress=False)
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "sequential"))
    sequential = protocol.run_one_class("ae-l2", "mnist", **kwargs)
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "parallel"))
    parallel = protocol.run_one_class("ae-l2", "mnist", jobs=2, **kwargs)
    assert _runs(parallel) == _runs(sequential)
    assert [(c, s) for c, s, *_ in _runs(parallel)] == [(1, 0), (0, 0)]
    assert len(set(_runs(parallel))) == 2  # two different models, not one result repeated
    saved = sorted(p.name for p in (tmp_path / "parallel").glob("*.pt"))
    assert saved == sorted(p.name for p in (tmp_path / "sequential").glob("*.pt")) and len(saved) == 2
    for name in saved:  # the same weights, bit for bit (the files differ in their recorded timings)
        sequential_weights, parallel_weights = (_weights(tmp_path / run / name) for run in ("sequential", "parallel"))
        assert all(torch.equal(sequential_weights[k], parallel_weights[k]) for k in sequential_weights)


def test_one_pool_for_several_methods_and_datasets_gives_the_separate_sequential_runs(tmp_path, monkeypatch,
                                                                                       one_thread):
    # a notebook's live models of two methods on two datasets share one pool of two workers
    runs = {("knn", "fashion-mnist"): [3], ("pca", "mnist"): [0, 1]}   # no training: the pool itself is tested
    kwargs = dict(seeds=[0], fast=True, source="sample", progress=False)
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "sequential"))
    separate = {key: protocol.run_one_class(*key, classes, **kwargs) for key, classes in runs.items()}
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "parallel"))
    pooled = protocol.run_one_class_many(runs, jobs=2, **kwargs)
    assert list(pooled) == list(runs)
    for key, results in pooled.items():
        assert (results.method, results.dataset) == key and results.source == separate[key].source == "sample"
        assert _runs(results) == _runs(separate[key])
    assert [r.normal_class for r in pooled["pca", "mnist"].runs] == [0, 1]
    with pytest.raises(ValueError, match="at least one"):
        protocol.run_one_class_many({}, progress=False)


def test_the_cli_merges_parallel_results_into_the_same_json(tmp_path, one_thread):
    common = ["--method", "pca", "--dataset", "mnist", "--source", "sample", "--seeds", "0"]
    assert one_class.main(common + ["--classes", "0", "1", "--out-dir", str(tmp_path / "a")]) == 0
    assert one_class.main(common + ["--classes", "1", "--out-dir", str(tmp_path / "b")]) == 0
    assert one_class.main(common + ["--classes", "0", "--out-dir", str(tmp_path / "b"), "--jobs", "2"]) == 0
    import json

    sequential = json.loads((tmp_path / "a" / "pca__mnist.json").read_text())
    merged = json.loads((tmp_path / "b" / "pca__mnist.json").read_text())
    for key in ("auroc", "auprc", "mean_auroc", "std_auroc", "n_train_per_class"):
        assert merged[key] == sequential[key], key
    assert list(merged["auroc"]) == ["0", "1"] and merged["jobs"] == 2 and sequential["jobs"] == 1
    with pytest.raises(SystemExit):
        one_class.main(common + ["--jobs", "0"])


def test_bad_jobs_and_methods_unknown_to_a_worker_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="positive integer"):
        protocol.run_one_class("pca", "mnist", [0], jobs=0, progress=False)
    monkeypatch.setitem(protocol.METHODS, "notebook-pca", lambda context: PCADetector())
    with pytest.raises(ValueError, match="jobs=1"):
        protocol.run_one_class("notebook-pca", "mnist", [0, 1], source="sample", jobs=2, progress=False)
    monkeypatch.setitem(protocol.METHODS, "pca", lambda context: PCADetector(0.5))  # a built-in name, replaced
    with pytest.raises(ValueError, match="jobs=1"):
        protocol.run_one_class("pca", "mnist", [0, 1], source="sample", jobs=2, progress=False)


@pytest.mark.skipif(sys.platform == "win32", reason="the lock test relies on POSIX flock between threads")
def test_a_checkpoint_being_trained_is_loaded_by_the_second_job_not_trained_again(tmp_path):
    config = {"model": "test-v1", "seed": 0}
    trainings: list[str] = []
    started = threading.Event()
    outcome: dict[str, bool] = {}

    def job(tag: str, delay: float) -> None:
        model = nn.Linear(2, 2)

        def train_fn():
            trainings.append(tag)
            started.set()
            time.sleep(delay)  # the other job asks for the same checkpoint meanwhile
            with torch.no_grad():
                model.weight.fill_(1.0)
            return None

        outcome[tag] = train_or_load(model, "shared", config, train_fn, directory=tmp_path, verbose=False)[1]
        outcome[tag + "-weight"] = bool((model.weight == 1.0).all())

    first = threading.Thread(target=job, args=("first", 0.5))
    first.start()
    assert started.wait(10)
    second = threading.Thread(target=job, args=("second", 0.0))
    second.start()
    first.join(20)
    second.join(20)
    assert trainings == ["first"]
    assert outcome == {"first": False, "first-weight": True, "second": True, "second-weight": True}
    assert checkpoint_path("shared", config, tmp_path).is_file()
    assert lock_path(checkpoint_path("shared", config, tmp_path)).name.startswith(".")
