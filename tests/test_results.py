"""course_utils.results: loading committed benchmark tables, their provenance and the protocol check."""

from __future__ import annotations

import json

import numpy as np
import pytest

from course_utils import protocol
from course_utils.results import (RESULTS_DIR, BenchmarkTable, ProtocolMismatchError, load_benchmark,
                                  regenerate_command)


def _write_record(folder, method="pca", dataset="mnist", settings=None, **extra):
    record = {
        "method": method, "dataset": dataset, "protocol": "one-class", "seeds": [0, 1],
        "auroc": {"1": [0.8, 0.9], "0": [0.6, 0.7]},  # out of order, as a merged run writes it
        "mean_auroc": 0.75, "std_auroc": 0.1, "train_seconds_per_class": {"0": 2.5, "1": 3.5},
        "git_commit": "abc1234", "machine": "x86_64, 2 cores", "data_source": "full", "full_data": True,
        "fast_mode": False, **extra,
    }
    if settings is not None:
        record["settings"] = settings
    path = folder / f"{method}__{dataset}.json"
    path.write_text(json.dumps(record))
    return path


def test_loads_per_class_values_in_class_order_with_provenance(tmp_path):
    _write_record(tmp_path)
    table = load_benchmark("pca", "mnist", tmp_path)
    assert isinstance(table, BenchmarkTable)
    assert list(table.per_class) == [0, 1]
    assert table.per_class[0] == [0.6, 0.7]
    assert table.class_mean(1) == pytest.approx(0.85)
    assert table.seeds == [0, 1] and table.mean_auroc == 0.75 and table.train_seconds_per_class[1] == 3.5
    for fact in ("python -m benchmarks.one_class --method pca --dataset mnist", "abc1234", "x86_64, 2 cores",
                 "data source: full", "loaded from"):
        assert fact in table.provenance
    assert table.command == regenerate_command("pca", "mnist")


def test_markdown_shows_every_class_the_mean_and_the_provenance(tmp_path):
    _write_record(tmp_path)
    text = load_benchmark("pca", "mnist", tmp_path).markdown(class_names=["zero", "one"])
    assert "0 (zero) | 0.650 ± 0.071" in text and "1 (one) | 0.850 ± 0.071" in text
    assert "| mean | 0.750" in text
    assert "Loaded from `benchmarks/results/pca__mnist.json`" in text
    assert load_benchmark("pca", "mnist", tmp_path)._repr_markdown_() == \
        load_benchmark("pca", "mnist", tmp_path).markdown()


def test_frame_and_rows(tmp_path):
    _write_record(tmp_path)
    table = load_benchmark("pca", "mnist", tmp_path)
    assert [r["class"] for r in table.rows()] == [0, 1, "mean"]
    pd = pytest.importorskip("pandas")
    frame = table.frame()
    assert isinstance(frame, pd.DataFrame)
    assert frame.loc["mean", "mean AUROC"] == pytest.approx(0.75)


def test_a_missing_file_names_the_command_that_writes_it(tmp_path):
    _write_record(tmp_path)
    with pytest.raises(FileNotFoundError) as error:
        load_benchmark("pca", "fashion-mnist", tmp_path)
    message = str(error.value)
    assert "python -m benchmarks.one_class --method pca --dataset fashion-mnist" in message
    assert "pca__mnist.json" in message  # what is there instead
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_benchmark("pca", "mnist", tmp_path / "nowhere")


def test_a_broken_or_foreign_file_is_refused_clearly(tmp_path):
    (tmp_path / "pca__mnist.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_benchmark("pca", "mnist", tmp_path)
    (tmp_path / "pca__mnist.json").write_text(json.dumps({"method": "pca"}))
    with pytest.raises(ValueError, match="lacks"):
        load_benchmark("pca", "mnist", tmp_path)
    _write_record(tmp_path, method="knn")
    (tmp_path / "knn__mnist.json").rename(tmp_path / "pca__mnist.json")
    with pytest.raises(ValueError, match="holds 'knn'"):
        load_benchmark("pca", "mnist", tmp_path)


def test_check_protocol_without_stored_settings_checks_protocol_method_and_dataset(tmp_path):
    _write_record(tmp_path)
    table = load_benchmark("pca", "mnist", tmp_path)
    assert table.settings is None and "settings not recorded" in table.provenance
    table.check_protocol(protocol.method_settings("pca", dataset="mnist"))  # passes
    with pytest.raises(ProtocolMismatchError, match="method: the results have 'pca'"):
        table.check_protocol(protocol.method_settings("knn", dataset="mnist"))
    with pytest.raises(ProtocolMismatchError, match="dataset"):
        table.check_protocol(protocol.method_settings("pca", dataset="fashion-mnist"))
    with pytest.raises(ProtocolMismatchError, match="protocol: the results have 'one-class'"):
        table.check_protocol({**protocol.method_settings("pca", dataset="mnist"), "protocol": "leave-one-out"})
    with pytest.raises(ProtocolMismatchError, match="fast mode"):
        table.check_protocol(protocol.method_settings("pca", dataset="mnist", fast=True))
    with pytest.raises(ProtocolMismatchError, match="must name"):
        table.check_protocol({})
    with pytest.raises(TypeError):
        table.check_protocol("pca")  # type: ignore[arg-type]


def test_check_protocol_with_stored_settings_names_the_changed_setting(tmp_path):
    stored = protocol.method_settings("ae-ssim", dataset="mnist")
    _write_record(tmp_path, method="ae-ssim", settings=json.loads(json.dumps(stored)))
    table = load_benchmark("ae-ssim", "mnist", tmp_path)
    table.check_protocol(protocol.method_settings("ae-ssim", dataset="mnist"))
    changed = json.loads(json.dumps(stored))
    changed["detector"]["settings"]["lr"] = 0.01
    with pytest.raises(ProtocolMismatchError, match=r"settings\.lr: 0\.001 in the results, 0\.01 now") as error:
        table.check_protocol(changed)
    assert "python -m benchmarks.one_class --method ae-ssim --dataset mnist" in str(error.value)


def test_method_settings_hold_what_changes_a_result_and_not_the_runtime():
    settings = protocol.method_settings("fanogan", dataset="mnist")
    detector = settings["detector"]
    assert settings["protocol"] == "one-class" and settings["method"] == "fanogan" and settings["fast"] is False
    assert detector["class"] == "FAnoGANDetector" and detector["mode"] == "izif" and detector["kappa"] == 1.0
    assert "gan_iters" in detector["settings"]
    for runtime in ("seed", "device", "cache", "progress"):
        assert runtime not in detector
    json.dumps(settings)  # plain JSON, storable in the record
    assert protocol.method_settings("fanogan", dataset="mnist", fast=True)["detector"] != detector


@pytest.mark.parametrize("method,dataset", [("pca", "mnist"), ("fanogan", "fashion-mnist"), ("ae-ssim", "mnist")])
def test_the_committed_tables_load_and_match_the_current_protocol(method, dataset):
    table = load_benchmark(method, dataset)
    assert table.path.parent == RESULTS_DIR
    assert len(table.per_class) == 10
    assert table.mean_auroc == pytest.approx(np.mean([np.mean(v) for v in table.per_class.values()]), abs=1e-6)
    table.check_protocol(protocol.method_settings(method, dataset=dataset))


def test_the_benchmark_record_stores_the_settings(tmp_path):
    from benchmarks import one_class

    args = ["--method", "pca", "--dataset", "mnist", "--seeds", "0", "--source", "sample", "--classes", "0",
            "--out-dir", str(tmp_path)]
    assert one_class.main(args) == 0
    record = json.loads((tmp_path / "pca__mnist.json").read_text())
    assert record["settings"]["detector"]["n_components"] == 0.9
    table = load_benchmark("pca", "mnist", tmp_path)
    table.check_protocol(protocol.method_settings("pca", dataset="mnist", fast=table.fast_mode))


def test_one_seed_is_reported_as_one_seed_not_as_zero_spread():
    from benchmarks.sections import mean_over_seeds

    assert mean_over_seeds(0.9094, 0.0, [0]) == "0.909 (seed 0 only)"
    assert mean_over_seeds(0.9094, 0.0, [0, 1, 2]) == "0.909 ± 0.000"  # a measured zero spread stays
    assert mean_over_seeds(0.8711, 0.0123, (1, 2)) == "0.871 ± 0.012 (seeds 1, 2)"  # not the protocol's three
    assert mean_over_seeds(0.8711, 0.0123, (0, 1, 2)) == "0.871 ± 0.012"
