"""Unit tests of course_utils.models.autoencoder: SSIM map, losses, scores, detector."""

from __future__ import annotations

import pytest
import torch
from pytorch_msssim import ssim as msssim_ssim

from course_utils.checkpoints import data_fingerprint

from course_utils.models.autoencoder import (
    AutoencoderDetector,
    ConvAutoencoder,
    AutoencoderSettings,
    anomaly_map,
    gaussian_window,
    mse_score,
    reconstruction_loss,
    residual_map,
    ssim_map,
    ssim_score,
)


def _images(n: int = 4, side: int = 28, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [0, 1] (blurred noise, so SSIM has structure to compare)."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.rand(n, 1, side, side, generator=gen)
    return torch.nn.functional.avg_pool2d(noise, 3, stride=1, padding=1, count_include_pad=False)


# ----------------------------------------------------------------------------- SSIM map
def test_gaussian_window_is_normalised_and_symmetric():
    g = gaussian_window(11, 1.5)
    assert g.shape == (11,)
    assert torch.isclose(g.sum(), torch.tensor(1.0))
    assert torch.allclose(g, g.flip(0))
    assert int(g.argmax()) == 5
    with pytest.raises(ValueError):
        gaussian_window(10)


def test_ssim_map_is_one_on_identical_images():
    x = _images()
    for padding in ("same", "valid"):
        m = ssim_map(x, x, padding=padding)
        assert torch.allclose(m, torch.ones_like(m), atol=1e-5)
    assert ssim_map(x, x).shape == x.shape
    assert ssim_map(x, x, padding="valid").shape == (4, 1, 18, 18)


def test_ssim_map_falls_with_structure_changes_where_they_are():
    x = _images(1)
    y = x.clone()
    y[..., 5:9, 5:9] = 1.0 - y[..., 5:9, 5:9]  # invert a 4 x 4 patch: structure changes there
    m = ssim_map(x, y)
    assert float(m[..., 5:9, 5:9].mean()) < 0.8
    assert float(m[..., 20:, 20:].min()) > 0.999  # far away: unchanged
    # more change -> lower SSIM
    z = x.clone()
    z[..., 5:15, 5:15] = 1.0 - z[..., 5:15, 5:15]
    assert float(ssim_map(x, z).mean()) < float(m.mean()) < 1.0


def test_ssim_is_blind_to_nothing_l2_is_blind_to_structure():
    """Same L2 error, different SSIM: a constant shift keeps structure, noise destroys it."""
    x = _images(1, seed=3) * 0.5 + 0.25
    shift = (x + 0.1).clamp(0, 1)
    noise = (x + 0.1 * torch.sign(torch.randn_like(x))).clamp(0, 1)
    assert abs(float(mse_score(x, shift)) - float(mse_score(x, noise))) < 1e-3
    assert float(ssim_score(x, shift)) < float(ssim_score(x, noise))


@pytest.mark.parametrize("side", [28, 32])
def test_image_ssim_from_valid_map_matches_pytorch_msssim(side):
    x = _images(6, side, seed=1)
    y = (x + 0.2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(2))).clamp(0, 1)
    ours = ssim_map(x, y, win_size=11, sigma=1.5, padding="valid").flatten(1).mean(1)
    ref = msssim_ssim(x, y, data_range=1.0, size_average=False, win_size=11, win_sigma=1.5)
    assert torch.allclose(ours, ref, atol=1e-3)
    assert torch.allclose(1 - ssim_score(x, y), ref, atol=1e-3)
    # the full-size map agrees with the valid map away from the reflected border
    full = ssim_map(x, y, padding="same")
    assert torch.allclose(full[..., 5:-5, 5:-5], ssim_map(x, y, padding="valid"), atol=1e-5)


def test_ssim_loss_uses_data_range_one():
    x = _images(2)
    y = (x + 0.2).clamp(0, 1)
    loss = reconstruction_loss(x, y, "ssim")
    ref = 1 - msssim_ssim(y, x, data_range=1.0)
    assert torch.isclose(loss, ref, atol=1e-6)
    # with the package default data_range=255 the loss would be ~0 (a pitfall of docs/design.md)
    assert float(1 - msssim_ssim(y, x)) < 0.2 * float(loss)


# ----------------------------------------------------------------------------- input validation
BAD_INPUTS = [
    ("above one", lambda x: x * 255),
    ("negative", lambda x: x - 0.5),
    ("3-D", lambda x: x[:, 0]),
    ("integer", lambda x: (x * 255).to(torch.uint8)),
    ("nan", lambda x: x.masked_fill(torch.zeros_like(x, dtype=torch.bool).index_fill_(0, torch.tensor([0]), True), float("nan"))),
]


@pytest.mark.parametrize("name,make_bad", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_inputs_raise_value_error_before_any_ssim(name, make_bad, monkeypatch):
    import pytorch_msssim

    def must_not_run(*args, **kwargs):  # pragma: no cover - only called on a bug
        raise AssertionError("SSIM computed on invalid input")

    monkeypatch.setattr(pytorch_msssim, "ssim", must_not_run)
    x = _images(2)
    bad = make_bad(x)
    for fn in (ssim_map, residual_map, mse_score, ssim_score, anomaly_map):
        with pytest.raises(ValueError):
            fn(bad, x)
        with pytest.raises(ValueError):
            fn(x, bad)
    for loss in ("ssim", "l2", "l1"):
        with pytest.raises(ValueError):
            reconstruction_loss(x, bad, loss)


def test_shape_mismatch_and_bad_options_raise():
    x = _images(2)
    with pytest.raises(ValueError, match="same shape"):
        ssim_map(x, x[:1])
    with pytest.raises(ValueError, match="too small"):
        ssim_map(x[..., :8, :8], x[..., :8, :8])
    with pytest.raises(ValueError, match="padding"):
        ssim_map(x, x, padding="zeros")
    with pytest.raises(ValueError, match="loss"):
        reconstruction_loss(x, x, "perceptual")
    with pytest.raises(ValueError, match="kind"):
        anomaly_map(x, x, "gradient")
    with pytest.raises(ValueError):
        ConvAutoencoder(image_size=30)
    with pytest.raises(ValueError):
        ConvAutoencoder(latent_dim=0)
    with pytest.raises(ValueError):
        AutoencoderDetector(loss="l3")
    with pytest.raises(ValueError):
        ConvAutoencoder()(torch.rand(2, 1, 32, 32))


def test_maps_and_scores_shapes_and_ranges():
    x = _images(3)
    y = (x * 0.9).clamp(0, 1)
    assert residual_map(x, y).shape == x.shape and float(residual_map(x, y).min()) >= 0
    assert anomaly_map(x, y, "ssim").shape == x.shape
    assert mse_score(x, y).shape == (3,) and ssim_score(x, y).shape == (3,)
    assert torch.allclose(mse_score(x, x), torch.zeros(3))
    assert torch.allclose(ssim_score(x, x), torch.zeros(3), atol=1e-5)


# ----------------------------------------------------------------------------- model and detector
@pytest.mark.parametrize("side", [28, 32])
def test_autoencoder_shapes_bottleneck_and_output_range(side):
    model = ConvAutoencoder(latent_dim=7, width=4, image_size=side)
    x = _images(2, side)
    z = model.encode(x)
    assert z.shape == (2, 7, 1, 1)
    with torch.no_grad():
        out = model(x)
    assert out.shape == x.shape
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert any(isinstance(m, torch.nn.LeakyReLU) and m.negative_slope == 0.2 for m in model.modules())


def _tiny_set() -> torch.Tensor:
    """16 stripe images (2 frequencies, random phase, amplitude and orientation)."""
    from course_utils.data import frequency_stripes

    return frequency_stripes([2, 3], 8, seed=0)[0]


@pytest.mark.parametrize("loss", ["l2", "ssim"])
def test_autoencoder_learns_to_reconstruct_a_tiny_set(loss):
    from course_utils.training import train

    torch.manual_seed(0)
    x = _tiny_set()
    model = ConvAutoencoder(latent_dim=8, width=8)
    before = float(reconstruction_loss(x, model(x).detach(), loss))
    history = train(model, lambda m, b: reconstruction_loss(b[0], m(b[0]), loss), x, epochs=20,
                    lr=3e-3, batch_size=4, device="cpu", progress=False)
    with torch.no_grad():
        x_hat = model(x)
    after = float(reconstruction_loss(x, x_hat, loss))
    assert history.epochs_run == 20
    assert after < 0.5 * before, (before, after)
    # better than the best constant image (the mean of the set)
    mean_image_mse = float((x - x.mean(0, keepdim=True)).square().mean())
    assert float(mse_score(x, x_hat).mean()) < 0.7 * mean_image_mse


def test_detector_fit_score_maps_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE_DIR", str(tmp_path))
    x = _tiny_set()
    det = AutoencoderDetector("ssim", settings=AutoencoderSettings(latent_dim=4, width=4, epochs=2, batch_size=8), device="cpu")
    assert det.score_kind == "ssim" and AutoencoderDetector("l2").score_kind == "mse"
    det.fit(x)
    assert not det.loaded_from_cache
    s = det.score(x)
    assert s.shape == (16,) and s.dtype == torch.float64
    both = det.scores(x)
    assert torch.allclose(both["ssim"], s) and both["mse"].shape == (16,)
    assert det.maps(x, "residual").shape == x.shape and det.maps(x, "ssim").shape == x.shape
    assert len(list(tmp_path.glob("ae-ssim-d4-*.pt"))) == 1
    assert AutoencoderDetector(settings=AutoencoderSettings(steps=400, batch_size=64)).epochs_for(6000) == 5
    assert AutoencoderDetector(settings=AutoencoderSettings(steps=400, batch_size=64)).epochs_for(2000) == 13
    # same data and settings: loaded, identical scores; other data: trained again
    det2 = AutoencoderDetector("ssim", settings=AutoencoderSettings(latent_dim=4, width=4, epochs=2, batch_size=8), device="cpu").fit(x)
    assert det2.loaded_from_cache and torch.allclose(det2.score(x), s)
    det3 = AutoencoderDetector("ssim", settings=AutoencoderSettings(latent_dim=4, width=4, epochs=2, batch_size=8), device="cpu").fit(x[:8])
    assert not det3.loaded_from_cache
    with pytest.raises(RuntimeError, match="fit"):
        AutoencoderDetector().score(x)
    with pytest.raises(ValueError):
        det.fit(x * 2)


def test_data_fingerprint_changes_with_data():
    x = _tiny_set()
    assert data_fingerprint(x) == data_fingerprint(x.clone())
    y = x.clone()
    y[0, 0, 0, 0] = 1.0
    assert data_fingerprint(y) != data_fingerprint(x)
    assert data_fingerprint(x).startswith("16x1x28x28-")


def test_methods_are_registered():
    from course_utils.protocol import METHODS, MethodContext

    for name, loss, score in (("ae-l2", "l2", "mse"), ("ae-ssim", "ssim", "ssim")):
        det = METHODS[name](MethodContext(0, True))
        assert isinstance(det, AutoencoderDetector)
        assert (det.loss, det.score_kind) == (loss, score)


def test_training_works_when_the_last_batch_has_one_image():
    """Batch norm must not fail on a last batch of one image (N = 65, batch 64)."""
    x = _images(65)
    det = AutoencoderDetector("l2", settings=AutoencoderSettings(latent_dim=4, width=4, epochs=1, batch_size=64), device="cpu",
                              cache=False)
    det.fit(x)
    assert det.history.epochs_run == 1
    assert det.score(x[:1]).shape == (1,)


@pytest.mark.parametrize("loss", ["l2", "ssim"])
def test_scores_of_one_pass_equal_the_own_score_exactly(loss):
    # protocol.evaluate_one_class takes the method's score from scores()[score_kind]: they must agree
    torch.manual_seed(0)
    det = AutoencoderDetector(loss, settings=AutoencoderSettings(latent_dim=4, width=4, epochs=1), device="cpu",
                              cache=False)
    x = torch.rand(6, 1, 28, 28)
    det.fit(x)
    assert torch.equal(det.scores(x)[det.score_kind], det.score(x))
