"""Fréchet Inception distance (Heusel et al. 2017), optional: through torchmetrics, only with local weights or
a custom feature module; nothing is ever downloaded.

``fid_weights_path`` (where Inception weights are on disk), ``fid_skip_reason`` (one line saying why FID cannot
run here and how to enable it; it asks ``_has_package`` without importing torchmetrics), ``inception_features``
(the 2048-d features FID and Inception KID share: ``evaluate`` computes them once), ``fid_from_features`` and
``fid``.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from cxrlib.errors import CxrError
from cxrlib.images import as_images, to_float, to_uint8
from cxrlib.metrics.common import embed

#: the file name torch-fidelity (used by torchmetrics' FID) downloads its Inception weights to, under
#: ``torch.hub.get_dir()/checkpoints/``.
FID_WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{FID_WEIGHTS_NAME}"
FID_WEIGHTS_ENV = "CXRLIB_FID_WEIGHTS"


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


def fid_skip_reason(weights: str | os.PathLike | None = None, *, what: str = "FID skipped") -> str | None:
    """None when Inception FID can run offline here; otherwise one line, ``what`` (e.g. "Inception KID skipped")
    then why not and how to enable it."""
    if not _has_package("torchmetrics"):
        return f"{what}: torchmetrics is not installed (pip install 'cxrlib[metrics]')"
    if not _has_package("torch_fidelity"):
        return (f"{what}: its Inception network needs torch-fidelity (pip install 'cxrlib[metrics]') and the "
                f"weights file {FID_WEIGHTS_NAME} (--fid-weights PATH or ${FID_WEIGHTS_ENV})")
    if weights is not None and not Path(weights).expanduser().is_file():
        return f"{what}: no Inception weights file at '{weights}'"
    if fid_weights_path(weights) is None:
        where = Path(torch.hub.get_dir()) / "checkpoints"
        return (f"{what}: Inception weights not found offline; download {FID_WEIGHTS_URL} once into {where} "
                f"or pass --fid-weights PATH (or set ${FID_WEIGHTS_ENV})")
    return None


class _Features(nn.Module):
    """Wrap a feature module so torchmetrics knows its output size without probing it with a 299 px RGB image."""

    def __init__(self, net: nn.Module, num_features: int):
        super().__init__()
        self.net, self.num_features = net, num_features

    def forward(self, x):
        return self.net(x)


@functools.lru_cache(maxsize=1)
def _inception(path: str) -> nn.Module:
    """torchmetrics' Inception-v3 (torch-fidelity's port, the network of published FIDs and KIDs): 2048-d pool
    features of uint8 RGB images, resized to 299 px inside; the weights from ``path``. The last one is kept: FID and
    KID of one evaluation, or of several sets in a notebook, load it once."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    return NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=path)


@torch.no_grad()
def inception_features(images, *, weights: str | os.PathLike | None = None, batch: int = 64) -> torch.Tensor:
    """Inception-v3 pool features of a set: (N, 1, H, W) uint8 or float in [-1, 1] → (N, 2048) float on the CPU
    (gray repeated to RGB, uint8, resized by the network: what torchmetrics' FID and KID feed it). Its weights must
    be on disk (``fid_weights_path``); otherwise a ``CxrError`` saying how to enable it. Slow on a CPU."""
    reason = fid_skip_reason(weights, what="Inception features unavailable")
    if reason:
        raise CxrError(reason)
    x = as_images(images)
    net = _inception(str(fid_weights_path(weights))).to(x.device)
    return torch.cat([net(to_uint8(to_float(x[s : s + batch])).repeat(1, 3, 1, 1)).float().flatten(1).cpu()
                      for s in range(0, x.shape[0], batch)])


@torch.no_grad()
def fid_from_features(f_real: torch.Tensor, f_fake: torch.Tensor) -> float:
    """Fréchet distance between Gaussian fits of two feature sets (n, D) and (m, D), n, m ≥ 2, via torchmetrics
    (float64): what ``fid`` computes once it has the features."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=_Features(nn.Identity(), int(f_real.shape[-1])), normalize=True)
    metric.update(f_real.detach().flatten(1).cpu(), real=True)
    metric.update(f_fake.detach().flatten(1).cpu(), real=False)
    return float(metric.compute())


@torch.no_grad()
def fid(real, fake, *, weights: str | os.PathLike | None = None, feature: nn.Module | None = None,
        batch: int = 64) -> float | None:
    """Fréchet distance between Gaussian fits of two sets' features (Heusel et al. 2017), via torchmetrics.

    real, fake: (N, 1, H, W) uint8 or float in [-1, 1], N ≥ 2.
    * ``feature``: any module mapping (B, 1, H, W) float in [-1, 1] → (B, D) — works offline (e.g.
      ``RandomConvEmbedding()``, or a domain network you trust).
    * otherwise Inception-v3 (2048-d pool features, ``inception_features``; images repeated to RGB, uint8, resized
      by torchmetrics) when its weights are on disk (``fid_weights_path``); nothing is ever downloaded. Without
      weights: returns None and warns with one line (``fid_skip_reason``) saying how to enable it.
    Inception FID on a CPU is slow (minutes for thousands of images): it is meant for GPU runs.
    """
    real, fake = as_images(real), as_images(fake)
    if feature is None:
        reason = fid_skip_reason(weights)
        if reason:
            warnings.warn(reason, stacklevel=2)
            return None
        f_real, f_fake = (inception_features(x, weights=weights, batch=batch) for x in (real, fake))
    else:
        f_real, f_fake = (embed(feature, x, batch) for x in (real, fake))
    return fid_from_features(f_real, f_fake)
