"""The GAN families the engine trains, by ``TrainConfig.family`` name; each module holds its whole algorithm."""

from __future__ import annotations

from cxrlib.conditional import Conditional
from cxrlib.cyclegan import CycleGAN
from cxrlib.pix2pix import Pix2Pix
from cxrlib.unconditional import Unconditional

FAMILIES = {"unconditional": Unconditional, "conditional": Conditional, "pix2pix": Pix2Pix, "cyclegan": CycleGAN}
