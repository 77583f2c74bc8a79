"""Paired image-to-image scores (Pix2Pix: a prediction against its ground truth) and sharpness.

Images follow the package's convention — (N, 1, S, S) uint8 in [0, 255] or float in [-1, 1], tensors or numpy
arrays — and every figure is computed on the [0, 1] scale (uint8: x / 255). Paired sets must hold the same N
and size. ``ssim`` (single-scale, Wang et al. 2004), ``pixel_correlation`` (optionally of the deviations from a
reference image), ``paired_scores`` (L1, PSNR, SSIM, correlation as one dict) and ``sharpness`` (variance of
the Laplacian: the blur of an L1-only Pix2Pix), with the helpers the masked measures share (``_unit``,
``_paired``, ``_per_image``, ``_broadcast_map``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from cxrlib.errors import CxrError
from cxrlib.images import as_images, to_float
from cxrlib.metrics.common import _CHUNK, _check_same_size
from cxrlib.metrics.structural import _gaussian_1d, _ssim_maps

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
