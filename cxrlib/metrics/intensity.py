"""Pixel-intensity measures: what SWD's per-set normalisation cannot see.

``intensity_histogram`` and ``histogram_distance`` (Wasserstein-1 between pixel-intensity distributions: a
global brightness/contrast shift, which offline augmentation leaks), ``mean_brightness`` (one number per image)
and ``power_spectrum`` (the mean 2-D power spectrum of a set: periodic artefacts such as checkerboards).
"""

from __future__ import annotations

import torch

from cxrlib.images import as_images
from cxrlib.metrics.common import _float_chunks


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
