"""k-NN manifold measures: precision and recall (Kynkäänniemi et al. 2019), density and coverage
(Naeem et al. 2020).

``precision_recall`` (``precision_recall_from_features`` once the sets are embedded) in the feature space of ``cxrlib.metrics.feature_space`` (or any callable): density and
coverage use only the real set's k-NN balls and so cannot be inflated by scattered samples the way recall can.
``knn_warnings`` says when a set is too small (< ``MIN_KNN_IMAGES``) for these figures to be more than rough.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from cxrlib.errors import CxrError
from cxrlib.images import as_images
from cxrlib.metrics import feature_space
from cxrlib.metrics.common import _k_smallest, _pairwise_distances
from cxrlib.metrics.feature_space import _standardise

#: fewest images per set below which ``precision_recall``'s k-NN figures depend on the set size more than on the
#: generator (``knn_warnings`` says so). Measured with k = 3 on 64 px phantoms against fresh phantoms (a perfect
#: generator), 6 random subsets per size: at 500 vs 500 precision, recall, density and coverage are all within
#: 0.04 of their values at 2,000 vs 2,000 (0.74 / 0.77 / 1.02 / 0.87); at 300 vs 300 precision is 0.07 and
#: density 0.09 low, at 100 vs 100 precision 0.15 low, recall 0.06 high and density 0.82 ± 0.23. (Naeem et al.
#: 2020 use k = 5 with 10,000 images per set.)
MIN_KNN_IMAGES = 500


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
    _check_k(real.shape[0], fake.shape[0], k)
    embed = (lambda x: feature_space.features(x, seed=seed)) if features == "random-cnn" else features
    if not callable(embed):
        raise CxrError(f"unknown feature space {features!r}: use 'random-cnn' or a callable")
    out = precision_recall_from_features(embed(real), embed(fake), k, chunk=chunk)
    return {**out, "features": features if isinstance(features, str) else getattr(features, "__name__", "custom"),
            "warnings": knn_warnings(real.shape[0], fake.shape[0], k)}


def _check_k(n_real: int, n_fake: int, k: int) -> None:
    for name, n in (("real", n_real), ("fake", n_fake)):
        if n <= k:
            raise CxrError(f"precision/recall with k={k} needs at least {k + 1} {name} images, got {n}")


def precision_recall_from_features(f_real: torch.Tensor, f_fake: torch.Tensor, k: int = 3, *,
                                   chunk: int = 1024) -> dict:
    """``precision_recall`` once the two sets are embedded: f_real (N, D), f_fake (M, D), standardised here with
    the real set's per-dimension mean and std. Returns ``{"precision", "recall", "density", "coverage", "k"}``
    (``evaluate`` embeds once for these and for KID)."""
    _check_k(f_real.shape[0], f_fake.shape[0], k)
    f_real, f_fake = _standardise(f_real.float().cpu(), f_fake.float().cpu())
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
