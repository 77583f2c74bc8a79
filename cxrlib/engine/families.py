"""The GAN families the engine trains, by ``TrainConfig.family`` name, and the diffusion model measured against them
(``cxrlib.diffusion``, a family without D); each module holds its whole algorithm.

Every family implements the small protocol of ``cxrlib.gan.family.Family`` (networks, D step, G step, sample
grid, resume state, and what it is: ``draws_from_z``, ``takes_labels``, ``sync_batchnorm``); the engine asks the
family, never its name."""

from __future__ import annotations

from cxrlib.conditional import Conditional
from cxrlib.cyclegan import CycleGAN
from cxrlib.diffusion import Diffusion
from cxrlib.gan.family import Family
from cxrlib.pix2pix import Pix2Pix
from cxrlib.unconditional import Unconditional

#: each family by its own ``name`` (``config.FAMILY_CHOICES`` and ``config.IMAGE_TO_IMAGE`` must agree: tested)
FAMILIES: dict[str, type[Family]] = {c.name: c for c in (Unconditional, Conditional, Pix2Pix, CycleGAN, Diffusion)}
