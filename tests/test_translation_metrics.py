"""cxrlib.metrics, image-to-image translation: paired scores (Pix2Pix) and translation checks (CycleGAN)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cxrlib import metrics as M
from cxrlib import phantom
from cxrlib.errors import CxrError

SIZE = 64


@pytest.fixture(scope="module")
def ph():
    """8 normal phantoms at 64 px with masks: images uint8 (8, 1, 64, 64), masks['lungs'] bool."""
    return phantom.generate(8, size=SIZE, seed=0, pneumonia_fraction=0.0, masks=True)


@pytest.fixture(scope="module")
def twin():
    """The same 8 patients, ill (same seed, pneumonia_fraction=1)."""
    return phantom.generate(8, size=SIZE, seed=0, pneumonia_fraction=1.0, masks=True)


def noisy(x: torch.Tensor, sd: float, seed: int = 0) -> torch.Tensor:
    """uint8 images plus Gaussian noise of ``sd`` gray levels, rounded and clipped back to uint8."""
    g = torch.Generator().manual_seed(seed)
    return (x.float() + sd * torch.randn(x.shape, generator=g)).round().clamp(0, 255).to(torch.uint8)


def blurred(x: torch.Tensor, sigma: float = 1.5) -> torch.Tensor:
    """uint8 images blurred with a Gaussian of ``sigma`` px (reflect borders), back to uint8."""
    k = M._gaussian_kernel(7, sigma)
    y = F.conv2d(F.pad(x.float(), (3, 3, 3, 3), mode="reflect"), k)
    return y.round().clamp(0, 255).to(torch.uint8)


# --------------------------------------------------------------------------- ssim
def test_ssim_of_identical_images_is_one(ph):
    s = M.ssim(ph.images, ph.images)
    assert s.shape == (8,)
    assert torch.allclose(s, torch.ones(8), atol=1e-5)


def test_ssim_falls_as_noise_grows(ph):
    s = [float(M.ssim(ph.images, noisy(ph.images, sd)).mean()) for sd in (0, 4, 12, 36)]
    assert s[0] == pytest.approx(1.0, abs=1e-5)
    assert s[0] > s[1] > s[2] > s[3]
    assert s[3] < 0.6


@pytest.mark.parametrize("sd", [4, 20, 40])
def test_ssim_agrees_with_skimage(ph, sd):
    """With an 11 px window our 'valid' map covers exactly the pixels skimage averages (it crops (11 − 1) / 2
    px per border) with the same 11-tap Gaussian: agreement to float32 precision (measured ≤ 3e-6). The default
    7 px window truncates the Gaussian at 2σ and averages a 2 px wider border: measured ≤ 0.014 at sd 40."""
    from skimage.metrics import structural_similarity

    x, y = ph.images[:4], noisy(ph.images[:4], sd, seed=sd)
    ref = torch.tensor([
        structural_similarity(x[i, 0].numpy() / 255.0, y[i, 0].numpy() / 255.0, gaussian_weights=True,
                              sigma=1.5, use_sample_covariance=False, data_range=1.0)
        for i in range(len(x))
    ])
    assert torch.allclose(M.ssim(x, y, kernel_size=11).double(), ref, atol=1e-4)
    assert torch.allclose(M.ssim(x, y).double(), ref, atol=0.02)


def test_ssim_accepts_numpy_and_checks_shapes(ph):
    x = ph.images[:2]
    assert torch.allclose(M.ssim(x.numpy(), noisy(x, 10).numpy()), M.ssim(x, noisy(x, 10)))
    with pytest.raises(CxrError):
        M.ssim(x, ph.images[:3])
    with pytest.raises(CxrError):
        M.ssim(x[..., :5, :5], x[..., :5, :5])


def test_ms_ssim_still_uses_the_shared_terms(ph):
    """ms_ssim and ssim share ``_ssim_maps``: with one scale MS-SSIM is mean(lum) · mean(cs), clipped at 0."""
    x, y = ph.images[:4], noisy(ph.images[:4], 20)
    lum, cs = M._ssim_maps(M._unit(x), M._unit(y), M._gaussian_1d(7, 1.5))
    expected = (lum.mean(dim=(1, 2)) * cs.mean(dim=(1, 2))).clamp_min(0)
    assert torch.allclose(M.ms_ssim(x, y, n_scales=1), expected, atol=1e-6)
    assert torch.allclose(M.ssim(x, y), (lum * cs).mean(dim=(1, 2)), atol=1e-6)


# --------------------------------------------------------------------------- pixel correlation
def test_pixel_correlation_is_affine_invariant_and_signed(ph):
    x = M.to_float(ph.images)  # floats are taken as they are (nominally [-1, 1]); correlation ignores scale
    lin, inv = 2 * x + 3, -x
    r_lin = M.pixel_correlation(lin, ph.images)
    assert r_lin.shape == (8,)
    assert torch.allclose(r_lin, torch.ones(8), atol=1e-5)
    assert torch.allclose(M.pixel_correlation(inv, ph.images), -torch.ones(8), atol=1e-5)
    r_noisy = M.pixel_correlation(noisy(ph.images, 30), ph.images)
    assert (r_noisy < 0.99).all() and (r_noisy > 0.5).all()


def test_pixel_correlation_with_a_constant_is_zero_not_nan(ph):
    flat = torch.full_like(ph.images, 128)
    r = M.pixel_correlation(flat, ph.images)
    assert torch.equal(r, torch.zeros(8))
    assert torch.equal(M.pixel_correlation(ph.images, flat), torch.zeros(8))


def test_dev_corr_of_the_average_image_is_zero(ph):
    """Predicting the mean image correlates well with every patient, but gets none of what makes them differ."""
    mean = ph.images.float().mean(0)  # (1, 64, 64) on the 0..255 scale
    pred = (mean / 127.5 - 1.0).expand_as(ph.images)  # the same image, as float in [-1, 1]
    assert (M.pixel_correlation(pred, ph.images) > 0.5).all()
    assert torch.equal(M.pixel_correlation(pred, ph.images, reference=mean), torch.zeros(8))
    assert torch.equal(M.pixel_correlation(pred, ph.images, reference=mean[0].numpy()), torch.zeros(8))
    # a prediction that moves away from the average the same way the patient does scores high
    dev = M.pixel_correlation(noisy(ph.images, 5), ph.images, reference=mean[None])
    assert (dev > 0.8).all()


def test_dev_corr_accepts_uint8_reference(ph):
    ref = ph.images[:1]  # one patient as the "average": uint8 and its float copy mean the same
    a = M.pixel_correlation(noisy(ph.images, 10), ph.images, reference=ref)
    b = M.pixel_correlation(noisy(ph.images, 10), ph.images, reference=ref.float())
    assert torch.equal(a, b)
    assert a[0] == 0.0  # image 0 is the reference: it has no deviation to get right
    assert a[1:].gt(0.5).all()
    with pytest.raises(CxrError):
        M.pixel_correlation(ph.images, ph.images, reference=torch.zeros(32, 32))


# --------------------------------------------------------------------------- paired scores
def test_paired_scores_known_uniform_error():
    true = torch.full((3, 1, 16, 16), 0.0)  # 0.5 on the [0, 1] scale
    pred = torch.full((3, 1, 16, 16), 0.2)  # 0.6: |error| = 0.1 everywhere
    s = M.paired_scores(pred, true)
    assert s["l1"] == pytest.approx(0.1, abs=1e-6)
    assert s["psnr"] == pytest.approx(20.0, abs=1e-4)
    assert s["l1_sd"] == pytest.approx(0.0, abs=1e-6) and s["psnr_sd"] == pytest.approx(0.0, abs=1e-4)
    assert s["n"] == 3
    assert "dev_corr" not in s
    # uint8: 51 gray levels = 0.2 → 20 · log10(1 / 0.2) = 13.98 dB
    t8 = torch.full((2, 1, 16, 16), 100, dtype=torch.uint8)
    assert M.paired_scores(t8 + 51, t8)["psnr"] == pytest.approx(20 * math.log10(5), abs=1e-3)


def test_paired_scores_identical_images(ph):
    s = M.paired_scores(ph.images, ph.images, reference=ph.images.float().mean(0, keepdim=True))
    assert set(s) == {"l1", "l1_sd", "psnr", "psnr_sd", "ssim", "ssim_sd", "corr", "corr_sd", "dev_corr",
                      "dev_corr_sd", "n"}
    assert s["l1"] == 0.0 and s["psnr"] == pytest.approx(100.0)
    assert s["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert s["corr"] == pytest.approx(1.0, abs=1e-6) and s["dev_corr"] == pytest.approx(1.0, abs=1e-6)
    assert s["n"] == 8


def test_paired_scores_order_noise_levels(ph):
    mild, strong = M.paired_scores(noisy(ph.images, 5), ph.images), M.paired_scores(noisy(ph.images, 30), ph.images)
    assert mild["l1"] < strong["l1"]
    assert mild["psnr"] > strong["psnr"]
    assert mild["ssim"] > strong["ssim"]
    assert mild["corr"] > strong["corr"]
    assert strong["psnr_sd"] > 0 and strong["ssim_sd"] > 0
    per_image = M.ssim(noisy(ph.images, 30), ph.images)
    assert strong["ssim_sd"] == pytest.approx(float(per_image.std()), rel=1e-5)


# --------------------------------------------------------------------------- sharpness
def test_blur_lowers_sharpness(ph):
    sharp, soft = M.sharpness(ph.images), M.sharpness(blurred(ph.images))
    assert soft < 0.5 * sharp
    assert M.sharpness(torch.full((2, 1, 16, 16), 77, dtype=torch.uint8)) == 0.0
    # in [0, 1] units: a checkerboard of 0 and 1 gives a Laplacian of ±4 everywhere, variance 16
    board = torch.tensor((np.indices((16, 16)).sum(0) % 2) * 255, dtype=torch.uint8)[None, None]
    assert M.sharpness(board) == pytest.approx(16.0)


# --------------------------------------------------------------------------- masks
def test_masked_l1_counts_only_masked_pixels(ph):
    lungs = ph.masks["lungs"]
    changed = ph.images.clone()
    changed[~lungs] = 255 - changed[~lungs]  # change everything outside the lungs
    inside = M.masked_l1(ph.images, changed, lungs)
    assert inside.shape == (8,)
    assert torch.equal(inside, torch.zeros(8))
    outside = M.masked_l1(ph.images, changed, ~lungs)
    expected = torch.stack([(ph.images[i].float() - changed[i].float()).abs()[~lungs[i]].mean() / 255
                            for i in range(8)])
    assert torch.allclose(outside, expected, atol=1e-5)
    # uint8 0/255 masks and one (H, W) mask for every image work too
    assert torch.allclose(M.masked_l1(ph.images, changed, (~lungs).to(torch.uint8) * 255), outside)
    everywhere = M.masked_l1(ph.images, changed, np.ones((SIZE, SIZE), dtype=bool))
    assert everywhere.shape == (8,)
    assert float(everywhere[0]) == pytest.approx(M.paired_scores(ph.images[:1], changed[:1])["l1"], abs=1e-6)


def test_masked_l1_empty_mask_is_nan(ph):
    mask = torch.zeros_like(ph.masks["lungs"])
    mask[1:] = True
    r = M.masked_l1(ph.images, noisy(ph.images, 10), mask)
    assert math.isnan(float(r[0])) and not r[1:].isnan().any()
    with pytest.raises(CxrError):
        M.masked_l1(ph.images, ph.images, torch.ones(3, 1, SIZE, SIZE, dtype=torch.bool))


def test_masked_mean_change_is_signed(ph):
    lungs = ph.masks["lungs"]
    brighter = ph.images.clone()
    brighter[lungs] = (brighter[lungs].int() + 51).clamp_max(255).to(torch.uint8)
    up = M.masked_mean_change(ph.images, brighter, lungs)
    down = M.masked_mean_change(brighter, ph.images, lungs)
    assert (up > 0.1).all() and (up <= 0.2 + 1e-6).all()
    assert torch.allclose(down, -up)
    assert torch.equal(M.masked_mean_change(ph.images, brighter, ~lungs), torch.zeros(8))


# --------------------------------------------------------------------------- ill twin and translation report
def test_phantom_ill_twin_has_the_same_anatomy(ph, twin):
    """pneumonia_fraction 0 and 1 with one seed draw the same patients: every mask is identical, and outside
    the lungs the images differ only in a 1 px rim around the lung mask (the consolidation's blur spilling
    over its edge). Measured at 64 px, seed 0: 256 of 22,248 outside pixels differ (1.2 %), by at most 17
    gray levels, mean 0.04 levels; beyond a 1 px dilation of the lungs the images are byte-identical."""
    assert (ph.labels == 0).all() and (twin.labels == 1).all()
    for name in ph.masks:
        assert torch.equal(ph.masks[name], twin.masks[name]), name
    lungs = ph.masks["lungs"]
    diff = (ph.images.int() - twin.images.int()).abs()
    assert diff[~lungs].float().mean() < 0.2  # gray levels
    rim = F.max_pool2d(lungs.float(), 3, 1, 1) > 0
    assert int(diff[~rim].max()) == 0
    assert float(M.masked_l1(ph.images, twin.images, ~lungs).max()) < 1e-3
    assert (M.masked_mean_change(ph.images, twin.images, lungs) > 0.01).all()  # the twin's lungs whiten


def test_translation_report(ph, twin):
    lungs = ph.masks["lungs"]
    half = ph.images.clone()  # a translation adding half the twin's lung opacity and nothing else
    half[lungs] = ((ph.images.float() + twin.images.float()) / 2).round().to(torch.uint8)[lungs]
    r = M.translation_report(ph.images, half, lungs=lungs, twin=twin.images, round_trip=ph.images)
    assert set(r) == {"outside_l1", "lung_change", "twin_lung_change", "change_ratio", "round_trip_l1", "n"}
    assert r["outside_l1"] == 0.0 and r["round_trip_l1"] == 0.0 and r["n"] == 8
    assert r["twin_lung_change"] == pytest.approx(float(M.masked_mean_change(ph.images, twin.images, lungs).mean()))
    assert r["lung_change"] > 0
    assert r["change_ratio"] == pytest.approx(0.5, abs=0.02)
    # the twin itself: ratio 1; uint8 0/255 lungs work the same
    full = M.translation_report(ph.images, twin.images, lungs=lungs.to(torch.uint8) * 255, twin=twin.images)
    assert full["change_ratio"] == pytest.approx(1.0) and "round_trip_l1" not in full
    assert full["outside_l1"] == pytest.approx(float(M.masked_l1(ph.images, twin.images, ~lungs).mean()))
    # a translation that changes the whole film shows up outside the lungs and in the round trip
    bad = M.translation_report(ph.images, noisy(ph.images, 20), lungs=lungs, round_trip=noisy(ph.images, 20, 1))
    assert bad["outside_l1"] > 0.03 and bad["round_trip_l1"] > 0.03
    assert "change_ratio" not in bad
