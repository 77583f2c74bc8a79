"""Old names stay importable as aliases of the new ones ("seed" now means a random seed only; r1_every is reg_every)."""

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


# ``r1_every`` paces R2 as well as R1: the config field is ``reg_every`` now, and the old name keeps working.


def test_reg_every_is_the_field_and_r1_every_its_old_name():
    from cxrlib.config import TrainConfig, make_config

    cfg = make_config("course", size=32, r1_every=2)
    assert cfg.reg_every == cfg.r1_every == 2
    assert "reg_every" in cfg.to_dict() and "r1_every" not in cfg.to_dict()
    assert cfg.replace(r1_every=4).reg_every == 4 and cfg.replace(reg_every=8).r1_every == 8
    old = {**cfg.to_dict(), "r1_every": 3}  # a config dict written before the rename
    del old["reg_every"]
    assert TrainConfig.from_dict(old).reg_every == 3
    assert make_config("modern").reg_every == make_config("modern", r1_every=16).reg_every == 16


def test_a_config_with_both_names_must_agree():
    from cxrlib.config import TrainConfig, make_config
    from cxrlib.errors import CxrError

    d = {**make_config("course").to_dict(), "r1_every": 4}  # reg_every 16 and r1_every 4
    with pytest.raises(CxrError, match="r1_every is the old name of reg_every"):
        TrainConfig.from_dict(d)
    assert TrainConfig.from_dict({**d, "r1_every": 16}).reg_every == 16  # the same value twice is fine


@pytest.mark.parametrize("name", ["pretrained", "pretrained-conditional", "pretrained-style", "pretrained-cyclegan"])
def test_shipped_checkpoints_written_with_r1_every_load_as_reg_every(name):
    from cxrlib import assets
    from cxrlib.config import TrainConfig
    from cxrlib.train import load_checkpoint

    state = load_checkpoint(assets.shipped_path(name))
    assert "r1_every" in state["config"]  # written before the rename: the file stays as it is
    assert TrainConfig.from_dict(state["config"]).reg_every == state["config"]["r1_every"]
