"""Differentially private training (``cxrlib.gan.dp``, ``train --dp-epsilon``): per-image clipping bounds what one
image can do to D, the noise has the scale DP-SGD promises, the accountant is Opacus', the budget is kept across a
resume, and what per-image privacy cannot carry is refused in one line."""

from __future__ import annotations

import copy
import json
import re
import shutil
import sys

import numpy as np
import pytest
import torch
from conftest import assert_same_training_state, png_class_folder

from cxrlib import config, losses, models
from cxrlib.cli import main
from cxrlib.config import make_config
from cxrlib.data import ImageSet
from cxrlib.errors import CxrError
from cxrlib.gan import dp
from cxrlib.train import Trainer, export_pretrained, load_checkpoint

pytest.importorskip("opacus")
from opacus.accountants import RDPAccountant  # noqa: E402

TINY = dict(size=32, batch=8, width=0.25, amp="off", log_every=1, sample_every=10**6, checkpoint_every=10**6)


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setattr(config, "set_threads", lambda n=None: torch.set_num_threads(1) or 1)


def images(n: int = 24, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def two_classes(n: int = 24) -> ImageSet:
    x = images(n)
    x[: n // 2] //= 4  # class 0 dark
    return ImageSet(x, torch.arange(n) >= n // 2, ["normal", "pneumonia"])


# ------------------------------------------------------------------ the private step
def private_update(D, G, real, z, *, sigma: float, clip: float, lr: float = 0.1, seed: int = 0) -> torch.Tensor:
    """D's parameters moved by one ``dp_d_step`` with plain SGD (so the update is lr × the gradient), as one vector;
    the least-squares loss, whose slope grows with D's score (BCE's saturates: a huge image could get no gradient)."""
    D = copy.deepcopy(D)
    before = torch.cat([p.detach().flatten() for p in D.parameters()])
    opt = torch.optim.SGD(D.parameters(), lr=lr)
    dp.dp_d_step(G, D, opt, real, z, loss=losses.d_loss_lsgan, max_grad_norm=clip, noise_multiplier=sigma,
                 expected_batch=len(z), noise_generator=torch.Generator().manual_seed(seed))
    return torch.cat([p.detach().flatten() for p in D.parameters()]) - before


@pytest.fixture
def pair():
    torch.manual_seed(0)
    return models.build_models("course", 32, width=0.25, mbstd_group=1)


def test_clipping_bounds_what_one_image_can_move_d(pair):
    G, D = pair
    real = torch.rand(8, 1, 32, 32) * 2 - 1
    z = torch.randn(8, G.z_dim)
    outlier = real.clone()
    outlier[0] = 3000.0  # an image whose gradient is ~20× the others' (and ~2,000× the clipping norm)
    C, lr, B = 0.01, 0.1, len(real)
    bound = 2 * C * lr / B  # swapping one image changes the clipped sum by at most 2C: its old and new share, each ≤ C

    def moved(clip):
        return (private_update(D, G, outlier, z, sigma=0.0, clip=clip, lr=lr)
                - private_update(D, G, real, z, sigma=0.0, clip=clip, lr=lr)).norm()

    assert moved(C) <= bound * 1.001
    assert moved(1e9) > 100 * bound  # unclipped, the one image moves D far more


def test_noise_has_the_scale_dp_sgd_promises(pair):
    G, D = pair
    real, z = torch.rand(8, 1, 32, 32) * 2 - 1, torch.randn(8, G.z_dim)
    sigma, C, lr, B = 2.0, 0.5, 0.1, 8
    noise = private_update(D, G, real, z, sigma=sigma, clip=C, lr=lr) - private_update(D, G, real, z, sigma=0.0,
                                                                                        clip=C, lr=lr)
    expected = sigma * C * lr / B  # N(0, (σC)²) on the clipped sum, divided by the batch, times lr
    assert len(noise) > 5000
    assert abs(noise.std().item() / expected - 1) < 0.05
    assert abs(noise.mean().item()) < 0.05 * expected


def test_an_empty_poisson_sample_is_a_step_of_noise_and_the_fakes(pair):
    G, D = pair
    moved = private_update(D, G, torch.zeros(0, 1, 32, 32), torch.randn(8, G.z_dim), sigma=1.0, clip=1.0)
    assert torch.isfinite(moved).all() and moved.norm() > 0


@pytest.mark.parametrize("conditional", [False, True])
def test_per_example_gradients_are_one_backward_pass_per_image(conditional):
    torch.manual_seed(0)
    kw = dict(n_classes=2) if conditional else {}  # the conditional D: projection head, spectral norm
    _, D = models.build_models("course", 32, width=0.25, mbstd_group=1, **kw)
    D.eval()  # spectral norm's power iteration would move between the two computations
    x, y = torch.randn(3, 1, 32, 32), (torch.tensor([0, 1, 1]) if conditional else None)
    grads, logits = dp.per_example_grads(D, x, y)
    for i in range(3):
        D.zero_grad()
        out = D(x[i:i + 1]) if y is None else D(x[i:i + 1], y[i:i + 1])
        out.sum().backward()
        assert torch.allclose(logits[i], out.detach()[0], atol=1e-5)
        for g, p in zip(grads, D.parameters()):
            assert torch.allclose(g[i], p.grad, atol=1e-5, rtol=1e-4)


def test_poisson_sample_has_the_sampling_rate():
    gen = torch.Generator().manual_seed(0)
    sizes = torch.tensor([len(dp.poisson_sample(200, 0.1, gen)) for _ in range(400)]).float()
    assert abs(sizes.mean() - 20) < 1 and abs(sizes.var() - 200 * 0.1 * 0.9) < 5  # binomial(200, 0.1)
    assert len(set(sizes.tolist())) > 5


# ------------------------------------------------------------------ the accountant
def test_epsilon_of_known_settings_is_opacus_rdp_accountants():
    sigma, q, steps, delta = 1.1, 256 / 60000, 60 * 60000 // 256, 1e-5  # Abadi et al.'s MNIST setting
    reference = RDPAccountant()
    for _ in range(steps):
        reference.step(noise_multiplier=sigma, sample_rate=q)
    ours = dp.epsilon_spent([(sigma, q, steps)], delta)
    assert ours == pytest.approx(reference.get_epsilon(delta, alphas=dp.RDP_ORDERS), rel=1e-9)
    assert ours <= reference.get_epsilon(delta) + 1e-9  # the extra orders only tighten it
    assert 1 < ours < 5


def test_noise_multiplier_reaches_the_target_and_no_less_noise_would():
    eps, delta, q, steps = 3.0, 1e-3, 0.05, 300
    sigma = dp.noise_multiplier(eps, delta, q, steps)
    assert dp.epsilon_spent([(sigma, q, steps)], delta) <= eps
    assert dp.epsilon_spent([(0.97 * sigma, q, steps)], delta) > eps


def test_a_private_run_logs_checkpoints_and_resumes_its_epsilon(tmp_path):
    cfg = make_config("course", steps=4, dp_epsilon=10, **TINY)
    a = Trainer(cfg, images(), out=tmp_path / "a")
    assert (a.dp.sample_rate, a.dp.delta) == (8 / 24, 1 / 24)
    a.fit(steps=2, progress=False)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    a.fit(steps=2, progress=False)  # the same run, on without a stop
    b = Trainer.resume(tmp_path / "b", images())
    assert b.dp.steps_taken == 2 and b.dp.noise_multiplier == a.dp.noise_multiplier
    b.fit(progress=False)
    reference = RDPAccountant()
    for _ in range(4):
        reference.step(noise_multiplier=a.dp.noise_multiplier, sample_rate=8 / 24)
    eps = reference.get_epsilon(1 / 24, alphas=dp.RDP_ORDERS)
    assert a.dp.spent() == pytest.approx(eps) and b.dp.spent() == pytest.approx(eps) and eps <= 10
    for run in ("a", "b"):
        saved = json.loads((tmp_path / run / "config.json").read_text())["privacy"]
        assert saved["epsilon_spent"] == pytest.approx(eps) and saved["d_steps"] == 4
        assert load_checkpoint(tmp_path / run / "checkpoints" / "last.pt")["dp"]["history"] == [[a.dp.noise_multiplier,
                                                                                                8 / 24, 4]]
        logged = [json.loads(line)["epsilon"] for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
        assert len(logged) == 4 and logged == sorted(logged) and logged[-1] == pytest.approx(eps)
    assert_same_training_state(a.state_dict(), b.state_dict())  # the noise stream continued too
    assert a.images_seen == 4 * 8  # B per step, whatever the Poisson sample's size
    with pytest.raises(CxrError, match="would spend") as e:  # past the budget: refused before a step runs
        b.fit(steps=20, progress=False)
    assert "\n" not in str(e.value) and b.step == 4
    export_pretrained(tmp_path / "a", tmp_path / "small.pt")  # the guarantee travels with the exported weights
    assert load_checkpoint(tmp_path / "small.pt")["privacy"] == {"epsilon_spent": pytest.approx(eps),
                                                                   "delta": 1 / 24, "d_steps": 4}


def test_noise_is_seeded_secretly_not_from_the_run_seed():
    cfg = make_config("course", steps=2, dp_epsilon=10, **TINY)
    a, b = Trainer(cfg, images()), Trainer(cfg, images())
    assert not torch.equal(a.dp.noise.get_state(), b.dp.noise.get_state())


# ------------------------------------------------------------------ what cannot be private
@pytest.mark.parametrize("preset, fields, words", [
    ("course", dict(r1_gamma=0.1), "R1 differentiates D twice"),
    ("course", dict(ada=True), "ADA's p follows D's outputs"),
    ("course", dict(model_kwargs={"mbstd_group": 4}), "minibatch-std"),
    ("dcgan", {}, "BatchNorm"),
    ("modern", {}, "its G step reads D's scores of real images"),
    ("course", dict(loss="wgan-gp"), "mixes a real and a fake image"),
    ("pix2pix", {}, "cannot make pix2pix private"),
    ("cyclegan", {}, "cannot make cyclegan private"),
    ("course", dict(family="conditional", class_sampling="balanced"), "not class by class"),
    ("course", dict(steps=None, minutes=1.0), "give a number of steps"),
    ("course", dict(dp_delta=2.0), "δ must be in (0, 1)"),
])
def test_what_per_image_privacy_cannot_carry_is_refused_in_one_line(preset, fields, words):
    with pytest.raises(CxrError, match=re.escape(words)) as e:
        make_config(preset, dp_epsilon=10, **fields)
    assert "\n" not in str(e.value)


def test_the_dp_recipe_keeps_the_course_recipe_otherwise():
    cfg, plain = make_config("course", dp_epsilon=10), make_config("course")
    assert (cfg.r1_gamma, cfg.ada, cfg.model_kwargs) == (0.0, False, {"mbstd_group": 1})
    assert (cfg.augment, cfg.ema_half_life_kimg, cfg.d_lr) == (plain.augment, plain.ema_half_life_kimg, plain.d_lr)
    assert make_config("original", dp_epsilon=1).model_kwargs == {}  # its D has no minibatch-std: dropout is per image
    with pytest.raises(CxrError, match="above 1 / 24 training images"):
        Trainer(make_config("course", steps=2, dp_epsilon=10, dp_delta=0.1, **TINY), images())
    with pytest.raises(CxrError, match="fine-tuning cannot be made private"):
        Trainer.finetune({"config": make_config("course", dp_epsilon=10, **TINY).to_dict(), "step": 0}, images())


# ------------------------------------------------------------------ the command line
@pytest.mark.parametrize("family", [[], ["--conditional"]])
def test_train_dp_epsilon_records_the_epsilon_spent(tmp_path, capsys, monkeypatch, family):
    monkeypatch.setenv("CXRLIB_SMOKE", "1")
    data, run = png_class_folder(tmp_path / "data", two_classes()), tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(run), "--size", "32", "--steps", "3", "--batch", "8",
                 "--dp-epsilon", "10", "--log-every", "1", "--set", "width=0.25", "--set", 'amp="off"', "--quiet",
                 *family]) == 0
    out = capsys.readouterr().out
    assert "DP-SGD on D: ε ≤ 10 at δ = 0.0417" in out and "privacy spent ε = " in out
    saved = json.loads((run / "config.json").read_text())
    assert saved["dp_epsilon"] == 10 and saved["r1_gamma"] == 0 and 0 < saved["privacy"]["epsilon_spent"] <= 10
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and log[-1]["epsilon"] == pytest.approx(saved["privacy"]["epsilon_spent"])
    assert np.isfinite([r["d_loss"] for r in log]).all()
    assert main(["sample", "--ckpt", str(run), "--n", "2", "--out", str(tmp_path / "samples")]) == 0
    # a saved config starts a new private run; resuming past the budget is refused in one line
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "again"), "--config", str(run), "--steps", "1",
                 "--quiet"]) == 0
    assert main(["train", "--data", str(data), "--out", str(run), "--resume", "--steps", "50", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "would spend" in err


def test_train_dp_epsilon_without_opacus_names_the_extra(tmp_path, capsys, monkeypatch):
    for name in ("opacus", "opacus.accountants", "opacus.accountants.utils"):
        monkeypatch.setitem(sys.modules, name, None)
    assert main(["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run"), "--dp-epsilon", "10",
                 "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and 'pip install "cxrlib[privacy]"' in err


# ------------------------------------------------------------------ review fixes: secret batches, resume, refusals
def test_real_batches_are_drawn_secretly_not_from_the_run_seed():
    private = make_config("course", steps=2, dp_epsilon=10, **TINY)
    a, b = Trainer(private, images()), Trainer(private, images())
    rng = a.rng.get_state()
    draws_a, draws_b = ([t.batch_indices(8).tolist() for _ in range(6)] for t in (a, b))
    assert draws_a != draws_b  # the same cfg.seed, different Poisson batches
    assert torch.equal(a.rng.get_state(), rng)  # the masks come from the accountant's secret stream
    assert not torch.equal(a.dp.sampling.get_state(), b.dp.sampling.get_state())
    plain = make_config("course", steps=2, **TINY)  # without DP: the run's seed decides, as before
    c, d = Trainer(plain, images()), Trainer(plain, images())
    expected = torch.randint(24, (8,), generator=torch.Generator().manual_seed(0).set_state(c.rng.get_state()))
    assert torch.equal(c.batch_indices(8), expected) and torch.equal(d.batch_indices(8), expected)


@pytest.mark.parametrize("change, n, words", [
    (dict(batch=4), 24, "the sampling rate q = batch / training images (--batch, the data) 0.333333"),
    ({}, 30, "the sampling rate q"),
    (dict(dp_delta=0.01), 24, "δ (--dp-delta) 0.0416667, this resume would be at 0.01"),
    (dict(dp_epsilon=12), 24, "ε (--dp-epsilon) 10, this resume would be at 12"),
    (dict(dp_epsilon=5), 24, "ε (--dp-epsilon) 10"),
])
def test_a_resume_that_changes_the_budget_or_sampling_rate_is_refused(tmp_path, change, n, words):
    a = Trainer(make_config("course", steps=4, dp_epsilon=10, **TINY), images(), out=tmp_path / "a")
    a.fit(steps=1, progress=False)
    with pytest.raises(CxrError, match=re.escape(words)) as e:
        Trainer.resume(tmp_path / "a", images(n), **change)
    assert "\n" not in str(e.value)
    assert Trainer.resume(tmp_path / "a", images()).dp.steps_taken == 1  # its own settings resume


@pytest.mark.parametrize("field, value", [("dp_delta", 1e-5), ("dp_max_grad_norm", 2.0)])
def test_dp_settings_without_dp_epsilon_are_refused_in_one_line(field, value):
    with pytest.raises(CxrError, match=f"'{field}'.*not private: give dp_epsilon") as e:
        make_config("course", **{field: value})
    assert "\n" not in str(e.value)


def test_resuming_a_private_run_without_opacus_names_the_extra_before_reading_data(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"")
    (run / "config.json").write_text(json.dumps(make_config("course", dp_epsilon=10).to_dict()))
    for name in ("opacus", "opacus.accountants", "opacus.accountants.utils"):
        monkeypatch.setitem(sys.modules, name, None)
    assert main(["train", "--data", str(tmp_path / "nowhere"), "--out", str(run), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and 'pip install "cxrlib[privacy]"' in err
