"""Sliced Wasserstein distance between Laplacian-pyramid patches (Karras et al. 2018, ProGAN).

``swd`` compares, per resolution, the local textures of two sets: the Laplacian pyramid (``laplacian_pyramid``,
built with the binomial kernel), random patches cut at the same places in both sets ("common random
numbers"), each set's patches normalised, random unit projections sorted and compared (numpy's sort on the
CPU, two sets in parallel). ``swd_floor`` is the same figure between two halves of the real set: a fake set
cannot be expected to score below it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

from cxrlib.errors import CxrError
from cxrlib.images import as_images
from cxrlib.metrics.common import _CHUNK, _check_same_size, _float_chunks

_DIRECTIONS_AT_ONCE = 32  # SWD projections held at once: 2,000 images · 128 patches · 32 · 4 B = 33 MB per set


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
