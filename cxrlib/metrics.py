"""Measuring generated X-rays, offline on a CPU: how real, how varied, how much copied.

Every metric takes image sets as ``(N, 1, H, W)`` tensors, either ``uint8`` in [0, 255] or float in [-1, 1]
(numpy arrays and objects with an ``.images`` attribute, such as ``cxrlib.data.ImageSet``, work too).
None needs downloaded weights; FID is the one exception and is skipped, with a reason, when its weights are
not on disk.

* ``swd`` — sliced Wasserstein distance between Laplacian-pyramid patches (Karras et al. 2018, ProGAN):
  per resolution, how far the local textures of the fakes are from the reals. ``swd_floor`` is the same
  figure between two halves of the real set: a fake set cannot be expected to score below it.
* ``histogram_distance`` — Wasserstein-1 between pixel-intensity distributions: SWD normalises its patches,
  so it cannot see a global brightness/contrast shift; this can (offline augmentation leaks exactly that).
* ``diversity`` — mean MS-SSIM between random pairs (Wang et al. 2003; used for GANs by Odena et al. 2017):
  higher means more alike, so a mode-collapsed generator scores higher than the real data.
* ``precision_recall`` — k-NN manifold precision (realism) and recall (Kynkäänniemi et al. 2019), and density
  and coverage (Naeem et al. 2020), which use only the real set's k-NN balls and so cannot be inflated by
  scattered samples the way recall can; in the feature space of a fixed, seeded, *random* CNN (``features``) —
  no download, and random embeddings suit data far from ImageNet (Naeem et al. 2020). ``knn_warnings`` says
  when a set is too small (< ``MIN_KNN_IMAGES``) for these figures to be more than rough.
* ``memorization_audit`` — for each sample, the nearest training image; a sample is flagged when it sits much
  closer to a training image than that image sits to any other training image (authenticity, Alaa et al.
  2022) and much closer than to the second-nearest one (ratio test); held-out real images give the baseline.
* ``fid`` — Fréchet Inception distance through torchmetrics, only with local weights or a custom feature module.
* ``evaluate`` — all of the above as one JSON-ready dict (the ``python -m cxrlib evaluate`` contract).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxrlib.errors import CxrError
from cxrlib.images import as_images, to_float, to_uint8

#: fewest images per set that ``evaluate`` accepts: precision/recall need k + 1 = 4 neighbours per set and the
#: SWD floor splits the real set into two halves that must each hold at least that many.
MIN_IMAGES = 8

#: fewest images per set below which ``precision_recall``'s k-NN figures depend on the set size more than on the
#: generator (``knn_warnings`` says so). Measured with k = 3 on 64 px phantoms against fresh phantoms (a perfect
#: generator), 6 random subsets per size: at 500 vs 500 precision, recall, density and coverage are all within
#: 0.04 of their values at 2,000 vs 2,000 (0.74 / 0.77 / 1.02 / 0.87); at 300 vs 300 precision is 0.07 and
#: density 0.09 low, at 100 vs 100 precision 0.15 low, recall 0.06 high and density 0.82 ± 0.23. (Naeem et al.
#: 2020 use k = 5 with 10,000 images per set.)
MIN_KNN_IMAGES = 500

#: the file name torch-fidelity (used by torchmetrics' FID) downloads its Inception weights to, under
#: ``torch.hub.get_dir()/checkpoints/``.
FID_WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{FID_WEIGHTS_NAME}"
FID_WEIGHTS_ENV = "CXRLIB_FID_WEIGHTS"

_CHUNK = 256  # images converted to float at once: bounds memory at 512 px (256 · 512² · 4 B = 256 MB)
_DIRECTIONS_AT_ONCE = 32  # SWD projections held at once: 2,000 images · 128 patches · 32 · 4 B = 33 MB per set


# ======================================================================= inputs
def _float_chunks(x: torch.Tensor, chunk: int = _CHUNK) -> Iterator[torch.Tensor]:
    """Yield ``x`` in slices of ``chunk`` images as float32 in [-1, 1]: a large uint8 set never becomes
    one big float tensor."""
    for i in range(0, x.shape[0], chunk):
        yield to_float(x[i : i + chunk])


def _check_same_size(a: torch.Tensor, b: torch.Tensor, what: str = "real and fake") -> None:
    if a.shape[-2:] != b.shape[-2:]:
        raise CxrError(
            f"{what} images differ in size ({a.shape[-1]}x{a.shape[-2]} vs {b.shape[-1]}x{b.shape[-2]} px): "
            "resize them to one size first (python -m cxrlib prepare --size S)"
        )


def _pairwise_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between rows: a (n, D), b (m, D) → (n, m). Uses one matmul (‖a‖² + ‖b‖² − 2ab)."""
    d2 = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return d2.clamp_min_(0).sqrt_()


def _k_smallest(a: torch.Tensor, b: torch.Tensor, k: int, *, exclude_self: bool = False, chunk: int = 1024):
    """For each row of ``a``: the ``k`` smallest distances to rows of ``b`` and their indices, ascending.

    a (n, D), b (m, D) → values (n, k), indices (n, k). ``exclude_self`` (when a is b) skips the diagonal.
    Chunked over ``a`` so the distance matrix is never larger than chunk × m.
    """
    values, indices = [], []
    for i in range(0, a.shape[0], chunk):
        d = _pairwise_distances(a[i : i + chunk], b)
        if exclude_self:
            rows = torch.arange(d.shape[0])
            d[rows, rows + i] = float("inf")
        v, j = torch.topk(d, k, dim=1, largest=False)
        values.append(v)
        indices.append(j)
    return torch.cat(values), torch.cat(indices)


# ======================================================================= sliced Wasserstein distance
def _binomial_kernel(device=None) -> torch.Tensor:
    """The 5×5 binomial kernel [1, 4, 6, 4, 1]ᵀ[1, 4, 6, 4, 1] / 256 as a (1, 1, 5, 5) conv weight."""
    k1 = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=device)
    return (torch.outer(k1, k1) / 256.0)[None, None]


def _blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel)


def _pyr_down(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Low-pass with the binomial kernel, then keep every second pixel: (B, 1, H, W) → (B, 1, ⌈H/2⌉, ⌈W/2⌉)."""
    return _blur(x, kernel)[..., ::2, ::2]


def _pyr_up(x: torch.Tensor, shape: tuple[int, int], kernel: torch.Tensor) -> torch.Tensor:
    """Insert zeros between pixels and interpolate with 4 × the kernel (the zeros carry no mass): → ``shape``."""
    b, c, h, w = x.shape
    up = x.new_zeros(b, c, 2 * h, 2 * w)
    up[..., ::2, ::2] = x
    return _blur(up, 4.0 * kernel)[..., : shape[0], : shape[1]]


def laplacian_pyramid(x: torch.Tensor, min_res: int = 16) -> list[torch.Tensor]:
    """Band-pass levels of ``x`` (B, 1, H, W) float, finest first, down to ``min_res`` px.

    Each level but the last is the detail lost by one halving (``G_i − up(G_{i+1})``); the last is the
    low-pass image itself at the coarsest resolution ≥ ``min_res`` (e.g. 64 px → 64, 32, 16 px).
    """
    kernel = _binomial_kernel(x.device)
    levels, g = [], x
    while min(g.shape[-2:]) // 2 >= min_res:
        down = _pyr_down(g, kernel)
        levels.append(g - _pyr_up(down, g.shape[-2:], kernel))
        g = down
    levels.append(g)
    return levels


def _pyramid_sizes(size: int, min_res: int) -> list[int]:
    sizes = [size]
    while sizes[-1] // 2 >= min_res:
        sizes.append((sizes[-1] + 1) // 2)
    return sizes


def _patch_positions(n: int, level_shapes, patches_per_image: int, patch_size: int, seed: int):
    """Top-left corners of the random patches, (n, P) rows and columns per level.

    Drawn from ``seed`` alone, so two sets of the same size are cut at the same places ("common random
    numbers"): a set compared with itself gives exactly 0 and small differences are not drowned in the
    noise of where the patches fell.
    """
    out = []
    for level, (h, w) in enumerate(level_shapes):
        g = torch.Generator().manual_seed(seed * 1009 + level)
        ys = torch.randint(0, h - patch_size + 1, (n, patches_per_image), generator=g)
        xs = torch.randint(0, w - patch_size + 1, (n, patches_per_image), generator=g)
        out.append((ys, xs))
    return out


def _swd_descriptors(images, *, patches_per_image, patch_size, min_res, seed) -> list[torch.Tensor]:
    """Random patches of each pyramid level, normalised: list over levels of (N · P, patch_size²) float."""
    x = as_images(images)
    n, (h, w) = x.shape[0], x.shape[-2:]
    if min(h, w) < patch_size:
        raise CxrError(f"images are {w}x{h} px, smaller than the {patch_size}x{patch_size} SWD patches")
    per_level: list[list[torch.Tensor]] = []
    positions = offsets = None
    for i, xf in enumerate(_float_chunks(x)):
        levels = laplacian_pyramid(xf.to(x.device), min_res)
        if positions is None:
            shapes = [tuple(lv.shape[-2:]) for lv in levels]
            positions = _patch_positions(n, shapes, patches_per_image, patch_size, seed)
            per_level = [[] for _ in levels]
            r = torch.arange(patch_size)
            offsets = [(r[:, None] * lw + r[None, :]).reshape(-1) for (_, lw) in shapes]
        sl = slice(i * _CHUNK, i * _CHUNK + xf.shape[0])
        for lv, (ys, xs), off, out in zip(levels, positions, offsets, per_level):
            b, _, lh, lw = lv.shape
            corner = (ys[sl] * lw + xs[sl]).to(lv.device)  # (b, P) flat index of each patch's top-left pixel
            idx = (corner[:, :, None] + off.to(lv.device)).reshape(b, -1)
            out.append(lv.reshape(b, lh * lw).gather(1, idx).reshape(-1, patch_size * patch_size))
    descriptors = []
    for chunks in per_level:
        d = torch.cat(chunks)
        chunks.clear()
        # ProGAN normalises each set's patches per colour channel over all its own patches and pixels:
        # SWD then compares texture, not overall brightness or contrast (histogram_distance covers those).
        descriptors.append(d.sub_(d.mean()).div_(d.std().clamp_min(1e-8)))
    return descriptors


def _sort_rows(x: torch.Tensor) -> torch.Tensor:
    """Sort each row ascending. On CPU in place with numpy's SIMD sort (faster than torch.sort, and no copy of
    a matrix that can be hundreds of MB; timings in benchmarks/RESULTS.md); on GPU with torch.sort."""
    if x.is_cuda:
        return torch.sort(x, dim=-1).values
    x.numpy().sort(axis=-1)
    return x


def _sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, *, n_directions, n_repeats, gen, pool) -> float:
    """Mean over ``n_repeats`` × ``n_directions`` random unit directions of the 1-D Wasserstein-1 distance
    between the projections of a (M, D) and b (M, D): the mean absolute difference of the sorted values."""
    results = []
    for _ in range(n_repeats):
        dirs = torch.randn(a.shape[1], n_directions, generator=gen).to(a.device)
        dirs /= dirs.norm(dim=0, keepdim=True)
        total = 0.0
        for d in dirs.split(_DIRECTIONS_AT_ONCE, dim=1):
            # dᵀ aᵀ is (directions, M): each sort runs along the last, contiguous axis, no transpose copy
            sa, sb = pool.map(_sort_rows, (d.T @ a.T, d.T @ b.T))
            total += float(sa.sub_(sb).abs_().sum())
        results.append(total / (n_directions * a.shape[0]))
    return float(np.mean(results))


def swd(
    real,
    fake,
    *,
    patches_per_image: int = 128,
    patch_size: int = 7,
    n_directions: int = 128,
    n_repeats: int = 4,
    min_res: int = 16,
    seed: int = 0,
) -> dict:
    """Sliced Wasserstein distance ×10³ per Laplacian-pyramid level (Karras et al. 2018).

    real, fake: (N, 1, S, S) uint8 or float in [-1, 1], same S. For each level (S px halved down to
    ``min_res``): ``patches_per_image`` random ``patch_size``² patches per image, normalised over the set's own
    patches; ``n_repeats`` × ``n_directions`` random unit directions; mean absolute difference of the sorted
    projections. Sets of different sizes are compared on an equal random subset of patches.
    Returns ``{"avg": …, "<S>px": …, "<S/2>px": …, …}``; 0 means identical patch statistics; deterministic
    per ``seed``. Read it beside ``swd_floor(real)``.
    """
    real, fake = as_images(real), as_images(fake)
    _check_same_size(real, fake)
    kw = dict(patches_per_image=patches_per_image, patch_size=patch_size, min_res=min_res, seed=seed)
    desc_real = _swd_descriptors(real, **kw)
    desc_fake = _swd_descriptors(fake, **kw)
    gen = torch.Generator().manual_seed(seed)
    sizes = _pyramid_sizes(real.shape[-1], min_res)
    levels: dict[str, float] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:  # numpy's sort releases the GIL: real and fake in parallel
        for res, a, b in zip(sizes, desc_real, desc_fake):
            m = min(a.shape[0], b.shape[0])
            if a.shape[0] > m:
                a = a[torch.randperm(a.shape[0], generator=gen)[:m]]
            if b.shape[0] > m:
                b = b[torch.randperm(b.shape[0], generator=gen)[:m]]
            d = _sliced_wasserstein(a, b, n_directions=n_directions, n_repeats=n_repeats, gen=gen, pool=pool)
            levels[f"{res}px"] = d * 1e3
    return {"avg": float(np.mean(list(levels.values()))), **levels}


def swd_floor(real, seed: int = 0, **kwargs) -> dict:
    """SWD between two disjoint random halves of ``real``: what sampling noise alone gives (same keys as ``swd``).

    A generator matching the real distribution perfectly scores about this (for half as many images), so
    read ``swd(real, fake)`` as "how far above the floor".
    """
    real = as_images(real)
    n = real.shape[0]
    if n < 2:
        raise CxrError(f"the SWD floor needs at least 2 real images, got {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))
    half = n // 2
    return swd(real[perm[:half]], real[perm[half : 2 * half]], seed=seed, **kwargs)


# ======================================================================= intensity histogram
def intensity_histogram(images, bins: int = 256) -> torch.Tensor:
    """Normalised histogram of pixel intensities on the [0, 1] scale: (bins,) float64 summing to 1."""
    x = as_images(images)
    hist = torch.zeros(bins, dtype=torch.float64)
    for xf in _float_chunks(x):
        v = (xf + 1.0) / 2.0  # [-1, 1] → [0, 1]
        hist += torch.histc(v.cpu(), bins=bins, min=0.0, max=1.0).double()
    return hist / hist.sum()


def histogram_distance(real, fake, bins: int = 256) -> float:
    """Wasserstein-1 distance between the pixel-intensity distributions of two sets, on the [0, 1] scale.

    real, fake: (N, 1, H, W) uint8 or float in [-1, 1]. W1 = ∫|CDF_real − CDF_fake|: a global brightness shift
    of δ gives ≈ δ (e.g. 0.05), which SWD's per-set normalisation cannot see. 0 = identical histograms.
    """
    h_real, h_fake = intensity_histogram(real, bins), intensity_histogram(fake, bins)
    return float((h_real.cumsum(0) - h_fake.cumsum(0)).abs().sum() / bins)


def mean_brightness(images) -> torch.Tensor:
    """Each image's mean pixel intensity on the [0, 1] scale: (N,) float32.

    images: (N, 1, H, W) uint8 or float in [-1, 1]. One number per image: offline brightness jitter widens
    its spread, and a generator that learned the jitter reproduces that spread.
    """
    x = as_images(images)
    return torch.cat([((xf.mean(dim=(1, 2, 3)) + 1.0) / 2.0).float().cpu() for xf in _float_chunks(x)])


def power_spectrum(images) -> torch.Tensor:
    """Mean 2-D power spectrum of a set of images, zero frequency in the centre: (H, W) float32, log10 scale.

    images: (N, 1, H, W) or (N, H, W) or (H, W), any float (or uint8) values; each image's mean is removed
    first, so the constant part does not swamp the rest. A pattern repeating every ``s`` pixels shows up as
    peaks ``H/s`` bins away from the centre (s = 2: at the border, the highest frequency the grid can hold).
    """
    x = torch.as_tensor(images).detach().float().cpu()
    while x.ndim < 4:
        x = x.unsqueeze(0)
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fftshift(torch.fft.fft2(x).abs().pow(2), dim=(-2, -1)).mean(dim=(0, 1))
    return torch.log10(power + 1e-12)


# ======================================================================= diversity (MS-SSIM)
#: Wang et al. 2003's weights for 5 scales, finest first; fewer scales use the first ones, renormalised.
MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _gaussian_kernel(size: int, sigma: float, device=None) -> torch.Tensor:
    """A normalised 2-D Gaussian window as a (1, 1, size, size) conv weight."""
    g = _gaussian_1d(size, sigma, device)
    return torch.outer(g, g)[None, None]


def _gaussian_1d(size: int, sigma: float, device=None) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def _local_means(maps: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Gaussian-weighted local means of each channel of maps (B, C, H, W), 'valid' borders.

    The window is separable: a 1×k then a k×1 pass costs 2k instead of k² multiplications per pixel."""
    c, k = maps.shape[1], g.numel()
    out = F.conv2d(maps, g.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(out, g.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def _ssim_maps(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SSIM's local terms of x, y (B, 1, H, W) float in [0, 1] with the 1-D Gaussian window ``g`` (k taps):
    the luminance and the contrast-structure maps, each (B, H − k + 1, W − k + 1) ('valid' borders).
    Constants C1 = 0.01², C2 = 0.03² (Wang et al. 2004, data range 1)."""
    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y, m_xx, m_yy, m_xy = _local_means(torch.cat([x, y, x * x, y * y, x * y], dim=1), g).unbind(1)
    var_x, var_y, cov = m_xx - mu_x**2, m_yy - mu_y**2, m_xy - mu_x * mu_y
    lum = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return lum, (2 * cov + c2) / (var_x + var_y + c2)


def ms_ssim_scales(size: int, kernel_size: int = 7, max_scales: int = 5) -> int:
    """How many MS-SSIM scales fit ``size`` px: the coarsest must still hold one ``kernel_size`` window
    (32 px → 3, 64 px → 4, ≥ 112 px → 5)."""
    n = 1
    while n < max_scales and size // 2**n >= kernel_size:
        n += 1
    return n


def ms_ssim(a, b, *, n_scales: int | None = None, kernel_size: int = 7, sigma: float = 1.5) -> torch.Tensor:
    """Multi-scale SSIM of image pairs (Wang et al. 2003): a, b (B, 1, H, W) uint8 or float in [-1, 1] → (B,).

    1 = identical. Sized for small images: a 7×7 Gaussian window (σ = 1.5) instead of 11×11, and as many
    scales as fit (``ms_ssim_scales``: 3 at 32 px, 4 at 64 px, 5 from 112 px) with Wang's weights for those
    scales renormalised to sum to 1 — so values are comparable between sets of one size, not across sizes.
    Negative contrast-structure terms are clipped to 0 before the weighted product.
    """
    a, b = as_images(a), as_images(b)
    _check_same_size(a, b)
    x, y = (to_float(a) + 1) / 2, (to_float(b) + 1) / 2  # SSIM's constants assume data range [0, 1]
    n_scales = n_scales or ms_ssim_scales(min(x.shape[-2:]), kernel_size)
    betas = torch.tensor(MS_SSIM_BETAS[:n_scales], dtype=torch.float32)
    betas = betas / betas.sum()
    g = _gaussian_1d(kernel_size, sigma, x.device)
    factors = []
    for scale in range(n_scales):
        if min(x.shape[-2:]) < kernel_size:
            raise CxrError(f"images too small for {n_scales} MS-SSIM scales with a {kernel_size}px window")
        lum_map, cs_map = _ssim_maps(x, y, g)
        cs = cs_map.mean(dim=(1, 2))
        if scale == n_scales - 1:
            lum = lum_map.mean(dim=(1, 2))
            factors.append((lum * cs).clamp_min(0))
        else:
            factors.append(cs.clamp_min(0))
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    stacked = torch.stack(factors, dim=1)  # (B, scales)
    return (stacked ** betas.to(stacked.device)).prod(dim=1)


def diversity(images, n_pairs: int = 1000, seed: int = 0, **ms_ssim_kwargs) -> float:
    """Mean MS-SSIM over ``n_pairs`` random pairs of distinct images of one set: (N, 1, H, W), N ≥ 2.

    Higher = the images are more alike (mode collapse pushes it towards 1). Compare a fake set with the
    same figure for the real set.
    """
    x = as_images(images)
    n = x.shape[0]
    if n < 2:
        raise CxrError(f"diversity needs at least 2 images, got {n}")
    g = torch.Generator().manual_seed(seed)
    i = torch.randint(0, n, (n_pairs,), generator=g)
    j = (i + torch.randint(1, n, (n_pairs,), generator=g)) % n  # never the image itself
    scores = [ms_ssim(x[i[s : s + _CHUNK]], x[j[s : s + _CHUNK]], **ms_ssim_kwargs) for s in
              range(0, n_pairs, _CHUNK)]
    return float(torch.cat(scores).mean())


# ======================================================================= feature space for precision/recall
class RandomConvEmbedding(nn.Module):
    """A fixed, seeded, randomly initialised 3-stage CNN used as an offline feature space.

    Input (B, 1, H, W) float in [-1, 1] (larger than ``size`` px is area-downsampled to ``size``). Three stages
    of 3×3 conv → ReLU → 2×2 average pool with 16, 32 and 64 channels; each stage is read out on a 4×4 grid of
    regions (where in the chest something is matters), and an 8×8 thumbnail carries the global layout and
    brightness. Output (B, 64 + 16·(16+32+64)) = (B, 1856). The first stage's filters are zero-mean, so they
    respond to edges and texture (what blur removes) rather than to brightness.

    Why random weights: pretrained networks must be downloaded and were trained on ImageNet photographs;
    Naeem et al. 2020 show that randomly initialised embeddings give sensible precision/recall for domains
    far from ImageNet. The weights depend only on ``seed``: the same seed gives the same space everywhere.
    """

    def __init__(self, seed: int = 0, size: int = 64, widths=(16, 32, 64), grid: int = 4, thumb: int = 8):
        super().__init__()
        self.size, self.grid, self.thumb = size, grid, thumb
        g = torch.Generator().manual_seed(seed)
        convs, c_in = [], 1
        for k, c_out in enumerate(widths):
            w = torch.randn(c_out, c_in, 3, 3, generator=g) * math.sqrt(2.0 / (c_in * 9))  # He init
            if k == 0:
                w = w - w.mean(dim=(2, 3), keepdim=True)
            conv = nn.Conv2d(c_in, c_out, 3, padding=1, padding_mode="reflect", bias=False)
            conv.weight.data.copy_(w)
            convs.append(conv)
            c_in = c_out
        self.convs = nn.ModuleList(convs)
        self.num_features = thumb * thumb + grid * grid * sum(widths)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = to_float(x)
        if min(x.shape[-2:]) > self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="area")
        outs = [F.adaptive_avg_pool2d(x, self.thumb).flatten(1)]
        h = x
        for conv in self.convs:
            h = F.avg_pool2d(F.relu(conv(h)), 2, ceil_mode=True)
            outs.append(F.adaptive_avg_pool2d(h, self.grid).flatten(1))
        return torch.cat(outs, dim=1)


@torch.no_grad()
def features(images, *, seed: int = 0, size: int = 64) -> torch.Tensor:
    """Embed images in the offline feature space of ``RandomConvEmbedding``: (N, 1, H, W) → (N, 1856) float."""
    x = as_images(images)
    net = RandomConvEmbedding(seed=seed, size=size).to(x.device)
    return torch.cat([net(xf.to(x.device)) for xf in _float_chunks(x)])


def _standardise(f_real: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Scale every feature by the real set's mean and std, so no dimension dominates the distances."""
    mu, sd = f_real.mean(0), f_real.std(0).clamp_min(1e-6)
    return [(f - mu) / sd for f in (f_real, *others)]


def precision_recall(
    real,
    fake,
    k: int = 3,
    *,
    features: str | Callable = "random-cnn",
    seed: int = 0,
    chunk: int = 1024,
) -> dict:
    """k-NN manifold metrics in a feature space: precision and recall (Kynkäänniemi et al. 2019), density and
    coverage (Naeem et al. 2020).

    real (N), fake (M): (N, 1, H, W) uint8 or float in [-1, 1], at least ``k`` + 1 images each. Every real
    feature vector X_i gets a ball B_i reaching its k-th nearest real neighbour; every fake Y_j one reaching its
    k-th nearest fake neighbour.

    * **precision** = share of fakes inside at least one real ball (realism);
    * **recall** = share of reals inside at least one *fake* ball. Scattered fakes have huge balls that swallow
      the real set: a generator drawing noise can score recall 1;
    * **density** = Σ_j #{i: Y_j ∈ B_i} / (k·M): how many real balls a fake sits in, on average, ÷ k.
      About 1 when fakes and reals come from one distribution (each ball holds k reals, so a fake drawn like
      them lands in k/N of the N balls); above 1 for fakes crowded where the reals are densest, near 0 for
      scattered ones. Unlike precision, one real outlier with a big ball cannot make many fakes look real;
    * **coverage** = share of real balls holding at least one fake: how much of the real variety the samples
      reach. Only real balls are used, so scattered fakes cannot inflate it; a perfect generator scores
      1 − C(N−1, k) / C(N+M−1, k) on average (Naeem et al.: ≈ 1 − 2⁻ᵏ = 0.875 for M = N, k = 3).

    ``features``: ``"random-cnn"`` (``features()``, default) or a callable images → (N, D) tensor. Features are
    standardised with the real set's per-dimension mean and std. With fewer than ``MIN_KNN_IMAGES`` images in
    a set the numbers are rough: ``warnings`` then says so (``knn_warnings``).
    Returns ``{"precision", "recall", "density", "coverage", "k", "features", "warnings"}``.
    """
    real, fake = as_images(real), as_images(fake)
    for name, x in (("real", real), ("fake", fake)):
        if x.shape[0] <= k:
            raise CxrError(f"precision/recall with k={k} needs at least {k + 1} {name} images, got {x.shape[0]}")
    embed = (lambda x: globals()["features"](x, seed=seed)) if features == "random-cnn" else features
    if not callable(embed):
        raise CxrError(f"unknown feature space {features!r}: use 'random-cnn' or a callable")
    f_real, f_fake = _standardise(embed(real).float().cpu(), embed(fake).float().cpu())
    r_real = _k_smallest(f_real, f_real, k, exclude_self=True, chunk=chunk)[0][:, -1]  # k-NN radius per real
    r_fake = _k_smallest(f_fake, f_fake, k, exclude_self=True, chunk=chunk)[0][:, -1]
    fake_in_real_balls = _balls_holding(f_fake, f_real, r_real, chunk)  # (M,) per fake: how many real balls
    real_in_fake_balls = _balls_holding(f_real, f_fake, r_fake, chunk)
    nearest_fake = _k_smallest(f_real, f_fake, 1, chunk=chunk)[0][:, 0]  # a real ball holds a fake iff this fits
    return {
        "precision": float((fake_in_real_balls > 0).float().mean()),
        "recall": float((real_in_fake_balls > 0).float().mean()),
        "density": float(fake_in_real_balls.sum()) / (k * f_fake.shape[0]),
        "coverage": float((nearest_fake <= r_real).float().mean()),
        "k": k,
        "features": features if isinstance(features, str) else getattr(features, "__name__", "custom"),
        "warnings": knn_warnings(real.shape[0], fake.shape[0], k),
    }


def _balls_holding(points, centres, radii, chunk) -> torch.Tensor:
    """For each of ``points`` (n, D): how many balls (``centres`` (m, D), ``radii`` (m,)) hold it → (n,) int64."""
    return torch.cat([(_pairwise_distances(points[i : i + chunk], centres) <= radii[None, :]).sum(1)
                      for i in range(0, points.shape[0], chunk)])


def knn_warnings(n_real: int, n_fake: int, k: int = 3) -> list[str]:
    """Plain-language warnings when a set is too small for the k-NN metrics to be read as more than rough
    (fewer than ``MIN_KNN_IMAGES`` images); an empty list otherwise."""
    small = [f"{name} {n}" for name, n in (("real", n_real), ("fake", n_fake)) if n < MIN_KNN_IMAGES]
    if not small:
        return []
    return [f"small sets ({', '.join(small)} images): precision, recall, density and coverage (k={k}) are rough "
            f"below {MIN_KNN_IMAGES} images per set; read them beside the same figures for two real sets of "
            "these sizes"]


# ======================================================================= memorisation audit
@torch.no_grad()
def audit_embedding(images, size: int = 32) -> torch.Tensor:
    """The audit's distance space: (N, 1, H, W) → (N, size²) float.

    Area-downsampled to ``size`` px (drops pixel noise and JPEG artefacts; keeps what identifies a patient's
    anatomy), then each image standardised to mean 0 and RMS 1 — so a copy that was brightened or given more
    contrast (the original project's offline augmentation) is still recognised as a copy. Distances are RMS differences
    (divided by √size²), so 0 = identical and two unrelated images sit near √2.
    """
    x = as_images(images)
    out = []
    for xf in _float_chunks(x):
        if min(xf.shape[-2:]) != size:
            xf = F.interpolate(xf, size=(size, size), mode="area" if xf.shape[-1] > size else "bilinear")
        # a light binomial blur: pixel noise and JPEG blocks should not make a copy look like a new image
        v = _blur(xf, _binomial_kernel(xf.device)).flatten(1)
        v = v - v.mean(1, keepdim=True)
        v = v / v.pow(2).mean(1, keepdim=True).sqrt().clamp_min(1e-6)
        out.append(v / math.sqrt(v.shape[1]))
    return torch.cat(out)


def _audit_against(e_query, e_train, rho, *, alpha, ratio_threshold, chunk) -> dict:
    """Per-query nearest training image, distance, nearest/second ratio, authenticity ratio and flag."""
    d, j = _k_smallest(e_query, e_train, 2, chunk=chunk)
    d1, d2, nearest = d[:, 0], d[:, 1], j[:, 0]
    nn_ratio = d1 / d2.clamp_min(1e-12)
    # Alaa et al. 2022: inauthentic when closer to the training image than that image is to any other one
    auth_ratio = d1 / rho[nearest].clamp_min(1e-12)
    flagged = (auth_ratio < alpha) & (nn_ratio < ratio_threshold)
    return {
        "nearest_index": nearest,
        "nearest_distance": d1,
        "nn_ratio": nn_ratio,
        "authenticity_ratio": auth_ratio,
        "flagged": flagged,
    }


def copy_flags(e_fake: torch.Tensor, e_train: torch.Tensor, *, alpha: float = 0.5, ratio_threshold: float = 0.8,
               chunk: int = 1024) -> torch.Tensor:
    """The audit's rule on embeddings: which samples are (near-)copies of a training image?

    e_fake (n, D), e_train (m, D) float, m ≥ 2 (e.g. ``audit_embedding`` of each set) → (n,) bool. With d₁, d₂
    the distances from a sample to its nearest and second-nearest training embedding, t that nearest one and
    ρ(t) the distance from t to *its* nearest other training embedding, a sample is flagged when
    d₁ < alpha · ρ(t) and d₁ / d₂ < ratio_threshold (``memorization_audit`` explains why both).
    """
    rho = _k_smallest(e_train, e_train, 1, exclude_self=True, chunk=chunk)[0][:, 0]
    return _audit_against(e_fake, e_train, rho, alpha=alpha, ratio_threshold=ratio_threshold, chunk=chunk)["flagged"]


def memorization_audit(
    fake,
    train,
    holdout=None,
    *,
    size: int = 32,
    alpha: float = 0.5,
    ratio_threshold: float = 0.8,
    n_top: int = 16,
    chunk: int = 1024,
) -> dict:
    """Which generated images look like copies of training images?

    fake: (N, 1, H, W); train: (M, 1, H', W'), M ≥ 2 (pass the un-augmented training images: augmented
    near-duplicates inside ``train`` make every image's nearest neighbour its own copy and hide copying);
    holdout: optional real images never trained on — the baseline a non-copying generator should match.
    Sizes may differ: all sets are compared in ``audit_embedding`` space at ``size`` px.

    For each sample x with nearest training image t (distance d₁) and second-nearest (d₂), and ρ(t) = the
    distance from t to its own nearest training neighbour:

    * ``authenticity_ratio`` = d₁ / ρ(t) — Alaa et al. 2022 call x inauthentic when this is < 1;
      for fresh real images that happens often by chance (about a third of the time with phantoms), so
    * x is **flagged** when d₁ < ``alpha`` · ρ(t) *and* d₁ / d₂ < ``ratio_threshold``: clearly closer to one
      training image than the training images are to each other, and clearly closer to that one than to
      any other. Copies (even with noise, JPEG re-encoding or brightness changes) are flagged; held-out
      real images are not (checked in tests: ≥ 95 % vs ≤ 5 %).

    Returns a JSON-ready dict: ``flagged_fraction``, ``inauthentic_fraction`` (Alaa's raw criterion),
    ``median_nn_distance``, the same three with a ``holdout_`` prefix (None without holdout), the thresholds,
    ``top_pairs`` (the ``n_top`` most suspicious ``{"fake", "train", "distance", "authenticity_ratio",
    "nn_ratio"}``, most suspicious first) and ``per_sample`` (lists per fake: nearest index, distance,
    ratios, flag).
    """
    fake, train = as_images(fake), as_images(train)
    if train.shape[0] < 2:
        raise CxrError(f"the memorisation audit needs at least 2 training images, got {train.shape[0]}")
    e_train = audit_embedding(train, size)
    rho = _k_smallest(e_train, e_train, 1, exclude_self=True, chunk=chunk)[0][:, 0]
    kw = dict(alpha=alpha, ratio_threshold=ratio_threshold, chunk=chunk)
    res = _audit_against(audit_embedding(fake, size), e_train, rho, **kw)
    hold = _audit_against(audit_embedding(as_images(holdout), size), e_train, rho, **kw) if holdout is not None \
        else None
    order = torch.argsort(res["authenticity_ratio"])[:n_top]
    top = [
        {
            "fake": int(i),
            "train": int(res["nearest_index"][i]),
            "distance": float(res["nearest_distance"][i]),
            "authenticity_ratio": float(res["authenticity_ratio"][i]),
            "nn_ratio": float(res["nn_ratio"][i]),
        }
        for i in order
    ]
    return {
        "flagged_fraction": float(res["flagged"].float().mean()),
        "inauthentic_fraction": float((res["authenticity_ratio"] < 1).float().mean()),
        "median_nn_distance": float(res["nearest_distance"].median()),
        "holdout_flagged_fraction": None if hold is None else float(hold["flagged"].float().mean()),
        "holdout_inauthentic_fraction": None if hold is None
        else float((hold["authenticity_ratio"] < 1).float().mean()),
        "holdout_median_nn_distance": None if hold is None else float(hold["nearest_distance"].median()),
        "n_fake": int(fake.shape[0]),
        "n_train": int(train.shape[0]),
        "n_holdout": None if holdout is None else int(as_images(holdout).shape[0]),
        "alpha": alpha,
        "ratio_threshold": ratio_threshold,
        "size": size,
        "median_train_nn_distance": float(rho.median()),
        "top_pairs": top,
        "per_sample": {key: v.tolist() for key, v in res.items()},
    }


# ======================================================================= FID (optional)
def fid_weights_path(weights: str | os.PathLike | None = None) -> Path | None:
    """Where usable Inception weights are on disk: ``weights`` when given (None if that file is missing),
    else ``$CXRLIB_FID_WEIGHTS``, else torch hub's cache
    (``torch.hub.get_dir()/checkpoints/weights-inception-2015-12-05-6726825d.pth``); None if nowhere."""
    if weights is not None:
        path = Path(weights).expanduser()
        return path if path.is_file() else None
    candidates = [os.environ.get(FID_WEIGHTS_ENV), Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_NAME]
    for c in candidates:
        if c and Path(c).expanduser().is_file():
            return Path(c).expanduser()
    return None


def _has_package(name: str) -> bool:
    """Whether ``name`` is installed, without importing it (importing torchmetrics takes seconds)."""
    from importlib.util import find_spec

    return find_spec(name) is not None


def fid_skip_reason(weights: str | os.PathLike | None = None) -> str | None:
    """None when Inception FID can run offline here; otherwise one line saying why not and how to enable it."""
    if not _has_package("torchmetrics"):
        return "FID skipped: torchmetrics is not installed (pip install 'cxrlib[metrics]')"
    if not _has_package("torch_fidelity"):
        return ("FID skipped: its Inception network needs torch-fidelity (pip install 'cxrlib[metrics]') and the "
                f"weights file {FID_WEIGHTS_NAME} (--fid-weights PATH or ${FID_WEIGHTS_ENV})")
    if weights is not None and not Path(weights).expanduser().is_file():
        return f"FID skipped: no Inception weights file at '{weights}'"
    if fid_weights_path(weights) is None:
        where = Path(torch.hub.get_dir()) / "checkpoints"
        return (f"FID skipped: Inception weights not found offline; download {FID_WEIGHTS_URL} once into {where} "
                f"or pass --fid-weights PATH (or set ${FID_WEIGHTS_ENV})")
    return None


class _Features(nn.Module):
    """Wrap a feature module so torchmetrics knows its output size without probing it with a 299 px RGB image."""

    def __init__(self, net: nn.Module, num_features: int):
        super().__init__()
        self.net, self.num_features = net, num_features

    def forward(self, x):
        return self.net(x)


@torch.no_grad()
def fid(real, fake, *, weights: str | os.PathLike | None = None, feature: nn.Module | None = None,
        batch: int = 64) -> float | None:
    """Fréchet distance between Gaussian fits of two sets' features (Heusel et al. 2017), via torchmetrics.

    real, fake: (N, 1, H, W) uint8 or float in [-1, 1], N ≥ 2.
    * ``feature``: any module mapping (B, 1, H, W) float in [-1, 1] → (B, D) — works offline (e.g.
      ``RandomConvEmbedding()``, or a domain network you trust).
    * otherwise Inception-v3 (2048-d pool features; images repeated to RGB, uint8, resized by torchmetrics)
      when its weights are on disk (``fid_weights_path``); nothing is ever downloaded. Without weights:
      returns None and warns with one line (``fid_skip_reason``) saying how to enable it.
    Inception FID on a CPU is slow (minutes for thousands of images): it is meant for GPU runs.
    """
    real, fake = as_images(real), as_images(fake)
    if feature is None:
        reason = fid_skip_reason(weights)
        if reason:
            warnings.warn(reason, stacklevel=2)
            return None
    from torchmetrics.image.fid import FrechetInceptionDistance

    if feature is not None:
        probe = feature(to_float(real[:2]))
        metric = FrechetInceptionDistance(feature=_Features(feature, int(probe.shape[-1])), normalize=True)

        def prep(x):
            return x
    else:
        metric = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=str(fid_weights_path(weights)))

        def prep(x):  # [-1, 1] gray → uint8 RGB, what the Inception wrapper expects with normalize=False
            return to_uint8(x).repeat(1, 3, 1, 1)
    metric = metric.to(real.device)
    for is_real, x in ((True, real), (False, fake)):
        for s in range(0, x.shape[0], batch):
            metric.update(prep(to_float(x[s : s + batch])), real=is_real)
    return float(metric.compute())


# ======================================================================= everything at once
def _check_sets(real, fake, train, holdout) -> None:
    for name, x in (("real", real), ("fake", fake)):
        if x.shape[0] < MIN_IMAGES:
            raise CxrError(f"{name} set has {x.shape[0]} images; evaluation needs at least {MIN_IMAGES} per set")
    _check_same_size(real, fake)
    if train is not None:
        _check_same_size(real, train, "real and train")
    if holdout is not None:
        _check_same_size(real, holdout, "real and holdout")


def _real_minus_train(real: torch.Tensor, train: torch.Tensor, size: int) -> torch.Tensor | None:
    """The real images that are not (near-)exact copies of a training image: usable as held-out baseline."""
    d = _k_smallest(audit_embedding(real, size), audit_embedding(train, size), 1)[0][:, 0]
    keep = d > 1e-3
    return real[keep] if keep.sum() >= 2 else None


def evaluate(
    real,
    fake,
    train=None,
    *,
    holdout=None,
    seed: int = 0,
    k: int = 3,
    n_pairs: int = 1000,
    fid_weights: str | os.PathLike | None = None,
    fid_feature: nn.Module | None = None,
    audit_kwargs: dict | None = None,
) -> dict:
    """Every metric of this module on one real and one fake set, as a JSON-ready dict.

    real, fake (and train, holdout): (N, 1, S, S) uint8 or float in [-1, 1], one size S, ≥ ``MIN_IMAGES``
    images for real and fake. Keys: ``swd`` and ``swd_floor`` ({"avg", "<res>px"…}), ``histogram_distance``
    and ``histogram_floor`` (real halves), ``diversity`` ({"fake", "real"}), ``precision_recall``
    ({"precision", "recall", "density", "coverage", "k", "features"}), ``fid`` (None when skipped) and
    ``fid_skipped`` (the reason or None), ``warnings`` (plain sentences, e.g. sets too small for the k-NN
    figures; empty when there is nothing to say), ``n_real``, ``n_fake``, ``size``, ``seed``, ``seconds`` (per
    metric); with ``train`` also ``memorization`` (``memorization_audit`` without the per-sample lists;
    held-out baseline = ``holdout``, or else the real images that are not in ``train``).
    """
    real, fake = as_images(real), as_images(fake)
    train = None if train is None else as_images(train)
    holdout = None if holdout is None else as_images(holdout)
    _check_sets(real, fake, train, holdout)
    seconds: dict[str, float] = {}

    def timed(name, fn, *args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        seconds[name] = round(time.perf_counter() - t0, 3)
        return out

    gen = torch.Generator().manual_seed(seed + 2)
    perm = torch.randperm(real.shape[0], generator=gen)
    half = real.shape[0] // 2
    result: dict = {"n_real": int(real.shape[0]), "n_fake": int(fake.shape[0]), "size": int(real.shape[-1]),
                    "seed": seed}
    result["swd"] = timed("swd", swd, real, fake, seed=seed)
    result["swd_floor"] = timed("swd_floor", swd_floor, real, seed=seed)
    result["histogram_distance"] = timed("histogram_distance", histogram_distance, real, fake)
    result["histogram_floor"] = histogram_distance(real[perm[:half]], real[perm[half : 2 * half]])
    result["diversity"] = {
        "fake": timed("diversity", diversity, fake, n_pairs=n_pairs, seed=seed),
        "real": diversity(real, n_pairs=n_pairs, seed=seed),
    }
    result["precision_recall"] = timed("precision_recall", precision_recall, real, fake, k, seed=seed)
    result["warnings"] = result["precision_recall"].pop("warnings")
    reason = None if fid_feature is not None else fid_skip_reason(fid_weights)
    result["fid"] = None if reason else timed("fid", fid, real, fake, weights=fid_weights, feature=fid_feature)
    result["fid_skipped"] = reason
    if train is not None:
        audit_kwargs = dict(audit_kwargs or {})
        if holdout is None:
            holdout = _real_minus_train(real, train, audit_kwargs.get("size", 32))
            source = "real images not in train" if holdout is not None else None
        else:
            source = "holdout"
        audit = timed("memorization", memorization_audit, fake, train, holdout, **audit_kwargs)
        audit.pop("per_sample")
        audit["holdout_source"] = source
        result["memorization"] = audit
    result["seconds"] = seconds
    return result


#: the columns of ``compare_sets``: name → (what it measures, which way is better)
COMPARE_COLUMNS = {
    "SWD": "texture distance ×10³ (lower = closer)",
    "hist. W1": "intensity-histogram distance (lower = closer)",
    "MS-SSIM": "pairwise similarity inside the set (real-like = good; near 1 = collapsed)",
    "precision": "share of samples on the real manifold (realism)",
    "recall": "share of real images inside some sample's ball (scattered samples inflate it)",
    "density": "real balls per sample ÷ k (≈ 1 for real-like samples)",
    "coverage": "share of real images whose ball holds a sample",
}


def compare_sets(real, sets: dict, *, columns=None, k: int = 3, n_pairs: int = 300, swd_repeats: int = 1,
                 seed: int = 0) -> dict[str, dict[str, float]]:
    """Headline numbers of several candidate sets against one real set, as ``{name: {column: value}}``.

    real: (N, 1, S, S); sets: ``{name: (M, 1, S, S)}`` uint8 or float in [-1, 1], M ≥ k + 1. columns: a subset
    of ``COMPARE_COLUMNS`` (default all): SWD (average over levels), histogram W1, MS-SSIM of ``n_pairs`` pairs
    inside the set, precision, recall, density and coverage (``precision_recall``). Put a set of held-out real
    images among ``sets``: its row is the floor every number should be read against (what a perfect generator
    scores at that set size). SWD compares a set of M images with the first M real ones (``real[:M]``), with
    ``swd_repeats`` sets of random directions (``swd``'s default is 4): quicker and, for a table of sets that
    differ clearly, precise enough.
    """
    columns = list(COMPARE_COLUMNS) if columns is None else list(columns)
    unknown = [c for c in columns if c not in COMPARE_COLUMNS]
    if unknown:
        raise CxrError(f"unknown column(s) {unknown}: choose from {list(COMPARE_COLUMNS)}")
    real = as_images(real)
    f_real = None

    def embed(x):  # the real set's features are computed once, not once per candidate set
        nonlocal f_real
        if x is real:
            if f_real is None:
                f_real = features(real, seed=seed)
            return f_real
        return features(x, seed=seed)

    table = {}
    for name, x in sets.items():
        x = as_images(x)
        row = {}
        if "SWD" in columns:
            # SWD compares equal numbers of patches: as many real images as the set holds are enough
            row["SWD"] = swd(real[: len(x)], x, n_repeats=swd_repeats, seed=seed)["avg"]
        if "hist. W1" in columns:
            row["hist. W1"] = histogram_distance(real, x)
        if "MS-SSIM" in columns:
            row["MS-SSIM"] = diversity(x, n_pairs=n_pairs, seed=seed)
        knn = [c for c in ("precision", "recall", "density", "coverage") if c in columns]
        if knn:
            pr = precision_recall(real, x, k, features=embed, seed=seed)
            row.update({c: pr[c] for c in knn})
        table[name] = {c: row[c] for c in columns}
    return table


def format_table(table: dict[str, dict[str, float]], digits: int = 3) -> str:
    """``{row: {column: number}}`` (e.g. ``compare_sets``) as an aligned text table, one line per row."""
    columns = list(next(iter(table.values())))
    width = max(len(name) for name in table)
    lines = [f"{'':<{width}}" + "".join(f"{c:>11}" for c in columns)]
    for name, row in table.items():
        lines.append(f"{name:<{width}}" + "".join(f"{row[c]:>11.{digits}f}" for c in columns))
    return "\n".join(lines)


def per_class_swd(real, real_labels, real_classes, fake, fake_labels, fake_classes, *, seed: int = 0) -> dict:
    """SWD (avg, ×1e3) of each class the two sets share, matched by name whatever the case (``NORMAL`` =
    ``normal``): {class: {"swd", "n_real", "n_fake"}}. A class with fewer than 2 images on a side is left out.
    What it adds to the overall SWD: a conditional generator that draws good X-rays of the *wrong* class
    mix, or of one class only, can score well overall and badly here."""
    out = {}
    fake_index = {c.lower(): i for i, c in enumerate(fake_classes)}
    for i, name in enumerate(real_classes):
        j = fake_index.get(name.lower())
        if j is None:
            continue
        r, f = as_images(real)[real_labels == i], as_images(fake)[fake_labels == j]
        if len(r) >= 2 and len(f) >= 2:
            out[name] = {"swd": float(swd(r, f, seed=seed)["avg"]), "n_real": len(r), "n_fake": len(f)}
    return out


def summary_table(result: dict) -> str:
    """A short human-readable table of an ``evaluate`` result, then one ``warning: …`` line per warning (what the
    CLI prints)."""
    swd_keys = [k for k in result["swd"] if k != "avg"]
    rows = [
        ("images", f"real {result['n_real']} · fake {result['n_fake']} · {result['size']} px", ""),
        ("SWD ×1e3 (avg)", f"{result['swd']['avg']:.2f}", f"floor {result['swd_floor']['avg']:.2f}"),
    ]
    rows += [(f"  SWD {k}", f"{result['swd'][k]:.2f}", f"floor {result['swd_floor'][k]:.2f}") for k in swd_keys]
    pr = result["precision_recall"]
    rows += [
        ("histogram W1", f"{result['histogram_distance']:.4f}", f"floor {result['histogram_floor']:.4f}"),
        ("MS-SSIM pairs", f"{result['diversity']['fake']:.3f}", f"real {result['diversity']['real']:.3f}"),
        ("precision / recall", f"{pr['precision']:.3f} / {pr['recall']:.3f}", f"k={pr['k']}, {pr['features']}"),
        ("density / coverage", f"{pr['density']:.3f} / {pr['coverage']:.3f}",
         "real-like ≈ 1 / higher = more covered"),
        ("FID", "skipped" if result["fid"] is None else f"{result['fid']:.2f}", result["fid_skipped"] or ""),
    ]
    for name, v in (result.get("per_class_swd") or {}).items():
        rows.append((f"  SWD class {name}", f"{v['swd']:.2f}", f"real {v['n_real']} · fake {v['n_fake']}"))
    mem = result.get("memorization")
    if mem:
        hold = mem["holdout_flagged_fraction"]
        rows.append(("memorisation flagged", f"{mem['flagged_fraction']:.1%}",
                     "held-out " + ("n/a" if hold is None else f"{hold:.1%}") + f" · {mem['n_train']} train"))
    width = max(len(r[0]) for r in rows)
    lines = [f"{a:<{width}}  {b:<14} {c}".rstrip() for a, b, c in rows]
    return "\n".join(lines + [f"warning: {w}" for w in result.get("warnings", [])])


# ======================================================================= image-to-image translation
# Paired scores (Pix2Pix: a prediction against its ground truth) and translation checks (CycleGAN: a
# normal → pneumonia translation against its source and, with phantoms, the patient's ill twin). Images follow
# the module's convention — (N, 1, S, S) uint8 in [0, 255] or float in [-1, 1], tensors or numpy arrays — and
# every figure is computed on the [0, 1] scale (uint8: x / 255). Paired sets must hold the same N and size.
_LAPLACIAN_3x3 = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))
_MAX_PSNR = 100.0  # dB: what identical images score (mean squared error floored at 1e-10)


def _unit(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) uint8 [0, 255] or float [-1, 1] → float32 in [0, 1] (uint8: x / 255)."""
    return (to_float(x) + 1.0) / 2.0


def _paired(a, b, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Two image sets that are compared image by image: same N and same size (CxrError otherwise)."""
    a, b = as_images(a), as_images(b)
    _check_same_size(a, b, what)
    if a.shape[0] != b.shape[0]:
        raise CxrError(f"{what} sets must hold the same number of images, got {a.shape[0]} and {b.shape[0]}")
    return a, b


def _per_image(fn: Callable[..., torch.Tensor], *sets: torch.Tensor) -> torch.Tensor:
    """``fn`` applied to aligned slices of ``_CHUNK`` images of each set (all (N, …)); its (B,) results
    concatenated to (N,) float32 on the CPU. Bounds memory: no set becomes one big float tensor."""
    n = sets[0].shape[0]
    return torch.cat([fn(*(s[i : i + _CHUNK] for s in sets)).float().cpu() for i in range(0, n, _CHUNK)])


def _broadcast_map(m, like: torch.Tensor, what: str) -> torch.Tensor:
    """A per-pixel map (tensor or array: (H, W), (1, H, W), (N or 1, 1, H, W)) expanded, without a copy,
    to the shape of the image set ``like`` (N, 1, H, W)."""
    m = torch.as_tensor(getattr(m, "images", m), device=like.device)
    if m.dim() == 2:
        m = m[None, None]
    elif m.dim() == 3:
        m = m.unsqueeze(1)
    try:
        return torch.broadcast_to(m, like.shape)
    except RuntimeError:
        raise CxrError(f"{what} shaped {tuple(m.shape)} does not fit images shaped {tuple(like.shape)}") from None


def _as_mask(mask, like: torch.Tensor) -> torch.Tensor:
    """A mask (bool, or numbers where > 0 is inside, e.g. uint8 0/255) as bool shaped like ``like``."""
    m = _broadcast_map(mask, like, "mask")
    return m if m.dtype == torch.bool else m > 0


def ssim(a, b, *, kernel_size: int = 7, sigma: float = 1.5) -> torch.Tensor:
    """Single-scale SSIM of image pairs (Wang et al. 2004): a, b (N, 1, H, W) → (N,) float32, 1 = identical.

    Mean over the 'valid' window positions of the product of the luminance and contrast-structure maps
    (``_ssim_maps``, the terms ``ms_ssim`` uses), with a ``kernel_size``² Gaussian window of std ``sigma`` on
    the [0, 1] scale. ``kernel_size=11`` reproduces ``skimage.metrics.structural_similarity(gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=1)``; the default 7 (as in ``ms_ssim``, for small images)
    differs from it by a few thousandths. Not clipped: it can be negative for anti-correlated pairs.
    """
    a, b = _paired(a, b, "ssim")
    if min(a.shape[-2:]) < kernel_size:
        raise CxrError(f"images of {a.shape[-1]}x{a.shape[-2]} px are smaller than the {kernel_size}px SSIM window")
    g = _gaussian_1d(kernel_size, sigma, a.device)

    def one(x, y):
        lum, cs = _ssim_maps(_unit(x), _unit(y), g)
        return (lum * cs).mean(dim=(1, 2))

    return _per_image(one, a, b)


def _reference_unit(reference, like: torch.Tensor) -> torch.Tensor:
    """A reference image on the 0..255 scale (uint8, or float such as a mean of uint8 images) → [0, 1],
    through the same arithmetic as ``_unit`` (so a uint8 image and its float copy give identical values)."""
    r = torch.as_tensor(getattr(reference, "images", reference), device=like.device)
    r = to_float(r) if r.dtype == torch.uint8 else r.float() * (2 / 255) - 1.0  # to_float's arithmetic
    return (r + 1.0) / 2.0


def _pearson(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each image's pixel vector: x, y (B, …) → (B,) float64. A (nearly) constant
    vector (RMS deviation < 1e-6, far below one uint8 step of 1/255) gives 0, not NaN."""
    x, y = x.flatten(1).double(), y.flatten(1).double()
    x, y = x - x.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
    sx, sy = x.pow(2).mean(1).sqrt(), y.pow(2).mean(1).sqrt()
    r = (x * y).mean(1) / (sx * sy).clamp_min(1e-300)
    return torch.where((sx < 1e-6) | (sy < 1e-6), torch.zeros_like(r), r.clamp(-1.0, 1.0))


def pixel_correlation(pred, true, reference=None) -> torch.Tensor:
    """Per-image Pearson correlation of the pixels of ``pred`` and ``true`` (N, 1, H, W): (N,) float32 in [−1, 1].

    ``reference``: an image on the 0..255 scale — uint8, or float such as ``true.float().mean(0)`` — shaped
    (H, W), (1, 1, H, W) or (N, 1, H, W). With it the deviations pred − reference and true − reference are
    correlated instead: how much of what makes this patient differ from the average the prediction got (a
    prediction equal to the reference scores 0, however well the average image itself correlates).
    A constant vector (e.g. a prediction equal to the reference) gives 0, never NaN.
    """
    pred, true = _paired(pred, true, "predicted and true")
    if reference is None:
        return _per_image(lambda p, t: _pearson(_unit(p), _unit(t)), pred, true)
    ref = _broadcast_map(_reference_unit(reference, pred), pred, "reference")
    return _per_image(lambda p, t, r: _pearson(_unit(p) - r, _unit(t) - r), pred, true, ref)


def _abs_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (_unit(a) - _unit(b)).abs()


def _l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image mean |a − b| on the [0, 1] scale: (B,)."""
    return _abs_error(a, b).mean(dim=(1, 2, 3))


def _psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for data range 1: −10 log10(MSE), capped at ``_MAX_PSNR`` for identical images."""
    mse = (_unit(a) - _unit(b)).pow(2).mean(dim=(1, 2, 3))
    return -10.0 * torch.log10(mse.clamp_min(10 ** (-_MAX_PSNR / 10)))


def _mean_sd(v: torch.Tensor) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0.0 for a single value) of per-image values (N,)."""
    return float(v.mean()), (float(v.std()) if v.numel() > 1 else 0.0)


def paired_scores(pred, true, reference=None) -> dict:
    """Paired image-to-image scores (e.g. Pix2Pix predictions against their ground truth), as a JSON-ready dict.

    pred, true: (N, 1, H, W), same N and size. Means over the N images, each with ``<key>_sd`` (sample standard
    deviation over images): ``l1`` (mean |pred − true| on the [0, 1] scale), ``psnr`` (dB, data range 1,
    identical images capped at 100 dB), ``ssim`` (``ssim``, 7 px window), ``corr`` (``pixel_correlation``);
    with ``reference`` also ``dev_corr`` and ``dev_corr_sd`` (``pixel_correlation`` of the deviations from
    it). ``n``: N.
    """
    pred, true = _paired(pred, true, "predicted and true")
    per_image = {
        "l1": _per_image(_l1, pred, true),
        "psnr": _per_image(_psnr, pred, true),
        "ssim": ssim(pred, true),
        "corr": pixel_correlation(pred, true),
    }
    if reference is not None:
        per_image["dev_corr"] = pixel_correlation(pred, true, reference)
    out: dict = {}
    for key, v in per_image.items():
        out[key], out[f"{key}_sd"] = _mean_sd(v)
    out["n"] = int(pred.shape[0])
    return out


def sharpness(images) -> float:
    """Mean over images of the variance of the 3×3 Laplacian response ([0, 1] scale, 'valid' borders).

    images: (N, 1, H, W), H, W ≥ 3. The classic blur measure (variance of the Laplacian): it falls as fine
    detail is lost, so the blurry outputs of an L1-only Pix2Pix score below the real images they imitate.
    """
    x = as_images(images)
    if min(x.shape[-2:]) < 3:
        raise CxrError(f"images of {x.shape[-1]}x{x.shape[-2]} px are too small for a 3x3 Laplacian")
    kernel = torch.tensor(_LAPLACIAN_3x3, device=x.device)[None, None]
    return float(_per_image(lambda c: F.conv2d(_unit(c), kernel).var(dim=(1, 2, 3), correction=0), x).mean())


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image mean of ``values`` (B, 1, H, W) over the pixels where ``mask`` (bool, same shape) is true:
    (B,), NaN where the mask is empty."""
    count = mask.sum(dim=(1, 2, 3)).float()
    total = torch.where(mask, values, torch.zeros_like(values)).sum(dim=(1, 2, 3))
    return torch.where(count > 0, total / count.clamp_min(1.0), torch.full_like(total, float("nan")))


def masked_l1(a, b, mask) -> torch.Tensor:
    """Per-image mean |a − b| over the pixels inside ``mask``, on the [0, 1] scale: (N,) float32.

    a, b: (N, 1, H, W); mask: bool, or numbers where > 0 is inside (uint8 0/255), shaped (N, 1, H, W) or
    broadcastable to it ((H, W), (1, 1, H, W)). An image whose mask is empty gives NaN. E.g. ``mask=~lungs``:
    how much a translation changed outside the lung fields.
    """
    a, b = _paired(a, b, "masked")
    m = _as_mask(mask, a)
    return _per_image(lambda x, y, k: _masked_mean(_abs_error(x, y), k), a, b, m)


def masked_mean_change(before, after, mask) -> torch.Tensor:
    """Per-image mean of after − before over the pixels inside ``mask``, signed, on the [0, 1] scale: (N,) float32.

    Shapes and mask as in ``masked_l1`` (an empty mask gives NaN). Positive = brighter after, e.g. the
    lung-field opacity a normal → pneumonia translation adds.
    """
    before, after = _paired(before, after, "before and after")
    m = _as_mask(mask, before)
    return _per_image(lambda x, y, k: _masked_mean(_unit(y) - _unit(x), k), before, after, m)


def translation_report(source, translated, *, lungs, twin=None, round_trip=None) -> dict:
    """What a normal → pneumonia translation changed, as a JSON-ready dict.

    source, translated (and twin, round_trip): (N, 1, H, W), same N and size; lungs: (N, 1, H, W) bool or
    uint8 0/255 (the source's lung fields). Means over images (images with an empty mask region left out),
    on the [0, 1] scale:

    * ``outside_l1`` — mean ``masked_l1(source, translated, ~lungs)``: should be near 0 (the patient kept);
    * ``lung_change`` — mean ``masked_mean_change(source, translated, lungs)``: > 0 when the lungs whitened;
    * with ``twin`` (the same patient ill, e.g. a phantom drawn with ``pneumonia_fraction=1`` and the same
      seed): ``twin_lung_change`` (the same for twin) and ``change_ratio`` = lung_change / twin_lung_change
      (1 = as much opacity as the real disease adds; NaN when the twin's change is 0);
    * with ``round_trip`` (source → pneumonia → normal): ``round_trip_l1`` = mean |round_trip − source|;
    * ``n``: N.
    """
    source, translated = _paired(source, translated, "source and translated")
    inside = _as_mask(lungs, source)
    out: dict = {
        "outside_l1": float(torch.nanmean(masked_l1(source, translated, ~inside))),
        "lung_change": float(torch.nanmean(masked_mean_change(source, translated, inside))),
    }
    if twin is not None:
        twin_change = float(torch.nanmean(masked_mean_change(source, twin, inside)))
        out["twin_lung_change"] = twin_change
        out["change_ratio"] = out["lung_change"] / twin_change if twin_change != 0 else float("nan")
    if round_trip is not None:
        src, back = _paired(source, round_trip, "source and round-trip")
        out["round_trip_l1"] = float(_per_image(_l1, src, back).mean())
    out["n"] = int(source.shape[0])
    return out
