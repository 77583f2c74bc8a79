"""The building blocks notebook 02 takes apart: the two ways to double a resolution (upsample + convolve, a
transposed convolution), a stack of them, a convolution's parameter count, a layer stack's output size and a
weight's largest singular value. The library's own networks do not use them; notebook 02 reads them as
``cxrlib.models.<name>`` and its exercises check students' versions against them."""

from __future__ import annotations

import math

import torch
from torch import nn

from cxrlib.errors import CxrError


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
