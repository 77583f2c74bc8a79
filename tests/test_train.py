"""The training step: D and G updates are separate, each trick does what it says, logs and callbacks work."""

from __future__ import annotations

import json
import math

import pytest
import torch

from cxrlib import augment, config
from cxrlib.config import PRESETS, TrainConfig, make_config
from cxrlib.errors import CxrError
from cxrlib.train import EMA, Trainer, ema_beta


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    # the test machine is shared: one thread per test process avoids OpenMP oversubscription stalls
    monkeypatch.setattr(config, "set_threads", lambda n=None: torch.set_num_threads(1) or 1)


def tiny(preset="dcgan", **kw):
    """A 32-px config small enough for a unit test (fp32 so results are exact everywhere)."""
    base = dict(size=32, batch=8, steps=4, width=0.25, amp="off", log_every=2, sample_every=1000,
                checkpoint_every=1000)
    return make_config(preset, **{**base, **kw})


def images(n=32, size=32, seed=0):
    return torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def params(module):
    return [p.detach().clone() for p in module.parameters()]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


# ----------------------------------------------------------------------------- configuration
def test_presets_hold_the_seed_and_dcgan_hyper_parameters():
    seed = make_config("seed")
    assert (seed.loss, seed.label_smoothing, seed.flip_prob, seed.batch) == ("bce", 0.1, 0.05, 8)
    assert (seed.g_lr, seed.d_lr, seed.g_betas, seed.d_betas) == (1e-4, 1e-4, (0.9, 0.999), (0.9, 0.999))
    assert seed.ema_half_life_kimg == 0 and seed.r1_gamma == 0 and seed.augment == ""
    dcgan = make_config("dcgan")
    assert (dcgan.g_lr, dcgan.g_betas, dcgan.batch) == (2e-4, (0.5, 0.999), 64)
    course = make_config("course")
    assert course.preset == "course" and course.ema_half_life_kimg > 0 and course.augment and course.ada
    assert set(PRESETS) == {"seed", "dcgan", "course"}


def test_config_round_trips_through_json():
    cfg = make_config("course", size=32, g_betas=(0.0, 0.99), model_kwargs={"ch_out": 8}, minutes=1.5)
    back = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and isinstance(back.g_betas, tuple)


@pytest.mark.parametrize("bad", [dict(size=48), dict(loss="wgan"), dict(batch=0), dict(flip_prob=0.7),
                                 dict(g_steps_per_d_step=2, d_steps_per_g_step=2), dict(steps=None, minutes=None),
                                 dict(nonsense=1)])
def test_make_config_refuses_nonsense_with_a_named_field(bad):
    with pytest.raises(CxrError) as e:
        make_config("course", **bad)
    assert next(iter(bad)) in str(e.value)


# ----------------------------------------------------------------------------- the step
def test_d_step_trains_only_D_and_g_step_trains_only_G():
    t = Trainer(tiny(), images())
    g0, d0 = params(t.G), params(t.D)
    out = t.d_step()
    assert same(params(t.G), g0) and not same(params(t.D), d0)
    assert {"d_loss", "d_loss_real", "d_loss_fake", "D(x)", "D(G(z))", "d_grad_norm"} <= set(out)
    assert torch.allclose(out["d_loss"], out["d_loss_real"] + out["d_loss_fake"])
    g1, d1 = params(t.G), params(t.D)
    out = t.g_step()
    assert same(params(t.D), d1) and not same(params(t.G), g1)
    assert all(p.requires_grad for p in t.D.parameters())  # D is unfrozen again after the G step
    assert {"g_loss", "g_grad_norm"} <= set(out)


@pytest.mark.parametrize("g_steps,d_steps", [(3, 1), (1, 2)])
def test_train_step_runs_the_configured_number_of_updates(g_steps, d_steps):
    t = Trainer(tiny(g_steps_per_d_step=g_steps, d_steps_per_g_step=d_steps), images())
    t.train_step()
    t.train_step()

    def adam_steps(opt):
        return int(next(iter(opt.state.values()))["step"])

    assert (adam_steps(t.g_opt), adam_steps(t.d_opt)) == (2 * g_steps, 2 * d_steps)
    assert t.step == 2 and t.images_seen == 2 * d_steps * 8


def test_ema_beta_halves_the_weight_every_half_life():
    assert ema_beta(batch=8, half_life_kimg=0.008) == pytest.approx(0.5)
    assert ema_beta(batch=10, half_life_kimg=1.0) ** 100 == pytest.approx(0.5)
    assert ema_beta(batch=32, half_life_kimg=10, images_seen=0, rampup=0.05) == 0.0  # ramp-up: copy G at first
    assert ema_beta(batch=32, half_life_kimg=10, images_seen=640, rampup=0.05) == pytest.approx(0.5)


def test_ema_update_is_the_weighted_average_and_copies_buffers():
    G = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    ema = EMA(G)
    before = [p.clone() for p in ema.model.parameters()]
    with torch.no_grad():
        for p in G.parameters():
            p.add_(1.0)
        G[1].running_mean.fill_(7.0)
    ema.update(G, beta=0.75)
    for e, b, g in zip(ema.model.parameters(), before, G.parameters()):
        assert torch.allclose(e, 0.75 * b + 0.25 * g)
    assert torch.equal(ema.model[1].running_mean, torch.full((3,), 7.0))


def test_trainer_updates_the_ema_generator_after_each_g_step():
    cfg = tiny("course", ema_half_life_kimg=0.016, ema_rampup=0.0, augment="", r1_gamma=0.0)
    t = Trainer(cfg, images())
    ema0 = params(t.ema.model)
    t.d_step()
    t.g_step()
    beta = 0.5 ** (8 / 16)
    expected = [beta * e + (1 - beta) * g for e, g in zip(ema0, params(t.G))]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(params(t.ema.model), expected))


def test_samples_come_from_the_ema_generator():
    t = Trainer(tiny("course", ema_half_life_kimg=1.0, augment=""), images())
    t.fit(3, progress=False)
    ema, raw = t.sample(4, seed=3), t.sample(4, seed=3, ema=False)
    assert ema.dtype == torch.uint8 and ema.shape == (4, 1, 32, 32)
    assert torch.equal(ema, t.sample(4, seed=3)) and not torch.equal(ema, raw)
    rng = t.rng.get_state()
    t.sample(4, seed=9)
    assert torch.equal(rng, t.rng.get_state())  # sampling leaves training's randomness alone


def test_same_augmentation_policy_and_p_for_real_and_fake(monkeypatch):
    calls = []
    real_fn = augment.diff_augment

    def recording(x, policy, p, generator):
        calls.append((x.shape, policy, float(p)))
        return real_fn(x, policy=policy, p=p, generator=generator)

    monkeypatch.setattr(augment, "diff_augment", recording)
    t = Trainer(tiny("course", augment="color,translation,cutout", augment_p=0.4, ada=False), images())
    t.train_step()
    assert len(calls) == 3  # D step: real and fake; G step: fake
    assert {c[1:] for c in calls} == {("color,translation,cutout", 0.4)}
    assert all(c[0] == (8, 1, 32, 32) for c in calls)


def test_ada_raises_p_when_D_is_sure_of_the_reals():
    t = Trainer(tiny("course", augment="translation", ada=True, ada_speed_kimg=0.1), images())
    assert float(t.aug_p) == 0.0
    for _ in range(4):
        t.ada.update(torch.full((8,), 5.0))  # D calls every real image real: r_t = 1 > 0.6
        t.ada.step(8)
    assert float(t.aug_p) > 0.0


def test_label_flips_come_from_the_trainers_generator():
    a = Trainer(tiny("seed", width=0.125), images())
    b = Trainer(tiny("seed", width=0.125), images())
    assert torch.equal(a.d_step()["d_loss"], b.d_step()["d_loss"])  # same seed, same flips and dropout


def test_wrong_data_size_is_refused_with_one_line():
    with pytest.raises(CxrError, match="64×64 px but the config asks for 32 px"):
        Trainer(tiny(), images(size=64))
    with pytest.raises(CxrError, match="uint8"):
        Trainer(tiny(), torch.zeros(4, 1, 32, 32))


# ----------------------------------------------------------------------------- the run
def test_fit_logs_the_contract_fields_and_calls_callbacks(tmp_path):
    seen = []
    t = Trainer(tiny(steps=4, log_every=2, sample_every=2), images(), out=tmp_path / "run",
                callbacks=[lambda trainer, rec: seen.append((trainer.step, rec["step"]))])
    records = t.fit(progress=False)
    lines = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 4] == [r["step"] for r in records]
    assert seen == [(2, 2), (4, 4)]
    for key in ("step", "images_seen", "seconds", "d_loss", "g_loss", "D(x)", "D(G(z))", "g_grad_norm",
                "d_grad_norm", "aug_p", "g_lr", "d_lr"):
        assert isinstance(lines[-1][key], (int, float)) and math.isfinite(lines[-1][key]), key
    assert lines[-1]["images_seen"] == 32 and 0 < lines[-1]["D(x)"] < 1
    assert sorted(p.name for p in (tmp_path / "run" / "samples").iterdir()) == ["step_000002.png", "step_000004.png"]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["preset"] == "dcgan"
    assert (tmp_path / "run" / "checkpoints" / "last.pt").exists()


def test_nan_loss_stops_within_one_step_and_keeps_the_last_checkpoint(tmp_path):
    t = Trainer(tiny(steps=10, checkpoint_every=2), images(), out=tmp_path / "run")
    t.fit(4, progress=False)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    good = last.read_bytes()
    t.D.register_forward_hook(lambda m, i, out: out * float("nan"))
    with pytest.raises(CxrError, match=r"diverged at step 5: .*NaN.*last good checkpoint") as e:
        t.fit(4, progress=False)
    assert "\n" not in str(e.value)
    assert t.step == 5 and last.read_bytes() == good
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.pt", "step_000002.pt", "step_000004.pt"]
