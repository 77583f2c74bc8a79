"""A style-based generator (Karras et al. 2019, StyleGAN; 2020, StyleGAN2) at the course's scale.

z: (B, z_dim) → image (B, 1, S, S) in [-1, 1], for every power of two S from 32 to 512.

* **Mapping network** z → w: ``mapping_layers`` fully connected layers (LeakyReLU 0.2) after normalising z to
  the unit sphere. Its layers learn ``lr_mul`` times slower than the rest (an equalised learning rate: the
  weight is stored ×1/lr_mul and scaled back at run time, so Adam's steps shrink by lr_mul). W is a space the
  network *learns*, so it need not follow z's fixed Gaussian: factors of the image can get straight axes.
* **Synthesis network**: a learned 4×4 constant, then per resolution [×2 upsample → modulated 3×3 conv →
  noise → LeakyReLU] and [modulated 3×3 conv → noise → LeakyReLU]; a modulated 1×1 "to-image" conv at every
  resolution, summed over the resolutions as in the course's skip generator. Each layer reads its own copy of w
  (``ws[:, i]``, ``num_ws`` of them), which is what makes **style mixing** possible: coarse layers from one w,
  fine ones from another.
* **Modulated convolution with demodulation** (StyleGAN2): a learned affine map A turns w into one scale per
  input channel, s = A(w); the weights become w'_oik = s_i·w_oik, then each output channel is divided by
  ‖w'_o‖ (demodulation), so the output has unit variance whatever the style -- the per-sample normalisation that
  replaced StyleGAN1's AdaIN without its "droplet" artefacts. Computed in the equivalent form x·s → conv with the
  shared weight → ·1/‖w'_o‖ (ordinary convolutions: fast on CPUs).
* **Noise inputs**: per-pixel Gaussian noise added after each conv with a learned strength per channel
  (starting at 0): stochastic detail (texture, fine vessels) that need not come out of w.
* **w_avg**: a running mean of w during training, for the **truncation trick** w' = w_avg + ψ·(w − w_avg).
* **Style mixing regularisation**: in training, with probability ``mixing_prob`` a batch takes its layers from
  a crossover point on from the w of a second z, so neighbouring layers are not allowed to assume they share a
  style.

``forward(z, truncation=1.0, noise_mode=...)``: noise ``"random"`` (training; the default in train mode),
``"const"`` (fixed noise maps stored in the module; the default in eval mode, so a seed draws the same image
every time) or ``"none"``. ``mapping``, ``synthesis``, :func:`mix` and :func:`truncate` expose the parts.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from cxrlib.errors import CxrError
from cxrlib.models.common import check_size, evaluating, levels_to_size, n_doublings
from cxrlib.models.course import course_width

MIXING_PROB = 0.9  # StyleGAN2's style-mixing probability
W_AVG_BETA = 0.995  # the running mean of w: decay per training forward pass (StyleGAN2)
LRELU_GAIN = math.sqrt(2)  # keeps the signal's scale through a LeakyReLU (StyleGAN's bias_act gain)


class EqualLinear(nn.Module):
    """A linear layer with an equalised learning rate: the weight is stored as N(0, 1)/lr_mul and multiplied by
    lr_mul/√fan_in at run time (bias likewise by lr_mul), so with Adam the layer learns lr_mul times slower."""

    def __init__(self, c_in: int, c_out: int, lr_mul: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in) / lr_mul)
        self.bias = nn.Parameter(torch.full((c_out,), float(bias_init) / lr_mul))
        self.scale, self.lr_mul = lr_mul / math.sqrt(c_in), lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias * self.lr_mul)

    def macs(self, inp: torch.Tensor, out: torch.Tensor) -> int:
        return out.numel() * self.weight.shape[1]


class MappingNetwork(nn.Module):
    """z: (B, z_dim) → w: (B, w_dim). z (its first ``z_dim - label_dim`` entries, the noise) is normalised to
    unit mean square, a class embedding in the last ``label_dim`` entries separately, as in StyleGAN2."""

    def __init__(self, z_dim: int, w_dim: int, n_layers: int = 4, lr_mul: float = 0.1, label_dim: int = 0):
        super().__init__()
        dims = [z_dim] + [w_dim] * n_layers
        self.layers = nn.ModuleList(EqualLinear(a, b, lr_mul) for a, b in zip(dims[:-1], dims[1:]))
        self.label_dim = label_dim

    @staticmethod
    def _normalise(x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + 1e-8).to(x.dtype)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.label_dim:
            k = z.shape[-1] - self.label_dim
            z = torch.cat([self._normalise(z[..., :k]), self._normalise(z[..., k:])], -1)
        else:
            z = self._normalise(z)
        for layer in self.layers:
            z = F.leaky_relu(layer(z), 0.2) * LRELU_GAIN
        return z


class ModulatedConv2d(nn.Module):
    """A convolution whose input channels are scaled per sample by the style s = A(w), then (``demodulate``)
    each output channel divided by the norm of its modulated weights. x: (B, C_in, H, W), w: (B, w_dim).

    The affine A starts at s = 1 (bias 1), so an untrained layer is a plain convolution. ``demod(w)`` returns
    the per-sample, per-output-channel factors 1/‖s·W_o‖ (the exercise of notebook 09 rebuilds them)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, w_dim: int, demodulate: bool = True):
        super().__init__()
        self.affine = EqualLinear(w_dim, c_in, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel_size, kernel_size) / math.sqrt(c_in * kernel_size**2))
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.demodulate, self.padding = demodulate, kernel_size // 2

    def macs(self, inp: torch.Tensor, out: torch.Tensor) -> int:
        """Multiply-adds of the convolution (modulation and demodulation are per channel: not counted)."""
        return out.numel() * self.weight[0].numel()

    def demod(self, s: torch.Tensor) -> torch.Tensor:
        """(B, C_in) styles → (B, C_out) factors 1/√(Σ_ik (s_i·W_oik)² + ε)."""
        w2 = self.weight.float().pow(2).sum((2, 3))  # (C_out, C_in)
        return torch.rsqrt(s.float().pow(2) @ w2.t() + 1e-8)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        s = self.affine(w)  # (B, C_in)
        x = x * s.to(x.dtype)[:, :, None, None]
        x = F.conv2d(x, self.weight.to(x.dtype), padding=self.padding)
        if self.demodulate:
            x = x * self.demod(s).to(x.dtype)[:, :, None, None]
        return x + self.bias.to(x.dtype)[None, :, None, None]


class StyleLayer(nn.Module):
    """[×2 upsample] → modulated conv → + strength·noise → LeakyReLU(0.2)·√2."""

    def __init__(self, c_in: int, c_out: int, w_dim: int, resolution: int, up: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(c_in, c_out, 3, w_dim)
        self.noise_strength = nn.Parameter(torch.zeros(c_out))  # StyleGAN: noise starts switched off
        self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))
        self.up, self.resolution = up, resolution

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", noise=None) -> torch.Tensor:
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = self.conv(x, w)
        if noise is None and noise_mode == "random":
            noise = torch.randn(len(x), 1, self.resolution, self.resolution, device=x.device, dtype=x.dtype)
        elif noise is None and noise_mode == "const":
            noise = self.noise_const.to(x.dtype)
        if noise is not None:
            x = x + noise * self.noise_strength.to(x.dtype)[None, :, None, None]
        return F.leaky_relu(x, 0.2) * LRELU_GAIN


class StyleGenerator(nn.Module):
    """The style-based generator (see the module's docstring). Channels per resolution come from the course's
    ``course_width`` rule (``ch_out`` at full size, doubling per halving, capped at ``ch_max``), so at equal width
    it costs about what the course generator costs.

    ``num_ws`` = 2·log2(S) − 2 per-layer styles; ``layer_resolutions[i]`` is the resolution that ``ws[:, i]``
    styles (the to-image layer of a resolution shares its w with the next resolution's first conv, as in
    StyleGAN2). 64 px: ws 0–2 style 4–8 px (coarse), 3–6 16–32 px (middle), 7–9 64 px (fine)."""

    def __init__(self, size: int, *, z_dim: int = 128, w_dim: int = 256, width: float = 1.0, ch_out: int = 16,
                 ch_max: int = 512, mapping_layers: int = 4, lr_mul: float = 0.1, mixing_prob: float = MIXING_PROB,
                 label_dim: int = 0):
        super().__init__()
        n = n_doublings(check_size(size))
        ch = [course_width(size, 4 << k, width=width, ch_out=ch_out, ch_max=ch_max) for k in range(n + 1)]
        self.size, self.z_dim, self.w_dim, self.mixing_prob = size, z_dim, w_dim, float(mixing_prob)
        if not 0 <= self.mixing_prob <= 1:
            raise CxrError(f"mixing_prob must be in [0, 1], got {mixing_prob}")
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_layers, lr_mul, label_dim)
        self.const = nn.Parameter(torch.randn(1, ch[0], 4, 4))
        self.layers = nn.ModuleList([StyleLayer(ch[0], ch[0], w_dim, 4)])
        self.to_images = nn.ModuleList([ModulatedConv2d(ch[0], 1, 1, w_dim, demodulate=False)])
        res = [4, 4]  # resolution styled by each w index
        for k in range(1, n + 1):
            r = 4 << k
            self.layers.append(StyleLayer(ch[k - 1], ch[k], w_dim, r, up=True))
            self.layers.append(StyleLayer(ch[k], ch[k], w_dim, r))
            self.to_images.append(ModulatedConv2d(ch[k], 1, 1, w_dim, demodulate=False))
            res[-1:] = [r, r, r]  # the previous to-image index is shared with this block's first conv
        self.num_ws = 2 * n + 2
        self.layer_resolutions = tuple(res[: self.num_ws])
        self.register_buffer("w_avg", torch.zeros(w_dim))

    # ------------------------------------------------------------------ the parts
    def synthesis(self, ws: torch.Tensor, noise_mode: str | None = None, noise: list | None = None,
                  return_levels: bool = False):
        """ws: (B, num_ws, w_dim) → image (B, 1, S, S) in [-1, 1] (``return_levels``: and each resolution's
        to-image contribution upsampled to S, as ``SkipGenerator``). ``noise``: one map per conv layer
        (``len(self.layers)``; each (B or 1, 1, r, r)) overriding ``noise_mode``."""
        if ws.dim() != 3 or ws.shape[1] != self.num_ws:
            raise CxrError(f"ws must be (B, {self.num_ws}, {self.w_dim}), got {tuple(ws.shape)}")
        noise_mode = noise_mode or ("random" if self.training else "const")
        if noise_mode not in ("random", "const", "none"):
            raise CxrError(f"noise_mode must be 'random', 'const' or 'none', got {noise_mode!r}")
        x = self.const.to(ws.dtype).expand(len(ws), -1, -1, -1)
        img, levels = None, []
        for k, to_image in enumerate(self.to_images):
            for j in ((0,) if k == 0 else (2 * k - 1, 2 * k)):  # layer j is styled by ws[:, j]
                x = self.layers[j](x, ws[:, j], noise_mode, None if noise is None else noise[j])
            y = to_image(x, ws[:, 2 * k + 1])
            if img is not None:
                img = F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False)
            img = y if img is None else img + y
            if return_levels:
                levels.append(y)
        out = torch.tanh(img)
        if return_levels:
            return out, levels_to_size(levels)
        return out

    def ws(self, z: torch.Tensor, truncation: float = 1.0) -> torch.Tensor:
        """z: (B, z_dim) → ws (B, num_ws, w_dim): the mapped w for every layer, truncated toward w_avg (ψ < 1),
        and in training style-mixed with a second z with probability ``mixing_prob``; updates w_avg in training."""
        w = self.mapping(z)
        if self.training:
            with torch.no_grad():
                self.w_avg.lerp_(w.detach().float().mean(0), 1 - W_AVG_BETA)
        ws = w[:, None].expand(-1, self.num_ws, -1)
        if self.training and self.mixing_prob > 0 and torch.rand(()) < self.mixing_prob:
            cut = int(torch.randint(1, self.num_ws, ()))
            z2 = torch.randn_like(z)
            label_dim = self.mapping.label_dim
            if label_dim:  # the second latent keeps the class
                z2 = torch.cat([z2[:, :-label_dim], z[:, -label_dim:]], 1)
            ws = torch.cat([ws[:, :cut], self.mapping(z2)[:, None].expand(-1, self.num_ws - cut, -1)], 1)
        return truncate(self, ws, truncation)

    def forward(self, z: torch.Tensor, return_levels: bool = False, truncation: float = 1.0,
                noise_mode: str | None = None):
        return self.synthesis(self.ws(z, truncation), noise_mode, return_levels=return_levels)


# ----------------------------------------------------------------------------------------------- helpers


def style_network(G: nn.Module) -> StyleGenerator:
    """The :class:`StyleGenerator` inside G (G itself, or the base of a conditional G); a one-line error for a
    generator without a mapping network."""
    base = getattr(G, "base", G)
    if not isinstance(base, StyleGenerator):
        raise CxrError(f"this generator ({type(base).__name__}) has no mapping network, so truncation and style "
                       "mixing do not apply: train one with --preset style")
    return base


def check_psi(psi: float) -> float:
    psi = float(psi)
    if not 0 < psi <= 1:
        raise CxrError(f"truncation ψ must be in (0, 1], got {psi:g}")
    return psi


def truncate_toward(w: torch.Tensor, w_avg: torch.Tensor, psi: float) -> torch.Tensor:
    """w' = w_avg + ψ·(w − w_avg): w (..., w_dim), w_avg (w_dim,) → the same shape as w (notebook 09's exercise)."""
    return w_avg.to(w.dtype).lerp(w, float(psi))


def truncate(G: nn.Module, w: torch.Tensor, psi: float) -> torch.Tensor:
    """The truncation trick: w' = w_avg + ψ·(w − w_avg), for w (B, w_dim) or ws (B, num_ws, w_dim), with G's
    running mean of w."""
    psi = check_psi(psi)
    if psi == 1:
        return w
    return truncate_toward(w, style_network(G).w_avg, psi)


def modulated_weights(weight: torch.Tensor, s: torch.Tensor, demodulate: bool = True,
                      eps: float = 1e-8) -> torch.Tensor:
    """StyleGAN2's modulated weights, one set per sample (the textbook form, notebook 09's exercise):
    weight (C_out, C_in, k, k), styles s (B, C_in) → (B, C_out, C_in, k, k) with w'_oik = s_i·w_oik, and with
    ``demodulate`` each output channel's weights divided by √(Σ_ik w'_oik² + eps). ``ModulatedConv2d`` computes the
    same convolution without building them (x·s → shared conv → ·1/‖w'_o‖)."""
    w = weight[None] * s[:, None, :, None, None]
    if demodulate:
        w = w * torch.rsqrt(w.pow(2).sum((2, 3, 4), keepdim=True) + eps)
    return w


def parse_layers(spec, num_ws: int) -> list[int]:
    """Layer indices from ``"4-7"``, ``"0,1,5"``, an int or a sequence; each in [0, num_ws)."""
    if isinstance(spec, str):
        out = []
        for part in spec.replace(" ", "").split(","):
            try:
                lo, _, hi = part.partition("-")
                out += list(range(int(lo), int(hi or lo) + 1))
            except ValueError:
                raise CxrError(f"--mix-layers {spec!r}: give indices like '4-7' or '0,1,2'") from None
    elif isinstance(spec, int):
        out = [spec]
    else:
        out = [int(i) for i in spec]
    bad = [i for i in out if not 0 <= i < num_ws]
    if not out or bad:
        raise CxrError(f"mix layers {spec!r}: this generator has {num_ws} style layers, 0-{num_ws - 1}")
    return sorted(set(out))


@torch.no_grad()
def mix(G: nn.Module, w_a: torch.Tensor, w_b: torch.Tensor, layers, noise_mode: str = "const") -> torch.Tensor:
    """Style mixing: images styled by w_a except at ``layers`` (indices of ws, e.g. ``range(0, 4)`` = the coarse
    ones, or ``"4-7"``), which take w_b. w_a, w_b: (B, w_dim) (or one of them (1, w_dim)). → (B, 1, S, S)."""
    net = style_network(G)
    idx = parse_layers(layers, net.num_ws)
    w_a, w_b = torch.broadcast_tensors(w_a, w_b)
    ws = w_a[:, None].repeat(1, net.num_ws, 1)
    ws[:, idx] = w_b[:, None]
    return net.synthesis(ws, noise_mode)


def style_layer_groups(G: nn.Module) -> dict[str, list[int]]:
    """The ws indices by scale: ``coarse`` (4–8 px), ``middle`` (16–32 px), ``fine`` (64 px and above)."""
    res = style_network(G).layer_resolutions
    return {"coarse": [i for i, r in enumerate(res) if r <= 8],
            "middle": [i for i, r in enumerate(res) if 16 <= r <= 32],
            "fine": [i for i, r in enumerate(res) if r >= 64]}


def _unconditional(G: nn.Module, what: str) -> StyleGenerator:
    net = style_network(G)
    if net.mapping.label_dim or net is not G:
        raise CxrError(f"{what} measures an unconditional style generator; for a conditional one map (z, class) "
                       "with G.latent and use mix()/truncate()")
    return net


@torch.no_grad()
def mixing_effect(G: nn.Module, n: int = 64, seed: int = 0, groups: dict | None = None) -> dict[str, dict]:
    """How much of an image a group of style layers controls, in numbers: for ``n`` pairs of parents (A, B) from
    ``seed``, each group of layers (default :func:`style_layer_groups`) is swapped from B into A, and per group

    * ``change``: the mean absolute grey-level difference (0–255) between the mixed image and parent A;
    * ``share``: that change as a share of the difference between B and A (0 = the swap changed nothing, 1 = as
      much as B itself);
    * ``layout_from_b``: the share of pairs whose mixed image, shrunk to 8×8 pixels (the layout: outline,
      diaphragm, heart, where the lungs are), is nearer to B's than to A's -- near 1 when the group carries the
      anatomy, near 0 when it carries only detail.

    Also ``"parents"``: B against A. Noise is the stored constant maps, so the swapped styles are the only
    difference between the images. Returns {group: {"change", "share", "layout_from_b"}}."""
    with evaluating(_unconditional(G, "mixing_effect")) as net:
        gen = torch.Generator().manual_seed(seed)
        z_a, z_b = (torch.randn(n, net.z_dim, generator=gen) for _ in range(2))
        w_a, w_b = net.mapping(z_a), net.mapping(z_b)
        a = net.synthesis(w_a[:, None].expand(-1, net.num_ws, -1), "const")
        b = net.synthesis(w_b[:, None].expand(-1, net.num_ws, -1), "const")
        full = float((b - a).abs().mean()) * 127.5

        def layout(x):
            return F.adaptive_avg_pool2d(x.float(), 8).flatten(1)

        la, lb = layout(a), layout(b)
        out = {}
        for name, layers in (groups or style_layer_groups(G)).items():
            m = mix(G, w_a, w_b, layers)
            change = float((m - a).abs().mean()) * 127.5
            lm = layout(m)
            nearer_b = ((lm - lb).pow(2).sum(1) < (lm - la).pow(2).sum(1)).float().mean()
            out[name] = {"change": change, "share": change / max(full, 1e-12), "layout_from_b": float(nearer_b)}
        out["parents"] = {"change": full, "share": 1.0, "layout_from_b": 1.0}
        return out


@torch.no_grad()
def truncation_sweep(G: nn.Module, real, psis=(0.3, 0.5, 0.7, 0.85, 1.0), n: int = 500, seeds=(0,),
                     n_pairs: int = 500, judge=None) -> list[dict]:
    """The truncation trick's trade-off in numbers: for each ψ and each latent seed in ``seeds``, ``n`` images
    (the same latents for every ψ), their **diversity** (mean MS-SSIM of ``n_pairs`` random pairs: higher = more
    alike; compare with the real set's, ``cxrlib.metrics.diversity(real)``) and their **SWD ×10³** against
    ``real`` (N, 1, S, S). Returns [{"psi", "ms_ssim", "swd", "ms_ssim_std", "swd_std", "ms_ssim_seeds",
    "swd_seeds"}] in ψ order: means over the seeds, their seed-to-seed standard deviations (0 for one seed) and
    the values per seed (lists in ``seeds`` order: seed k uses the same latents at every ψ, so two ψ compare
    paired by seed). ``judge``: optionally a function images (n, 1, S, S) in [-1, 1] → (n,) probabilities of one
    class (e.g. a classifier's pneumonia probability); then each row also has "judged", "judged_std" and
    "judged_seeds": the share of images it gives ≥ 0.5, as above."""
    from cxrlib import metrics

    with evaluating(_unconditional(G, "truncation_sweep")) as net:
        per_seed = []
        for seed in seeds:
            z = torch.randn(n, net.z_dim, generator=torch.Generator().manual_seed(seed))
            rows = []
            for psi in psis:
                x = torch.cat([net(z[i:i + 100], truncation=psi) for i in range(0, n, 100)])
                row = [metrics.diversity(x, n_pairs=n_pairs, seed=seed), metrics.swd(real, x, seed=seed)["avg"]]
                if judge is not None:
                    row.append(float((judge(x) >= 0.5).float().mean()))
                rows.append(row)
            per_seed.append(rows)
        values = torch.tensor(per_seed, dtype=torch.float64)  # (seeds, psis, 2 or 3)
        mean = values.mean(0)
        std = values.std(0) if len(seeds) > 1 else torch.zeros_like(mean)
        keys = ("ms_ssim", "swd", "judged")[:values.shape[-1]]
        return [{"psi": float(p), **{key: float(mean[k, j]) for j, key in enumerate(keys)},
                 **{f"{key}_std": float(std[k, j]) for j, key in enumerate(keys)},
                 **{f"{key}_seeds": values[:, k, j].tolist() for j, key in enumerate(keys)}}
                for k, p in enumerate(psis)]


@torch.no_grad()
def path_lengths(G: nn.Module, n: int = 256, eps: float = 1e-2, seed: int = 0) -> dict[str, float]:
    """How smoothly images change along straight paths in Z and in W (a pixel version of Karras et al.'s
    perceptual path length, which uses LPIPS): for ``n`` random pairs and a random t, the squared change of
    the image (mean over pixels, images in [-1, 1]) for a step ε along the path, divided by ε². Paths in Z are
    spherical (slerp, z is Gaussian), in W linear. A shorter W path means that walking in W changes the picture
    more evenly -- the sign of a less entangled space. Also ``"ends"``: the mean squared difference between the
    two end images of each pair (the same for both paths), the scale to divide by when comparing networks: a path
    whose pixels all change at an even pace from one end image to the other has length equal to it, and any other
    path is longer (on average over t). Returns {"z": mean, "w": mean, "z_median", "w_median", "ends"}."""
    def slerp(a, b, t):  # row-wise: t (n, 1)
        cos = (F.normalize(a, dim=1) * F.normalize(b, dim=1)).sum(1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7)
        omega = torch.acos(cos)
        return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)

    with evaluating(_unconditional(G, "path_lengths")) as net:
        gen = torch.Generator().manual_seed(seed)
        z0, z1 = (torch.randn(n, net.z_dim, generator=gen) for _ in range(2))
        t = torch.rand(n, 1, generator=gen) * (1 - eps)

        def image(w):
            return net.synthesis(w[:, None].expand(-1, net.num_ws, -1), "const")

        def change(a, b):
            return (image(a) - image(b)).pow(2).flatten(1).mean(1) / eps**2

        dz = change(net.mapping(slerp(z0, z1, t)), net.mapping(slerp(z0, z1, t + eps)))
        w0, w1 = net.mapping(z0), net.mapping(z1)
        dw = change(w0.lerp(w1, t), w0.lerp(w1, t + eps))
        ends = (image(w1) - image(w0)).pow(2).flatten(1).mean(1)
        return {"z": float(dz.mean()), "w": float(dw.mean()), "z_median": float(dz.median()),
                "w_median": float(dw.median()), "ends": float(ends.mean())}


@torch.no_grad()
def noise_share(G: nn.Module, n: int = 16, draws: int = 8, seed: int = 0) -> dict[str, float]:
    """What the noise inputs decide: for ``n`` latents, ``draws`` images each with fresh noise maps. Returns
    {"noise_std": per-pixel std over the noise draws at a fixed w, "latent_std": per-pixel std over the n
    latents with the stored noise, "share": their ratio} in grey levels (0–255), averaged over pixels: the
    share is small when the noise only adds detail and w decides the picture."""
    with evaluating(_unconditional(G, "noise_share")) as net:
        gen = torch.Generator().manual_seed(seed)
        w = net.mapping(torch.randn(n, net.z_dim, generator=gen))
        ws = w[:, None].expand(-1, net.num_ws, -1)
        fixed = net.synthesis(ws, "const") * 127.5
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            redrawn = torch.stack([net.synthesis(ws, "random") for _ in range(draws)]) * 127.5  # (draws, n, ...)
        noise_std = float(redrawn.std(0).mean())
        latent_std = float(fixed.std(0).mean())
        return {"noise_std": noise_std, "latent_std": latent_std, "share": noise_std / max(latent_std, 1e-12)}
