"""The student tier's D step and G step (``cxrlib.gan.steps``): called by hand with the trainer's inputs they
give the trainer's statistics and weights, to the bit; they need nothing of the engine."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from cxrlib import config, losses
from cxrlib.config import make_config
from cxrlib.gan import steps
from cxrlib.train import Trainer


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setattr(config, "set_threads", lambda n=None: torch.set_num_threads(1) or 1)


def images(n=32, size=32, seed=0):
    return torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def tiny(preset, **kw):
    base = dict(size=32, batch=8, steps=3, width=0.25, amp="off", log_every=1, sample_every=1000,
                checkpoint_every=1000)
    return make_config(preset, **{**base, **kw})


def by_hand(t: Trainer) -> tuple[dict, dict]:
    """One D step and one G step of trainer t, with the plain functions: the same draws in the same order (the
    batch, z, then inside the step the augmentations and label flips), dropout on the trainer's own stream."""
    cfg = t.cfg
    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(t.global_rng["torch"])
        real, z = t.next_batch(), t.sample_z()
        lazy = t.d_updates % cfg.r1_every == 0
        d = steps.d_step(t.G, t.D, t.d_opt, real, z, loss=t.d_loss, augment=t.augment,
                         r1_gamma=cfg.r1_gamma if lazy else 0, r2_gamma=cfg.r2_gamma if lazy else 0,
                         reg_every=cfg.r1_every, gp_weight=cfg.gp_weight if cfg.loss in losses.PENALISED else 0,
                         generator=t.rng, on_real_logits=None if t.ada is None else t.ada.update)
        if t.ada is not None:
            t.ada.step(len(real))
        t.d_updates += 1
        t.count_images(len(real))
        relativistic = cfg.loss in losses.RELATIVISTIC
        g = steps.g_step(t.G, t.D, t.g_opt, t.sample_z(), loss=t.g_loss_fn, augment=t.augment,
                         real_batch=(lambda: (t.next_batch(), None)) if relativistic else None)
        t.update_ema()
        t.global_rng["torch"] = torch.get_rng_state()
    return d, g


@pytest.mark.parametrize("preset, kw", [
    ("course", dict(r1_gamma=1.0, r2_gamma=0.5, r1_every=2)),  # DiffAugment + ADA, lazy R1 and R2, EMA
    ("original", dict(loss="rpgan")),  # dropout, label smoothing and flipping, the relativistic G loss
    ("course", dict(loss="wgan-gp", label_smoothing=0.0, flip_prob=0.0, ada=False)),  # ε from the trainer's rng
])
def test_the_plain_steps_give_the_trainers_statistics(preset, kw):
    data = images()
    engine, hand = Trainer(tiny(preset, **kw), data), Trainer(tiny(preset, **kw), data)
    for t in (engine, hand):
        t.fit(progress=False)  # a few steps of a tiny run, so the optimisers, ADA and EMA have state
    seen = set()
    for _ in range(2):  # both lazy-R1 phases
        d_want, g_want = engine.d_step(), engine.g_step()
        seen |= set(d_want)
        d_got, g_got = by_hand(hand)
        assert list(d_got) == list(d_want) and list(g_got) == list(g_want)
        for k in d_want:
            assert torch.equal(d_got[k], d_want[k]), k
        for k in g_want:
            assert torch.equal(g_got[k], g_want[k]), k
    assert ("r1" in seen and "r2" in seen) == bool(kw.get("r1_gamma"))
    for a, b in ((engine.G, hand.G), (engine.D, hand.D)):
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    if engine.ema is not None:
        assert all(torch.equal(p, q) for p, q in zip(engine.ema.model.parameters(), hand.ema.model.parameters()))
    assert torch.equal(engine.rng.get_state(), hand.rng.get_state())
    assert engine.images_seen == hand.images_seen


def test_the_plain_steps_train_any_networks_without_a_trainer():
    """Two small networks, their optimisers, a batch and z: that is all a step needs."""
    torch.manual_seed(0)
    G = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh())
    D = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.LeakyReLU(0.2), torch.nn.Linear(8, 1), torch.nn.Flatten(0))
    g_opt, d_opt = torch.optim.Adam(G.parameters(), 1e-2), torch.optim.Adam(D.parameters(), 1e-2)
    real, z = torch.randn(32, 16), torch.randn(32, 4)
    d_loss, g_loss = losses.LOSSES["bce"]
    before = [p.detach().clone() for p in D.parameters()]
    d = steps.d_step(G, D, d_opt, real, z, loss=d_loss, r1_gamma=1.0)
    assert {"d_loss", "d_loss_real", "d_loss_fake", "D(x)", "D(G(z))", "r1", "d_grad_norm"} <= set(d)
    assert all(v.dim() == 0 for v in d.values())
    assert not any(torch.equal(p, q) for p, q in zip(before, D.parameters()))
    d_before = [p.detach().clone() for p in D.parameters()]
    g = steps.g_step(G, D, g_opt, z, loss=g_loss)
    assert set(g) == {"g_loss", "g_grad_norm"} and all(v.dim() == 0 for v in g.values())
    assert all(torch.equal(p, q) for p, q in zip(d_before, D.parameters()))  # D is frozen in the G step
    assert all(p.requires_grad for p in D.parameters())  # ... and thawed after it


def test_the_student_tier_does_not_import_the_engine():
    code = "import sys, cxrlib.gan.steps; print(sorted(m for m in sys.modules if m.startswith('cxrlib')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "cxrlib.train" not in out and "cxrlib.unconditional" not in out, out


def test_the_gradient_penalty_is_added_and_draws_its_eps_only_when_on():
    """gp_weight > 0 adds WGAN-GP's penalty and draws one ε per image from the generator; at 0 the step draws
    nothing from it (the other losses keep their random numbers)."""
    torch.manual_seed(0)
    G = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh())
    D = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.LeakyReLU(0.2), torch.nn.Linear(8, 1), torch.nn.Flatten(0))
    d_opt = torch.optim.Adam(D.parameters(), 1e-3)
    real, z = torch.randn(32, 16), torch.randn(32, 4)
    d_loss = losses.LOSSES["wgan-gp"][0]
    rng = torch.Generator().manual_seed(3)
    off = steps.d_step(G, D, d_opt, real, z, loss=d_loss, generator=rng)
    assert "gp" not in off and torch.equal(rng.get_state(), torch.Generator().manual_seed(3).get_state())
    on = steps.d_step(G, D, d_opt, real, z, loss=d_loss, gp_weight=10.0, generator=rng)
    assert on["gp"].dim() == 0 and torch.isfinite(on["gp"]) and on["gp"] > 0
    after = torch.Generator().manual_seed(3)
    torch.rand(32, generator=after)
    assert torch.equal(rng.get_state(), after.get_state())  # exactly one ε per image was drawn
