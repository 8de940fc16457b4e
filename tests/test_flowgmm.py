"""FlowGMM in AE-FLOW: the mixture density, posteriors, the labelled / unlabelled loss terms, k = 0, the cache key."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from course_utils.models.aeflow import (UNLABELLED, AEFlowConfig, AEFlowDetector, AEFlowGMM, FlowGMMDetector,
                                        FlowGMMSettings, GaussianMixtureBase, aeflow_loss, flowgmm_loss)

TINY = dict(feature_channels=8, encoder_widths=(8, 8, 8), decoder_widths=(8, 8), n_flow_blocks=2, epochs=1,
            batch_size=8)


def test_mixture_log_density_matches_scipy():
    settings = FlowGMMSettings(mean_scale=0.7, mean_seed=3, anomaly_prior=0.3)
    mixture = GaussianMixtureBase(5, settings)
    z = torch.randn(7, 5, generator=torch.Generator().manual_seed(1)) * 1.5
    mu1 = mixture.anomaly_mean.detach().numpy().astype(np.float64)
    expected = np.stack([multivariate_normal(np.zeros(5), np.eye(5)).logpdf(z.numpy()),
                         multivariate_normal(mu1, np.eye(5)).logpdf(z.numpy())], axis=1)
    assert np.allclose(mixture.component_log_density(z).numpy(), expected, atol=1e-4)
    marginal = np.log(0.7 * np.exp(expected[:, 0]) + 0.3 * np.exp(expected[:, 1]))
    assert np.allclose(mixture.log_density(z).numpy(), marginal, atol=1e-4)
    # mu_1 = mean_scale * N(0, I) draw of its own seeded generator
    assert torch.allclose(mixture.anomaly_mean, 0.7 * torch.randn(5, generator=torch.Generator().manual_seed(3)))


def test_posteriors_sum_to_one_and_follow_the_ratio():
    mixture = GaussianMixtureBase(6, FlowGMMSettings(anomaly_prior=0.2))
    z = torch.randn(10, 6)
    post = mixture.posterior(z)
    assert post.dtype == torch.float64 and torch.allclose(post.sum(1), torch.ones(10, dtype=torch.float64))
    llr = mixture.log_likelihood_ratio(z).double()
    expected = torch.sigmoid(6 * llr + math.log(0.2 / 0.8))
    assert torch.allclose(post[:, 1], expected, atol=1e-5)
    # the anomaly mean itself is more anomalous than the normal mean
    centres = torch.stack([torch.zeros(6), mixture.anomaly_mean.detach()])
    llr_centres = mixture.log_likelihood_ratio(centres)
    assert llr_centres[1] > 0 > llr_centres[0]


def test_labelled_and_unlabelled_terms_of_the_loss():
    torch.manual_seed(0)
    model = AEFlowGMM(AEFlowConfig.reduced(**TINY), FlowGMMSettings(anomaly_prior=0.4)).eval()
    x = torch.rand(3, 1, 32, 32)
    labels = torch.tensor([0, 1, UNLABELLED])
    loss = flowgmm_loss(model, x, labels)
    with torch.no_grad():
        out = model(x)
        z = out.z_prime.flatten(1)
        d = z.shape[1]
        comp = model.mixture.component_log_density(z)
        jac = out.log_jac_det
        expected = torch.stack([-(comp[0, 0] + jac[0]) / d, -(comp[1, 1] + jac[1]) / d,
                                -(torch.logsumexp(comp[2] + torch.log(torch.tensor([0.6, 0.4])), 0) + jac[2]) / d])
        recon = (out.x_hat[0] - x[0]).square().mean()  # only the image labelled normal
    assert torch.allclose(loss["flow"], expected.mean(), atol=1e-5)
    assert torch.allclose(loss["labelled"], expected[:2].mean(), atol=1e-5)
    assert torch.allclose(loss["unlabelled"], expected[2], atol=1e-5)
    assert torch.allclose(loss["recon"], recon, atol=1e-6)
    assert torch.allclose(loss["loss"], 0.5 * loss["flow"] + 0.5 * loss["recon"])
    with pytest.raises(ValueError, match="labels"):
        flowgmm_loss(model, x, torch.tensor([0, 2, 0]))


def test_k0_loss_is_the_one_class_loss():
    torch.manual_seed(0)
    model = AEFlowGMM(AEFlowConfig.reduced(**TINY), FlowGMMSettings()).eval()
    x = torch.rand(4, 1, 32, 32)
    gmm = flowgmm_loss(model, x, torch.zeros(4, dtype=torch.long))
    one_class = aeflow_loss(model, x)
    for key in ("loss", "flow", "recon"):
        assert torch.allclose(gmm[key], one_class[key], atol=1e-5)


def test_learned_means_get_gradients_fixed_do_not():
    torch.manual_seed(0)
    learned = AEFlowGMM(AEFlowConfig.reduced(**TINY), FlowGMMSettings(means="learned"))
    fixed = AEFlowGMM(AEFlowConfig.reduced(**TINY), FlowGMMSettings(means="fixed"))
    x, labels = torch.rand(4, 1, 32, 32), torch.tensor([0, 1, 1, 0])
    flowgmm_loss(learned, x, labels)["loss"].backward()
    assert learned.mixture.anomaly_mean.grad is not None and learned.mixture.anomaly_mean.grad.abs().sum() > 0
    assert not fixed.mixture.anomaly_mean.requires_grad
    assert "mixture.anomaly_mean" in fixed.state_dict()  # the fixed mean is saved with the checkpoint too


def test_detector_k0_is_the_one_class_model(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    images = torch.rand(16, 1, 28, 28)
    one_class = AEFlowDetector(AEFlowConfig.reduced(**TINY), seed=0, device="cpu", cache=False).fit(images)
    gmm = FlowGMMDetector(AEFlowConfig.reduced(**TINY), seed=0, device="cpu", cache=False).fit(images)
    a, b = one_class.score_parts(images[:5]), gmm.score_parts(images[:5])
    for key in ("flow", "flow_full", "ssim"):
        assert np.allclose(a[key], b[key], atol=1e-4)  # the normal component's density is the one-class density


def test_detector_with_labels_trains_scores_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    normal, anomalies = torch.rand(16, 1, 28, 28) * 0.5, 0.5 + torch.rand(3, 1, 28, 28) * 0.5
    det = FlowGMMDetector(AEFlowConfig.reduced(**TINY), labelled_anomalies=anomalies, label_seed=4, seed=0,
                          device="cpu")
    det.fit(normal)
    data, labels = det.training_data(normal)
    assert int((labels == 1).sum()) >= 0.25 * len(labels) and int((labels == 0).sum()) == 16
    scores = det.scores(normal[:4], ("gmm_llr", "gmm_posterior", "aeflow"))
    assert all(v.shape == (4,) and torch.isfinite(v).all() for v in scores.values())
    assert ((scores["gmm_posterior"] >= 0) & (scores["gmm_posterior"] <= 1)).all()
    again = FlowGMMDetector(AEFlowConfig.reduced(**TINY), labelled_anomalies=anomalies, label_seed=4, seed=0,
                            device="cpu").fit(normal)
    assert again.loaded_from_cache
    assert torch.allclose(again.score(normal[:4], "gmm_llr"), scores["gmm_llr"], atol=1e-5)


def test_cache_key_includes_k_label_seed_and_the_labelled_images():
    normal, anomalies = torch.rand(8, 1, 28, 28), torch.rand(5, 1, 28, 28)
    cfg = AEFlowConfig.reduced(**TINY)

    def key(**kwargs):
        return FlowGMMDetector(cfg, device="cpu", **kwargs).cache_config(normal)

    base = key(labelled_anomalies=anomalies[:3], label_seed=0)
    assert base["k"] == 3 and base["model"] == "AEFlowGMM-v1"
    assert key(labelled_anomalies=anomalies[:3], label_seed=1) != base
    assert key(labelled_anomalies=anomalies[:4], label_seed=0)["k"] == 4
    assert key(labelled_anomalies=anomalies[1:4], label_seed=0) != base
    assert key(labelled_anomalies=anomalies[:3], label_seed=0, gmm=FlowGMMSettings(means="learned")) != base
    assert key(labelled_anomalies=anomalies[:3], label_seed=0, unlabelled_images=anomalies[3:]) != base
    assert key()["k"] == 0 and key()["labelled"] is None


def test_labelled_images_of_another_shape_are_a_clear_error():
    det = FlowGMMDetector(AEFlowConfig.reduced(**TINY), labelled_anomalies=torch.rand(2, 1, 32, 32), device="cpu")
    with pytest.raises(ValueError, match="labelled_anomalies"):
        det.fit(torch.rand(8, 1, 28, 28))
    with pytest.raises(ValueError, match="means"):
        FlowGMMSettings(means="random").validate()


def test_draw_labelled_is_seeded_and_checked():
    from benchmarks.aeflow_flowgmm import draw_labelled

    pool = torch.arange(20.0).reshape(20, 1, 1, 1) / 20
    a, b = draw_labelled(pool, 5, seed=0), draw_labelled(pool, 5, seed=0)
    assert torch.equal(a, b) and len(a) == 5 and len(set(a.flatten().tolist())) == 5
    assert not torch.equal(a, draw_labelled(pool, 5, seed=1))
    assert torch.equal(draw_labelled(pool, 10, seed=0)[:0], draw_labelled(pool, 0, seed=0))
    assert len(draw_labelled(pool, None, seed=0)) == 20
    with pytest.raises(ValueError, match="k must lie"):
        draw_labelled(pool, 21, seed=0)


def test_benchmark_runs_in_fast_mode(tmp_path, monkeypatch):
    import json

    from benchmarks import aeflow_flowgmm as bench

    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "cache"))
    assert bench.main(["--k", "0", "4", "--seeds", "0", "--source", "sample", "--out-dir", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "aeflow_flowgmm__pneumoniamnist.json").read_text())
    assert record["protocol"] == "normal-vs-pneumonia-few-labels" and record["fast_mode"] is True
    k0, k4 = record["runs"]
    assert k0["n_labelled"] == 0 and k0["baseline_supervised"] is None
    assert k0["selected_variant"] in bench.SELECTABLE_VARIANTS  # no FlowGMM score without labels
    assert k4["n_labelled"] == 4 and 0.0 <= k4["baseline_supervised"]["test_auroc"] <= 1.0
    assert k4["selected_variant"] in bench.SELECTABLE_VARIANTS + bench.FLOWGMM_VARIANTS
    assert k4["val_auroc"] == max(k4["val_auroc_by_variant"][v] for v in bench.SELECTABLE_VARIANTS + bench.FLOWGMM_VARIANTS)
    assert set(record["by_k"]) == {"0", "4"} and "FlowGMM" in bench.render_markdown(record)
    from benchmarks.report import render_readme

    assert "FlowGMM-AE-FLOW on PneumoniaMNIST" in render_readme(tmp_path).read_text()


def test_anomaly_posterior_is_stable_and_matches_the_mixture():
    from course_utils.models.aeflow import anomaly_posterior

    mixture = GaussianMixtureBase(6, FlowGMMSettings(anomaly_prior=0.3))
    z = torch.randn(9, 6)
    log_density = mixture.component_log_density(z).double().numpy()
    assert np.allclose(anomaly_posterior(log_density[:, 0], log_density[:, 1], 0.3),
                       mixture.posterior(z)[:, 1].numpy(), atol=1e-6)
    # hundreds of nats apart (large D): exp() of either would overflow, the posterior must not
    far = anomaly_posterior(np.array([-5000.0, -9000.0, -7000.0]), np.array([-9000.0, -5000.0, -7000.0]))
    assert np.all(np.isfinite(far)) and far[0] == 0.0 and far[1] == 1.0 and far[2] == 0.5
    with pytest.raises(ValueError, match="anomaly_prior"):
        anomaly_posterior(np.zeros(2), np.zeros(2), 1.0)


def test_score_parts_carry_the_component_log_densities(tmp_path, monkeypatch):
    from course_utils.models.aeflow import anomaly_posterior

    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    normal, anomalies = torch.rand(12, 1, 28, 28) * 0.5, 0.5 + torch.rand(3, 1, 28, 28) * 0.5
    det = FlowGMMDetector(AEFlowConfig.reduced(**TINY), labelled_anomalies=anomalies, seed=0, device="cpu",
                          cache=False).fit(normal)
    parts = det.score_parts(torch.cat([normal[:3], anomalies]))
    d = det.model.mixture.dim
    assert np.allclose((parts["gmm_log_anomaly"] - parts["gmm_log_normal"]) / d, parts["gmm_llr"], atol=1e-4)
    assert np.allclose(anomaly_posterior(parts["gmm_log_normal"], parts["gmm_log_anomaly"]), parts["gmm_posterior"],
                       atol=1e-3)
