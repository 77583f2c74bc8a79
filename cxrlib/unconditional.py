"""The unconditional GAN family: G(z) → an X-ray, D(x) → "real?".

The engine (``cxrlib.train.Trainer``: the loop, logging, sample grids, EMA, amp, checkpoints and exact
resume, the NaN guard, callbacks, budgets) is the same for every GAN family; a *family* supplies what
differs -- its networks, how a batch is drawn, its D step and its G step. The algorithm of the steps (Goodfellow
et al. 2014 with the original project's and the course's tricks) is in :mod:`cxrlib.gan.steps`, as two plain
functions; this family's ``d_step`` / ``g_step`` draw the batch and the latents from the trainer's generator
and hand them to the trainer, which decides when R1/R2 are added, calls the step and feeds ADA
(``Trainer.run_d_step`` / ``run_g_step``); afterwards it counts the images and updates the EMA of G.

``D(x)`` and ``D(G(z))`` are D's mean probabilities "real": a balanced game keeps them apart but away from 1
and 0. DiffAugment (policy and probability p) is applied alike to real and fake batches; each augmentation with
probability p, so D does see clean images: a fraction 1 - p of them per augmentation, and all of them while
ADA's p is still 0 (it starts there and rises only once D begins to memorise the reals).

A family implements the small protocol of :mod:`cxrlib.gan.family` (its networks, its D step and G step, its
sample grid, what it keeps for a resume); this file is the whole unconditional family. ``cxrlib.conditional``
is a family of its own on the same two steps, with labels; the image-to-image families have their own steps.
G and D may be containers of several networks; the engine gives each one Adam optimiser, keeps an EMA of G and
checkpoints both.
"""

from __future__ import annotations

import torch

from cxrlib import models
from cxrlib.config import TrainConfig
from cxrlib.gan.family import Family


class Unconditional(Family):
    """The unconditional GAN: G(z) and D(x). ``t`` is the trainer whose random generator (``t.rng``) draws the
    batch and z, and whose ``run_d_step`` / ``run_g_step`` run the steps with its networks and settings."""

    name = "unconditional"

    @staticmethod
    def build_models(cfg: TrainConfig) -> tuple[torch.nn.Module, torch.nn.Module]:
        """(G, D) of the config's preset and size."""
        return models.build_models(cfg.preset, cfg.size, z_dim=cfg.z_dim, width=cfg.width, **cfg.model_kwargs)

    def real_batch(self, n: int) -> tuple[torch.Tensor, None]:
        """n random training images (float in [-1, 1] on the device) and their labels (None here)."""
        return self.t.next_batch(n), None

    # ------------------------------------------------------------------ the training step
    # The algorithm is cxrlib.gan.steps; here the batch and z are drawn from the trainer's generator, in a fixed
    # order (the batch, then z; the step then draws the augmentations and the loss's label flips), and the
    # trainer runs the step (Trainer.run_d_step: lazy R1/R2, ADA; Trainer.run_g_step), then counts the images
    # the step returns it showed D and updates the EMA of G (Trainer.d_step / g_step).
    def d_step(self, real: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> tuple[dict, int]:
        """One discriminator update (``cxrlib.gan.steps.d_step``, through ``Trainer.run_d_step``).

        real: (B, 1, S, S) float in [-1, 1] on the device (default: a random training batch) and its labels.
        Returns 0-d tensors d_loss, d_loss_real, d_loss_fake, D(x), D(G(z)), d_grad_norm (+ r1, r2, gp), and
        the number of real images D saw."""
        t = self.t
        if real is None:
            real, labels = self.real_batch(t.batch)  # under DP-SGD a Poisson sample, whose size varies
        n_fake = len(real) if t.dp is None else t.batch  # ... while the fakes' must not tell it (cxrlib.gan.dp)
        return t.run_d_step(real, t.sample_z(n_fake), real_labels=labels), len(real)

    def g_step(self) -> tuple[dict, int]:
        """One generator update (``cxrlib.gan.steps.g_step``, through ``Trainer.run_g_step``). Returns 0-d
        tensors g_loss, g_grad_norm, and 0: no real images counted (a relativistic loss's are not)."""
        t = self.t
        return t.run_g_step(t.sample_z(t.batch), real_batch=lambda: self.real_batch(t.batch)), 0

    # ------------------------------------------------------------------ samples
    def sample_grid(self) -> tuple[torch.Tensor, int]:
        """The images of ``RUN/samples/step_XXXXXX.png`` (float in [-1, 1]): the fixed z, rows of 8."""
        t = self.t
        return torch.cat([t.generate(z) for z in t.z_fixed.split(64)]), 8
