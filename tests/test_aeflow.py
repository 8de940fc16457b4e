"""AE-FLOW: shapes of the paper's model, flow invertibility, both subnets, loss / score, weights fallback."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch

from course_utils.models import aeflow
from course_utils.models.aeflow import (
    AEFlow,
    AEFlowConfig,
    AEFlowDetector,
    PretrainedWeightsUnavailable,
    aeflow_loss,
    anomaly_maps,
    build_flow,
    combine_scores,
    complexity_corrected,
    png_bits,
    resolve_config,
)

TINY = dict(feature_channels=8, encoder_widths=(8, 8, 8), decoder_widths=(8, 8), n_flow_blocks=2, epochs=1,
            batch_size=8)


def test_full_model_256px_gives_1024x16x16_and_trains_on_cpu():
    """The paper's shapes with weights=None: forward + backward at 256 px, batch 2."""
    torch.manual_seed(0)
    model = AEFlow(AEFlowConfig.full(weights=None))
    x = torch.rand(2, 1, 256, 256)
    out = model(x)
    assert out.z.shape == (2, 1024, 16, 16)
    assert out.z_prime.shape == (2, 1024, 16, 16)
    assert out.x_hat.shape == (2, 1, 256, 256)
    assert out.log_jac_det.shape == (2,)
    assert 0 <= float(out.x_hat.detach().min()) and float(out.x_hat.detach().max()) <= 1
    losses = aeflow_loss(model, x)
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"])
    assert model.encoder.layer3[0].conv1.weight.grad is not None
    assert model.decoder.net[0].weight.grad is not None
    blocks = list(model.flow.module_list)
    assert len(blocks) == 8 and all(type(b).__name__ == "AllInOneBlock" for b in blocks)
    assert [m.out_channels for m in model.decoder.net if isinstance(m, torch.nn.ConvTranspose2d)] == [512, 256, 64, 1]


def test_frozen_encoder_gets_no_gradient():
    model = AEFlow(AEFlowConfig.full(weights=None, trainable_encoder=False, image_size=64))
    model.train()
    assert not model.encoder.training  # frozen BatchNorm statistics stay in eval mode
    aeflow_loss(model, torch.rand(2, 1, 64, 64))["loss"].backward()
    assert all(p.grad is None for p in model.encoder.parameters())


@pytest.mark.parametrize("subnet", ["resnet", "conv"])
def test_flow_is_invertible(subnet):
    torch.manual_seed(0)
    flow = build_flow(16, 4, 4, n_blocks=8, subnet=subnet)
    # make the coupling non-trivial: a few training steps move the subnets away from their init
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-2)
    for _ in range(3):
        z, log_det = flow(torch.randn(8, 16, 4, 4) * 2 + 1)
        loss = (0.5 * z.square().flatten(1).sum(1) - log_det).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    flow.eval()
    z = torch.randn(5, 16, 4, 4)
    with torch.no_grad():
        z_prime, log_det = flow(z)
        back, log_det_rev = flow(z_prime, rev=True)
    assert torch.allclose(back, z, atol=1e-4)
    assert torch.allclose(log_det, -log_det_rev, atol=1e-3)
    assert not torch.allclose(z_prime, z, atol=1e-2)


@pytest.mark.parametrize("subnet", ["resnet", "conv"])
def test_both_subnets_train_without_the_inplace_error(subnet):
    """FrEIA 0.2 + torch 2.x: AllInOneBlock's in-place ops break subnets ending in ReLU; ours end in a conv / sum."""
    from course_utils.training import train

    torch.manual_seed(0)
    model = AEFlow(AEFlowConfig.reduced(subnet=subnet, **TINY))
    history = train(model, lambda m, b: aeflow_loss(m, b[0]), torch.rand(16, 1, 32, 32), epochs=2,
                    batch_size=8, progress=False, device="cpu")
    assert len(history.losses) == 2 and all(np.isfinite(history.losses))
    assert set(history.logs) >= {"loss", "flow", "recon"}


def test_loss_is_alpha_weighted_sum():
    torch.manual_seed(0)
    model = AEFlow(AEFlowConfig.reduced(**TINY)).eval()
    x = torch.rand(4, 1, 32, 32)
    parts = aeflow_loss(model, x, alpha=0.3)
    assert torch.isclose(parts["loss"], 0.3 * parts["flow"] + 0.7 * parts["recon"])
    with torch.no_grad():
        out = model(x)
    d = 8 * 4 * 4
    by_hand = (0.5 * out.z_prime.square().flatten(1).sum(1) + 0.5 * d * np.log(2 * np.pi) - out.log_jac_det) / d
    assert torch.isclose(parts["flow"], by_hand.mean(), atol=1e-5)


def test_combine_scores_raw_and_standardised():
    flow, recon = np.array([1.0, 2.0, 3.0]), np.array([0.1, 0.2, 0.0])
    assert np.allclose(combine_scores(flow, recon, 0.9), 0.9 * flow + 0.1 * recon)
    ref_f, ref_r = np.array([0.0, 2.0]), np.array([0.0, 0.2])
    z = combine_scores(flow, recon, 0.5, ref_flow=ref_f, ref_recon=ref_r)
    assert np.allclose(z, 0.5 * (flow - 1.0) / 1.0 + 0.5 * (recon - 0.1) / 0.1)
    with pytest.raises(ValueError, match="beta"):
        combine_scores(flow, recon, 1.5)
    with pytest.raises(ValueError, match="both"):
        combine_scores(flow, recon, 0.5, ref_flow=ref_f)


def test_png_bits_is_deterministic_and_orders_complexity():
    flat = torch.full((1, 1, 28, 28), 0.5)
    noise = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    bits = png_bits(torch.cat([flat, noise]))
    assert bits[0] < bits[1]
    assert np.array_equal(bits, png_bits(torch.cat([flat, noise])))
    corrected = complexity_corrected([1.0, 1.0], bits, ref_scores=[0.0, 2.0], ref_bits=bits)
    assert corrected[0] > corrected[1]  # same model score: the simpler image is the more surprising one


def test_maps_and_detector_on_tiny_data(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    images = torch.rand(16, 1, 28, 28)
    det = AEFlowDetector(AEFlowConfig.reduced(**TINY), seed=0, device="cpu").fit(images)
    scores = det.score(images[:5])
    assert scores.shape == (5,) and torch.isfinite(scores).all()
    parts = det.score_parts(images[:5])
    assert set(parts) == {"flow", "flow_full", "ssim", "mse", "bits"}
    assert np.allclose(det.combine(parts, beta=1.0, normalise="none"), parts["flow"])
    maps = det.maps(images[:3])
    for key in ("residual", "ssim", "flow"):
        assert maps[key].shape == (3, 1, 32, 32)
    again = AEFlowDetector(AEFlowConfig.reduced(**TINY), seed=0, device="cpu").fit(images)
    assert again.loaded_from_cache
    assert torch.allclose(again.score(images[:5]), scores, atol=1e-5)
    model = again.model
    assert set(anomaly_maps(model, torch.rand(2, 1, 32, 32))) == {"residual", "ssim", "flow", "x_hat"}


def test_wrong_input_size_is_a_clear_error():
    model = AEFlow(AEFlowConfig.reduced(**TINY))
    with pytest.raises(ValueError, match="resize"):
        model(torch.rand(1, 1, 28, 28))
    with pytest.raises(ValueError, match="decoder_widths"):
        AEFlowConfig.reduced(decoder_widths=(8,), **{k: v for k, v in TINY.items() if k != "decoder_widths"}).validate()


@pytest.fixture
def download_fails(monkeypatch, tmp_path):
    """Any torchvision weight download fails as it does offline; nothing is cached."""
    import torchvision.models._api as api

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def fail(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(api, "load_state_dict_from_url", fail)


def test_weights_download_failure_gives_clear_message(download_fails):
    with pytest.raises(PretrainedWeightsUnavailable) as info:
        aeflow.load_imagenet_wide_resnet()
    message = str(info.value)
    assert "ImageNet weights" in message and "offline" in message and "wide_resnet50_2" in message
    with pytest.raises(PretrainedWeightsUnavailable):
        resolve_config(AEFlowConfig.full(), fallback=False)


def test_weights_download_failure_falls_back_to_reduced(download_fails, capsys):
    with pytest.warns(RuntimeWarning, match="reduced"):
        config, message = resolve_config(AEFlowConfig.full())
    assert config == AEFlowConfig.reduced()
    assert "FALLING BACK" in message and "offline" in message
    assert "FALLING BACK" in capsys.readouterr().out
    assert resolve_config(AEFlowConfig.full(weights=None)) == (AEFlowConfig.full(weights=None), "")


def test_benchmark_runs_in_fast_mode_and_gpu_mode_refuses_without_cuda(tmp_path, monkeypatch, capsys):
    import json

    from benchmarks import aeflow as bench

    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "cache"))
    assert bench.main(["--seeds", "0", "--source", "sample", "--out-dir", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "aeflow__pneumoniamnist.json").read_text())
    assert record["protocol"] == "normal-vs-pneumonia" and record["fast_mode"] is True
    assert record["runs"][0]["selected_variant"] in aeflow.SELECTABLE_VARIANTS
    assert 0.0 <= record["mean_auroc"] <= 1.0 and "Youden" in bench.render_markdown(record)
    variants = record["runs"][0]["test_auroc_by_variant"]
    assert variants["paper, S_flow log-density form"] == variants["paper: raw terms"]
    assert "paper, S_flow likelihood form" in variants
    # like against like: the raw paper score (both readings) and L(x) alone get thresholded metrics too, and
    # the results section leads with the raw paper score, before the variant val chose
    fixed = record["mean_test_at_val_threshold_by_variant"]
    assert set(fixed) == set(bench.HEADLINE_VARIANTS)
    assert all(0.0 <= fixed[v][k] <= 1.0 for v in fixed for k in ("f1", "acc", "sen", "spe"))
    markdown = bench.render_markdown(record)
    assert markdown.index("log-density reading") < markdown.index("chosen on val per seed") < markdown.index(
        "L(x) alone") < markdown.index("paper (Kermany")
    assert record["runs"][0]["flow_forms_val"]["spread_ratio"] > 1.0
    if not torch.cuda.is_available():
        assert bench.main(["--gpu", "--out-dir", str(tmp_path / "gpu")]) == 2
        assert "No CUDA GPU" in capsys.readouterr().out
        assert not (tmp_path / "gpu").exists()


def test_training_step_bytes_counts_parameters_state_and_activations_exactly():
    from benchmarks.aeflow import training_step_bytes

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.ReLU(), torch.nn.Linear(20, 1))
    n_param_bytes = sum(p.numel() for p in model.parameters()) * 4
    loss_fn = lambda m, b: m(b).square().mean()  # noqa: E731
    small = training_step_bytes(model, loss_fn, torch.randn(8, 10))
    large = training_step_bytes(model, loss_fn, torch.randn(64, 10))
    assert small["parameters"] == small["gradients"] == n_param_bytes
    assert small["adam_state"] == 2 * n_param_bytes  # first and second moments (the step counter is a scalar)
    # saved for backward: the input (B x 10), the hidden pre/post ReLU (B x 20 each) and the output (B x 1)
    assert small["saved_activations"] >= 8 * (10 + 20) * 4
    assert large["saved_activations"] == pytest.approx(8 * small["saved_activations"], rel=0.05)
    assert small["total"] == sum(small[k] for k in ("parameters", "gradients", "adam_state", "saved_activations"))


def test_paper_score_both_forms_of_s_flow():
    from course_utils.models.aeflow import compare_flow_forms, flow_likelihood_form, paper_score

    s_flow = np.array([1.40, 1.45, 1.80, 1.42])  # -mean_d log p(z'), nats per dimension
    ssim = np.array([0.10, 0.95, 0.00, 0.30])
    likelihood = flow_likelihood_form(s_flow)
    assert np.allclose(likelihood, -np.exp(-s_flow)) and (likelihood < 0).all()
    assert (np.argsort(likelihood) == np.argsort(s_flow)).all()  # alone, both forms rank alike
    assert np.allclose(paper_score(s_flow, ssim, "log-density"), 0.9 * s_flow + 0.1 * ssim)
    assert np.allclose(paper_score(s_flow, ssim, "likelihood"), 0.9 * likelihood + 0.1 * ssim)
    with pytest.raises(ValueError, match="form"):
        paper_score(s_flow, ssim, "density")
    # combined, they do not: image 1 (large 1 - SSIM) overtakes image 3 (large S_flow) only in the likelihood form
    assert paper_score(s_flow, ssim, "log-density")[2] > paper_score(s_flow, ssim, "log-density")[1]
    assert paper_score(s_flow, ssim, "likelihood")[2] < paper_score(s_flow, ssim, "likelihood")[1]
    d = compare_flow_forms(s_flow, ssim)
    expected_ratio = np.std(s_flow) / np.std(likelihood)
    assert d["spread_ratio"] == pytest.approx(expected_ratio) and d["spread_ratio"] > 3
    assert d["flow_share_likelihood"] < d["flow_share_log_density"] <= 1.0
    assert d["spearman_combined"] < 1.0
    near = 1.42 + 1e-4 * np.arange(4.0)  # tiny S_flow spread: exp is nearly linear, the ranks agree
    assert compare_flow_forms(near, ssim * 1e-6)["spearman_combined"] == pytest.approx(1.0)


def test_detector_paper_kinds_match_paper_score(tmp_path, monkeypatch):
    from course_utils.models.aeflow import paper_score

    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    images = torch.rand(12, 1, 28, 28)
    det = AEFlowDetector(AEFlowConfig.reduced(**TINY), seed=0, device="cpu").fit(images)
    out = det.scores(images[:4], ("paper_likelihood", "paper_log_density", "flow"))
    parts = det.score_parts(images[:4])
    assert np.allclose(out["paper_likelihood"].numpy(), paper_score(parts["flow"], parts["ssim"], "likelihood"))
    assert np.allclose(out["paper_log_density"].numpy(), det.combine(parts, normalise="none"))


def test_variant_roles_name_every_score_variant():
    from course_utils.models.aeflow import AEFlowDetector, score_variants
    from course_utils.models.aeflow.detector import VARIANT_ROLES

    det = AEFlowDetector(AEFlowConfig.reduced(**TINY), seed=0, device="cpu", cache=False).fit(torch.rand(12, 1, 28, 28))
    assert set(score_variants(det, det.score_parts(torch.rand(4, 1, 28, 28)))) == set(VARIANT_ROLES)
    assert all("complexity correction" in VARIANT_ROLES[k] for k in VARIANT_ROLES if "L(x)" in k and k != "-L(x) only")



def test_ablation_benchmark_runs_in_fast_mode(tmp_path, monkeypatch):
    import json

    from benchmarks import aeflow as bench
    from benchmarks.report import render_readme

    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path / "cache"))
    assert bench.main(["--ablation", "--seeds", "0", "--source", "sample", "--out-dir", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "aeflow_ablation__pneumoniamnist.json").read_text())
    assert record["protocol"] == "normal-vs-pneumonia-ablation" and record["fast_mode"] is True
    assert [(r["subnet"], r["alpha"]) for r in record["runs"]] == [tuple(s) for s in aeflow.ABLATION_SETTINGS]
    for run in record["runs"]:
        assert set(run["val_auroc_by_variant"]) == set(aeflow.VARIANT_ROLES) == set(run["test_auroc_by_variant"])
        assert run["flow_parameters"] > 0 and run["epochs"] == record["config"]["epochs"]
    by_subnet = {r["subnet"]: r["flow_parameters"] for r in record["runs"]}
    assert by_subnet["resnet"] != by_subnet["conv"]
    render_readme(tmp_path)  # a record of another protocol is left out of the results README, not an error
