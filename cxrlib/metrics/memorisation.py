"""The memorisation audit: which generated images look like copies of training images?

``audit_embedding`` (the audit's distance space: small, blurred, standardised images), ``copy_flags`` (the rule
on embeddings) and ``memorization_audit``: for each sample, the nearest training image; a sample is flagged when
it sits much closer to a training image than that image sits to any other training image (authenticity, Alaa
et al. 2022) and much closer than to the second-nearest one (ratio test); held-out real images give the
baseline.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cxrlib.errors import CxrError
from cxrlib.images import as_images
from cxrlib.metrics.common import _float_chunks, _k_smallest
from cxrlib.metrics.sliced_wasserstein import _binomial_kernel, _blur


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
