"""Measuring generated X-rays, offline on a CPU: how real, how varied, how much copied.

Every metric takes image sets as ``(N, 1, H, W)`` tensors, either ``uint8`` in [0, 255] or float in [-1, 1]
(numpy arrays and objects with an ``.images`` attribute, such as ``cxrlib.data.ImageSet``, work too).
None needs downloaded weights; FID (and KID in Inception's space) is the one exception and is skipped, with a
reason, when its weights are not on disk.

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
* ``kid`` — kernel Inception distance (Bińkowski et al. 2018): unbiased MMD² with a cubic kernel, mean ± std over
  subsets, usable at the course's 500–2,000 images where FID is biased; in the random-CNN space (offline),
  Inception's (weights on disk) or any feature extractor's (e.g. a chest-X-ray network's).
* ``evaluate`` — all of the above as one JSON-ready dict (the ``python -m cxrlib evaluate`` contract).

Where things are, one family of measures per module (import from ``cxrlib.metrics``; the modules are for reading):

* ``sliced_wasserstein``: ``swd``, ``swd_floor``, ``laplacian_pyramid`` (pyramids, patches, projections);
* ``intensity``: ``intensity_histogram``, ``histogram_distance``, ``mean_brightness``, ``power_spectrum``;
* ``structural``: ``ms_ssim``, ``ms_ssim_scales``, ``diversity`` and SSIM's local terms;
* ``feature_space``: ``RandomConvEmbedding`` and ``features``, the offline random-CNN feature space;
* ``manifold``: ``precision_recall`` (precision, recall, density, coverage), ``precision_recall_from_features``
  and ``knn_warnings``;
* ``memorisation``: ``audit_embedding``, ``copy_flags``, ``memorization_audit``;
* ``frechet``: ``fid``, ``fid_from_features``, ``inception_features``, ``fid_weights_path``, ``fid_skip_reason``
  (Inception via torchmetrics, optional);
* ``kernel``: ``kid``, ``kid_from_features``, ``kid_subset_size`` (KID in any feature space);
* ``evaluation``: ``evaluate``, ``summary_table``, ``per_class_swd``, ``compare_sets``, ``format_table``;
* ``paired``: ``ssim``, ``pixel_correlation``, ``paired_scores``, ``sharpness`` (image-to-image translation);
* ``masked``: ``masked_l1``, ``masked_mean_change``, ``translation_report``;
* ``common``: what they share (``embed``: any feature extractor over a set in float chunks; the same-size check,
  nearest-neighbour distances).
"""

from cxrlib.images import as_images as as_images
from cxrlib.images import to_float as to_float
from cxrlib.images import to_uint8 as to_uint8
from cxrlib.metrics.common import embed
from cxrlib.metrics.evaluation import (
    COMPARE_COLUMNS,
    MIN_IMAGES,
    compare_sets,
    evaluate,
    format_table,
    per_class_swd,
    summary_table,
)
from cxrlib.metrics.feature_space import RandomConvEmbedding, features
from cxrlib.metrics.frechet import (
    FID_WEIGHTS_ENV,
    FID_WEIGHTS_NAME,
    FID_WEIGHTS_URL,
    fid,
    fid_from_features,
    fid_skip_reason,
    fid_weights_path,
    inception_features,
)
from cxrlib.metrics.frechet import _has_package as _has_package
from cxrlib.metrics.intensity import histogram_distance, intensity_histogram, mean_brightness, power_spectrum
from cxrlib.metrics.kernel import KID_MAX_SUBSET, KID_SUBSETS, kid, kid_from_features, kid_subset_size
from cxrlib.metrics.manifold import (
    MIN_KNN_IMAGES,
    knn_warnings,
    precision_recall,
    precision_recall_from_features,
)
from cxrlib.metrics.masked import masked_l1, masked_mean_change, translation_report
from cxrlib.metrics.memorisation import audit_embedding, copy_flags, memorization_audit
from cxrlib.metrics.paired import _unit as _unit
from cxrlib.metrics.paired import paired_scores, pixel_correlation, sharpness, ssim
from cxrlib.metrics.sliced_wasserstein import laplacian_pyramid, swd, swd_floor
from cxrlib.metrics.structural import MS_SSIM_BETAS, diversity, ms_ssim, ms_ssim_scales
from cxrlib.metrics.structural import _gaussian_1d as _gaussian_1d
from cxrlib.metrics.structural import _gaussian_kernel as _gaussian_kernel
from cxrlib.metrics.structural import _ssim_maps as _ssim_maps

__all__ = [
    "COMPARE_COLUMNS", "FID_WEIGHTS_ENV", "FID_WEIGHTS_NAME", "FID_WEIGHTS_URL", "KID_MAX_SUBSET", "KID_SUBSETS",
    "MIN_IMAGES", "MIN_KNN_IMAGES", "MS_SSIM_BETAS", "RandomConvEmbedding", "audit_embedding", "compare_sets",
    "copy_flags", "diversity", "embed", "evaluate", "features", "fid", "fid_from_features", "fid_skip_reason",
    "fid_weights_path", "format_table", "histogram_distance", "inception_features", "intensity_histogram", "kid",
    "kid_from_features", "kid_subset_size", "knn_warnings", "laplacian_pyramid", "masked_l1", "masked_mean_change",
    "mean_brightness", "memorization_audit", "ms_ssim", "ms_ssim_scales", "paired_scores", "per_class_swd",
    "pixel_correlation", "power_spectrum", "precision_recall", "precision_recall_from_features", "sharpness", "ssim", "summary_table", "swd",
    "swd_floor", "translation_report",
]  # fmt: skip
