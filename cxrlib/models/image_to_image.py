"""Image-to-image networks: the U-Net and ResNet-block generators, and the PatchGAN discriminator.

* :class:`UNetGenerator` (Pix2Pix, Isola et al. 2017): an encoder of 4×4 stride-2 convolutions down to 1×1,
  a mirror decoder of transposed convolutions, and a *skip connection* at every level (the decoder layer at
  resolution r reads the encoder's features at r too), so fine detail of the input -- here, where the lung
  edges and ribs run -- reaches the output without squeezing through the bottleneck. Dropout 0.5 in the
  three innermost decoder layers is the generator's only noise (Pix2Pix has no z).
* :class:`ResnetGenerator` (CycleGAN, Zhu et al. 2017; Johnson et al. 2016): two stride-2 downsamplings,
  residual blocks at 1/4 resolution, two upsamplings; instance norm, reflection padding.
* :class:`PatchDiscriminator` (PatchGAN): a few stride-2 convolutions and no dense layer, so D gives a *map*
  of logits, one per overlapping patch of the image (70×70 px at 256 px with three layers): it judges texture
  and local structure everywhere, and leaves the global layout to the generator's L1 or cycle loss.
  :func:`receptive_field` says how large a patch each logit sees; :func:`patch_layers` picks the depth that
  keeps the paper's 70/256 of the image at other sizes.

Every generator maps (B, C_in, S, S) in [-1, 1] to (B, C_out, S, S) in [-1, 1] (tanh) and has ``z_dim = 0``;
every discriminator maps (B, C, S, S) to a logit map (B, 1, h, w).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from cxrlib.errors import CxrError

PAPER_PATCH, PAPER_SIZE = 70, 256  # Pix2Pix's PatchGAN: 70×70 patches of 256×256 images


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels)  # CycleGAN's: no affine parameters, no running statistics
    if kind == "none":
        return nn.Identity()
    raise CxrError(f"unknown norm {kind!r}: choose batch, instance or none")


def _init_weights(module: nn.Module) -> None:
    """Both papers' initialisation: convolution weights from N(0, 0.02), norm scales from N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class UNetGenerator(nn.Module):
    """Pix2Pix's U-Net: ``log2(size)`` 4×4 stride-2 encoder layers down to 1×1 (channels ngf, 2ngf, 4ngf,
    then 8ngf), the mirror decoder, a skip connection (concatenation) at every level, dropout in the first
    ``n_dropout`` decoder layers. in_channels: the input's channels (one per mask structure)."""

    z_dim = 0

    def __init__(self, in_channels: int, size: int, out_channels: int = 1, ngf: int = 64, dropout: float = 0.5,
                 n_dropout: int = 3, norm: str = "batch"):
        super().__init__()
        if size < 8 or size & (size - 1):
            raise CxrError(f"U-Net size must be a power of two >= 8, got {size}")
        self.in_channels, self.out_channels, self.size = int(in_channels), int(out_channels), int(size)
        depth = int(math.log2(size))  # 64 px → 6 levels, down to 1×1
        ch = [min(8 * ngf, ngf * 2**i) for i in range(depth)]
        self.down = nn.ModuleList()
        for i in range(depth):
            c_in = in_channels if i == 0 else ch[i - 1]
            layers = [] if i == 0 else [nn.LeakyReLU(0.2)]
            layers.append(nn.Conv2d(c_in, ch[i], 4, 2, 1, bias=norm != "batch" or i in (0, depth - 1)))
            if 0 < i < depth - 1:  # no norm on the input layer nor at the 1×1 bottleneck
                layers.append(_norm(norm, ch[i]))
            self.down.append(nn.Sequential(*layers))
        self.up = nn.ModuleList()
        for j, i in enumerate(reversed(range(depth))):  # decoder layer j undoes encoder layer i
            c_in = ch[i] if i == depth - 1 else 2 * ch[i]  # the bottleneck has no skip to concatenate
            if i == 0:
                self.up.append(nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(c_in, out_channels, 4, 2, 1), nn.Tanh()))
                continue
            layers = [nn.ReLU(), nn.ConvTranspose2d(c_in, ch[i - 1], 4, 2, 1, bias=norm != "batch"),
                      _norm(norm, ch[i - 1])]
            if j < n_dropout and dropout > 0:
                layers.append(nn.Dropout(dropout))
            self.up.append(nn.Sequential(*layers))
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for layer in self.down:
            x = layer(x)
            skips.append(x)
        skips.pop()  # the bottleneck itself
        for j, layer in enumerate(self.up):
            if j > 0:
                x = torch.cat([x, skips.pop()], dim=1)
            x = layer(x)
        return x


class _ResBlock(nn.Module):
    def __init__(self, ch: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), _norm(norm, ch), nn.ReLU(),
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), _norm(norm, ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """CycleGAN's generator: c7s1-ngf, two stride-2 convolutions (2ngf, 4ngf), ``n_blocks`` residual blocks,
    two transposed convolutions back, c7s1-out, tanh (6 blocks at 128 px and below, 9 above, as the paper)."""

    z_dim = 0

    def __init__(self, in_channels: int = 1, out_channels: int = 1, ngf: int = 64, n_blocks: int = 9,
                 norm: str = "instance"):
        super().__init__()
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, 7), _norm(norm, ngf), nn.ReLU()]
        for m in (1, 2):
            layers += [nn.Conv2d(ngf * m, ngf * 2 * m, 3, 2, 1), _norm(norm, ngf * 2 * m), nn.ReLU()]
        layers += [_ResBlock(4 * ngf, norm) for _ in range(n_blocks)]
        for m in (4, 2):
            layers += [nn.ConvTranspose2d(ngf * m, ngf * m // 2, 3, 2, 1, output_padding=1),
                       _norm(norm, ngf * m // 2), nn.ReLU()]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PatchDiscriminator(nn.Module):
    """PatchGAN: C(ndf) without norm, ``n_layers - 1`` more stride-2 layers doubling the channels (≤ 8ndf),
    one stride-1 layer, a stride-1 convolution to one logit per patch. n_layers = 3: 70×70 patches."""

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3, norm: str = "batch"):
        super().__init__()
        if n_layers < 1:
            raise CxrError(f"a PatchGAN needs at least one layer, got n_layers={n_layers}")
        self.in_channels, self.n_layers = int(in_channels), int(n_layers)
        bias = norm != "batch"
        layers = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = ndf
        for n in range(1, n_layers + 1):
            c_out = ndf * min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(c, c_out, 4, stride, 1, bias=bias), _norm(norm, c_out), nn.LeakyReLU(0.2)]
            c = c_out
        layers.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def receptive_field_of(layers) -> int:
    """How many input pixels (per side) one output of a stack of convolutions sees; layers: (kernel, stride)
    pairs in order. Each layer adds (kernel − 1) × the current *jump* -- the product of the strides before it,
    i.e. how far apart neighbouring outputs of that layer lie in the input -- to the field."""
    field, jump = 1, 1
    for kernel, stride in layers:
        field += (kernel - 1) * jump
        jump *= stride
    return field


def receptive_field(module: nn.Module) -> int:
    """The receptive field of a plain stack of convolutions (e.g. a PatchGAN), from its Conv2d layers in order."""
    return receptive_field_of((m.kernel_size[0], m.stride[0]) for m in module.modules() if isinstance(m, nn.Conv2d))


def patch_layers(size: int, max_layers: int = 5) -> int:
    """The PatchGAN depth whose patch is closest to the paper's 70/256 of the image side (64 px → 1: 16×16
    patches; 128 → 2: 34; 256 → 3: 70; 512 → 4: 142)."""
    want = PAPER_PATCH * size / PAPER_SIZE
    fields = {n: receptive_field(PatchDiscriminator(1, ndf=1, n_layers=n, norm="none")) for n in range(1, max_layers + 1)}
    return min(fields, key=lambda n: (abs(math.log(fields[n] / want)), n))
