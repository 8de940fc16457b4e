"""The cases of the prediction exercises and the SSIM encoder-loss exercise, graded as the grader does.

Each answer is evaluated on cases drawn with a fresh seed, its output sent through the JSON
transport of the kernel probe, and compared with the reference in this process; points are
per case (``course_grader.verdict``). The solution gets every case, the stub none, a wrong
answer none, and a typical mistake loses the cases that test it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from course_grader.contract import decode, encode
from course_grader.exercises import get_spec
from course_grader.exercises import predictions

SEEDS = (11, 12)


def _cases_passed(grade_id: str, answer, seed: int) -> tuple[int, int, list[str]]:
    """(cases passed, cases, messages) of ``answer`` on the cases of ``grade_id`` drawn with ``seed``."""
    spec = get_spec(grade_id)
    cases = spec.draw(np.random.default_rng(seed))
    messages = []
    for case in cases:
        try:
            found = decode(json.loads(json.dumps(encode(spec.run(answer, case)))))
        except NotImplementedError:
            messages.append("not solved")
            continue
        except Exception as error:  # the probe records an error: the case fails
            messages.append(f"raised {type(error).__name__}")
            continue
        message = spec.compare(case, spec.expected(case), found)
        if message:
            messages.append(message)
    return len(cases) - len(messages), len(cases), messages


def _stub(*args, **kwargs):
    raise NotImplementedError()


# --------------------------------------------------------------------------- predictions
# solution (computed independently of the module, from the committed JSON) and wrong answers
def _solution_hardest_class():
    means = [np.mean([np.mean(predictions.benchmark_record(f"{m}__fashion-mnist")["auroc"][str(c)])
                      for m in ("pca", "knn")]) for c in range(10)]
    return int(np.argmin(means))


PREDICTIONS = {
    "ex-predict-hardest-class": (_solution_hardest_class, [lambda: (_solution_hardest_class() + 1) % 10, lambda: "shirt",
                                                           lambda: None]),
    "ex-predict-better-loss": (
        lambda: {d: ("ssim" if predictions.benchmark_record(f"ae-ssim__{d}")["mean_auroc"]
                     > predictions.benchmark_record(f"ae-l2__{d}")["mean_auroc"] else "l2")
                 for d in ("mnist", "fashion-mnist")},
        [lambda: {"mnist": "l1", "fashion-mnist": "l2"}, lambda: "ssim", lambda: {"mnist": "ssim"}]),
    "ex-predict-ssim-score-gain": (lambda: predictions.ssim_score_gain(), [lambda: "always", lambda: 3]),
    "ex-predict-best-codec": (lambda: predictions.best_codec(), [lambda: "gif", lambda: ["png"]]),
    "ex-predict-below-chance": (lambda: predictions.scores_below_chance(),
                                [lambda: "MSE", lambda: ["MSE", "no such score"], lambda: {"x": 1}]),
}


@pytest.mark.parametrize("grade_id", sorted(PREDICTIONS))
def test_prediction_gets_its_point_for_the_right_answer_only(grade_id):
    solution, wrongs = PREDICTIONS[grade_id]
    assert _cases_passed(grade_id, solution, SEEDS[0])[:2] == (1, 1)
    assert _cases_passed(grade_id, _stub, SEEDS[0]) == (0, 1, ["not solved"])
    for wrong in wrongs:
        passed, _, messages = _cases_passed(grade_id, wrong, SEEDS[0])
        assert passed == 0
        assert ("expected" in messages[0] and "Hint:" in messages[0]) or messages[0].startswith("raised")


def test_prediction_answers_are_decided_by_the_committed_benchmarks():
    """Each reference is a different choice from a wrong one, so no constant answers every prediction."""
    assert predictions.hardest_fashion_class() == _solution_hardest_class()
    assert set(predictions.better_loss_per_dataset().values()) <= set(predictions.LOSSES)
    assert predictions.ssim_score_gain() in predictions.GAIN_OPTIONS
    from course_utils.complexity import CODECS

    assert predictions.best_codec() in CODECS
    assert set(predictions.scores_below_chance()) <= set(predictions.BELOW_CHANCE_OPTIONS)


def test_prediction_accepts_the_same_answer_written_differently():
    loss = predictions.better_loss_per_dataset()
    assert _cases_passed("ex-predict-better-loss", lambda: {k: f" {v.upper()} " for k, v in loss.items()}, 1)[0] == 1
    assert _cases_passed("ex-predict-below-chance", lambda: tuple(reversed(predictions.scores_below_chance())), 1)[0] == 1
    hardest = predictions.hardest_fashion_class()
    assert _cases_passed("ex-predict-hardest-class", lambda: np.int64(hardest), 1)[0] == 1


def test_a_missing_benchmark_file_is_named(monkeypatch, tmp_path):
    import course_utils.config

    monkeypatch.setattr(course_utils.config, "REPO_ROOT", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"knn__fashion-mnist\.json.*git checkout"):
        predictions.benchmark_record("knn__fashion-mnist")


# --------------------------------------------------------------------------- ex-izif-ssim-loss
def _ssim(x, y):
    from pytorch_msssim import ssim

    return ssim(x, y, data_range=1.0, size_average=False)


def _izif_solution(x, x_rec, f_x, f_rec, kappa=1.0):
    return ((1 - _ssim(x, x_rec)) + kappa * (f_x - f_rec).square().mean(1)).mean()


def _izif_off_by_one(x, x_rec, f_x, f_rec, kappa=1.0):
    return _izif_solution(x, x_rec, f_x, f_rec, kappa) + 1.0


def _izif_summed(x, x_rec, f_x, f_rec, kappa=1.0):
    return ((1 - _ssim(x, x_rec)) + kappa * (f_x - f_rec).square().mean(1)).sum()


def _izif_detached(x, x_rec, f_x, f_rec, kappa=1.0):
    return _izif_solution(x, x_rec, f_x, f_rec, kappa).detach()


def _izif_mse(x, x_rec, f_x, f_rec, kappa=1.0):
    return ((x - x_rec).square().flatten(1).mean(1) + kappa * (f_x - f_rec).square().mean(1)).mean()


def _izif_per_image(x, x_rec, f_x, f_rec, kappa=1.0):
    return (1 - _ssim(x, x_rec)) + kappa * (f_x - f_rec).square().mean(1)


@pytest.mark.parametrize("seed", SEEDS)
def test_izif_ssim_loss_cases(seed):
    grade = "ex-izif-ssim-loss"
    passed, n, messages = _cases_passed(grade, _izif_solution, seed)
    assert (passed, n) == (6, 6), messages
    assert _cases_passed(grade, _stub, seed)[0] == 0
    assert _cases_passed(grade, _izif_off_by_one, seed)[0] == 0
    assert _cases_passed(grade, _izif_detached, seed)[0] == 0           # right value, no gradient: every case
    assert _cases_passed(grade, _izif_per_image, seed)[0] == 1          # not a scalar, except for one image
    summed, _, messages = _cases_passed(grade, _izif_summed, seed)
    assert summed == 2                                                  # only loss 0 and the one-image case
    assert any("you summed over the images" in m for m in messages)
    assert _cases_passed(grade, _izif_mse, seed)[0] == 1                # only the perfect reconstruction
    assert _cases_passed(grade, lambda x, x_rec, f_x, f_rec, kappa=1.0: _izif_solution(x, x_rec, f_x, f_rec, 1.0),
                         seed)[0] == 3                                  # kappa ignored: the kappa-1 cases pass


def test_izif_ssim_loss_reference_is_the_course_encoder_loss():
    """The declared reference equals what FAnoGANDetector(encoder_image_loss="ssim") trains with."""
    from course_grader.exercises.encoder_loss import izif_ssim_loss_reference
    from course_utils.config import seed_everything
    from course_utils.models import fanogan as fa

    seed_everything(0)
    gan, encoder = fa.WGAN(8, 4).eval(), fa.Encoder(8, 4)
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        x_rec = gan.generator(encoder(x))
        course = fa.encoder_loss("izif", encoder, gan, x, kappa=0.7, image_loss="ssim")["loss"]
        reference = izif_ssim_loss_reference(x, x_rec, gan.critic.features(x), gan.critic.features(x_rec), 0.7)
    assert float(reference) == pytest.approx(float(course), rel=1e-6)


# --------------------------------------------------------------------------- notebook 05: balanced accuracy
def _balanced_accuracy_solution(scores, labels, threshold):
    predicted = scores >= threshold
    sen = np.sum(predicted & (labels == 1)) / np.sum(labels == 1)
    spe = np.sum(~predicted & (labels == 0)) / np.sum(labels == 0)
    return (sen + spe) / 2


def _accuracy_instead(scores, labels, threshold):
    return np.mean((scores >= threshold) == (labels == 1))


def _strict_threshold(scores, labels, threshold):
    return _balanced_accuracy_solution(scores, labels, threshold + 1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_balanced_accuracy_cases(seed):
    grade = "ex-balanced-accuracy"
    passed, n, messages = _cases_passed(grade, _balanced_accuracy_solution, seed)
    assert (passed, n) == (5, 5), messages
    assert _cases_passed(grade, _stub, seed)[0] == 0
    assert _cases_passed(grade, lambda s, y, t: 0, seed)[0] == 0
    # the accuracy agrees only where the classes are balanced or everything is right
    accuracy, _, messages = _cases_passed(grade, _accuracy_instead, seed)
    assert accuracy <= 2 and any("not the accuracy" in m for m in messages)
    # '>' instead of '>=': loses the case whose threshold is a score value
    strict, _, messages = _cases_passed(grade, _strict_threshold, seed)
    assert strict == 4 and any("ties" in m for m in messages)


def test_balanced_accuracy_recovers_reproduction_a_auc():
    """(SEN + SPE) / 2 at reproduction A's counts is the number it called AUC (0.8197)."""
    spec = get_spec("ex-balanced-accuracy")
    (case,) = [c for c in spec.draw(np.random.default_rng(0)) if c.name.startswith("reproduction A")]
    from course_utils.models.aeflow import reported_row

    row = reported_row("reproduction A, ResNet-type subnet")
    assert round(100 * spec.expected(case), 2) == row["auc"] == round((row["sen"] + row["spe"]) / 2, 2)


# --------------------------------------------------------------------------- notebook 05: FlowGMM posterior
def _posterior_solution(log_normal, log_pneumonia, prior):
    d = log_pneumonia - log_normal + np.log(prior / (1 - prior))
    return np.where(d >= 0, 1 / (1 + np.exp(-np.abs(d))), np.exp(-np.abs(d)) / (1 + np.exp(-np.abs(d))))


def _posterior_naive(log_normal, log_pneumonia, prior):
    with np.errstate(all="ignore"):
        a, b = (1 - prior) * np.exp(log_normal), prior * np.exp(log_pneumonia)
        return b / (a + b)


def _posterior_prior_ignored(log_normal, log_pneumonia, prior):
    return _posterior_solution(log_normal, log_pneumonia, 0.5)


def _posterior_normal_component(log_normal, log_pneumonia, prior):
    return 1 - _posterior_solution(log_normal, log_pneumonia, prior)


@pytest.mark.parametrize("seed", SEEDS)
def test_flowgmm_posterior_cases(seed):
    grade = "ex-flowgmm-posterior"
    passed, n, messages = _cases_passed(grade, _posterior_solution, seed)
    assert (passed, n) == (5, 5), messages
    assert _cases_passed(grade, _stub, seed)[0] == 0
    assert _cases_passed(grade, lambda a, b, p: 0, seed)[0] == 0
    naive, _, messages = _cases_passed(grade, _posterior_naive, seed)  # exp() underflows at D in the thousands
    assert naive == 4 and any("underflows" in m for m in messages)
    assert _cases_passed(grade, _posterior_prior_ignored, seed)[0] == 3       # only the prior-1/2 cases
    assert _cases_passed(grade, _posterior_normal_component, seed)[0] == 1    # the trivial case only (it alone scores 0)
