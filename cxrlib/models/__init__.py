"""Generators and discriminators: the original project's networks, DCGAN, and the course's recipe.

``build_models(preset, size)`` returns ``(G, D)`` for any power-of-two ``size`` from 32 to 512:

* every generator has ``G.z_dim`` and maps ``z: (B, z_dim)`` to images ``(B, 1, S, S)`` in [-1, 1] (tanh);
  ``G(z, return_levels=True)`` also returns what each resolution contributes (see :class:`SkipGenerator`);
* every discriminator maps ``x: (B, 1, S, S)`` to logits ``(B,)`` -- no sigmoid: the losses take logits
  (``BCEWithLogits`` is the numerically safe form of sigmoid + BCE).

Presets (``PRESET_NOTES`` has a paragraph on each for the notebooks):

* ``"original"`` -- (old name ``"seed"``) the original project's Keras networks, layer for layer; ``skips=True`` adds the skip connections that
  its README promised and its code lacked;
* ``"dcgan"``  -- Radford et al. (2015): transposed convolutions, BatchNorm, ReLU / LeakyReLU;
* ``"course"`` -- the default: an upsampling generator in the original project's style and a discriminator with a
  minibatch-standard-deviation layer, both lean (no BatchNorm, no skip outputs, no spectral norm: each is one
  keyword away, ``LEGACY_NETWORKS`` has all three, and each cost more quality per CPU minute than it gave).

Tools for the architecture notebook: :func:`count_params`, :func:`layer_table`, :func:`flops_per_image`.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from cxrlib.config import PRESET_ALIASES
from cxrlib.errors import CxrError

# The network presets build_models takes (``config.PRESETS`` holds the training recipes, one per preset name).
NETWORKS = ("original", "dcgan", "course", "style", "modern")  # modern: the course networks
PRESETS = NETWORKS  # old name, kept for older code

MIN_SIZE, MAX_SIZE = 32, 512

PRESET_NOTES: dict[str, str] = {
    "original": (
        "The original project's networks, rebuilt layer for layer from its Keras code. The generator maps a "
        "256-number latent vector through a dense layer to a 4×4×1024 block, then doubles the resolution seven "
        "times (UpSampling2D + a large 7×7/5×5/3×3 convolution + BatchNorm + LeakyReLU + Dropout 0.1) up to "
        "512×512. The discriminator is five stride-2 5×5 convolutions (32→512 filters, Dropout 0.3), a dense "
        "layer of 128 and one output. It is big (tens of millions of parameters at 512 px) and slow, its "
        "large kernels spend most of the compute at high resolution, and it has no skip connections even "
        "though the README mentions them: build it with skips=True to add them. Smaller sizes keep the last "
        "(finest) generator blocks and the first discriminator blocks."
    ),
    "dcgan": (
        "Radford, Metz & Chintala (2015), the architecture that first made GANs train reliably: the generator "
        "is a stack of 4×4 stride-2 transposed convolutions with BatchNorm and ReLU (tanh at the end), the "
        "discriminator a mirror image of stride-2 convolutions with BatchNorm and LeakyReLU 0.2, all weights "
        "drawn from N(0, 0.02). At 64 px: latent 100, 64 feature maps at the finest layer, doubling toward "
        "4×4. It is small, fast and a good baseline, but it has no tricks for stability: watch for mode "
        "collapse and checkerboard patterns from the transposed convolutions."
    ),
    "course": (
        "Our recipe, and the default. The generator keeps the original project's idea (upsample, then convolve: no "
        "checkerboard artefacts) with two 3×3 convolutions per resolution and He-initialised weights, so "
        "signals keep their scale without a normalisation layer. Channels grow toward coarse resolutions "
        "(16 at full size, doubling each halving, capped at 512), so it is cheap at high resolution. The "
        "discriminator mirrors it and has a minibatch-standard-deviation channel before its last block (D can "
        "see when a batch lacks variety, which fights mode collapse). EMA of G, R1 (which keeps D smooth "
        "near the real images) and DiffAugment are added by the trainer. BatchNorm in G, a skip output at "
        "every resolution and spectral norm in D are each one keyword away (norm='batch', skips=True, "
        "spectral_norm=True): on a 2-core CPU each of them cost more quality per minute than it gave, so "
        "the course leaves them out by default."
    ),
    "style": (
        "The style-based generator of StyleGAN/StyleGAN2 (Karras et al. 2019, 2020) with the course "
        "discriminator (spectral norm on, as the shipped style generator was trained). A mapping network "
        "(4 fully connected layers, learning 10× slower) turns z into a "
        "style vector w; synthesis starts from a learned 4×4 constant, and every convolution is modulated by "
        "its own copy of w (per-channel scales, then demodulated to unit variance), with per-pixel noise of a "
        "learned strength after it and a to-image output at every resolution. Separate styles per layer allow "
        "style mixing (coarse anatomy from one w, fine texture from another) and a running mean of w the "
        "truncation trick. Trained with the course recipe plus style-mixing regularisation."
    ),
    "modern": (
        "The course networks trained with the modern recipe (Huang et al. 2025, R3GAN, at our scale): the "
        "relativistic pairing loss with R1 and R2 penalties, no label tricks, EMA of G, Adam with beta1 = 0. The "
        "paper's claim is that a well-posed loss makes the bag of tricks unnecessary; notebook 10 tests it."
    ),
}


# ----------------------------------------------------------------------------------------------- helpers



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


def _lrelu() -> nn.LeakyReLU:
    """LeakyReLU(0.2) in place, as DCGAN's: no new tensor per call (the layers before it -- convolution, linear,
    BatchNorm -- do not keep their outputs for the backward pass, and LeakyReLU's own backward reads its
    result). It saves a little of each course step on CPU (benchmarks/RESULTS.md, issue 10)."""
    return nn.LeakyReLU(0.2, inplace=True)


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


class MinibatchStd(nn.Module):
    """Append one channel: the average standard deviation of the features across a small group of samples.

    Karras et al. (ProGAN, 2018). A generator that collapses to a few outputs produces batches with little
    variety; this channel lets D see that directly. Samples are split into groups of ``group_size``
    consecutive samples (the largest divisor of B that is at most ``group_size``), so a batch made of
    ``[reals; fakes]`` keeps reals and fakes in separate groups when each half is a multiple of the group.
    When B has no such divisor above 1 (a prime batch such as 7 or 13 with groups of 4), the groups are
    ``group_size`` consecutive samples with a shorter last group (one of a single sample joins the group
    before it), each group's std taken over its own members. B = 1: nothing to compare, the channel is ~0.

    x: (B, C, H, W) → (B, C + 1, H, W)
    """

    def __init__(self, group_size: int = 4):
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        g = max(d for d in range(1, min(self.group_size, B) + 1) if B % d == 0)
        if g == 1 and B > 1 and self.group_size > 1:
            s = self._ragged_group_std(x)
        else:
            # consecutive samples form a group; float32 even under bf16. The variance is written out: on CPU,
            # Tensor.var over dim 1 of this (channels-last) view took 5× longer than mean/square/mean.
            y = x.float().contiguous().reshape(B // g, g, C, H, W)
            var = (y - y.mean(dim=1, keepdim=True)).square().mean(dim=1)  # biased
            std = (var + 1e-8).sqrt()  # (B//g, C, H, W)
            s = std.mean(dim=(1, 2, 3)).to(x.dtype)  # (B//g,)
            s = s.repeat_interleave(g)
        out = torch.cat([x, s.reshape(B, 1, 1, 1).expand(B, 1, H, W)], dim=1)
        return in_layout(out, torch.channels_last if C > 1 and x.stride(1) == 1 else torch.contiguous_format)

    def _ragged_group_std(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) per-sample std channel value with ragged groups (no per-sample loop: scatter-adds by group)."""
        B = x.shape[0]
        n_groups = -(-B // self.group_size) - (B % self.group_size == 1)  # a last group of 1 joins the previous
        group = (torch.arange(B, device=x.device) // self.group_size).clamp_(max=n_groups - 1)  # (B,)
        y = x.float()
        count = torch.bincount(group, minlength=n_groups).to(y.dtype).reshape(-1, 1, 1, 1)
        mean = y.new_zeros((n_groups, *y.shape[1:])).index_add(0, group, y) / count
        sq = (y - mean[group]).square()
        var = torch.zeros_like(mean).index_add(0, group, sq) / count  # biased, as in the divisible path
        s = (var + 1e-8).sqrt().mean(dim=(1, 2, 3)).to(x.dtype)  # (n_groups,)
        return s[group]


def _levels_to_size(levels: list[torch.Tensor]) -> list[torch.Tensor]:
    """Bring every level to the largest level's size with the same chain of ×2 bilinear upsamplings."""
    size = levels[-1].shape[-1]
    out = []
    for y in levels:
        while y.shape[-1] < size:
            y = upsample2(y, "bilinear")
        out.append(y)
    return out


# ----------------------------------------------------------------------------------------------- skip G


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
            return out, _levels_to_size(levels)
        return out


# ----------------------------------------------------------------------------------------------- original

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


# ----------------------------------------------------------------------------------------------- DCGAN


def _dcgan_width(base: int, size: int, r: int) -> int:
    """Channels at resolution r: ``base`` at S/2, doubling toward 4×4, capped at 8·base (the 64-px recipe)."""
    return min(8 * base, base * (size // 2) // r)


def _dcgan_init(module: nn.Module) -> None:
    """Radford et al.: all weights from N(0, 0.02); BatchNorm scales from N(1, 0.02), shifts 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    """DCGAN generator. z: (B, z_dim) → (B, 1, S, S) in [-1, 1].

    ConvTranspose(z_dim → C₄, 4, 1, 0) makes a 4×4 map, then [ConvTranspose(4, 2, 1) → BatchNorm → ReLU] up
    to S/2, then ConvTranspose(4, 2, 1) → 1 channel → tanh. Channels: ``ngf`` at S/2, doubling toward 4×4,
    capped at 8·ngf (64 px: 512, 256, 128, 64 -- the pytorch/examples network). Other sizes add or remove a
    block. No biases before BatchNorm (they would be cancelled).
    """

    def __init__(self, size: int, *, z_dim: int = 100, ngf: int = 64):
        super().__init__()
        self.z_dim, self.size = z_dim, check_size(size)
        c = _dcgan_width(ngf, size, 4)
        layers = [nn.ConvTranspose2d(z_dim, c, 4, 1, 0, bias=False), nn.BatchNorm2d(c), nn.ReLU(True)]
        r = 4
        while 2 * r < size:
            c_next = _dcgan_width(ngf, size, 2 * r)
            layers += [
                nn.ConvTranspose2d(c, c_next, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c_next),
                nn.ReLU(True),
            ]
            c, r = c_next, 2 * r
        layers += [nn.ConvTranspose2d(c, 1, 4, 2, 1, bias=False)]
        self.net = nn.Sequential(*layers)
        _dcgan_init(self)

    def forward(self, z: torch.Tensor, return_levels: bool = False):
        x = self.net(z[:, :, None, None])
        out = torch.tanh(x)
        return (out, [x]) if return_levels else out


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator. x: (B, 1, S, S) → logits (B,).

    Conv(1 → ndf, 4, 2, 1) → LeakyReLU(0.2), then [Conv(4, 2, 1) → BatchNorm → LeakyReLU(0.2)] down to 4×4,
    then Conv(4, 1, 0) → one logit. Channels mirror the generator (64 px: 64, 128, 256, 512).
    """

    def __init__(self, size: int, *, ndf: int = 64):
        super().__init__()
        check_size(size)
        c = _dcgan_width(ndf, size, size // 2)
        layers = [nn.Conv2d(1, c, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        r = size // 2
        while r > 4:
            c_next = _dcgan_width(ndf, size, r // 2)
            layers += [
                nn.Conv2d(c, c_next, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c_next),
                nn.LeakyReLU(0.2, True),
            ]
            c, r = c_next, r // 2
        layers += [nn.Conv2d(c, 1, 4, 1, 0, bias=False)]
        self.net = nn.Sequential(*layers)
        _dcgan_init(self)

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        """The 4×4 map the last convolution reads, flattened: (B, 16·C₄)."""
        return self.net[:-1](x).flatten(1)

    def psi(self, h: torch.Tensor) -> torch.Tensor:
        """The last convolution (4×4 → 1×1, i.e. a linear layer on the flattened map): (B, F) → (B,)."""
        c = self.net[-1].in_channels
        return self.net[-1](h.view(len(h), c, 4, 4)).flatten()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


# ----------------------------------------------------------------------------------------------- course


def course_width(size: int, r: int, *, width: float = 1.0, ch_out: int = 16, ch_max: int = 512) -> int:
    """Channels at resolution r: ``ch_out`` at full size, doubling at each halving, capped at ``ch_max``.

    Each ×2 step down in resolution halves the pixels and doubles the channels, so every block costs about
    the same compute until the cap; 64 px: 16, 32, 64, 128, 256 at 64, 32, 16, 8, 4 px.
    """
    return scaled(min(ch_max, ch_out * size // r), width)


def _norm(kind: str, c: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(c)
    if kind == "none":
        return nn.Identity()
    raise CxrError(f"unknown norm {kind!r}: choose 'batch' or 'none'")


def course_generator(
    size: int,
    *,
    z_dim: int = 128,
    width: float = 1.0,
    ch_out: int = 16,
    ch_max: int = 512,
    norm: str = "none",
    convs_per_block: int = 2,
    skips: bool = False,
) -> SkipGenerator:
    """The course generator. z: (B, z_dim) → (B, 1, size, size) in [-1, 1].

    Dense → 4×4×C₄ → norm → LeakyReLU(0.2), then per resolution 8 … S: [Upsample ×2 (nearest) → Conv 3×3 →
    norm → LeakyReLU(0.2)] followed by ``convs_per_block - 1`` more Conv 3×3 → norm → LeakyReLU, and a 1×1
    to-image convolution at the last resolution (``skips=True``: at every resolution 4 … S, summed as in
    :class:`SkipGenerator`). Upsampling then convolving (instead of transposed convolutions) avoids checkerboard
    artefacts. Channels from :func:`course_width`. No normalisation by default (``norm="batch"`` adds
    BatchNorm; the EMA copy of G then gets its own running statistics before sampling): He initialisation keeps
    the signal's scale, and without BatchNorm, skip outputs and D's spectral norm the networks train more steps
    in the same minutes on a CPU and end better (figures in benchmarks/RESULTS.md, issue 10; the results bank's
    lesson ``layers`` compares them at equal steps).
    """
    n = n_doublings(check_size(size))
    ch = [course_width(size, 4 << k, width=width, ch_out=ch_out, ch_max=ch_max) for k in range(n + 1)]
    stem = nn.Sequential(
        nn.Linear(z_dim, ch[0] * 16), nn.Unflatten(1, (ch[0], 4, 4)), _norm(norm, ch[0]), _lrelu()
    )
    blocks = []
    for c_in, c in zip(ch[:-1], ch[1:]):
        layers = [nn.Upsample(scale_factor=2, mode="nearest")]
        for j in range(convs_per_block):
            layers += [nn.Conv2d(c_in if j == 0 else c, c, 3, padding=1), _norm(norm, c), _lrelu()]
        blocks.append(nn.Sequential(*layers))
    to_images: list[nn.Module | None] = [nn.Conv2d(c, 1, 1) if skips else None for c in ch[:-1]]
    to_images.append(nn.Conv2d(ch[-1], 1, 1))
    G = SkipGenerator(z_dim, stem, blocks, to_images, size)
    _he_init(G)
    return G


def _he_init(module: nn.Module, slope: float = 0.2) -> None:
    """He initialisation for LeakyReLU(0.2): signals keep their scale through the stack even without a norm
    layer (PyTorch's default shrinks them by about √6 per layer, so the fine levels would start silent)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, a=slope, nonlinearity="leaky_relu")
            nn.init.zeros_(m.bias)


class CourseDiscriminator(FeaturesHead):
    """The course discriminator. x: (B, 1, S, S) → logits (B,).

    from-image Conv 1×1 → LeakyReLU, then per resolution S … 8: [Conv 3×3 → LeakyReLU → Conv 3×3 stride 2
    (or Conv 3×3 + 2×2 average pool with ``down="avgpool"``) → LeakyReLU], then at 4×4: minibatch std
    (+1 channel) → Conv 3×3 → LeakyReLU → Flatten → Linear C₄ → LeakyReLU → Linear 1. No batch norm:
    each sample's logit depends only on its own pixels (and its minibatch-std group). Channels mirror the
    generator (:func:`course_width`). ``spectral_norm=True`` adds spectral normalisation (Miyato et al. 2018)
    on every convolution and linear layer: it bounds each layer's Lipschitz constant, so D cannot become
    arbitrarily sharp. The course's default leaves it to R1 to keep D smooth: without spectral norm its step
    is ~15 % shorter and 3-minute CPU runs ended better (30.1 ± 3.7 vs 44.9 ± 2.7 SWD, 3 seeds; RESULTS.md).
    The style preset keeps it on (its shipped D was trained so).
    """

    def __init__(
        self,
        size: int,
        *,
        width: float = 1.0,
        ch_out: int = 16,
        ch_max: int = 512,
        down: str = "stride",
        mbstd_group: int = 4,
        spectral_norm: bool = False,
    ):
        super().__init__()
        if down not in ("stride", "avgpool"):
            raise CxrError(f"unknown downsampling {down!r}: choose 'stride' or 'avgpool'")
        n = n_doublings(check_size(size))
        ch = [course_width(size, size >> k, width=width, ch_out=ch_out, ch_max=ch_max) for k in range(n + 1)]
        sn = _spectral_norm if spectral_norm else (lambda layer: layer)
        layers = [sn(nn.Conv2d(1, ch[0], 1)), _lrelu()]
        for c, c_next in zip(ch[:-1], ch[1:]):
            layers += [sn(nn.Conv2d(c, c, 3, padding=1)), _lrelu()]
            if down == "stride":
                layers += [sn(nn.Conv2d(c, c_next, 3, stride=2, padding=1)), _lrelu()]
            else:
                layers += [sn(nn.Conv2d(c, c_next, 3, padding=1)), _lrelu(), nn.AvgPool2d(2)]
        c4 = ch[-1]
        layers += [MinibatchStd(mbstd_group), sn(nn.Conv2d(c4 + 1, c4, 3, padding=1)), _lrelu()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Flatten(), sn(nn.Linear(c4 * 16, c4)), _lrelu(), sn(nn.Linear(c4, 1))
        )
        self.spectral_norm = spectral_norm


# ----------------------------------------------------------------------------------------------- conditional

CLASS_DIM = 64  # size of the class embedding concatenated to z (generators without BatchNorm)


class ClassBatchNorm2d(nn.Module):
    """Class-conditional BatchNorm (de Vries et al. 2017; the projection paper's generator): normalise as
    BatchNorm does, then scale and shift with a learned (γ, β) *per class*: ``γ[y] · x̂ + β[y]``.

    The labels ``y`` of the batch are set on the layer by :class:`ConditionalGenerator` before each forward pass
    (the layers sit inside ``nn.Sequential`` blocks, which pass only the image on). γ starts at 1 and β at 0,
    i.e. as plain BatchNorm."""

    def __init__(self, bn: nn.BatchNorm2d, n_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=False)
        self.gamma = nn.Embedding(n_classes, bn.num_features)
        self.beta = nn.Embedding(n_classes, bn.num_features)
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)
        self.y: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm(x)
        g, b = self.gamma(self.y).to(out.dtype), self.beta(self.y).to(out.dtype)
        return out * g[:, :, None, None] + b[:, :, None, None]


def _class_norms(module: nn.Module, n_classes: int) -> list[ClassBatchNorm2d]:
    """Replace every BatchNorm2d inside ``module`` by a :class:`ClassBatchNorm2d`; return the new layers."""
    made = []
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            cbn = ClassBatchNorm2d(child, n_classes)
            setattr(module, name, cbn)
            made.append(cbn)
        else:
            made += _class_norms(child, n_classes)
    return made


class ConditionalGenerator(nn.Module):
    """G(z, y): a generator told which class to draw. z: (B, z_dim), y: (B,) class indices → (B, 1, S, S).

    The class reaches the unconditional network ``base`` in one or both of two ways:

    * ``class_norm`` -- every BatchNorm of ``base`` becomes a :class:`ClassBatchNorm2d`: a learned scale and
      shift per class and channel, at every resolution (the projection paper's generator). The default where
      G has BatchNorm;
    * ``class_dim`` > 0 -- a learned embedding e(y) of ``class_dim`` numbers concatenated to z (``base`` built
      for ``z_dim + class_dim`` inputs). The default for a G without BatchNorm.

    Why normalisation by default, measured (course preset, 32-px phantoms, 800 steps): with e(y) concatenated to
    z the samples of one class came out nearly alike -- MS-SSIM diversity 0.93-0.95 against 0.75-0.78 for real
    images and for the unconditional G, and 0.88 even when D ignored the labels, 0.80 with a zero embedding:
    a class vector beside z in the first layer crowds z out. With class-conditional BatchNorm the diversity
    stayed at 0.70-0.82 and the SWD at the unconditional G's.

    The same z with another y draws "the same patient" as the other class, as far as the network learnt to
    keep the two apart. ``y=None`` draws the classes in turn (0, 1, 0, 1, …): code written for unconditional
    generators (metrics, grids) gets a balanced mix.
    """

    def __init__(self, base: nn.Module, n_classes: int, z_dim: int, class_dim: int = 0, class_norm: bool = True):
        super().__init__()
        if n_classes < 2:
            raise CxrError(f"a conditional generator needs at least 2 classes, got {n_classes}")
        self.base, self.n_classes, self.z_dim, self.size = base, n_classes, z_dim, base.size
        self.embed = nn.Embedding(n_classes, class_dim) if class_dim else None  # N(0, 1) init: on the scale of z
        self.class_norms = _class_norms(base, n_classes) if class_norm else []
        if not (self.embed is not None or self.class_norms):
            raise CxrError("this generator has no BatchNorm to condition: give it a class embedding (class_dim > 0)")

    def default_labels(self, n: int, device=None) -> torch.Tensor:
        return torch.arange(n, device=device) % self.n_classes

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None, return_levels: bool = False, **kw):
        """``kw`` goes to the base network (a style G's ``truncation`` and ``noise_mode``)."""
        if y is None:
            y = self.default_labels(len(z), z.device)
        for norm in self.class_norms:
            norm.y = y
        return self.base(self.latent(z, y), return_levels=return_levels, **kw)

    def latent(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """What the base network reads: z with the class embedding e(y) beside it (z itself without one)."""
        return z if self.embed is None else torch.cat([z, self.embed(y).to(z.dtype)], 1)


class ProjectionDiscriminator(nn.Module):
    """D(x, y) with a projection head (Miyato & Koyama 2018): logit = ψ(φ(x)) + ⟨embed(y), φ(x)⟩.

    φ(x) are the features the base discriminator's last layer reads, ψ that layer (``FeaturesHead``). The
    first term asks "is this a real X-ray?", the inner product "is it a real X-ray *of class y*?": one
    learned vector per class, compared with the features. Projecting (instead of concatenating y to the
    input) is the form that follows from writing the logit as log p_data(x|y) / p_G(x|y), and it trained
    better in the paper. The embedding is spectrally normalised like the rest of the course D."""

    def __init__(self, base: nn.Module, n_classes: int):
        super().__init__()
        self.base, self.n_classes = base, n_classes
        self.embed = nn.Embedding(n_classes, _feature_dim(base))
        nn.init.xavier_uniform_(self.embed.weight)
        if getattr(base, "spectral_norm", False):
            self.embed = _spectral_norm(self.embed)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.base.phi(x)
        return projection_logit(h, self.base.psi(h), self.embed.weight.to(h.dtype), y)


def projection_logit(h: torch.Tensor, psi_out: torch.Tensor, class_embedding: torch.Tensor,
                     y: torch.Tensor) -> torch.Tensor:
    """The projection head's logit: ``psi_out + ⟨class_embedding[y], h⟩``.

    h: (B, F) features φ(x); psi_out: (B,) the unconditional logit ψ(φ(x)); class_embedding: (C, F), one
    vector per class; y: (B,) class indices → (B,) logits."""
    return psi_out + (class_embedding[y] * h).sum(1)


def _feature_dim(D: nn.Module) -> int:
    """Width F of φ(x): the in-features of the last layer."""
    last = D.head[-1] if hasattr(D, "head") else D.net[-1]
    return last.in_features if isinstance(last, nn.Linear) else last.in_channels * 16


# ----------------------------------------------------------------------------------------------- build


def build_models(
    preset: str, size: int, *, z_dim: int | None = None, width: float = 1.0, n_classes: int = 0,
    class_norm: bool | None = None, class_dim: int | None = None, **kw
) -> tuple[nn.Module, nn.Module]:
    """Build ``(G, D)`` of a preset for ``size``×``size`` grayscale images.

    preset: ``"original"`` (the original project's; ``"seed"`` is its old name), ``"dcgan"``, ``"course"``, ``"style"`` (the style-based G of ``cxrlib.models.style``
    with the course D) or ``"modern"`` (the course networks; the preset differs in its recipe); size: a power of two from 32 to 512; z_dim: latent size
    (defaults: seed 256, dcgan 100, course 128); width: multiplies every channel count; n_classes ≥ 2: the
    conditional pair, ``ConditionalGenerator`` around the preset's G and ``ProjectionDiscriminator`` around
    its D (0: unconditional), G reading the class through class-conditional BatchNorm (``class_norm``, the
    default where G has BatchNorm) and/or a ``class_dim``-long embedding concatenated to z (the default,
    ``CLASS_DIM``, for a G without BatchNorm; both can be set through ``model_kwargs``).
    Extra keywords by preset -- original: ``skips``, ``dropout``, ``dropout_mode``, ``d_dropout``;
    dcgan: ``ngf``, ``ndf``; style: ``ch_out``, ``ch_max``, ``w_dim``, ``mapping_layers``, ``lr_mul``,
    ``mixing_prob`` and the D's; course and modern: ``ch_out``, ``ch_max``, ``norm``, ``convs_per_block``, ``skips``,
    ``down``, ``mbstd_group``, ``spectral_norm`` (defaults: no BatchNorm, no skip outputs, no spectral norm; the
    conditional pair of course/modern defaults to ``CONDITIONAL_NETWORKS``, with all three).
    """
    check_size(size)
    preset = PRESET_ALIASES.get(preset, preset)
    if preset not in PRESET_KEYWORDS:
        raise CxrError(f"unknown preset {preset!r}: choose one of {', '.join(NETWORKS)}")
    unknown = set(kw) - set(PRESET_KEYWORDS[preset])
    if unknown:
        raise CxrError(
            f"preset {preset!r} does not take {', '.join(sorted(unknown))} "
            f"(it takes {', '.join(PRESET_KEYWORDS[preset])})"
        )
    z_noise = z_dim or {"original": ORIGINAL_Z_DIM, "dcgan": 100}.get(preset, 128)
    if n_classes and preset in CONDITIONAL_NETWORKS:
        kw = {**CONDITIONAL_NETWORKS[preset], **kw}
    if n_classes:  # how G reads the class: class-conditional BatchNorm where G has BatchNorm, else [z, e(y)]
        has_bn = preset in ("original", "dcgan") or (preset in ("course", "modern") and kw.get("norm", "none") == "batch")
        class_norm = has_bn if class_norm is None else class_norm
        class_dim = (0 if class_norm else CLASS_DIM) if class_dim is None else class_dim
    else:
        class_dim = 0
    z_dim = z_noise + class_dim
    if preset == "original":
        d_dropout = kw.pop("d_dropout", 0.3)
        G = original_generator(size, z_dim=z_dim, width=width, **kw)
        D = OriginalDiscriminator(size, width=width, dropout=d_dropout)
    elif preset == "dcgan":
        G = DCGANGenerator(size, z_dim=z_dim, ngf=scaled(kw.get("ngf", 64), width))
        D = DCGANDiscriminator(size, ndf=scaled(kw.get("ndf", 64), width))
    else:  # course and modern: the course networks; style: the style-based G with the course D
        d_kw = {k: kw.pop(k) for k in ("down", "mbstd_group", "spectral_norm") if k in kw}
        shared = {k: kw[k] for k in ("ch_out", "ch_max") if k in kw}
        if preset == "style":
            from cxrlib.models.style import StyleGenerator

            d_kw.setdefault("spectral_norm", True)  # the style preset keeps the D it was measured with
            G = StyleGenerator(size, z_dim=z_dim, width=width, label_dim=class_dim, **kw)
        else:
            G = course_generator(size, z_dim=z_dim, width=width, **kw)
        D = CourseDiscriminator(size, width=width, **shared, **d_kw)
    if n_classes:
        G = ConditionalGenerator(G, n_classes, z_noise, class_dim=class_dim, class_norm=class_norm)
        D = ProjectionDiscriminator(D, n_classes)
    return G, D


PRESET_KEYWORDS = {
    "original": ("skips", "dropout", "dropout_mode", "d_dropout"),
    "dcgan": ("ngf", "ndf"),
    "course": ("ch_out", "ch_max", "norm", "convs_per_block", "skips", "down", "mbstd_group", "spectral_norm"),
    "style": ("ch_out", "ch_max", "w_dim", "mapping_layers", "lr_mul", "mixing_prob", "down", "mbstd_group",
              "spectral_norm"),
}
PRESET_KEYWORDS["modern"] = PRESET_KEYWORDS["course"]  # the modern recipe trains the course networks
# The course networks' defaults before checkpoint version 2 (cxrlib.engine.checkpoints.upgrade_checkpoint): what a
# checkpoint written then was trained with. Measured on a 2-core CPU (benchmarks/RESULTS.md, 2026-12-03), the three layers cost
# more quality per CPU minute than they gave, and a step without them reaches dcgan's FLOP rate.
LEGACY_NETWORKS = {p: {"norm": "batch", "skips": True, "spectral_norm": True} for p in ("course", "modern")}
# The conditional pair keeps them: its G reads the class through class-conditional BatchNorm, and its figures
# (class consistency, per-class SWD; RESULTS.md, 2026-12-02) were measured with these networks.
CONDITIONAL_NETWORKS = LEGACY_NETWORKS


# ----------------------------------------------------------------------------------------------- inspect


def count_params(module: nn.Module) -> int:
    """Number of parameters (trainable or not; spectral norm's u/v vectors are buffers, not counted)."""
    return sum(p.numel() for p in module.parameters())


def _is_layer(m: nn.Module) -> bool:
    """A leaf module, where spectral norm's ``parametrizations`` container does not count as a child."""
    return all(name == "parametrizations" for name, _ in m.named_children())


def _example_input(module: nn.Module, example: torch.Tensor | None, size: int | None) -> torch.Tensor:
    if example is not None:
        return example
    p = next(module.parameters())
    if hasattr(module, "z_dim"):
        return torch.randn(2, module.z_dim, device=p.device)
    if size is None:
        raise CxrError("layer_table needs an example input or size= for a discriminator")
    return torch.randn(2, 1, size, size, device=p.device)


@torch.no_grad()
def layer_table(
    module: nn.Module, example: torch.Tensor | None = None, *, size: int | None = None
) -> list[dict]:
    """One row per layer, in execution order: ``{"name", "type", "output_shape", "params"}``.

    example: an input batch (default: 2 random latents for a generator, 2 random (1, size, size) images for a
    discriminator). output_shape excludes the batch dimension. Runs one forward pass in eval mode with
    forward hooks; the module's train/eval mode is restored. The ``params`` column sums to
    :func:`count_params`. A module that holds parameters of its own besides its children (the style generator's
    modulated convolutions, noise strengths and constant input; the generator itself for its constant: name
    "(own)") gets a row with those only.
    """
    x = _example_input(module, example, size)
    rows, hooks = [], []

    def hook(name, own=False):
        def record(m, inputs, output):
            out = output[0] if isinstance(output, (tuple, list)) else output
            rows.append(
                {
                    "name": name,
                    "type": type(m).__name__,
                    "output_shape": tuple(out.shape[1:]),
                    "params": sum(p.numel() for p in m.parameters(recurse=False)) if own else count_params(m),
                }
            )

        return record

    for name, m in module.named_modules():
        if ".parametrizations." in name or name.endswith("parametrizations"):
            continue
        if name and _is_layer(m):
            hooks.append(m.register_forward_hook(hook(name)))
        elif any(True for _ in m.parameters(recurse=False)):
            hooks.append(m.register_forward_hook(hook(name or "(own)", own=True)))
    with evaluating(module):
        try:
            module(x)
        finally:
            for h in hooks:
                h.remove()
    return rows


def _macs(m: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    """Multiply-adds of one layer call for the whole batch (bias additions are not counted)."""
    if hasattr(m, "macs"):  # the style generator's layers count themselves
        return m.macs(inp, out)
    if isinstance(m, nn.Conv2d):
        k = m.kernel_size[0] * m.kernel_size[1]
        return out.numel() * (m.in_channels // m.groups) * k
    if isinstance(m, nn.ConvTranspose2d):
        # each input pixel scatters a k×k×C_out patch
        k = m.kernel_size[0] * m.kernel_size[1]
        return inp.numel() * (m.out_channels // m.groups) * k
    if isinstance(m, nn.Linear):
        return out.numel() * m.in_features
    return 0


@torch.no_grad()
def forward_flops(module: nn.Module, example: torch.Tensor) -> int:
    """Forward FLOPs per sample of Conv2d / ConvTranspose2d / Linear layers and of layers with a ``macs``
    method (the style generator's modulated convolutions) (1 multiply-add = 2 FLOPs)."""
    total, hooks = [0], []
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)) or hasattr(m, "macs"):
            hooks.append(
                m.register_forward_hook(lambda m, i, o: total.__setitem__(0, total[0] + _macs(m, i[0], o)))
            )
    with evaluating(module):
        try:
            module(example)
        finally:
            for h in hooks:
                h.remove()
    return 2 * total[0] // example.shape[0]


def flops_per_image(G: nn.Module, D: nn.Module, size: int) -> dict:
    """FLOPs per image: ``{"G": …, "D": …, "train_step": …, "formula": …}``.

    G and D are forward FLOPs of the convolution and linear layers (the others are cheap). A backward pass
    costs about twice its forward (gradients for the inputs and for the weights). One training step per
    image of the batch: the D step runs G forward (1·G) and D forward + backward on a real and a fake image
    (2 · 3·D); the G step runs G forward + backward (3·G) and D forward + a backward for its *input* only
    (2·D: the trainer freezes D's weights there, so their gradients are not computed). So
    ``train_step = 4·G + 8·D`` (lazy R1 and spectral-norm power iterations not included).
    """
    p = next(G.parameters())
    g = forward_flops(G, torch.randn(1, G.z_dim, device=p.device))
    d = forward_flops(D, torch.randn(1, 1, size, size, device=p.device))
    return {"G": g, "D": d, "train_step": 4 * g + 8 * d, "formula": "train_step = 4·G + 8·D"}


# ----------------------------------------------------------------------------------------------- building blocks (notebook 02)


def upsample_conv_block(c_in: int, c_out: int, kernel_size: int = 3) -> nn.Sequential:
    """Double the resolution the original project's way: nearest-neighbour ×2 upsampling, then a 'same' convolution.

    (B, c_in, H, W) → (B, c_out, 2H, 2W) for an odd ``kernel_size``: Upsample(×2, nearest) → Conv2d(k,
    padding k//2) → LeakyReLU(0.2).
    Every output pixel sees the same number of input pixels, so a constant input stays constant (away from
    the borders): no checkerboard.
    """
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2),
        nn.LeakyReLU(0.2),
    )


def transpose_conv_block(c_in: int, c_out: int, kernel_size: int = 4) -> nn.Sequential:
    """Double the resolution DCGAN's way: a stride-2 transposed convolution.

    (B, c_in, H, W) → (B, c_out, 2H, 2W): ConvTranspose2d(k, stride 2, padding (k-1)//2, output_padding k%2)
    → LeakyReLU(0.2). Output pixels at even and odd positions are sums of *different* kernel taps (with k = 3
    even different numbers of them), so even a constant input comes out as a pattern of period 2.
    """
    return nn.Sequential(
        nn.ConvTranspose2d(c_in, c_out, kernel_size, stride=2, padding=(kernel_size - 1) // 2,
                           output_padding=kernel_size % 2),
        nn.LeakyReLU(0.2),
    )


def upsampling_stack(kind: str, n_layers: int = 3, channels: int = 16, kernel_size: int = 3,
                     seed: int = 0) -> nn.Sequential:
    """A randomly initialised stack of ``n_layers`` ×2 upsampling blocks and a 1×1 convolution to one channel.

    kind: ``"upsample"`` (:func:`upsample_conv_block`) or ``"transpose"`` (:func:`transpose_conv_block`).
    (B, channels, H, W) → (B, 1, H·2ⁿ, W·2ⁿ). PyTorch's default initialisation, seeded with ``seed`` (the
    global RNG is left untouched): what a generator looks like before any training.
    """
    blocks = {"upsample": upsample_conv_block, "transpose": transpose_conv_block}
    if kind not in blocks:
        raise CxrError(f"unknown upsampling {kind!r}: choose 'upsample' or 'transpose'")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers = [blocks[kind](channels, channels, kernel_size) for _ in range(n_layers)]
        return nn.Sequential(*layers, nn.Conv2d(channels, 1, 1))


def conv2d_params(c_in: int, c_out: int, kernel_size: int, bias: bool = True) -> int:
    """Parameters of ``nn.Conv2d(c_in, c_out, kernel_size, bias=bias)``: c_out · (c_in · k² + 1 if bias)."""
    return c_out * (c_in * kernel_size * kernel_size + (1 if bias else 0))


def _pair_first(v) -> int:
    return int(v[0] if isinstance(v, (tuple, list)) else v)


def output_size(size: int, layers) -> int:
    """Side length of a square input after ``layers`` (an ``nn.Sequential`` or any iterable of modules).

    Conv2d / MaxPool2d / AvgPool2d: ⌊(n + 2p − d·(k − 1) − 1) / s⌋ + 1 (pools: d = 1, stride defaults to k);
    ConvTranspose2d: (n − 1)·s − 2p + d·(k − 1) + output_padding + 1; Upsample: ⌊n · scale_factor⌋;
    anything else (activations, norms, dropout) keeps the size. Nested ``nn.Sequential`` are walked through.
    """
    n = int(size)
    for m in layers:
        if isinstance(m, nn.Sequential):
            n = output_size(n, m)
        elif isinstance(m, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
            k, p = _pair_first(m.kernel_size), _pair_first(m.padding)
            s = _pair_first(m.stride if m.stride is not None else k)
            d = _pair_first(getattr(m, "dilation", 1))
            n = (n + 2 * p - d * (k - 1) - 1) // s + 1
        elif isinstance(m, nn.ConvTranspose2d):
            k, p, s = _pair_first(m.kernel_size), _pair_first(m.padding), _pair_first(m.stride)
            d, op = _pair_first(m.dilation), _pair_first(m.output_padding)
            n = (n - 1) * s - 2 * p + d * (k - 1) + op + 1
        elif isinstance(m, nn.Upsample):
            n = int(math.floor(n * float(_pair_first(m.scale_factor))))
    return n


def largest_singular_value(weight: torch.Tensor) -> float:
    """σ_max of a layer's weight seen as a matrix (out_features, everything else) -- what spectral norm divides by.

    weight: a Linear (out, in) or Conv2d (out, in, k, k) weight. For a convolution this is the norm of the
    reshaped kernel (Miyato et al.'s approximation), not of the full convolution operator.
    """
    w = weight.detach().float().reshape(weight.shape[0], -1)
    return float(torch.linalg.matrix_norm(w, ord=2))


# ----------------------------------------------------------------------------------------------- image-to-image
from cxrlib.models.image_to_image import (  # noqa: E402, F401  (the Pix2Pix / CycleGAN networks, one file)
    PatchDiscriminator,
    ResnetGenerator,
    UNetGenerator,
    patch_layers,
    receptive_field,
    receptive_field_of,
)
