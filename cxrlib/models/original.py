"""The original project's networks, rebuilt layer for layer from its Keras code (old name: "seed")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cxrlib.errors import CxrError
from cxrlib.models.common import FeaturesHead, SkipGenerator, check_size, n_doublings, scaled

ORIGINAL_G_WIDTHS = (512, 512, 256, 256, 192, 128, 64)  # block k works at 8·2^k px (512 px: all seven)
ORIGINAL_G_KERNELS = (7, 7, 5, 5, 5, 5, 3)
ORIGINAL_D_WIDTHS = (32, 64, 128, 256, 512)
ORIGINAL_Z_DIM = 256
SEED_G_WIDTHS = ORIGINAL_G_WIDTHS  # old name, kept for older code
SEED_G_KERNELS = ORIGINAL_G_KERNELS  # old name, kept for older code
SEED_D_WIDTHS = ORIGINAL_D_WIDTHS  # old name, kept for older code
SEED_Z_DIM = ORIGINAL_Z_DIM  # old name, kept for older code


def _glorot(module: nn.Module) -> None:
    """Keras defaults: Glorot-uniform kernels, zero biases (PyTorch's own default differs)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _keras_bn(c: int) -> nn.BatchNorm2d:
    # Keras BatchNormalization: momentum 0.99 (PyTorch counts the other way: 0.01) and epsilon 1e-3
    return nn.BatchNorm2d(c, momentum=0.01, eps=1e-3)


class SampleDropout(nn.Module):
    """Dropout that draws a separate mask for every sample in the batch.

    The seed used Keras ``Dropout(0.1)``, whose mask has the full input shape: each sample gets its own mask
    ("one mask per sample"), drawn independently for every element. That is ``mode="element"`` (the
    default, and what ``nn.Dropout`` does). ``mode="channel"`` drops whole feature maps instead: one
    Bernoulli draw per (sample, channel), shared by all positions -- Keras ``SpatialDropout2D``, PyTorch
    ``Dropout2d`` -- useful to show the difference in a notebook. Kept values are scaled by ``1/(1-p)``; in
    ``eval()`` mode the layer is the identity.

    x: (B, C, H, W) → (B, C, H, W)
    """

    def __init__(self, p: float = 0.1, mode: str = "element"):
        super().__init__()
        if mode not in ("element", "channel"):
            raise CxrError(f"unknown dropout mode {mode!r}: choose 'element' or 'channel'")
        self.p, self.mode = float(p), mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.mode == "element":
            return F.dropout(x, self.p, training=True)
        return F.dropout2d(x, self.p, training=True)

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode!r}"


def original_generator(
    size: int,
    *,
    z_dim: int = ORIGINAL_Z_DIM,
    width: float = 1.0,
    skips: bool = False,
    dropout: float = 0.1,
    dropout_mode: str = "element",
) -> SkipGenerator:
    """The original project's generator. z: (B, z_dim) → (B, 1, size, size) in [-1, 1].

    512 px (the original): Dense 4·4·1024 → LeakyReLU(0.2) → reshape → 7 × [UpSampling2D ×2 (nearest) →
    Conv k=(7,7,5,5,5,5,3), filters (512,512,256,256,192,128,64), 'same' → BatchNorm → LeakyReLU(0.2) →
    Dropout(0.1)] → Conv 3×3 → 1 channel → tanh.

    Smaller sizes (the rule): ``log2(size/4)`` blocks, keeping the *last* blocks (the fine layers that draw
    the detail keep their kernels and widths); the 4×4 map after the dense layer has twice the first kept
    block's filters, as in the original (1024 → 512). Every width is multiplied by ``width``. At 64 px:
    Dense 4·4·512 → blocks of 256, 192, 128, 64 filters with kernels 5, 5, 5, 3.

    ``skips=True`` adds a 1×1 to-image convolution after the dense layer and after every block but the last,
    whose output is the original project's own final 3×3 convolution (see :class:`SkipGenerator`).
    """
    n = n_doublings(check_size(size))
    widths = [scaled(c, width) for c in ORIGINAL_G_WIDTHS[-n:]]
    kernels = ORIGINAL_G_KERNELS[-n:]
    c0 = 2 * widths[0] if n < len(ORIGINAL_G_WIDTHS) else scaled(1024, width)
    stem = nn.Sequential(nn.Linear(z_dim, c0 * 16), nn.LeakyReLU(0.2), nn.Unflatten(1, (c0, 4, 4)))
    blocks, c_in = [], c0
    for c, k in zip(widths, kernels):
        blocks.append(
            nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(c_in, c, k, padding=k // 2),
                _keras_bn(c),
                nn.LeakyReLU(0.2),
                SampleDropout(dropout, dropout_mode),
            )
        )
        c_in = c
    chans = [c0, *widths]
    to_images: list[nn.Module | None] = [nn.Conv2d(c, 1, 1) if skips else None for c in chans[:-1]]
    to_images.append(nn.Conv2d(widths[-1], 1, 3, padding=1))  # the original project's final Conv k3 → tanh
    G = SkipGenerator(z_dim, stem, blocks, to_images, size)
    _glorot(G)
    return G


seed_generator = original_generator  # old name, kept for older code


class OriginalDiscriminator(FeaturesHead):
    """The original project's discriminator. x: (B, 1, S, S) → logits (B,).

    n × [Conv 5×5 stride 2 'same', filters 32, 64, 128, 256, 512 → LeakyReLU(0.2) → Dropout(0.3)] → Flatten →
    Dense 128 → LeakyReLU(0.2) → Dense 1 (the original's sigmoid lives in the loss). n = 5 at 128 px and
    above (512 px ends on a 16×16×512 map: the dense layer alone has 16.8 M weights); smaller sizes use the
    first ``log2(S/4)`` convolutions so the last map is 4×4 (64 px: 32, 64, 128, 256). Padding 2 gives
    Keras' 'same' output size (S/2); TensorFlow pads 1 before and 2 after, so the sampling grid is shifted
    by one pixel, which does not matter here.
    """

    def __init__(self, size: int, *, width: float = 1.0, dropout: float = 0.3):
        super().__init__()
        n = min(len(ORIGINAL_D_WIDTHS), n_doublings(check_size(size)))
        layers, c_in = [], 1
        for c in ORIGINAL_D_WIDTHS[:n]:
            c = scaled(c, width)
            layers += [nn.Conv2d(c_in, c, 5, stride=2, padding=2), nn.LeakyReLU(0.2), nn.Dropout(dropout)]
            c_in = c
        final = size >> n
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(c_in * final * final, 128), nn.LeakyReLU(0.2), nn.Linear(128, 1)
        )
        _glorot(self)


SeedDiscriminator = OriginalDiscriminator  # old name, kept for older code
