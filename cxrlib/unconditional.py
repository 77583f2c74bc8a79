"""The unconditional GAN family: G(z) → an X-ray, D(x) → "real?" -- the algorithm of one training step.

The engine (``cxrlib.train.Trainer``: the loop, logging, sample grids, EMA, amp, checkpoints and exact
resume, the NaN guard, callbacks, budgets) is the same for every GAN family; a *family* supplies what
differs -- its networks, how a batch is drawn, its D step and its G step. This file is the whole algorithm of
the family the course starts with (Goodfellow et al. 2014 with the original project's and the course's tricks):

* **D step** -- show D a batch of real images x and of fakes G(z); D learns to call x real (``d_loss_real``)
  and G(z) fake (``d_loss_fake``). G is frozen (``no_grad``). Optional R1 penalty on real images, R2 on fakes.
* **G step** -- G makes a fresh batch G(z); G learns to make D call it real (``g_loss``, non-saturating).
  D is frozen (no weight gradients). With the relativistic loss ("rpgan") D also scores a fresh real batch,
  and each fake must look more real than its paired real image.
* Both see the *same* DiffAugment (policy and probability p) on real and fake batches, so an augmentation
  never tells reals from fakes and G is not pushed to reproduce it. Each augmentation is applied with
  probability p, so D does see clean images: a fraction 1 - p of them per augmentation, and all of them while
  ADA's p is still 0 (it starts there and rises only once D begins to memorise the reals). ``D(x)`` and
  ``D(G(z))`` are D's mean probabilities "real": a balanced game keeps them apart but away from 1 and 0.

A new family subclasses :class:`Unconditional` and replaces what differs: ``build_models`` (its networks),
``real_batch`` (images and whatever goes with them), ``fake_labels``, ``generate`` and ``discriminate``
(how G and D are called) -- see ``cxrlib.conditional``, which changes only those -- or ``d_step`` / ``g_step``
themselves for a family whose losses differ (image-to-image). G and D may be containers of several networks;
the engine gives each one Adam optimiser, keeps an EMA of G and checkpoints both.
"""

from __future__ import annotations

import contextlib

import torch

from cxrlib import losses, models
from cxrlib.config import TrainConfig


def grad_norm(module: torch.nn.Module) -> torch.Tensor:
    """L2 norm of all of a module's gradients, as a 0-d tensor (no host synchronisation)."""
    norms = [p.grad.detach().float().norm() for p in module.parameters() if p.grad is not None]
    return torch.stack(norms).norm() if norms else torch.zeros(())


@contextlib.contextmanager
def frozen(module: torch.nn.Module):
    """Inside the block the module's parameters get no gradients (saves the weight-gradient compute)."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield module
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)


class Unconditional:
    """The unconditional GAN: G(z) and D(x). ``t`` is the trainer whose networks, optimisers, random
    generator (``t.rng``), augmentation and counters the steps use."""

    name = "unconditional"
    extra_stats: tuple[str, ...] = ()  # statistics a family logs besides the engine's LOGGED_STATS

    def __init__(self, trainer, data=None):
        self.t = trainer  # data: what the trainer was given (a family may keep more of it, e.g. masks)

    # ------------------------------------------------------------------ what differs between families
    @staticmethod
    def configure(cfg: TrainConfig, data) -> TrainConfig:
        """The config this family trains with on ``data`` (the unconditional one needs nothing from it)."""
        return cfg

    @staticmethod
    def build_models(cfg: TrainConfig) -> tuple[torch.nn.Module, torch.nn.Module]:
        """(G, D) of the config's preset and size."""
        return models.build_models(cfg.preset, cfg.size, z_dim=cfg.z_dim, width=cfg.width, **cfg.model_kwargs)

    def real_batch(self, n: int) -> tuple[torch.Tensor, None]:
        """n random training images (float in [-1, 1] on the device) and their labels (None here)."""
        return self.t.next_batch(n), None

    def fake_labels(self, n: int) -> None:
        """The labels G is asked to draw (None: G takes no labels)."""
        return None

    def generate(self, z: torch.Tensor, y) -> torch.Tensor:
        return self.t.G_fwd(z)

    def discriminate(self, x: torch.Tensor, y) -> torch.Tensor:
        return self.t.D_fwd(x)

    # ------------------------------------------------------------------ the training step
    def d_step(self, real: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> dict:
        """One discriminator update: D learns to call real images real and G(z) fake.

        real: (B, 1, S, S) float in [-1, 1] on the device (default: a random training batch) and its labels.
        Returns 0-d tensors: d_loss, d_loss_real, d_loss_fake, D(x), D(G(z)), d_grad_norm (+ r1).
        """
        t, cfg = self.t, self.t.cfg
        if real is None:
            real, labels = self.real_batch(t.batch)
        real = real.detach()
        lazy = t.d_updates % cfg.r1_every == 0  # lazy R1/R2: every r1_every steps
        do_r1, do_r2 = cfg.r1_gamma > 0 and lazy, cfg.r2_gamma > 0 and lazy
        real.requires_grad_(do_r1)
        with torch.no_grad(), t.autocast():
            y_fake = self.fake_labels(len(real))
            fake = self.generate(t.sample_z(len(real)), y_fake)  # G is not trained in the D step
        fake.requires_grad_(do_r2)
        # R1/R2 differentiate twice, which a compiled D cannot: those steps run the uncompiled D (both passes)
        with t.autocast(), t.eager_D(do_r1 or do_r2):
            real_logits = self.discriminate(t.augment(real), labels)
            fake_logits = self.discriminate(t.augment(fake), y_fake)
        d_loss, stats = t.d_loss(real_logits.float(), fake_logits.float())
        total = d_loss
        if do_r1:
            r1 = losses.r1_penalty(real_logits, real).mean()
            total = d_loss + losses.r1_weight(cfg.r1_gamma, cfg.r1_every) * r1
            stats["r1"] = r1.detach()
        if do_r2:
            r2 = losses.r2_penalty(fake_logits, fake).mean()
            total = total + losses.r1_weight(cfg.r2_gamma, cfg.r1_every) * r2
            stats["r2"] = r2.detach()
        t.d_opt.zero_grad(set_to_none=True)
        total.backward()
        stats["d_grad_norm"] = grad_norm(t.D)
        t.d_opt.step()

        if t.ada is not None:
            t.ada.update(real_logits.detach())
            t.ada.step(len(real))
        t.d_updates += 1
        t.count_images(len(real))
        return {"d_loss": d_loss.detach(), **stats}

    def g_step(self) -> dict:
        """One generator update: G learns to make D call G(z) real. Returns 0-d tensors g_loss, g_grad_norm."""
        t, cfg = self.t, self.t.cfg
        with frozen(t.D), t.autocast():  # D is not trained in the G step
            y_fake = self.fake_labels(t.batch)
            fake = self.generate(t.sample_z(t.batch), y_fake)
            fake_logits = self.discriminate(t.augment(fake), y_fake)
        if cfg.loss in losses.RELATIVISTIC:  # each fake is judged against a real image
            real, labels = self.real_batch(t.batch)
            with torch.no_grad(), t.autocast():
                real_logits = self.discriminate(t.augment(real), labels)
            g_loss, stats = t.g_loss_fn(fake_logits.float(), real_logits.float())
        else:
            g_loss, stats = t.g_loss_fn(fake_logits.float())
        t.g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        stats = {k: v for k, v in stats.items() if k not in ("D(x)", "D(G(z))")}  # D's view is logged by d_step
        stats["g_grad_norm"] = grad_norm(t.G)
        t.g_opt.step()
        t.update_ema()
        return {"g_loss": g_loss.detach(), **stats}

    # ------------------------------------------------------------------ samples and state
    def grid(self, z: torch.Tensor) -> tuple[torch.Tensor, None]:
        """The fixed-z sample grid's latents and labels (None: G takes no labels)."""
        return z, None

    def sample_grid(self) -> tuple[torch.Tensor, int]:
        """The images of ``RUN/samples/step_XXXXXX.png`` (float in [-1, 1]) and the grid's row length."""
        t = self.t
        z, y = self.grid(t.z_fixed)
        parts = zip(z.split(64), y.split(64) if y is not None else [None] * len(z))
        return torch.cat([t.generate(zb, labels=yb) for zb, yb in parts]), 8

    def state_dict(self) -> dict:
        """What the family itself must keep for an exact resume, besides networks and optimisers (none here)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
