"""What a GAN family gives the engine: the small protocol every family implements.

The engine (``cxrlib.train.Trainer``) trains any family the same way; a family is one file of its own algorithm
(``cxrlib.unconditional``, ``cxrlib.conditional``, ``cxrlib.pix2pix``, ``cxrlib.cyclegan``, and ``cxrlib.diffusion``,
the diffusion model measured against them, which has no D) and a class with these
members, the only ones the engine calls:

* ``configure(cfg, data)`` -- the config this family trains with on ``data`` (e.g. the classes it finds there);
* ``check_available()`` -- a one-line ``CxrError`` when an optional package it needs is missing (the diffusion
  family's diffusers); the command line asks before it reads any data;
* ``build_models(cfg)`` -- its networks (G, D); either may be a container of several (CycleGAN's two of each);
* ``Family(trainer, data)`` -- the family of one trainer (it keeps whatever of ``data`` it needs, e.g. masks);
* ``d_step(real, labels)`` / ``g_step()`` -- one D update, one G update, each returning ``(stats, shown)``: its
  statistics as 0-d tensors and how many real images it showed D (0: none); ``extra_stats`` names the statistics
  the engine logs besides its own (e.g. Pix2Pix's ``l1``);
* ``sample_grid()`` -- the images of a run's sample grid and its row length;
* ``state_dict()`` / ``load_state_dict(state)`` -- what the family itself keeps for an exact resume, besides the
  networks and optimisers (e.g. CycleGAN's image pools);
* ``draws_from_z`` (False: it translates images instead, so nothing is sampled from z), ``takes_labels`` (G and D
  are called with class labels), ``needs_masks`` (it trains on (masks, image) pairs: its data must bring masks),
  ``needs_domains`` (it translates between two domains of its data), ``losses`` (the ``TrainConfig.loss`` values
  its steps implement), ``sync_batchnorm`` (several GPUs: BatchNorm statistics over the global batch) and
  ``trains_d`` (False: its D steps leave D untouched, e.g. Pix2Pix's L1-only ablation). The engine, the CLI and
  ``cxrlib.translation`` ask these instead of comparing family names; ``config.FAMILY_TRAITS`` holds the same
  answers for ``TrainConfig.validate`` (tested).

The bookkeeping around a step is the engine's, the same for every family (``Trainer.d_step`` / ``g_step``): after
a D step it counts the update in ``d_updates`` (unless ``trains_d`` is False) and the ``shown`` images in
``images_seen``; after a G step it moves the EMA of G, then counts the step's ``shown`` images (CycleGAN draws
its real images in the G step). A family's steps never count anything themselves.

A family draws its batches and latents from the trainer and hands them, with the trainer's networks and
choices, to plain step functions (``cxrlib.gan.steps``, or its own when its algorithm differs). :class:`Family`
gives the defaults; a family subclasses it, never another family.
"""

from __future__ import annotations

import torch

from cxrlib.config import GAN_LOSSES, TrainConfig


class Family:
    """The defaults of the family protocol; a family overrides ``build_models``, ``d_step``, ``g_step`` and
    ``sample_grid``, and whatever else differs. ``self.t`` is the trainer it trains with."""

    name = ""
    extra_stats: tuple[str, ...] = ()  # statistics a family logs besides the engine's LOGGED_STATS
    draws_from_z = True  # False: an image-to-image family (Trainer.sample and `sample` refuse it)
    takes_labels = False  # True: G(z, y) and D(x, y) take class labels
    needs_masks = False  # True: G translates anatomy masks (``TrainConfig.structures``), so the data brings masks
    needs_domains = False  # True: it translates between two domains of the data (``TrainConfig.domains``)
    losses: tuple[str, ...] = GAN_LOSSES  # the ``TrainConfig.loss`` values its steps implement
    sync_batchnorm = True  # under torchrun on CUDA: SyncBatchNorm in G and D
    trains_d = True  # False: the D steps leave D untouched (the engine does not count them as D updates)

    def __init__(self, trainer, data=None):
        self.t = trainer

    @staticmethod
    def configure(cfg: TrainConfig, data) -> TrainConfig:
        """The config this family trains with on ``data`` (default: the config as it is)."""
        return cfg

    @staticmethod
    def check_available() -> None:
        """Raise ``CxrError`` in one line when a package this family needs is not installed (default: none)."""

    @staticmethod
    def build_models(cfg: TrainConfig) -> tuple[torch.nn.Module, torch.nn.Module]:
        raise NotImplementedError

    def d_step(self, real: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> tuple[dict, int]:
        """One D update: (its statistics, how many real images it showed D)."""
        raise NotImplementedError

    def g_step(self) -> tuple[dict, int]:
        """One G update: (its statistics, how many real images it showed D; usually 0)."""
        raise NotImplementedError

    def sample_grid(self) -> tuple[torch.Tensor, int]:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """What the family keeps for an exact resume, besides networks and optimisers (default: nothing)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
