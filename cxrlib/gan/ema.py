"""The EMA generator: an exponential moving average of G's weights, which is what a trained GAN samples from.

G's weights move from step to step as G and D chase each other; their average over recent updates
averages those oscillations out. ``ema_beta`` says how much of the average each update
keeps (a half-life in images, as StyleGAN2-ADA); ``EMA`` holds the averaged copy of G and moves it toward G
after each G step (``Trainer.update_ema``). BatchNorm statistics cannot be averaged: they are copied from G,
and ``EMA.refresh_norm_stats`` recomputes them for the averaged weights (``cfg.ema_bn_refresh``).

Student tier: plain functions and one small class, no trainer, no engine.
"""

from __future__ import annotations

import copy

import torch


def ema_beta(batch: int, half_life_kimg: float, images_seen: int = 0, rampup: float = 0.0) -> float:
    """EMA decay per update: 0.5 ** (batch / half_life_images), so the weight of an update halves every
    ``half_life_kimg`` thousand images. With ``rampup`` r > 0 the half-life is capped at r × images seen
    (StyleGAN2-ADA), so the average does not drag the random initial weights along early on."""
    half_life = half_life_kimg * 1000.0
    if rampup > 0:
        half_life = min(half_life, images_seen * rampup)
    return 0.5 ** (batch / half_life) if half_life > 0 else 0.0


NORM_STATS_SEED = 4321  # the EMA's own latents for recomputing its BatchNorm statistics (never training's RNG)


def norm_layers(module: torch.nn.Module) -> list[torch.nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of a module: every kind torch has (BatchNorm1d/2d/3d, SyncBatchNorm, and so the norm
    inside ``models.ClassBatchNorm2d``), with or without running statistics -- in train mode each normalises with
    its batch's statistics. The one rule of every scan for BatchNorm: the EMA's statistics refresh, Pix2Pix's
    batch-statistics translation (``pix2pix.run_eval``) and the trainer's warning about a WGAN-GP critic with
    BatchNorm; a caller that changes a layer's settings puts back each layer's own."""
    return [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


class EMA:
    """An exponential moving average of a generator's weights: ``ema = beta·ema + (1 - beta)·G``.

    ``model`` is a frozen copy of G in eval mode. Buffers (BatchNorm running statistics) cannot be averaged
    meaningfully, so ``update`` copies G's -- but those describe G's activations, not the averaged weights'.
    ``refresh_norm_stats`` recomputes them for the averaged weights; ``dirty``: an update (or the copy at
    construction) came after the last refresh.
    """

    def __init__(self, G: torch.nn.Module):
        self.model = copy.deepcopy(G).eval().requires_grad_(False)
        self.dirty = True  # the copied statistics are G's

    @torch.no_grad()
    def update(self, G: torch.nn.Module, beta: float) -> None:
        ema_params, params = list(self.model.parameters()), list(G.parameters())
        torch._foreach_lerp_(ema_params, params, 1.0 - beta)  # ema += (1-beta)·(G - ema), all tensors at once
        for b_ema, b in zip(self.model.buffers(), G.buffers()):
            b_ema.copy_(b)
        self.dirty = True

    @torch.no_grad()
    def refresh_norm_stats(self, z_dim: int, n_batches: int = 4, batch: int = 64, device=None,
                           seed: int = NORM_STATS_SEED) -> None:
        """Recompute the BatchNorm running statistics of the averaged weights from ``n_batches`` batches of
        ``batch`` latents z ~ N(0, I) of shape (batch, z_dim).

        Only the BatchNorm layers run in train mode, with momentum None (a plain average over the batches, not
        a decay); dropout stays off. The latents come from a generator seeded with ``seed``, so the result
        depends on the weights alone and training's random streams are untouched (exact resume). A model
        without BatchNorm is left as it is, and so is a layer without running statistics."""
        norms = norm_layers(self.model)
        if norms:
            device = torch.device(device) if device is not None else next(self.model.parameters()).device
            gen = torch.Generator(device).manual_seed(seed)
            momenta = [m.momentum for m in norms]
            self.model.eval()
            try:
                for m in norms:
                    m.reset_running_stats()
                    m.momentum = None
                    m.train()
                for _ in range(n_batches):
                    self.model(torch.randn(batch, z_dim, generator=gen, device=device))
            finally:
                for m, momentum in zip(norms, momenta):
                    m.momentum = momentum
                self.model.eval()
        self.dirty = False

