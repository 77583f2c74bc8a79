"""DCGAN (Radford, Metz & Chintala 2015): transposed convolutions, BatchNorm, ReLU / LeakyReLU."""

from __future__ import annotations

import torch
from torch import nn

from cxrlib.models.common import check_size


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
