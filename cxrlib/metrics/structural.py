"""Structural similarity: MS-SSIM (Wang et al. 2003) and the diversity of a set.

The Gaussian windows and SSIM's local terms (``_ssim_maps``, shared with the paired ``ssim`` of
``cxrlib.metrics.paired``), ``ms_ssim_scales`` (how many scales fit an image size), ``ms_ssim`` of image
pairs, and ``diversity``: mean MS-SSIM between random pairs of one set (used for GANs by Odena et al. 2017):
higher means more alike, so a mode-collapsed generator scores higher than the real data.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cxrlib.errors import CxrError
from cxrlib.images import as_images, to_float
from cxrlib.metrics.common import _CHUNK, _check_same_size

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
