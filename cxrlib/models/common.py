"""What the networks share: the supported sizes, ×2 upsampling, memory layouts, eval mode for a block, the skip
generator (an image added at every resolution) and the discriminator split into features and a last layer."""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from cxrlib.errors import CxrError

MIN_SIZE, MAX_SIZE = 32, 512


@contextlib.contextmanager
def evaluating(module: nn.Module):
    """``with evaluating(G): ...`` runs the block with ``module`` in eval mode (BatchNorm statistics, no dropout,
    the style generator's stored noise) and restores its train/eval mode afterwards, also on an error."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def check_size(size: int) -> int:
    """Return ``size`` when it is a power of two from 32 to 512, else raise :class:`CxrError`."""
    if not isinstance(size, int) or isinstance(size, bool):
        raise CxrError(f"image size must be an integer, got {size!r}")
    if size < MIN_SIZE or size > MAX_SIZE or size & (size - 1):
        raise CxrError(
            f"image size {size} is not supported: choose a power of two from {MIN_SIZE} to {MAX_SIZE} "
            "(32, 64, 128, 256 or 512)"
        )
    return size


def n_doublings(size: int) -> int:
    """How many ×2 upsamplings take a 4×4 map to ``size`` (64 px → 4)."""
    return int(math.log2(size)) - 2


def scaled(channels: int, width: float) -> int:
    """``channels × width``, rounded, at least 1."""
    return max(1, int(round(channels * width)))


def upsample2(x: torch.Tensor, mode: str = "nearest") -> torch.Tensor:
    """×2 upsampling. ``nearest`` repeats pixels (Keras UpSampling2D); ``bilinear`` is used for images."""
    if mode == "nearest":
        return F.interpolate(x, scale_factor=2, mode="nearest")
    return F.interpolate(x, scale_factor=2, mode=mode, align_corners=False)


def layout_of(module: nn.Module) -> torch.memory_format:
    """The memory format ``module.to(memory_format=…)`` put its convolutions in, read off its first 4-D weight
    whose layout is not ambiguous (more than one input channel, a kernel larger than 1×1)."""
    for p in module.parameters():
        if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] * p.shape[3] > 1:
            nhwc = p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
            return torch.channels_last if nhwc else torch.contiguous_format
    return torch.contiguous_format


def in_layout(x: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    """``x`` (B, C, H, W) laid out in ``fmt``, also where the layout is ambiguous.

    A one-channel image, or a map fresh from ``Unflatten`` or ``cat``, has NCHW strides; for C = 1 both
    layouts count as contiguous, so ``x.contiguous(memory_format=torch.channels_last)`` leaves it as it is and
    oneDNN runs the layer -- and the ones after it, whose outputs keep the layout -- on its slower NCHW path
    (measured in the course D: benchmarks/RESULTS.md, issue 10's profile)."""
    if fmt is torch.channels_last and x.dim() == 4 and x.stride(1) != 1:
        return x.to(memory_format=fmt)
    return x


def levels_to_size(levels: list[torch.Tensor]) -> list[torch.Tensor]:
    """Bring every level to the largest level's size with the same chain of ×2 bilinear upsamplings."""
    size = levels[-1].shape[-1]
    out = []
    for y in levels:
        while y.shape[-1] < size:
            y = upsample2(y, "bilinear")
        out.append(y)
    return out


class SkipGenerator(nn.Module):
    """A generator that adds an image at every resolution (the StyleGAN2 "skip" generator).

    z: (B, z_dim) → image (B, 1, S, S) in [-1, 1].

    ``stem`` maps z to a (B, C, 4, 4) feature map; each entry of ``blocks`` doubles the resolution. After the
    stem and after every block a ``to_image`` layer (a 1×1 convolution to one channel, "toRGB") turns the
    features into a grayscale image; the running image is upsampled ×2 (bilinear) and the new level is
    added:  ``img_r = up(img_{r/2}) + to_image_r(features_r)``,  output ``tanh(img_S)``.

    Why: each resolution contributes a *residual* image. The coarse levels settle the overall anatomy
    (where the lungs, mediastinum and diaphragm are), the fine levels only add ribs, vessels and edges on
    top. Every level is one 1×1 convolution away from the output, so the loss gradient reaches the early
    layers directly instead of through the whole stack -- StyleGAN2's argument for it (Karras et al. 2020).
    At this course's CPU budget it has not paid: in equal-time runs on 64-px phantoms the course networks
    without skip outputs ended better (figures in benchmarks/RESULTS.md, issue 10). (The original project's
    README promised skip connections; its code had none.)

    ``forward(z, return_levels=True)`` returns ``(image, levels)``: ``levels[k]`` is the contribution of
    resolution 4·2^k, upsampled to S×S, and ``sum(levels)`` is the pre-tanh output ``atanh(image)``.
    With ``skips=False`` only the last level exists (a plain generator); ``levels`` then has one entry.
    """

    def __init__(
        self,
        z_dim: int,
        stem: nn.Module,
        blocks: list[nn.Module],
        to_images: list[nn.Module | None],
        size: int,
    ):
        super().__init__()
        self.z_dim, self.size = z_dim, size
        self.stem = stem
        self.blocks = nn.ModuleList(blocks)
        # to_images[0] follows the stem, to_images[k] block k; None = no output at that resolution
        self.to_images = nn.ModuleList([m if m is not None else nn.Identity() for m in to_images])
        self._has_output = [m is not None for m in to_images]

    def forward(self, z: torch.Tensor, return_levels: bool = False):
        x = in_layout(self.stem(z), layout_of(self.blocks))
        img, levels = None, []
        for k in range(len(self.blocks) + 1):
            if k > 0:
                x = self.blocks[k - 1](x)
                if img is not None:
                    img = upsample2(img, "bilinear")
            if self._has_output[k]:
                y = self.to_images[k](x)
                img = y if img is None else img + y
                if return_levels:
                    levels.append(y)
        out = torch.tanh(img)
        if return_levels:
            return out, levels_to_size(levels)
        return out


class FeaturesHead(nn.Module):
    """A discriminator in two parts: ``features`` (convolutions) and ``head`` (Flatten → … → Linear to 1).

    ``phi(x)`` is what the last linear layer reads, ``psi(h)`` that layer: ``D(x) = psi(phi(x))``. A
    projection discriminator (:class:`ProjectionDiscriminator`) adds ⟨embed(y), phi(x)⟩ to the logit."""

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        """Features of the last layer: (B, F)."""
        return self.head[:-1](self.features(in_layout(x, layout_of(self.features))))

    def psi(self, h: torch.Tensor) -> torch.Tensor:
        """The last layer: features (B, F) → logits (B,)."""
        return self.head[-1](h).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.psi(self.phi(x))
