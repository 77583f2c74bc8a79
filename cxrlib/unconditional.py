"""The unconditional GAN family: G(z) → an X-ray, D(x) → "real?".

The engine (``cxrlib.train.Trainer``: the loop, logging, sample grids, EMA, amp, checkpoints and exact
resume, the NaN guard, callbacks, budgets) is the same for every GAN family; a *family* supplies what
differs -- its networks, how a batch is drawn, its D step and its G step. The algorithm of the steps (Goodfellow
et al. 2014 with the original project's and the course's tricks) is in :mod:`cxrlib.gan.steps`, as two plain
functions; this family's ``d_step`` / ``g_step`` are the engine's side of them: they draw the batch, the
labels and the latents from the trainer's generator, decide when R1/R2 are added, call the step, then feed ADA,
count the images and update the EMA of G.

``D(x)`` and ``D(G(z))`` are D's mean probabilities "real": a balanced game keeps them apart but away from 1
and 0. DiffAugment (policy and probability p) is applied alike to real and fake batches; each augmentation with
probability p, so D does see clean images: a fraction 1 - p of them per augmentation, and all of them while
ADA's p is still 0 (it starts there and rises only once D begins to memorise the reals).

A new family subclasses :class:`Unconditional` and replaces what differs: ``build_models`` (its networks; a
conditional G and D are called with the labels too), ``real_batch`` (images and whatever goes with them) and
``fake_labels`` -- see ``cxrlib.conditional``, which changes only those -- or ``d_step`` / ``g_step``
themselves for a family whose losses differ (image-to-image). G and D may be containers of several networks;
the engine gives each one Adam optimiser, keeps an EMA of G and checkpoints both.
"""

from __future__ import annotations

import torch

from cxrlib import losses, models
from cxrlib.config import TrainConfig
from cxrlib.gan import steps


class Unconditional:
    """The unconditional GAN: G(z) and D(x). ``t`` is the trainer whose networks, optimisers, random
    generator (``t.rng``), augmentation and counters the wrappers hand to the steps."""

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

    # ------------------------------------------------------------------ the training step
    # The algorithm is cxrlib.gan.steps; these wrappers are the engine's side of it: draw what the step needs
    # from the trainer's generator, in a fixed order (the batch, the fakes' labels, z; the step then draws the
    # augmentations and the loss's label flips), decide lazy R1/R2, and do the bookkeeping after the update.
    def d_step(self, real: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> dict:
        """One discriminator update (``cxrlib.gan.steps.d_step``) with the trainer's networks and settings.

        real: (B, 1, S, S) float in [-1, 1] on the device (default: a random training batch) and its labels.
        R1/R2 are added every ``reg_every`` D updates, WGAN-GP's penalty (``cfg.gp_weight``, loss "wgan-gp") on
        every one, both with the uncompiled D (a compiled one cannot differentiate twice); afterwards ADA sees D's
        logits on the reals and the images are counted.
        Returns 0-d tensors: d_loss, d_loss_real, d_loss_fake, D(x), D(G(z)), d_grad_norm (+ r1, r2, gp).
        """
        t, cfg = self.t, self.t.cfg
        if real is None:
            real, labels = self.real_batch(t.batch)
        y_fake = self.fake_labels(len(real))
        z = t.sample_z(len(real))
        lazy = t.d_updates % cfg.reg_every == 0  # lazy R1/R2: every reg_every steps
        r1_gamma, r2_gamma = (cfg.r1_gamma, cfg.r2_gamma) if lazy else (0.0, 0.0)
        gp_weight = cfg.gp_weight if cfg.loss in losses.PENALISED else 0.0  # ε is drawn only when it is on
        D = t.D if r1_gamma > 0 or r2_gamma > 0 or gp_weight > 0 else t.D_fwd
        stats = steps.d_step(t.G_fwd, D, t.d_opt, real, z, real_labels=labels, fake_labels=y_fake, loss=t.d_loss,
                             augment=t.augment, r1_gamma=r1_gamma, r2_gamma=r2_gamma, reg_every=cfg.reg_every,
                             gp_weight=gp_weight, generator=t.rng, autocast=t.autocast,
                             on_real_logits=None if t.ada is None else t.ada.update)
        if t.ada is not None:
            t.ada.step(len(real))
        t.d_updates += 1
        t.count_images(len(real))
        return stats

    def g_step(self) -> dict:
        """One generator update (``cxrlib.gan.steps.g_step``), then the EMA of G follows.
        Returns 0-d tensors g_loss, g_grad_norm."""
        t = self.t
        y_fake = self.fake_labels(t.batch)
        z = t.sample_z(t.batch)
        relativistic = t.cfg.loss in losses.RELATIVISTIC  # G's loss also reads D on a real batch
        stats = steps.g_step(t.G_fwd, t.D_fwd, t.g_opt, z, fake_labels=y_fake, loss=t.g_loss_fn, augment=t.augment,
                             real_batch=(lambda: self.real_batch(t.batch)) if relativistic else None,
                             autocast=t.autocast)
        t.update_ema()
        return stats

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
