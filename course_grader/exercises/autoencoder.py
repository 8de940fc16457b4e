"""Exercises of notebook 01 (SSIM autoencoder): one SSIM training step, pixel-level AUROC."""

from __future__ import annotations

import numpy as np

from ..contract import Case, ExerciseSpec, close_to, register, to_plain


# --------------------------------------------------------------------------- ex-ssim-training-step
def ssim_step_reference(model, optimizer, batch) -> float:
    """One step on loss = 1 - SSIM(model(batch), batch) (data range 1); the loss before the step."""
    from pytorch_msssim import ssim

    optimizer.zero_grad()
    loss = 1 - ssim(model(batch), batch, data_range=1.0)
    loss.backward()
    optimizer.step()
    return loss.item()


def _ssim_step_cases(rng: np.random.Generator) -> list[Case]:
    import torch

    from course_utils.models.autoencoder import ConvAutoencoder

    cases = []
    for name, side, n, optimiser in (("SGD step on 8 images of 28 px", 28, 8, "sgd"),
                                     ("Adam step on 5 images of 32 px", 32, 5, "adam"),
                                     ("SGD step on 1 image", 28, 1, "sgd")):
        torch.manual_seed(int(rng.integers(2**31)))
        weights = {k: v.numpy().astype(np.float64) for k, v in
                   ConvAutoencoder(latent_dim=4, width=4, image_size=side).state_dict().items()}
        raw = rng.random((n, 1, side, side))
        batch = (raw + np.roll(raw, 1, axis=2) + np.roll(raw, 1, axis=3)) / 3  # smooth images in [0, 1]
        cases.append(Case(name, (side, weights, optimiser, batch)))
    return cases


def _ssim_step_harness(spec: ExerciseSpec, fn, case: Case):
    """Builds the model and optimiser of the case, calls fn(model, optimizer, batch)."""
    import torch

    from course_utils.models.autoencoder import ConvAutoencoder

    side, weights, optimiser, batch = case.args
    model = ConvAutoencoder(latent_dim=4, width=4, image_size=int(side))
    model.load_state_dict({k: torch.as_tensor(np.asarray(v), dtype=torch.float32) for k, v in weights.items()})
    model.train()
    optimizer = (torch.optim.SGD(model.parameters(), lr=0.5) if optimiser == "sgd"
                 else torch.optim.Adam(model.parameters(), lr=1e-2))
    loss = fn(model, optimizer, torch.as_tensor(np.asarray(batch), dtype=torch.float32))
    params = torch.cat([p.detach().flatten() for p in model.parameters()])
    return {"loss": to_plain(float(loss)), "params": to_plain(params)}


def _compare_step(case: Case, expected, found) -> str | None:
    message = close_to(atol=1e-4, key="loss", hint=lambda c, e, f: (
        "return the loss 1 - SSIM, not the SSIM itself"
        if isinstance(f, dict) and abs(float(np.asarray(f.get("loss", 0))) - (1 - e["loss"])) < 1e-4 else
        "use 1 - ssim(x_hat, x, data_range=1.0): pytorch_msssim assumes data_range=255 by default"))(
        Case(f"{case.name}: returned loss", case.args), expected, found)
    if message:
        return message
    return close_to(atol=1e-5, key="params", hint="zero the gradients, call loss.backward() and optimizer.step() "
                    "exactly once")(Case(f"{case.name}: weights after the step", case.args), expected, found)


SSIM_TRAINING_STEP = register(ExerciseSpec(
    grade_id="ex-ssim-training-step", answer="ssim_training_step", draw=_ssim_step_cases,
    reference=ssim_step_reference, harness=_ssim_step_harness, compare=_compare_step,
    summary="loss and update agree with the reference"))


# --------------------------------------------------------------------------- ex-pixel-auroc
def pixel_auroc_reference(anomaly_maps, masks) -> float:
    """AUROC over all pixels: each pixel's map value is its score, its mask value (1 = defect) its label."""
    from sklearn.metrics import roc_auc_score

    scores = np.asarray(anomaly_maps, dtype=np.float64).reshape(-1)
    return float(roc_auc_score(np.asarray(masks).reshape(-1).astype(int), scores))


def _pixel_cases(rng: np.random.Generator) -> list[Case]:
    masks = rng.random((6, 1, 8, 8)) < 0.1
    masks[0, 0, 0, 0] = True
    maps = rng.random((6, 1, 8, 8)) + 0.5 * masks
    big = rng.random((4, 1, 28, 28)) < 0.02
    big[0, 0, 3, 3] = True
    return [
        Case("numpy maps (6, 1, 8, 8), boolean masks", (maps, masks, False)),
        Case("torch maps with torch bool masks", (rng.random((4, 1, 28, 28)) + big, big, True)),
        Case("maps that rank the defect lowest", (-maps, masks, False)),
        Case("ties everywhere, integer masks", (np.round(maps, 1), masks.astype(np.int64), False)),
    ]


def _pixel_harness(spec: ExerciseSpec, fn, case: Case):
    maps, masks, as_torch = case.args
    maps, masks = np.array(maps), np.array(masks)
    if as_torch:
        import torch

        maps, masks = torch.from_numpy(maps), torch.from_numpy(masks)
    return to_plain(fn(maps, masks))


PIXEL_AUROC = register(ExerciseSpec(
    grade_id="ex-pixel-auroc", answer="pixel_auroc", draw=_pixel_cases, reference=pixel_auroc_reference,
    harness=_pixel_harness, compare=close_to(atol=1e-9, hint="flatten both to one value per pixel (reshape(-1)), "
                                             "masks as 0 / 1 labels, then metrics.auroc"),
    summary="agrees with scikit-learn"))
