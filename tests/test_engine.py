"""The engine tier (``cxrlib.engine``) and the student tier's EMA and plateau rule (``cxrlib.gan``): every name
``cxrlib.train`` offered before the split is still importable from it, as the same object, and imports go one
way (the engine and the student tier never import ``cxrlib.train``; the student tier never imports the engine)."""

import re
import subprocess
import sys

import pytest
import torch

from cxrlib import config, train
from cxrlib.engine import batches, checkpoints, families, hardware, rng, sampling, stopping
from cxrlib.errors import CxrError
from cxrlib.gan import ema, family, plateau

MOVED = [
    (stopping, "StopSignals"), (stopping, "WallClockCapWarning"),
    (sampling, "SAMPLE_BATCH"), (sampling, "fixed_batches"), (sampling, "load_generator"),
    (sampling, "write_samples"),
    (hardware, "amp_dtype"), (hardware, "cuda_has_native_bf16"), (hardware, "adam"),
    (batches, "DEVICE_DATA_SHARE"), (batches, "device_data_limit"), (batches, "HostBatches"),
    (checkpoints, "CHECKPOINT_FORMAT"), (checkpoints, "CHECKPOINT_VERSION"), (checkpoints, "load_checkpoint"),
    (checkpoints, "upgrade_checkpoint"), (checkpoints, "export_pretrained"),
    (rng, "with_own_global_rng"), (families, "FAMILIES"),
    (ema, "ema_beta"), (ema, "EMA"), (ema, "norm_layers"), (ema, "NORM_STATS_SEED"),
    (plateau, "plateau_step"), (plateau, "PLATEAU_THRESHOLD"),
]


@pytest.mark.parametrize("module, name", MOVED, ids=[name for _, name in MOVED])
def test_a_moved_name_is_still_importable_from_train(module, name):
    assert getattr(train, name) is getattr(module, name)


#: the public names of ``cxrlib.train`` before the engine and the GAN pieces left it (7319734), modules aside
PRE_SPLIT_NAMES = (
    "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "Conditional", "CxrError", "CycleGAN", "DEVICE_DATA_SHARE", "EMA",
    "EMA_NORM_BATCH", "EMA_NORM_BATCHES", "FAMILIES", "HostBatches", "IMAGE_TO_IMAGE", "LOGGED_STATS",
    "NORM_STATS_SEED", "PLATEAU_THRESHOLD", "Pix2Pix", "SAMPLE_BATCH", "SAMPLE_SEED", "StopSignals", "TrainConfig",
    "Trainer", "TrainingStopped", "Unconditional", "WallClockCapWarning", "adam", "amp_dtype", "as_images",
    "atomic_write", "claim_folder", "class_labels", "cuda_has_native_bf16", "device_data_limit", "ema_beta",
    "evaluating", "export_pretrained", "fixed_batches", "frozen", "grad_norm", "load_checkpoint", "load_generator",
    "make_config", "norm_layers", "plateau_step", "throughput", "to_float", "to_uint8", "upgrade_checkpoint",
    "with_own_global_rng", "write_samples",
)  # fmt: skip


def test_every_pre_split_name_is_still_importable_from_train():
    assert [name for name in PRE_SPLIT_NAMES if not hasattr(train, name)] == []
    assert {name: getattr(train, name) for name in ("Unconditional", "Conditional", "Pix2Pix", "CycleGAN")} == {
        name: families.FAMILIES[name.lower()] for name in ("Unconditional", "Conditional", "Pix2Pix", "CycleGAN")}
    assert train.IMAGE_TO_IMAGE is config.IMAGE_TO_IMAGE


def test_imports_go_one_way():
    code = ("import sys, cxrlib.gan.dp, cxrlib.gan.ema, cxrlib.gan.family, cxrlib.gan.plateau, cxrlib.gan.steps; "
            "assert not any(m.startswith(('cxrlib.engine', 'cxrlib.train')) for m in sys.modules), 'gan'; "
            "import cxrlib.engine.sampling, cxrlib.engine.checkpoints, cxrlib.engine.batches, cxrlib.engine.rng, "
            "cxrlib.engine.hardware, cxrlib.engine.stopping, cxrlib.engine.benchmark, cxrlib.engine.families, "
            "cxrlib.engine.processes, cxrlib.engine.state, cxrlib.engine.logs; "
            "assert 'cxrlib.train' not in sys.modules, 'engine'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-500:]


def test_the_config_names_the_families_the_engine_has_and_knows_what_each_is():
    assert config.FAMILY_CHOICES == tuple(families.FAMILIES)
    assert config.IMAGE_TO_IMAGE == tuple(n for n, c in families.FAMILIES.items() if not c.draws_from_z)
    traits = ("draws_from_z", "takes_labels", "needs_masks", "needs_domains", "losses")
    assert all(tuple(t) == traits for t in config.FAMILY_TRAITS.values())
    assert config.FAMILY_TRAITS == {name: {k: getattr(cls, k) for k in traits} for name, cls in families.FAMILIES.items()}
    assert [k for k in traits if f"``{k}``" not in family.__doc__] == []  # the protocol documents each question
    assert all(cls.losses and set(cls.losses) <= set(config.LOSS_CHOICES) for cls in families.FAMILIES.values())
    # a family's own networks: the image-to-image families' presets, which name them
    assert {f: config.family_preset(f) for f in config.FAMILY_CHOICES} == {
        "unconditional": None, "conditional": None, "pix2pix": "pix2pix", "cyclegan": "cyclegan",
        "diffusion": "diffusion"}


@pytest.mark.parametrize("fields, message", [
    (dict(classes=("a", "b")), "class names belong to a family that reads the data's classes (conditional, cyclegan)"),
    (dict(preset="pix2pix", classes=("a", "b")), "not to the pix2pix family"),
    (dict(structures=("lungs",)), "mask structures are the input of the pix2pix family"),
    (dict(preset="pix2pix", domains=("a", "b")), "for the cyclegan family"),
    (dict(preset="cyclegan", loss="rpgan"), "implemented for the unconditional and conditional families only"),
    (dict(family="conditional", loss="wgan-gp", ada=False), "implemented for the unconditional family only"),
    (dict(preset="cyclegan", loss="wgan-gp", ada=False), "the cyclegan family takes bce, hinge, lsgan"),
    (dict(preset="cyclegan", family="pix2pix"), "the cyclegan family has its own networks"),
    (dict(preset="course", family="cyclegan"), "make_config('pix2pix') or make_config('cyclegan')"),
])
def test_validate_asks_what_a_family_is(fields, message):
    preset = fields.pop("preset", "course")
    with pytest.raises(CxrError, match=re.escape(message)):
        config.make_config(preset, **fields)


def test_the_families_that_take_a_loss_or_a_field_still_take_it():
    for preset, fields in (("course", dict(family="conditional", classes=("a", "b"), loss="rpgan")),
                           ("pix2pix", dict(structures=("lungs",), loss="hinge")),
                           ("cyclegan", dict(domains=("a", "b"), classes=("a", "b"), loss="bce")),
                           ("course", dict(loss="wgan-gp", ada=False))):
        config.make_config(preset, **fields)


def test_every_family_implements_the_protocol_and_none_subclasses_another():
    from cxrlib.gan.family import Family

    for name, cls in families.FAMILIES.items():
        assert cls.__bases__ == (Family,) and cls.name == name
        for method in ("build_models", "d_step", "g_step", "sample_grid"):
            assert getattr(cls, method) is not getattr(Family, method), (name, method)
    answers = {name: (cls.draws_from_z, cls.takes_labels, cls.sync_batchnorm) for name, cls in families.FAMILIES.items()}
    assert answers == {"unconditional": (True, False, True), "conditional": (True, True, True),
                       "pix2pix": (False, False, False), "cyclegan": (False, False, False),
                       "diffusion": (True, False, False)}


def test_one_rule_for_batchnorm_the_ema_pix2pix_and_the_critic_warning_share():
    """``gan.ema.norm_layers``: every torch BatchNorm (SyncBatchNorm and class-conditional BatchNorm's inner norm
    too), with or without running statistics; nothing else. Pix2Pix's batch-statistics translation puts back each
    layer's own settings, and the EMA's refresh leaves a layer without running statistics as it is."""
    from torch import nn

    from cxrlib import pix2pix
    from cxrlib.models.conditional import ClassBatchNorm2d

    tracked, untracked, sync = nn.BatchNorm2d(2), nn.BatchNorm2d(2, track_running_stats=False), nn.SyncBatchNorm(2)
    others = (nn.InstanceNorm2d(2, track_running_stats=True), nn.GroupNorm(1, 2), nn.LayerNorm(2))
    assert ema.norm_layers(nn.Sequential(tracked, *others, untracked, sync)) == [tracked, untracked, sync]
    cbn = ClassBatchNorm2d(nn.BatchNorm2d(2), 3)
    assert ema.norm_layers(cbn) == [cbn.norm]

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), tracked, nn.Conv2d(2, 2, 1), untracked).train()
    tracked.running_mean.fill_(5.0)  # stale statistics: batch statistics must not use them
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    out = pix2pix.run_eval(net, x, batch_stats=True)
    assert net.training and [m.track_running_stats for m in (tracked, untracked)] == [True, False]
    assert torch.equal(tracked.running_mean, torch.full((2,), 5.0)) and untracked.running_mean is None
    with torch.no_grad():
        tracked.track_running_stats = False  # the train-mode forward, without touching the running statistics
        expected = net(x)
        tracked.track_running_stats = True
    torch.testing.assert_close(out, expected)

    G = nn.Sequential(nn.Unflatten(1, (2, 1, 1)), tracked, untracked)
    average = ema.EMA(G)
    average.refresh_norm_stats(z_dim=2)
    copy_tracked, copy_untracked = ema.norm_layers(average.model)
    assert not copy_tracked.running_mean.eq(5.0).any() and copy_untracked.running_mean is None
    assert not average.model.training and [m.track_running_stats for m in (copy_tracked, copy_untracked)] == [True, False]


BOOKKEEPING = [("course", {}), ("course", {"family": "conditional"}), ("pix2pix", {}), ("pix2pix", {"gan_weight": 0.0}),
               ("cyclegan", {}), ("diffusion", {})]


@pytest.mark.parametrize("preset, kw", BOOKKEEPING, ids=["unconditional", "conditional", "pix2pix", "l1only", "cyclegan",
                                                         "diffusion"])
def test_the_engine_does_every_familys_bookkeeping_once(preset, kw, monkeypatch):
    """Images shown, D updates and the EMA are counted by the engine (``Trainer.d_step`` / ``g_step``) from what
    the family's steps return, never by the family itself."""
    import inspect

    import torch

    from cxrlib.config import make_config
    from cxrlib.data import load_dataset

    for cls in families.FAMILIES.values():
        source = inspect.getsource(inspect.getmodule(cls))
        assert not any(word in source for word in ("count_images", "d_updates", "update_ema")), cls.name
    monkeypatch.setattr(config, "set_threads", lambda n=None: torch.set_num_threads(1) or 1)
    data = load_dataset("phantom", size=32, n=24, seed=3, masks=True)
    cfg = make_config(preset, size=32, width=0.25, batch=4, steps=2, amp="off", ema_half_life_kimg=0.01, **kw)
    t = train.Trainer(cfg, data)
    betas = []
    monkeypatch.setattr(t.ema, "update", lambda G, beta: betas.append(beta))
    for _ in range(2):
        t.train_step()
    assert t.images_seen == 2 * 4 and len(betas) == 2
    assert t.d_updates == (0 if kw.get("gan_weight") == 0 or preset == "diffusion" else 2)  # L1 only, no D: none
