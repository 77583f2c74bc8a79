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


BN = {"norm": "batch"}  # the course generator with BatchNorm (its default has none): for the EMA statistics tests


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
def test_presets_hold_the_original_and_dcgan_hyper_parameters():
    seed = make_config("original")
    assert (seed.loss, seed.label_smoothing, seed.flip_prob, seed.batch) == ("bce", 0.1, 0.05, 8)
    assert (seed.g_lr, seed.d_lr, seed.g_betas, seed.d_betas) == (1e-4, 1e-4, (0.9, 0.999), (0.9, 0.999))
    assert seed.ema_half_life_kimg == 0 and seed.r1_gamma == 0 and seed.augment == ""
    dcgan = make_config("dcgan")
    assert (dcgan.g_lr, dcgan.g_betas, dcgan.batch) == (2e-4, (0.5, 0.999), 64)
    course = make_config("course")
    assert course.preset == "course" and course.ema_half_life_kimg > 0 and course.augment and course.ada
    pix = make_config("pix2pix")
    assert (pix.family, pix.loss, pix.l1_weight, pix.g_betas, pix.lr_decay_start) == ("pix2pix", "bce", 100, (0.5, 0.999), 1)
    cyc = make_config("cyclegan")
    assert (cyc.family, cyc.loss, cyc.cycle_weight, cyc.identity_weight, cyc.pool_size, cyc.lr_decay_start) == (
        "cyclegan", "lsgan", 10, 0.5, 50, 0.5)
    assert set(PRESETS) == {"original", "dcgan", "course", "style", "modern", "pix2pix", "cyclegan", "diffusion"}


def test_config_round_trips_through_json():
    cfg = make_config("course", size=32, g_betas=(0.0, 0.99), model_kwargs={"ch_out": 8}, minutes=1.5)
    back = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and isinstance(back.g_betas, tuple)


@pytest.mark.parametrize("bad", [dict(size=48), dict(loss="wgan"), dict(batch=0), dict(flip_prob=0.7),
                                 dict(g_steps_per_d_step=2, d_steps_per_g_step=2), dict(steps=None, minutes=None),
                                 dict(nonsense=1), dict(ada=True, loss="wgan-gp")])
def test_make_config_refuses_nonsense_with_a_named_field(bad):
    with pytest.raises(CxrError) as e:
        make_config("course", **bad)
    assert next(iter(bad)) in str(e.value)


@pytest.mark.parametrize("trick", [dict(label_smoothing=0.1), dict(flip_prob=0.05)])
def test_make_config_refuses_label_tricks_with_a_loss_that_has_no_labels(trick):
    """Smoothing and flipping belong to BCE and RpGAN: make_config refuses them with another loss, not only the
    Trainer."""
    with pytest.raises(CxrError) as e:
        make_config("course", loss="hinge", **trick)
    assert str(e.value) == "label_smoothing and flip_prob belong to the BCE and RpGAN losses; set them to 0 with " \
        "loss='hinge'"
    assert make_config("course", loss="rpgan", **trick).loss == "rpgan"


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


def test_sampled_image_i_does_not_depend_on_how_many_are_drawn():
    t = Trainer(tiny("course", augment=""), images())
    t.fit(2, progress=False)
    many = t.sample(21, seed=4)  # 16 + 5 rows (the second call padded to 16)
    assert torch.equal(t.sample(1, seed=4), many[:1]) and torch.equal(t.sample(5, seed=4), many[:5])
    other = t.sample(21, seed=4, batch=4)  # other call shapes: the same images up to rounding
    assert (other.int() - many.int()).abs().max() <= 1


def test_fixed_batches_pads_the_last_chunk_to_full_size():
    from cxrlib.train import fixed_batches

    a, b = torch.arange(10).view(5, 2), torch.arange(5)
    got = list(fixed_batches(5, 3, a, None, b))
    assert [(s, r) for s, r, _ in got] == [(0, 3), (3, 2)]
    last = got[1][2]
    assert last[1] is None and last[0].shape == (3, 2) and last[2].tolist() == [3, 4, 4]  # padded with row 4


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


# ----------------------------------------------------------------------------- EMA BatchNorm statistics
def test_refreshed_ema_norm_stats_are_those_of_the_averaged_weights():
    # Linear → Dropout → BatchNorm: were dropout on during the refresh, it would inflate the variance
    torch.manual_seed(0)  # the weights (the test must not depend on which tests ran before it)
    G = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Dropout(0.5), torch.nn.BatchNorm1d(6, momentum=0.3))
    ema = EMA(G)
    with torch.no_grad():
        for p in G.parameters():
            p.mul_(3.0).add_(1.0)
        G.train()(torch.randn(64, 4))  # G's running statistics now describe G, not the average
    ema.update(G, beta=0.5)
    assert ema.dirty and torch.equal(ema.model[2].running_mean, G[2].running_mean)  # copied: G's
    rng = torch.get_rng_state()
    ema.refresh_norm_stats(z_dim=4, n_batches=4, batch=256)
    assert torch.equal(rng, torch.get_rng_state())  # its own latents: torch's global stream is untouched
    assert not ema.dirty and not ema.model.training and ema.model[2].momentum == 0.3
    z = torch.randn(1024, 4, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        h = ema.model[0](z)  # what the averaged weights feed the BatchNorm (no dropout)
    bn = ema.model[2]
    # two sample means of 1,024 latents each (the refresh's and ours): within 4 standard errors of each other
    assert ((bn.running_mean - h.mean(0)).abs() < 4 * h.std(0) * (2 / 1024) ** 0.5).all()
    assert torch.allclose(bn.running_var, h.var(0), rtol=0.15)
    assert not torch.allclose(bn.running_mean, G[2].running_mean, atol=0.5)
    before = [b.clone() for b in ema.model.buffers()]
    ema.refresh_norm_stats(z_dim=4, n_batches=4, batch=256)
    assert same(before, list(ema.model.buffers()))  # a function of the weights alone


def test_samples_refresh_the_ema_norm_stats_once_per_change(monkeypatch):
    calls = []
    real = EMA.refresh_norm_stats
    monkeypatch.setattr(EMA, "refresh_norm_stats", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    t = Trainer(tiny("course", augment="", ema_bn_refresh=True, model_kwargs=BN), images())
    t.fit(2, progress=False)
    copied = [b.clone() for b in t.ema.model.buffers()]
    a = t.sample(4, seed=1)
    assert len(calls) == 1 and not same(copied, list(t.ema.model.buffers()))
    assert torch.equal(a, t.sample(4, seed=1)) and len(calls) == 1  # nothing changed: no second refresh
    t.sample(4, seed=1, ema=False)
    assert len(calls) == 1  # G itself keeps its own statistics
    t.train_step()
    t.sample(4, seed=1)
    assert len(calls) == 2


def test_ema_bn_refresh_off_samples_with_Gs_copied_statistics():
    t = Trainer(tiny("course", augment="", model_kwargs=BN), images())
    assert t.cfg.ema_bn_refresh is False  # the default: refreshed statistics measured no better (config docs)
    t.fit(2, progress=False)
    t.sample(4)
    t.state_dict()
    assert same(list(t.ema.model.buffers()), list(t.G.buffers()))
    t.refresh_ema_norm_stats(force=True)  # on demand all the same
    assert not same(list(t.ema.model.buffers()), list(t.G.buffers()))


def test_a_checkpoint_samples_like_its_trainer(tmp_path):
    from cxrlib.train import load_generator

    t = Trainer(tiny("course", augment="", ema_bn_refresh=True, model_kwargs=BN), images(), out=tmp_path / "run")
    t.fit(progress=False)
    G, _ = load_generator(tmp_path / "run", device="cpu")
    z = torch.randn(6, t.z_dim, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(G(z), t.generate(z), atol=1e-5)  # the saved statistics are the refreshed ones


def test_an_old_config_without_the_new_fields_still_loads():
    old = make_config("course", size=32).to_dict()
    del old["ema_bn_refresh"]
    assert TrainConfig.from_dict(old).ema_bn_refresh is False  # what runs did before the field existed


# ----------------------------------------------------------------------------- wall-clock cap
class FakeClock:
    """Stands in for ``time`` in cxrlib.train: only train steps move it, by ``per_step`` seconds each."""

    def __init__(self):
        self.now = 1000.0

    def perf_counter(self):
        return self.now


def ticking(trainer, clock, per_step=10.0):
    step = trainer.train_step

    def train_step():
        clock.now += per_step
        return step()

    trainer.train_step = train_step
    return trainer


@pytest.fixture
def clock(monkeypatch):
    from cxrlib import train

    fake = FakeClock()
    monkeypatch.setattr(train, "time", fake)
    return fake


def test_config_minutes_cap_the_runs_total_time_over_resumes(tmp_path, clock):
    from cxrlib.train import WallClockCapWarning

    t = ticking(Trainer(tiny(steps=10, minutes=1.0), images(), out=tmp_path / "run"), clock)
    t.fit(2, progress=False)  # an explicit call: no cap, but its 20 s count towards the run's minute
    with pytest.warns(WallClockCapWarning, match=r"^stopped by the wall-clock cap \(1 min\) after 6 of 10 steps: "
                                                 r"results differ from a full run; raise minutes"):
        t.fit(progress=False)
    assert t.step == 6 and t.seconds == pytest.approx(60.0) and t.stopped_by_time and t.target_step == 10
    again = ticking(Trainer.resume(tmp_path / "run", images()), clock)
    assert again.seconds == pytest.approx(60.0)
    with pytest.warns(WallClockCapWarning, match="after 6 of 10 steps"):
        assert again.fit(progress=False) == []
    assert again.step == 6  # the minute is spent: the resumed run does not get it again
    again.fit(3, minutes=1.0, progress=False)  # an explicit minutes caps this call only
    assert again.step == 9


def test_fit_says_nothing_when_it_reaches_its_steps_or_runs_for_time_only(clock):
    import warnings

    from cxrlib.train import WallClockCapWarning

    with warnings.catch_warnings():
        warnings.simplefilter("error", WallClockCapWarning)
        t = ticking(Trainer(tiny(steps=3, minutes=1.0), images()), clock)
        t.fit(progress=False)
        assert t.step == 3 and not t.stopped_by_time
        timed = ticking(Trainer(tiny(steps=None, minutes=0.5), images()), clock)
        timed.fit(progress=False)
        assert timed.step == 3 and not timed.stopped_by_time and timed.target_step is None


# ----------------------------------------------------------------------------- budgets
def test_cpu_budget_is_a_step_count_with_a_safety_net_of_minutes():
    cpu, smoke = config.budget("cpu"), config.budget("smoke")
    expected_min = cpu.steps * 1.1 / 60  # a course step at 64 px, batch 32, on a quiet 2-core CPU
    assert (cpu.size, cpu.batch) == (64, 32) and 1.0 <= expected_min <= 2.0
    assert cpu.minutes >= 3 * expected_min  # the cap only binds on a much slower or busy machine
    assert smoke.steps == 40 and smoke.minutes >= 2.0


@pytest.mark.parametrize("isa,allowed", [("AVX2", False), ("avx512_core", False), ("AVX512_CORE_BF16", True),
                                         ("AVX512_CORE_AMX", True), ("ALL", True)])
def test_bf16_autocast_follows_a_onednn_isa_limit(monkeypatch, isa, allowed):
    monkeypatch.setattr("builtins.open", lambda *a, **k: __import__("io").StringIO("flags : avx2 avx512_bf16"))
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
    assert config.cpu_has_bf16() is allowed  # AVX2: how the benchmarks time an AVX2-only laptop here


# ------------------------------------------------------------------------------------------- the optimiser
def test_adam_is_fused_where_torch_has_the_kernel_and_updates_as_plain_adam():
    from cxrlib.train import adam

    torch.manual_seed(0)
    w = [torch.randn(8, 3, requires_grad=True), torch.randn(5, requires_grad=True)]
    ref = [p.detach().clone().requires_grad_(True) for p in w]
    ours, plain = adam(w, lr=1e-2, betas=(0.0, 0.99)), torch.optim.Adam(ref, lr=1e-2, betas=(0.0, 0.99))
    for _ in range(3):
        g = [torch.randn_like(p) for p in w]
        for p, q, gi in zip(w, ref, g):
            p.grad, q.grad = gi.clone(), gi.clone()
        ours.step()
        plain.step()
    assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(w, ref))
    assert ours.param_groups[0]["fused"] or ours.param_groups[0]["foreach"]
    cfg = make_config("course", size=32, batch=4, width=0.5)
    t = Trainer(cfg, torch.randint(0, 256, (8, 1, 32, 32), dtype=torch.uint8))
    assert t.d_opt.param_groups[0]["fused"] == ours.param_groups[0]["fused"]


def test_adam_falls_back_to_the_multi_tensor_form_without_a_fused_kernel(monkeypatch):
    from cxrlib import train

    real = torch.optim.Adam

    def no_fused(params, fused=None, **kw):  # an older torch: fused only on CUDA
        if fused:
            raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported devices")
        return real(params, **kw)

    monkeypatch.setattr(torch.optim, "Adam", no_fused)
    opt = train.adam([torch.zeros(3, requires_grad=True)], lr=1e-3)
    assert opt.param_groups[0]["foreach"] and not opt.param_groups[0]["fused"]


def test_plateau_step_is_the_rule_of_adapt_lr_and_of_the_exercise_reference():
    from cxrlib.exercises import reduce_on_plateau
    from cxrlib.train import plateau_step

    assert plateau_step(10.0, 0, 9.89, 2) == (9.89, 0, False)  # beats 10 by more than 1 %
    assert plateau_step(10.0, 0, 9.95, 2) == (10.0, 1, False)  # less than 1 %: not an improvement
    assert plateau_step(10.0, 1, 9.95, 2) == (10.0, 0, True)  # the 2nd in a row: reduce, count again
    stuck = [10.0, 9.0, 9.5, 9.2, 9.1, 9.3, 8.0, 8.5, 8.4]
    assert reduce_on_plateau(stuck) == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125]
