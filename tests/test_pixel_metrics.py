"""Pixel AUROC and AUPRO (Bergmann et al. 2021) on small maps whose answer is known by hand,
and against a brute-force oracle that sweeps every threshold with its own region labelling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from course_utils.metrics import aupro, pixel_auroc, pro_curve


def two_region_case() -> tuple[np.ndarray, np.ndarray]:
    """One 8 x 8 image: region A = 1 pixel at (1, 1), region B = 7 pixels in row 6 (columns 0..6);
    56 normal pixels. Returns the mask as uint8 and as bool."""
    mask = np.zeros((1, 8, 8), dtype=np.uint8)
    mask[0, 1, 1] = 1  # region A
    mask[0, 6, 0:7] = 1  # region B, far from A
    return mask, mask.astype(bool)


def normal_ramp(mask: np.ndarray) -> np.ndarray:
    """Distinct scores in (0.1, 0.9) for the normal pixels, in raster order."""
    maps = np.zeros(mask.shape, dtype=np.float64)
    normal = ~mask.astype(bool)
    maps[normal] = np.linspace(0.1, 0.9, int(normal.sum()))
    return maps


# =========================================================================== answers known by hand
def test_perfect_map_gives_one():
    mask, region = two_region_case()
    maps = normal_ramp(mask)
    maps[region] = 2.0
    assert aupro(maps, mask) == pytest.approx(1.0)
    assert pixel_auroc(maps, mask) == pytest.approx(1.0)


def test_inverted_map_gives_zero():
    mask, region = two_region_case()
    maps = normal_ramp(mask)
    maps[region] = -1.0
    assert aupro(maps, mask) == pytest.approx(0.0)
    assert pixel_auroc(maps, mask) == pytest.approx(0.0)


def test_finding_one_of_two_regions_gives_one_half_whatever_their_sizes():
    mask, _ = two_region_case()
    maps = normal_ramp(mask)
    maps[0, 1, 1] = 2.0  # region A (1 pixel) above every normal pixel
    maps[0, 6, 0:7] = -1.0  # region B (7 pixels) below every normal pixel
    assert aupro(maps, mask) == pytest.approx(0.5)
    # pixel AUROC weighs pixels, not regions: 1 of 8 anomalous pixels ranks above all 56 normals
    assert pixel_auroc(maps, mask) == pytest.approx(1 / 8)


def test_region_found_after_a_fifth_of_the_normal_pixels():
    """10 normal pixels scored 0.0 .. 0.9 and one anomalous pixel at 0.75: it is found once the
    threshold has passed 2 normal pixels, at FPR 0.2, so PRO = 1 on [0.2, 0.3]: area 0.1 / 0.3."""
    maps = np.array([[[0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.75]]])
    mask = np.zeros_like(maps)
    mask[0, 0, -1] = 1
    assert aupro(maps, mask) == pytest.approx(1 / 3)
    assert aupro(maps, mask, max_fpr=1.0) == pytest.approx(0.8)  # area (1 - 0.2) * 1 over the whole range
    fpr, pro = pro_curve(maps, mask)
    assert fpr.tolist() == pytest.approx([0, 0.1, 0.2, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert pro.tolist() == pytest.approx([0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1])


def test_constant_map_counts_ties_as_a_straight_line():
    """Every pixel ties: the curve goes straight from (0, 0) to (1, 1); up to 0.3 the area is
    0.3^2 / 2 = 0.045, normalised 0.15 (pixel AUROC 0.5, the same tie convention)."""
    mask, _ = two_region_case()
    maps = np.full(mask.shape, 0.4)
    assert aupro(maps, mask) == pytest.approx(0.15)
    assert pixel_auroc(maps, mask) == pytest.approx(0.5)


def test_regions_are_eight_connected():
    """Two diagonal pixels are ONE region (8-connectivity, as MVTec AD's evaluation code); with a
    separate 1-pixel region, finding the diagonal pair only gives 1/2 (4-connectivity would say 2/3)."""
    mask = np.zeros((1, 6, 6), dtype=np.uint8)
    mask[0, 1, 1] = mask[0, 2, 2] = 1  # diagonal pair
    mask[0, 4, 5] = 1  # separate region
    maps = normal_ramp(mask)
    maps[0, 1, 1] = maps[0, 2, 2] = 5.0
    maps[0, 4, 5] = -5.0
    assert aupro(maps, mask) == pytest.approx(0.5)


def test_regions_are_per_image():
    """The same footprint in two images is two regions: a 1-pixel region found in image 0 and a
    3-pixel region over the same place missed in image 1 give 1/2 (one region over the stack: 1/4)."""
    mask = np.zeros((2, 5, 5), dtype=np.uint8)
    mask[0, 2, 2] = 1
    mask[1, 2, 1:4] = 1
    maps = np.stack([normal_ramp(mask[:1])[0], normal_ramp(mask[1:])[0]])
    maps[0, 2, 2] = 3.0
    maps[1, 2, 1:4] = -3.0
    assert aupro(maps, mask) == pytest.approx(0.5)


def test_accepts_torch_tensors_with_a_channel_axis():
    mask, region = two_region_case()
    maps = normal_ramp(mask)
    maps[region] = 2.0
    as_tensors = (torch.from_numpy(maps).float().unsqueeze(1), torch.from_numpy(region).unsqueeze(1))
    assert aupro(*as_tensors) == pytest.approx(1.0)
    assert pixel_auroc(*as_tensors) == pytest.approx(1.0)


# =========================================================================== brute-force oracle
def flood_fill_regions(mask: np.ndarray) -> list[list[tuple[int, int, int]]]:
    """8-connected regions of a (N, H, W) bool mask by breadth-first search, image by image."""
    seen = np.zeros_like(mask, dtype=bool)
    regions = []
    n, height, width = mask.shape
    for i in range(n):
        for r in range(height):
            for c in range(width):
                if not mask[i, r, c] or seen[i, r, c]:
                    continue
                queue, region = [(r, c)], []
                seen[i, r, c] = True
                while queue:
                    y, x = queue.pop()
                    region.append((i, y, x))
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            yy, xx = y + dy, x + dx
                            if 0 <= yy < height and 0 <= xx < width and mask[i, yy, xx] and not seen[i, yy, xx]:
                                seen[i, yy, xx] = True
                                queue.append((yy, xx))
                regions.append(region)
    return regions


def brute_force_aupro(maps: np.ndarray, mask: np.ndarray, max_fpr: float) -> float:
    """Every distinct score as a threshold, FPR and PRO counted directly, trapezoid up to max_fpr."""
    regions = flood_fill_regions(mask)
    normal_scores = maps[~mask]
    points = [(0.0, 0.0)]
    for threshold in sorted(set(maps.ravel().tolist()), reverse=True):
        fpr = float(np.mean(normal_scores >= threshold))
        pro = float(np.mean([np.mean([maps[p] >= threshold for p in region]) for region in regions]))
        points.append((fpr, pro))
    # walk the curve (fpr repeats at vertical steps) and cut it at max_fpr
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        if x0 >= max_fpr:
            break
        if x1 > max_fpr:
            y1 = y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0)
            x1 = max_fpr
        area += (x1 - x0) * (y0 + y1) / 2
    return area / max_fpr


def brute_force_pixel_auroc(maps: np.ndarray, mask: np.ndarray) -> float:
    """P(score of an anomalous pixel > score of a normal pixel), ties counting one half."""
    positives, negatives = maps[mask], maps[~mask]
    greater = (positives[:, None] > negatives[None, :]).sum()
    ties = (positives[:, None] == negatives[None, :]).sum()
    return float((greater + 0.5 * ties) / (positives.size * negatives.size))


def random_case(seed: int, quantise: bool) -> tuple[np.ndarray, np.ndarray]:
    """3 images of 12 x 12 with a few random rectangles as defects; maps higher inside them on
    average, with noise; ``quantise`` rounds the scores to create many ties."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((3, 12, 12), dtype=bool)
    for i in range(3):
        for _ in range(rng.integers(0, 3)):
            top, left = rng.integers(0, 10, size=2)
            mask[i, top:top + rng.integers(1, 4), left:left + rng.integers(1, 4)] = True
    mask[0, 0, 0] = True  # at least one region
    maps = rng.normal(size=mask.shape) + 1.5 * mask
    if quantise:
        maps = np.round(maps * 2) / 2
    return maps, mask


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("quantise", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("max_fpr", [0.3, 0.05, 1.0])
def test_matches_brute_force_threshold_sweep(seed, quantise, max_fpr):
    maps, mask = random_case(seed, quantise)
    assert aupro(maps, mask, max_fpr=max_fpr) == pytest.approx(brute_force_aupro(maps, mask, max_fpr), abs=1e-9)
    assert pixel_auroc(maps, mask) == pytest.approx(brute_force_pixel_auroc(maps, mask), abs=1e-12)


# =========================================================================== bad input
@pytest.mark.parametrize(
    "maps, mask, match",
    [
        pytest.param(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)), "same shape", id="shape"),
        pytest.param(np.zeros((4, 4)), np.zeros((4, 4)), "N, H, W", id="2-D"),
        pytest.param(np.zeros((1, 2, 2)), np.array([[[0, 2], [0, 1]]]), "0 .normal pixel. or 1", id="mask-values"),
        pytest.param(np.array([[[np.nan, 0], [0, 0]]]), np.array([[[0, 1], [0, 0]]]), "NaN", id="nan"),
        pytest.param(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), "both normal", id="no-anomaly"),
        pytest.param(np.zeros((1, 2, 2)), np.ones((1, 2, 2)), "both normal", id="no-normal"),
    ],
)
def test_bad_input_is_rejected(maps, mask, match):
    for metric in (aupro, pixel_auroc):
        with pytest.raises(ValueError, match=match):
            metric(maps, mask)


@pytest.mark.parametrize("max_fpr", [0.0, -0.1, 1.5])
def test_max_fpr_range(max_fpr):
    mask, _ = two_region_case()
    with pytest.raises(ValueError, match="max_fpr"):
        aupro(normal_ramp(mask), mask, max_fpr=max_fpr)
