"""benchmarks.select_settings: the validation protocol that replaced choices made on test numbers."""

from __future__ import annotations

import json

import pytest

from benchmarks import select_settings
from benchmarks.select_settings import candidates, select
from course_utils.models.fanogan import FULL_SETTINGS
from course_utils.models.glow import BPD_CONFIG, FINAL_SCALE_CONFIG


def test_the_first_candidate_is_the_setting_the_code_uses():
    assert candidates("fanogan", fast=False)["lr 1e-3, batch 16"] == FULL_SETTINGS
    assert next(iter(candidates("glow-final-scale", fast=False).values())) == FINAL_SCALE_CONFIG
    assert next(iter(candidates("glow-bpd", fast=False).values())) == BPD_CONFIG
    for target in select_settings.TARGETS:
        values = list(candidates(target, fast=False).values())
        assert len(values) >= 3 and len(set(map(repr, values))) == len(values), "candidates must differ"
    with pytest.raises(ValueError, match="target must be one of"):
        candidates("pca", fast=False)


@pytest.mark.parametrize("target", select_settings.TARGETS)
def test_select_uses_the_training_split_only_and_picks_the_best_criterion(target, monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_FAST", "1")
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "cache"))
    # never the test split: loading it here is a protocol violation
    import course_utils.selection as selection_module
    real_load = selection_module.load_dataset

    def train_only(name, split, *args, **kwargs):
        assert split == "train", f"select_settings loaded the {split} split"
        return real_load(name, split, *args, **kwargs)

    monkeypatch.setattr(selection_module, "load_dataset", train_only)
    record = select(target, classes=(0,), source="sample", bpd_steps=20)
    assert record["test_split_used"] is False and record["protocol"] == "settings-selection"
    valid = [r for r in record["candidates"] if r["criterion_mean"] is not None]
    best = (min if target == "glow-bpd" else max)(r["criterion_mean"] for r in valid)
    chosen = next(r for r in record["candidates"] if r["name"] == record["chosen"])
    assert chosen["criterion_mean"] == best
    assert record["matches_code"] == (record["chosen"] == record["in_code"] == record["candidates"][0]["name"])
    if target == "glow-bpd":
        assert record["groups"]["all"]["n_held_out_other"] == 0
        steps = [r["per_group"]["all"]["steps"] for r in record["candidates"]]
        assert steps[-1] < steps[0], "the batch-128 candidate sees the same images in fewer steps"
    else:
        assert all(0.0 <= r["criterion_mean"] <= 1.0 for r in valid)
    # the record renders and survives JSON
    json.loads(json.dumps(record))
    assert record["chosen"] in select_settings.render_markdown(record)


def _settings_dict(settings) -> dict:
    from dataclasses import asdict

    return json.loads(json.dumps(settings.to_dict() if hasattr(settings, "to_dict") else asdict(settings)))


@pytest.mark.parametrize("target", select_settings.TARGETS)
def test_the_code_uses_what_the_committed_selection_chose(target):
    """Every committed selection record's chosen candidate is the setting the code uses now: a setting the
    protocol did not choose cannot sit in course_utils.models unnoticed."""
    path = select_settings.RESULTS_DIR / f"selection__{target}.json"
    if not path.exists():
        pytest.skip(f"{path.name} is not committed yet (python -m benchmarks.select_settings {target})")
    record = json.loads(path.read_text())
    chosen = next(r for r in record["candidates"] if r["name"] == record["chosen"])
    in_code = next(iter(candidates(target, fast=False).values()))
    assert chosen["settings"] == _settings_dict(in_code), (
        f"{path.name} chose {record['chosen']!r}, but the code uses other settings: change the code to the "
        f"protocol's choice (and rerun the affected benchmarks), or rerun the selection")
