"""The offline feature space: a fixed, seeded, random CNN (no download).

``RandomConvEmbedding`` and ``features`` embed images for the k-NN measures (``cxrlib.metrics.manifold``) and can
serve as an offline FID feature (``fid(..., feature=RandomConvEmbedding())``); random embeddings suit data far
from ImageNet (Naeem et al. 2020). ``_standardise`` scales features by the real set's mean and std.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cxrlib.images import as_images, to_float
from cxrlib.metrics.common import _float_chunks


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
