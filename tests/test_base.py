"""The detector base (course_utils.models.base) and the method context of the protocol."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest
import torch
from torch import Tensor, nn

from course_utils import protocol
from course_utils.models.base import Detector, NotFittedError
from course_utils.training import train


class _Recorder(Detector):
    """A toy detector: a linear model of the flattened images, score = squared reconstruction error.

    Records the order of the hook calls and the first random number drawn in ``build`` (to see the seed).
    """

    score_kinds = ("error", "negative")
    checkpoint_parts = ("model",)

    def __init__(self, *, seed: int = 0, cache: bool = True, score: str = "error") -> None:
        super().__init__(score, seed=seed, device="cpu", cache=cache)
        self.calls: list[str] = []
        self.model: nn.Module | None = None
        self.first_draw: float | None = None

    def validate(self, train_images: Tensor) -> None:
        self.calls.append("validate")
        super().validate(train_images)

    def build(self, train_images: Tensor) -> None:
        self.calls.append("build")
        self.first_draw = float(torch.rand(()))
        d = train_images[0].numel()
        self.model = nn.Linear(d, d)

    def train(self, train_images: Tensor) -> None:
        self.calls.append("train")
        x = train_images.flatten(1)

        def train_fn():
            return train(self.model, lambda m, b: (m(b[0]) - b[0]).square().mean(), x, epochs=2, batch_size=4,
                         seed=self.seed, device="cpu")

        self.load_or_train("model", self.model, "toy", self.cache_config(train_images), train_fn)

    def finish(self, train_images: Tensor) -> None:
        self.calls.append("finish")
        self.train_mean = float(self.score(train_images).mean())  # the detector may score here

    def cache_config(self, train_images: Tensor, part: str | None = None) -> dict:
        from course_utils.checkpoints import data_fingerprint

        self._part(part)
        return {"model": "toy-v1", "seed": self.seed, "data": data_fingerprint(train_images)}

    def scores(self, images: Tensor, kinds: Sequence[str] | None = None) -> dict[str, Tensor]:
        kinds = self.requested_kinds(kinds)
        self.check_fitted()
        x = images.flatten(1)
        with torch.no_grad():
            error = (self.model(x) - x).square().mean(1).double()
        return {k: error if k == "error" else -error for k in kinds}


def _images(n: int = 8, seed: int = 0) -> Tensor:
    return torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed))


def test_fit_runs_the_hooks_in_order_and_seeds_before_build(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    torch.manual_seed(123)  # whatever the global RNG held before, fit seeds it
    det = _Recorder(seed=7, cache=False)
    assert det.fit(_images()) is det
    assert det.calls == ["validate", "build", "train", "finish"]
    torch.manual_seed(7)
    assert det.first_draw == float(torch.rand(()))
    assert det.train_mean >= 0.0


def test_validation_failure_stops_before_anything_is_built():
    det = _Recorder(cache=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        det.fit(_images() * 3)
    assert det.calls == ["validate"] and det.model is None
    with pytest.raises(NotFittedError):
        det.score(_images())


def test_cache_hit_sets_loaded_from_cache_and_restores_the_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    x, test = _images(), _images(5, seed=1)
    first = _Recorder().fit(x)
    assert first.cache_hits == {"model": False} and not first.loaded_from_cache
    again = _Recorder().fit(x)
    assert again.cache_hits == {"model": True} and again.loaded_from_cache
    assert torch.equal(again.score(test), first.score(test))
    assert len(list(tmp_path.glob("toy-*.pt"))) == 1
    # other data: another key, trained again; no cache: always trained
    assert not _Recorder().fit(_images(seed=3)).loaded_from_cache
    assert not _Recorder(cache=False).fit(x).loaded_from_cache
    assert not _Recorder().loaded_from_cache  # before fit


def test_unfitted_use_raises_a_clear_error():
    det = _Recorder()
    with pytest.raises(NotFittedError, match=r"call fit\(train_images\) before using the _Recorder"):
        det.score(_images())
    with pytest.raises(RuntimeError):  # NotFittedError is a RuntimeError
        det.scores(_images())


def test_score_is_the_own_kind_of_scores_and_kinds_are_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    det = _Recorder(score="negative").fit(_images())
    test = _images(5, seed=2)
    both = det.scores(test)
    assert set(both) == {"error", "negative"}
    assert torch.equal(det.score(test), both["negative"])
    assert torch.equal(det.score(test, "error"), both["error"])
    assert set(det.scores(test, ["error"])) == {"error"}
    with pytest.raises(ValueError, match="kind must be one of"):
        det.scores(test, ["ssim"])
    with pytest.raises(ValueError, match="score must be one of"):
        _Recorder(score="ssim")
    with pytest.raises(ValueError, match="has checkpoints"):
        det.cache_config(test, "encoder")


def test_closed_form_detectors_have_no_checkpoint():
    from course_utils.models.baselines import PCADetector

    det = PCADetector(3).fit(_images(8))
    assert det.checkpoint_parts == () and not det.loaded_from_cache
    with pytest.raises(ValueError, match="closed form"):
        det.cache_config(_images(8))


def test_factories_receive_one_context(monkeypatch):
    seen = []

    def factory(context: protocol.MethodContext) -> Detector:
        seen.append(context)
        return _Recorder(seed=context.seed, cache=False)

    monkeypatch.setitem(protocol.METHODS, "toy-context", factory)
    det = protocol.make_detector("toy-context", 3, True, dataset="fashion-mnist", source="sample")
    assert isinstance(det, _Recorder) and det.seed == 3
    assert seen == [protocol.MethodContext(seed=3, fast=True, dataset="fashion-mnist", source="sample")]
    with pytest.raises(dataclasses.FrozenInstanceError):
        seen[0].seed = 4
    with pytest.raises(ValueError, match="factory"):
        protocol.register_method("toy-bad", "not a function")


@pytest.mark.parametrize("method", sorted(protocol.METHODS))
def test_every_method_is_a_detector_on_the_base(method):
    det = protocol.METHODS[method](protocol.MethodContext(seed=0, fast=True, dataset="mnist", source="sample"))
    assert isinstance(det, Detector)
    assert det.score_kind in det.score_kinds
    with pytest.raises(NotFittedError):
        det.score(_images(2))
