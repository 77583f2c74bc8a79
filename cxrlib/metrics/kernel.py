"""Kernel Inception distance (Bińkowski et al. 2018, "Demystifying MMD GANs"), in any feature space.

KID is the unbiased estimate of the squared maximum mean discrepancy (MMD²) between two sets' features under the
cubic polynomial kernel k(x, y) = (xᵀy / d + 1)³, averaged over random subsets. Why beside FID: FID fits a
Gaussian to each set and is biased -- its expected value at n images is above its value at infinitely many, by an
amount that depends on the generator -- so FIDs of 500–2,000 images can rank two models the wrong way. KID's
estimate is unbiased at any set size: its expectation is the true MMD², 0 for one distribution, so a single
estimate can fall below 0 (a negative KID is noise around 0, not a bug).

Subsets: ``kid_subset_size`` takes min(1000, half the smaller set). torchmetrics' default (1000) refuses sets of
fewer than 1000 images, and ``min(n, 1000)`` (StyleGAN2-ADA's rule) draws the whole set every time below 1000, so
every subset is the same and the spread says nothing. Each subset's estimate is unbiased whatever its size; the mean
over ``KID_SUBSETS`` subsets is reported with the standard deviation of the subset estimates (the spread of one
estimate at that size; subsets overlap, so it is not the standard error of the mean).

* ``kid_from_features``: KID between two (N, D) feature tensors (the same arithmetic as torchmetrics'
  ``KernelInceptionDistance``, which the tests check; a seed gives the same subsets as ``torch.manual_seed``
  does there);
* ``kid``: KID between two image sets in the offline random-CNN space (``"random-cnn"``), Inception's (``"inception"``, when its weights are on disk:
  ``fid_skip_reason``), or any feature extractor you pass -- e.g. a chest-X-ray network (README: "KID in a
  chest-X-ray feature space").
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from cxrlib.errors import CxrError
from cxrlib.images import as_images
from cxrlib.metrics.common import embed

#: subsets averaged (torchmetrics' and StyleGAN2-ADA's default)
KID_SUBSETS = 100
#: the largest subset (torchmetrics' and StyleGAN2-ADA's); smaller sets get half the smaller set
KID_MAX_SUBSET = 1000
#: up to this many kernel entries (real·real + fake·fake + real·fake, float64: 128 MB) the kernels are computed once
#: and every subset reads its rows from them; above it each subset computes its own
_PRECOMPUTE_ENTRIES = 16_000_000


def kid_subset_size(n_real: int, n_fake: int, max_size: int = KID_MAX_SUBSET) -> int:
    """min(``max_size``, half the smaller set): 250 at 500 images, 1000 from 2,000 on."""
    return max(2, min(max_size, min(n_real, n_fake) // 2))


def _poly_kernel(a: torch.Tensor, b: torch.Tensor, degree: int, gamma: float, coef: float) -> torch.Tensor:
    return (a @ b.T * gamma + coef) ** degree


def _mmd2_unbiased(k_xx: torch.Tensor, k_yy: torch.Tensor, k_xy: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD² of m samples each: the within-set means leave out the diagonal (i = j), the cross mean keeps
    all m² pairs (Gretton et al. 2012, eq. 3; Bińkowski et al. 2018)."""
    m = k_xx.shape[0]
    within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return within - 2 * k_xy.sum() / (m * m)


@torch.no_grad()
def kid_from_features(f_real: torch.Tensor, f_fake: torch.Tensor, *, subsets: int = KID_SUBSETS,
                      subset_size: int | None = None, seed: int = 0, degree: int = 3, gamma: float | None = None,
                      coef: float = 1.0) -> dict:
    """KID between two feature sets f_real (n, D) and f_fake (m, D): {"mean", "std", "subsets", "subset_size"}.

    subset_size: default ``kid_subset_size(n, m)``; at most the smaller set. gamma: default 1 / D. Computed in
    float64. Each subset draws ``subset_size`` rows of the real set, then of the fake set, without replacement, from a
    generator seeded with ``seed``.
    """
    fr, ff = f_real.detach().double().flatten(1), f_fake.detach().double().flatten(1)
    n_r, n_f = fr.shape[0], ff.shape[0]
    if fr.shape[1] != ff.shape[1]:
        raise CxrError(f"real and fake features differ in size ({fr.shape[1]} vs {ff.shape[1]})")
    size = kid_subset_size(n_r, n_f) if subset_size is None else int(subset_size)
    if not 2 <= size <= min(n_r, n_f):
        raise CxrError(f"KID subset size {size} needs 2 to {min(n_r, n_f)} images per set (real {n_r}, fake {n_f})")
    if subsets < 1:
        raise CxrError(f"KID needs at least one subset, not {subsets}")
    g = 1.0 / fr.shape[1] if gamma is None else float(gamma)

    def kernel(a, b):
        return _poly_kernel(a, b, degree, g, coef)

    whole = n_r * n_r + n_f * n_f + n_r * n_f <= _PRECOMPUTE_ENTRIES
    if whole:
        k_rr, k_ff, k_rf = kernel(fr, fr), kernel(ff, ff), kernel(fr, ff)
    gen = torch.Generator().manual_seed(seed)
    scores = []
    for _ in range(subsets):
        i = torch.randperm(n_r, generator=gen)[:size].to(fr.device)
        j = torch.randperm(n_f, generator=gen)[:size].to(fr.device)
        if whole:
            k_xx, k_yy, k_xy = k_rr[i][:, i], k_ff[j][:, j], k_rf[i][:, j]
        else:
            x, y = fr[i], ff[j]
            k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
        scores.append(_mmd2_unbiased(k_xx, k_yy, k_xy))
    s = torch.stack(scores)
    return {"mean": float(s.mean()), "std": float(s.std(unbiased=False)), "subsets": subsets, "subset_size": size}


@torch.no_grad()
def kid(real, fake, *, features: str | Callable = "random-cnn", weights: str | os.PathLike | None = None,
        subsets: int = KID_SUBSETS, subset_size: int | None = None, seed: int = 0) -> dict:
    """KID between two image sets (N, 1, H, W), uint8 or float in [-1, 1]: ``kid_from_features``' dict plus
    ``"features"`` (the space's name).

    features:
    * ``"random-cnn"`` (default, offline): ``cxrlib.metrics.features`` (seeded by ``seed``), as the network gives
      them, like Inception's. Not standardised per dimension, as the k-NN measures are: the cubic kernel would
      then be ruled by near-constant dimensions (where real images hardly vary, a fake's small deviation divided
      by a tiny std) -- measured between two phantom sets of 500 from one distribution: ≈ 0 within its std raw,
      1.0e4 ± 1.6e4 standardised at 64 px (benchmarks/RESULTS.md, 2026-12-06, "the figures first quoted in
      docstrings");
    * ``"inception"``: Inception-v3's 2048-d pool features, the published KID's space, when its weights are on disk
      (``weights``, ``$CXRLIB_FID_WEIGHTS`` or torch hub's cache); otherwise a ``CxrError`` saying how to enable it
      (``fid_skip_reason``); nothing is ever downloaded;
    * a callable (B, 1, H, W) float in [-1, 1] → (B, D): any feature extractor, used as it is (no standardising), e.g.
      a chest-X-ray network whose weights you have (README: "KID in a chest-X-ray feature space").
    """
    from cxrlib.metrics.feature_space import features as random_cnn
    from cxrlib.metrics.frechet import inception_features

    real, fake = as_images(real), as_images(fake)
    if features == "random-cnn":
        f_real, f_fake = random_cnn(real, seed=seed).cpu(), random_cnn(fake, seed=seed).cpu()
        name = "random-cnn"
    elif features == "inception":
        f_real, f_fake = inception_features(real, weights=weights), inception_features(fake, weights=weights)
        name = "inception"
    elif callable(features):
        f_real, f_fake = embed(features, real), embed(features, fake)
        name = getattr(features, "__name__", type(features).__name__)
    else:
        raise CxrError(f"unknown feature space {features!r}: use 'random-cnn', 'inception' or a callable")
    out = kid_from_features(f_real, f_fake, subsets=subsets, subset_size=subset_size, seed=seed)
    return {**out, "features": name}
