"""Augmentation, in two kinds.

* **Offline** (the seed's): brightness, contrast and JPEG quality applied to files, K copies per image,
  written to a separate folder. It enlarges the data set but its changes become part of "real", so the
  generator learns to reproduce them (the course shows this leak).
* **Differentiable** (DiffAugment, Zhao et al. 2020; ADA, Karras et al. 2020): applied on the device to real
  *and* fake batches alike inside the training step, so the discriminator never sees un-augmented data and the
  generator is not pushed to copy the augmentation.
"""

from __future__ import annotations

# ======================================================================= offline augmentation (seed)


# ======================================================================= differentiable augmentation
