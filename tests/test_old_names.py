"""Old names stay importable as aliases of the new ones ("seed" now means a random seed only)."""

import pytest

from cxrlib import augment, experiments, models, widgets

ALIASES = [
    (augment, "SEED_BRIGHTNESS", "ORIGINAL_BRIGHTNESS"),
    (augment, "SEED_CONTRAST", "ORIGINAL_CONTRAST"),
    (augment, "SEED_JPEG_QUALITY", "ORIGINAL_JPEG_QUALITY"),
    (augment, "seed_augment_params", "original_augment_params"),
    (augment, "seed_augment", "original_augment"),
    (augment, "seed_augment_images", "original_augment_images"),
    (models, "SEED_G_WIDTHS", "ORIGINAL_G_WIDTHS"),
    (models, "SEED_G_KERNELS", "ORIGINAL_G_KERNELS"),
    (models, "SEED_D_WIDTHS", "ORIGINAL_D_WIDTHS"),
    (models, "SEED_Z_DIM", "ORIGINAL_Z_DIM"),
    (models, "seed_generator", "original_generator"),
    (models, "SeedDiscriminator", "OriginalDiscriminator"),
    (models, "PRESETS", "NETWORKS"),
    (widgets, "SEED_RANGES", "ORIGINAL_RANGES"),
    (experiments, "SEED_FINETUNE_RATES", "ORIGINAL_FINETUNE_RATES"),
]


@pytest.mark.parametrize("module, old, new", ALIASES, ids=[old for _, old, _ in ALIASES])
def test_old_name_is_the_new_object(module, old, new):
    assert getattr(module, old) is getattr(module, new)
