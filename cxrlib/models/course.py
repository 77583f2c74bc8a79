"""The course's generator and discriminator (presets "course" and "modern"; the style preset's D).

The generator upsamples then convolves (two 3×3 convolutions per resolution, He-initialised, no normalisation by
default); the discriminator mirrors it and adds a minibatch-standard-deviation channel (:class:`MinibatchStd`)
before its last block. BatchNorm, skip outputs and spectral norm are each one keyword away.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from cxrlib.errors import CxrError
from cxrlib.models.common import FeaturesHead, SkipGenerator, check_size, in_layout, n_doublings, scaled


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


def _lrelu() -> nn.LeakyReLU:
    """LeakyReLU(0.2) in place, as DCGAN's: no new tensor per call (the layers before it -- convolution, linear,
    BatchNorm -- do not keep their outputs for the backward pass, and LeakyReLU's own backward reads its
    result). It saves a little of each course step on CPU (benchmarks/RESULTS.md, issue 10)."""
    return nn.LeakyReLU(0.2, inplace=True)


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


class CourseDiscriminator(FeaturesHead):
    """The course discriminator. x: (B, 1, S, S) → logits (B,).

    from-image Conv 1×1 → LeakyReLU, then per resolution S … 8: [Conv 3×3 → LeakyReLU → Conv 3×3 stride 2
    (or Conv 3×3 + 2×2 average pool with ``down="avgpool"``) → LeakyReLU], then at 4×4: minibatch std
    (+1 channel) → Conv 3×3 → LeakyReLU → Flatten → Linear C₄ → LeakyReLU → Linear 1. No batch norm:
    each sample's logit depends only on its own pixels (and its minibatch-std group). Channels mirror the
    generator (:func:`course_width`). ``spectral_norm=True`` adds spectral normalisation (Miyato et al. 2018)
    on every convolution and linear layer: it bounds each layer's Lipschitz constant, so D cannot become
    arbitrarily sharp. The course's default leaves it to R1 to keep D smooth: without spectral norm its step
    is shorter and equal-time CPU runs ended better (figures in benchmarks/RESULTS.md, issue 10).
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
