"""The diffusion model's network: a U-Net that predicts the noise in a noised image (Ho et al. 2020), Hugging Face
diffusers' ``UNet2DModel`` (the maintained implementation: residual blocks with GroupNorm, a sinusoidal embedding of
the timestep t added in every block, self-attention at the lowest resolution).

``denoising_unet(size, width)`` maps x_t: (B, 1, S, S) and t: (B,) to ε̂: (B, 1, S, S) (``.sample`` of its output).
Its levels (``unet_channels``) go from S px down to 8 px, 32 channels above 16 px and 64 at 16 and 8 px, all ×
``width``; attention at 8 px and in the middle block. At 64 px that is (32, 32, 64, 64): 1.22 M parameters beside the
course G's 1.12 M (``count_params``), so a comparison of the two is not won by the bigger network; ``width`` is the
knob that matches another count (or FLOPs) more closely.

diffusers is an optional extra (``pip install "cxrlib[diffusion]"``), imported only when a network is built
(``import_diffusers``: without it, one line saying how to install it).
"""

from __future__ import annotations

import math

from torch import nn

from cxrlib.errors import CxrError

INSTALL_HINT = 'the diffusion model needs Hugging Face diffusers, an optional extra: pip install "cxrlib[diffusion]"'
GROUPS = 8  # GroupNorm groups: every level's channels are a multiple of it
HEAD_DIM = 32  # channels per attention head
LOWEST_PX = 8  # the U-Net goes down to 8×8, where it attends over all 64 positions


def import_diffusers():
    """The ``diffusers`` package, or ``CxrError`` in one line saying how to install it."""
    try:
        import diffusers
        from diffusers import UNet2DModel  # noqa: F401  (diffusers imports lazily: a broken install fails here)
    except ImportError as e:
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CxrError(f"{INSTALL_HINT} ({why})") from None
    return diffusers


def unet_channels(size: int, width: float = 1.0) -> tuple[int, ...]:
    """Channels of each level, from ``size`` px down to 8 px: 32 above 16 px, 64 at 16 and 8 px, × ``width``,
    rounded to a multiple of ``GROUPS`` (64 px → (32, 32, 64, 64); 256 px → (32, 32, 32, 32, 64, 64))."""
    levels = int(math.log2(size // LOWEST_PX)) + 1
    base = [64 if size >> i <= 16 else 32 for i in range(levels)]
    return tuple(max(GROUPS, GROUPS * round(c * width / GROUPS)) for c in base)


def denoising_unet(size: int, width: float = 1.0, channels=None, layers_per_block: int = 1) -> nn.Module:
    """diffusers' ``UNet2DModel`` for ``size`` px grayscale images: x_t (B, 1, S, S), t (B,) → ``.sample`` ε̂
    (B, 1, S, S). channels: one per level, from ``size`` px down (default ``unet_channels(size, width)``; each a
    multiple of ``GROUPS``); layers_per_block: residual blocks per level (the DDPM paper has 2)."""
    diffusers = import_diffusers()
    channels = tuple(int(c) for c in (channels or unet_channels(size, width)))
    if not channels or any(c < GROUPS or c % GROUPS for c in channels):
        raise CxrError(f"the U-Net's channels must be multiples of {GROUPS}, got {list(channels)}")
    if size >> (len(channels) - 1) < 4:
        raise CxrError(f"{len(channels)} levels halve {size} px below 4 px: give at most "
                       f"{int(math.log2(size)) - 1} channel counts")
    n = len(channels)
    down = ("DownBlock2D",) * (n - 1) + ("AttnDownBlock2D",)  # attention only where the map is smallest
    up = ("AttnUpBlock2D",) + ("UpBlock2D",) * (n - 1)
    return diffusers.UNet2DModel(sample_size=size, in_channels=1, out_channels=1, block_out_channels=channels,
                                 layers_per_block=int(layers_per_block), down_block_types=down, up_block_types=up,
                                 norm_num_groups=GROUPS, attention_head_dim=min(HEAD_DIM, channels[-1]))
