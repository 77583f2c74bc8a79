"""cxrlib.metrics: each metric moves the way it should on phantoms with known corruptions."""

from __future__ import annotations

import io
import json
import math
import socket

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cxrlib import metrics as M
from cxrlib.errors import CxrError
from cxrlib.phantom import generate

SIZE = 32


@pytest.fixture(scope="module")
def pool() -> torch.Tensor:
    """240 phantoms at 32 px, uint8 (N, 1, 32, 32): sliced into disjoint sets below."""
    return generate(240, SIZE, seed=7).images


@pytest.fixture(scope="module")
def real(pool):
    return pool[:100]


@pytest.fixture(scope="module")
def other(pool):
    """Fresh phantoms from the same distribution: what a perfect generator would produce."""
    return pool[100:200]


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of uint8/float images → float in [-1, 1]."""
    k = M._gaussian_kernel(7, sigma)
    return F.conv2d(F.pad(M.to_float(x), (3, 3, 3, 3), mode="reflect"), k)


def add_noise(x: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    """Gaussian pixel noise of std ``sigma`` on the [-1, 1] scale → float in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    return (M.to_float(x) + sigma * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Re-encode uint8 images as JPEG at ``quality`` and decode again."""
    out = []
    for im in x[:, 0].numpy():
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, "JPEG", quality=quality)
        out.append(np.array(Image.open(io.BytesIO(buf.getvalue()))))
    return torch.from_numpy(np.stack(out))[:, None]


def collapsed(x: torch.Tensor, n: int) -> torch.Tensor:
    """Mode collapse: ``n`` copies of the first image with tiny noise."""
    return add_noise(x[:1].expand(n, -1, -1, -1), 0.01)


# ======================================================================= SWD
def test_swd_of_a_set_with_itself_is_zero_and_of_fresh_phantoms_near_the_floor(real, other):
    assert M.swd(real, real)["avg"] == pytest.approx(0.0, abs=1e-6)
    fresh, floor = M.swd(real, other)["avg"], M.swd_floor(real)["avg"]
    assert 0 < fresh < 2 * floor


def test_swd_reports_every_pyramid_level_down_to_16px(real, other):
    assert list(M.swd(real, other)) == ["avg", "32px", "16px"]
    big = generate(12, 64, seed=1).images
    result = M.swd(big[:6], big[6:], patches_per_image=16)
    assert list(result) == ["avg", "64px", "32px", "16px"]
    assert result["avg"] == pytest.approx(np.mean([result["64px"], result["32px"], result["16px"]]))


def test_swd_is_deterministic_per_seed(real, other):
    assert M.swd(real, other, seed=3) == M.swd(real, other, seed=3)
    assert M.swd(real, other, seed=3) != M.swd(real, other, seed=4)


def test_swd_rises_monotonically_with_blur_strength(real):
    values = [M.swd(real, blur(real, s))["avg"] for s in (0.5, 1.0, 1.5, 2.5)]
    assert all(a < b for a, b in zip(values, values[1:])), values


def test_swd_rises_monotonically_with_noise_strength(real):
    values = [M.swd(real, add_noise(real, s))["avg"] for s in (0.02, 0.05, 0.1, 0.2)]
    assert all(a < b for a, b in zip(values, values[1:])), values


def test_swd_compares_sets_of_different_sizes(real, other):
    assert M.swd(real, other[:50])["avg"] > 0


def test_swd_refuses_images_of_different_sizes(real):
    with pytest.raises(CxrError, match="differ in size"):
        M.swd(real, generate(4, 64, seed=0).images)


# ======================================================================= histogram distance
def test_histogram_distance_of_a_shift_is_the_shift():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 200, (10, 1, 16, 16), generator=g, dtype=torch.uint8)
    assert M.histogram_distance(x, x) == 0
    assert M.histogram_distance(x, x + 20) == pytest.approx(20 / 256, rel=1e-6)


def test_histogram_distance_catches_a_brightness_shift_that_swd_misses(real, other):
    brighter = (M.to_float(real) + 0.1).clamp(-1, 1)  # +5 % of the range, like the seed's augmentation
    swd_shift, swd_fresh = M.swd(real, brighter)["avg"], M.swd(real, other)["avg"]
    hist_shift, hist_fresh = M.histogram_distance(real, brighter), M.histogram_distance(real, other)
    assert swd_shift < 0.5 * swd_fresh  # SWD: the brighter copies look *closer* than fresh phantoms
    assert hist_shift > 3 * hist_fresh  # the histogram sees the shift at once
    assert hist_shift == pytest.approx(0.05, abs=0.01)


# ======================================================================= diversity
def test_ms_ssim_is_one_for_identical_images_and_lower_for_different_ones(real, other):
    assert M.ms_ssim(real[:8], real[:8]) == pytest.approx(torch.ones(8), abs=1e-5)
    assert (M.ms_ssim(real[:8], other[:8]) < 0.95).all()
    assert M.ms_ssim_scales(32) == 3 and M.ms_ssim_scales(64) == 4 and M.ms_ssim_scales(256) == 5


def _corrupted_pair(size: int):
    """4 phantoms and corrupted twins: two with pixel noise, two mirrored (MS-SSIM from about 0.5 to 0.9)."""
    x = generate(4, size, seed=1).images
    g = torch.Generator().manual_seed(0)
    noisy = (x.float() + 25 * torch.randn(x.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    return x, torch.cat([noisy[:2], x[2:].flip(-1)])


@pytest.mark.parametrize(("size", "kernel_size", "sigma"), [(64, 7, 0.9), (192, 11, 1.5)])
def test_ms_ssim_equals_wangs_product_built_from_torchmetrics_ssim_terms(size, kernel_size, sigma):
    """torchmetrics cannot take our course window: its Gaussian has int(3.5σ + 0.5)·2 + 1 taps whatever
    ``kernel_size`` says (11 at σ 1.5), so the 7-tap check uses σ 0.9 (7 taps there too). Its per-scale
    contrast-structure means are 'valid' means like ours; its last-scale term is not Wang's (see the next test),
    so that one is built here from its full SSIM map with k2 so large that cs ≡ 1 (the map is then the luminance
    term), cropped to the valid positions. The product with our renormalised weights must be our MS-SSIM."""
    tm_ssim = pytest.importorskip("torchmetrics.functional.image").structural_similarity_index_measure
    x, y = _corrupted_pair(size)
    a, b = x.double() / 255, y.double() / 255
    n = M.ms_ssim_scales(size, kernel_size)
    betas = torch.tensor(M.MS_SSIM_BETAS[:n], dtype=torch.float64)
    kw = {"sigma": sigma, "kernel_size": kernel_size, "data_range": 1.0, "reduction": "none"}
    factors = []
    for scale in range(n):
        _, cs = tm_ssim(a, b, return_contrast_sensitivity=True, **kw)
        if scale == n - 1:  # Wang et al. 2003: the luminance term enters at the coarsest scale only
            pad = (kernel_size - 1) // 2
            _, lum = tm_ssim(a, b, k2=1e6, return_full_image=True, **kw)
            cs = cs * lum[..., pad:-pad, pad:-pad].mean(dim=(1, 2, 3))
        factors.append(cs.clamp_min(0))
        a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
    reference = (torch.stack(factors, dim=1) ** (betas / betas.sum())).prod(dim=1)
    ours = M.ms_ssim(x, y, kernel_size=kernel_size, sigma=sigma)
    assert reference.min() < 0.7 and reference.max() > 0.8  # far from the trivial 1
    assert torch.allclose(ours.double(), reference, atol=2e-5), (ours, reference)


def test_ms_ssim_with_torchmetrics_window_and_scales_is_close_to_its_ms_ssim():
    """``MultiScaleStructuralSimilarityIndexMeasure`` at its defaults (11 taps, σ 1.5, 5 scales; relu as our
    clipping) differs from ours in three documented ways: its last scale is the mean of l·cs over the whole image,
    reflect-padded at the borders (pytorch-msssim), ours mean(l)·mean(cs) over the valid positions (Wang's
    reference code); its weights are Wang's as printed (sum 1.0001), ours renormalised to 1. Measured at 192 px:
    at most 0.003 apart. Weights in the wrong order would be 0.06 off."""
    tm = pytest.importorskip("torchmetrics.image")
    x, y = _corrupted_pair(192)
    reference = tm.MultiScaleStructuralSimilarityIndexMeasure(data_range=1.0, normalize="relu", reduction="none")(
        x.float() / 255, y.float() / 255)
    ours = M.ms_ssim(x, y, kernel_size=11, n_scales=5)
    assert torch.allclose(ours, reference, atol=0.005), (ours, reference)
    assert torch.equal(ours.argsort(), reference.argsort())


def test_diversity_is_higher_for_a_collapsed_set_than_for_real_phantoms(real):
    d_real, d_collapsed = M.diversity(real, n_pairs=300), M.diversity(collapsed(real, 100), n_pairs=300)
    assert d_collapsed > 0.95 > d_real + 0.1


# ======================================================================= precision / recall
def test_features_are_deterministic_and_sized(real):
    f = M.features(real[:5])
    assert f.shape == (5, M.RandomConvEmbedding().num_features)
    assert torch.equal(f, M.features(real[:5]))
    assert not torch.equal(f, M.features(real[:5], seed=1))


def test_precision_and_recall_are_high_for_fresh_phantoms(real, other):
    pr = M.precision_recall(real, other)
    assert pr["precision"] > 0.4 and pr["recall"] > 0.4  # two finite samples: below 1 even for equal laws


def test_precision_drops_for_blurred_fakes(real, other):
    fresh, blurred = M.precision_recall(real, other), M.precision_recall(real, blur(other, 1.5))
    assert blurred["precision"] < 0.1 and fresh["precision"] - blurred["precision"] > 0.3


def test_recall_drops_for_a_collapsed_generator(real, other):
    fresh, coll = M.precision_recall(real, other), M.precision_recall(real, collapsed(other, 100))
    assert coll["recall"] < 0.1 and fresh["recall"] - coll["recall"] > 0.3
    assert coll["precision"] > 0.5  # every collapsed sample still looks real


def scattered(x: torch.Tensor, sigma: float = 0.4, cells: int = 8, seed: int = 0) -> torch.Tensor:
    """Each image plus its own smooth random field (``cells``² blobs, std ``sigma`` on the [-1, 1] scale): fakes
    scattered far from the reals and from each other, like a barely trained generator's → float in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    blobs = F.interpolate(torch.randn(x.shape[0], 1, cells, cells, generator=g), size=x.shape[-2:], mode="bilinear")
    return (M.to_float(x) + sigma * blobs / blobs.std()).clamp(-1, 1)


@pytest.fixture(scope="module")
def large_pair():
    """500 real and 500 fresh phantoms at 32 px: as many as ``MIN_KNN_IMAGES``, where the k-NN figures settle."""
    pool = generate(2 * M.MIN_KNN_IMAGES, SIZE, seed=11).images
    return pool[: M.MIN_KNN_IMAGES], pool[M.MIN_KNN_IMAGES :]


def test_scattered_fakes_get_high_recall_but_low_coverage_and_density(real, other):
    fresh, spread = M.precision_recall(real, other), M.precision_recall(real, scattered(other))
    assert spread["recall"] > 0.9  # the trap: the scattered samples' huge k-NN balls swallow every real image
    assert spread["precision"] < 0.1 and spread["coverage"] < 0.1 and spread["density"] < 0.1
    assert fresh["coverage"] > 0.6 and fresh["density"] > 0.5  # fresh phantoms score well on both


def test_fakes_drawn_like_the_reals_get_density_near_one_and_the_expected_coverage(large_pair):
    real, fake = large_pair
    res = M.precision_recall(real, fake, k=3)
    assert res["density"] == pytest.approx(1.0, abs=0.2)  # E = 1 for one distribution; 6 subsets: 0.87–1.07
    n, m, k = len(real), len(fake), 3
    expected = 1 - math.comb(n - 1, k) / math.comb(n + m - 1, k)  # Naeem et al. 2020, eq. for identical laws
    assert res["coverage"] == pytest.approx(expected, abs=0.05)  # 0.875
    assert res["warnings"] == []


def test_identical_sets_are_covered_completely(real):
    res = M.precision_recall(real, real, k=3)
    assert res["coverage"] == 1.0 and res["precision"] == 1.0 and res["recall"] == 1.0
    # each real ball holds its own centre and its k nearest neighbours: k + 1 fakes per ball
    assert res["density"] == pytest.approx(4 / 3)


def test_density_rises_above_one_for_fakes_crowded_on_few_reals(real, other):
    coll = M.precision_recall(real, collapsed(other, 100))
    assert coll["density"] > 1.5 and coll["coverage"] < 0.2  # all in the same few balls: dense, not covering


def test_small_sets_get_a_plain_warning_and_large_ones_none(real, other, large_pair):
    small = M.precision_recall(real[:40], other[:60])["warnings"]
    assert len(small) == 1 and "real 40" in small[0] and "fake 60" in small[0]
    assert str(M.MIN_KNN_IMAGES) in small[0] and "\n" not in small[0]
    only_fake = M.knn_warnings(M.MIN_KNN_IMAGES, 64)
    assert len(only_fake) == 1 and "(fake 64 images)" in only_fake[0]
    assert M.precision_recall(*large_pair)["warnings"] == []


def _naeem_prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict:
    """Precision, recall, density and coverage as Naeem et al. 2020 define them (their ``prdc`` package's
    formulas, in float64 with exact distances). One difference from ours: prdc tests ``d < radius``, we
    ``d <= radius`` — it matters only for a point exactly on a ball's edge (fakes equal to reals)."""
    d_rr = np.linalg.norm(real[:, None] - real[None], axis=-1)
    d_ff = np.linalg.norm(fake[:, None] - fake[None], axis=-1)
    d_rf = np.linalg.norm(real[:, None] - fake[None], axis=-1)  # (N, M)
    r_real = np.sort(d_rr, axis=1)[:, k]  # column 0 is the point itself
    r_fake = np.sort(d_ff, axis=1)[:, k]
    inside = d_rf < r_real[:, None]  # fake j inside real ball i
    return {
        "precision": inside.any(axis=0).mean(),
        "recall": (d_rf < r_fake[None, :]).any(axis=1).mean(),
        "density": inside.sum(axis=0).mean() / k,
        "coverage": (d_rf.min(axis=1) < r_real).mean(),
    }


@pytest.mark.parametrize("k", [3, 5])
def test_precision_recall_density_coverage_match_naeem_et_al(k):
    """Our k-NN figures against Naeem et al.'s definitions (``prdc`` itself when installed), on the same
    standardised features: 12-D Gaussian reals and shifted, narrower fakes (every figure between 0.1 and 0.9)."""
    rng = np.random.default_rng(0)
    real = rng.normal(0, 1, (240, 12))
    fake = rng.normal(0.6, 0.9, (180, 12))
    # precision_recall takes images; the "images" here are row indices into the feature tables
    table = {"real": torch.tensor(real, dtype=torch.float32), "fake": torch.tensor(fake, dtype=torch.float32)}

    def embed(x):
        which = "real" if x.shape[0] == len(real) else "fake"
        return table[which][x.flatten(1)[:, 0].long()]

    index = lambda n: torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1)  # noqa: E731  (n ≤ 256)
    ours = M.precision_recall(index(len(real)), index(len(fake)), k=k, features=embed)
    mu, sd = real.mean(0), real.std(0, ddof=1)  # standardised by the real set's mean and std, as documented
    real_s, fake_s = (real - mu) / sd, (fake - mu) / sd
    try:
        from prdc import compute_prdc

        reference = compute_prdc(real_features=real_s, fake_features=fake_s, nearest_k=k)
    except ImportError:
        reference = _naeem_prdc(real_s, fake_s, k)
    assert all(0.1 < reference[name] < 0.9 for name in ("precision", "recall", "density", "coverage")), reference
    one_point = {"precision": 1 / len(fake), "recall": 1 / len(real), "coverage": 1 / len(real),
                 "density": 1 / (k * len(fake))}  # float32 distances may move one point across a ball's edge
    for name, tol in one_point.items():
        assert ours[name] == pytest.approx(reference[name], abs=tol + 1e-9), (name, ours[name], reference[name])


# ======================================================================= memorisation audit
@pytest.fixture(scope="module")
def audit_sets(pool):
    """140 training images, 60 held-out ones, and 4 × 35 copies of training images (exact, with pixel noise of
    std 8/255, JPEG quality 75, brighter and more contrasted), with the index of the original of each."""
    train, holdout = pool[:140], pool[140:200]
    idx = torch.arange(0, 140, 4)
    g = torch.Generator().manual_seed(1)
    noise = 8 * torch.randn(len(idx), 1, SIZE, SIZE, generator=g)
    noisy = (train[idx].float() + noise).clamp(0, 255).to(torch.uint8)
    brighter = (train[idx].float() * 1.1 + 10).clamp(0, 255).to(torch.uint8)
    copies = torch.cat([train[idx], noisy, jpeg(train[idx], 75), brighter])
    return train, holdout, copies, idx.repeat(4)


def test_audit_flags_copies_of_training_images_even_with_noise_jpeg_or_brightness(audit_sets):
    train, holdout, copies, idx = audit_sets
    res = M.memorization_audit(copies, train, holdout)
    assert res["flagged_fraction"] >= 0.95
    assert torch.equal(torch.tensor(res["per_sample"]["nearest_index"]), idx)  # it names the right image
    first = res["top_pairs"][0]
    assert first["train"] == int(idx[first["fake"]]) and first["distance"] < 1e-3


def test_audit_passes_held_out_real_images(audit_sets):
    train, holdout, copies, _ = audit_sets
    res = M.memorization_audit(holdout, train, holdout)
    assert res["flagged_fraction"] <= 0.05
    assert res["holdout_flagged_fraction"] == res["flagged_fraction"]
    # Alaa's raw criterion alone would accuse a fair share of genuinely new images: why we add margins
    assert res["inauthentic_fraction"] > res["flagged_fraction"]


def test_audit_of_a_fresh_generator_matches_the_held_out_baseline(pool, audit_sets):
    train, holdout, _, _ = audit_sets
    fresh = pool[200:240]
    res = M.memorization_audit(fresh, train, holdout)
    assert res["flagged_fraction"] <= 0.05
    assert res["median_nn_distance"] == pytest.approx(res["holdout_median_nn_distance"], rel=0.25)


# ======================================================================= FID
def test_fid_is_skipped_with_one_line_and_no_network(real, other, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty hub cache
    monkeypatch.delenv(M.FID_WEIGHTS_ENV, raising=False)

    def no_network(*args, **kwargs):
        raise AssertionError("FID tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.warns(UserWarning, match="FID skipped") as caught:
        assert M.fid(real, other) is None
    message = str(caught[0].message)
    assert "\n" not in message and ("--fid-weights" in message or "pip install" in message)
    assert M.fid_skip_reason(tmp_path / "missing.pth") is not None


def test_fid_finds_inception_weights_only_on_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv(M.FID_WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(M.frechet, "_has_package", lambda name: True)  # as if torch-fidelity were installed
    reason = M.fid_skip_reason()
    assert "not found" in reason and str(tmp_path / "hub" / "checkpoints") in reason and "--fid-weights" in reason
    cached = tmp_path / "hub" / "checkpoints" / M.FID_WEIGHTS_NAME
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")
    assert M.fid_weights_path() == cached and M.fid_skip_reason() is None
    own = tmp_path / "inception.pth"
    own.write_bytes(b"weights")
    monkeypatch.setenv(M.FID_WEIGHTS_ENV, str(own))
    assert M.fid_weights_path() == own
    assert M.fid_weights_path(tmp_path / "missing.pth") is None  # a wrong explicit path never falls back
    assert "no Inception weights file" in M.fid_skip_reason(tmp_path / "missing.pth")


class _Pool4(torch.nn.Module):
    """A tiny offline feature network: 4×4 average-pooled pixels (16 features)."""

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, 4).flatten(1)


def test_fid_with_a_custom_feature_module_is_near_zero_for_identical_sets(real, other):
    same = M.fid(real, real, feature=_Pool4())
    different = M.fid(real, blur(other, 2.0), feature=_Pool4())
    assert abs(same) < 1e-3
    assert different > 100 * max(abs(same), 1e-6)


# ======================================================================= evaluate
def test_evaluate_returns_every_metric_as_json(real, other, pool):
    train = pool[200:240]
    result = M.evaluate(real, other, train, seed=0, n_pairs=100)
    json.dumps(result)  # JSON-ready: plain numbers, lists, strings, None
    assert set(result["swd"]) == {"avg", "32px", "16px"} and set(result["swd_floor"]) == set(result["swd"])
    assert (result["n_real"], result["n_fake"], result["size"]) == (100, 100, SIZE)
    assert set(result["diversity"]) == {"fake", "real"}
    pr = result["precision_recall"]
    assert all(0 <= pr[c] <= 1 for c in ("precision", "recall", "coverage")) and pr["density"] >= 0
    assert "warnings" not in pr and len(result["warnings"]) == 1 and "real 100" in result["warnings"][0]
    assert result["histogram_distance"] >= 0
    assert (result["fid"] is None) == (result["fid_skipped"] is not None)
    assert result["kid"]["random-cnn"]["subset_size"] == 50 and (result["kid_skipped"] is None) == (result["fid_skipped"] is None)
    mem = result["memorization"]
    assert mem["flagged_fraction"] <= 0.05 and mem["holdout_source"] == "real images not in train"
    assert "per_sample" not in mem
    table = M.summary_table(result)
    assert "SWD" in table and "memorisation" in table and "density / coverage" in table and "KID ×1e3 random CNN" in table
    assert table.splitlines()[-1] == f"warning: {result['warnings'][0]}"


def test_evaluate_flags_a_generator_that_copies_its_training_set(pool):
    train = pool[:100]
    copier = jpeg(train[:50], 90)
    mem = M.evaluate(pool[100:160], copier, train, n_pairs=50)["memorization"]
    assert mem["flagged_fraction"] >= 0.95 and mem["holdout_flagged_fraction"] <= 0.05


def test_evaluate_refuses_bad_inputs(real, other):
    with pytest.raises(CxrError, match="at least 8"):
        M.evaluate(real, other[:3])
    with pytest.raises(CxrError, match="differ in size"):
        M.evaluate(real, generate(10, 64, seed=0).images)
    with pytest.raises(CxrError, match="empty"):
        M.evaluate(real, torch.zeros(0, 1, SIZE, SIZE, dtype=torch.uint8))
    with pytest.raises(CxrError, match="grayscale"):
        M.evaluate(real, torch.zeros(10, 3, SIZE, SIZE))
