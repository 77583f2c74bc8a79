"""The toy GAN of notebook 04: the ring data, the counts, batched runs, and that its lessons are real."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from cxrlib import toy
from cxrlib.exercises import check


def test_ring_points_sit_on_their_modes():
    pts = toy.ring(4000, generator=torch.Generator().manual_seed(0))
    assert pts.shape == (4000, 2)
    radius = pts.norm(dim=1)
    assert abs(float(radius.mean()) - 2.0) < 0.01
    counts = toy.mode_stats(pts[None])
    assert int(counts["modes_covered"]) == 8
    assert float(counts["good_share"]) > 0.97  # a 2-D Gaussian puts 98.9 % of its mass within 3σ
    assert torch.allclose(counts["per_mode"].sum(), counts["good_share"])


def test_mode_stats_counts_a_collapsed_generator():
    centres = toy.ring_centres()
    collapsed = centres[3] + 0.01 * torch.randn(1, 1000, 2, generator=torch.Generator().manual_seed(1))
    between = torch.zeros(1, 2)  # every point at the ring's centre, between the modes
    counts = toy.mode_stats(torch.cat([collapsed, between.expand(1000, 2)[None]]))
    assert counts["modes_covered"].tolist() == [1, 0]
    assert counts["good_share"].tolist() == [1.0, 0.0]


def test_batched_runs_start_as_single_runs_would():
    cfg = toy.ToyConfig()
    G3, D3 = toy._seeded_models(3, 5, cfg)
    G1, D1 = toy.toy_models(1, seed=6)  # run 1 of the batch has seed 5 + 1
    z = torch.randn(1, 10, 2, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(G3(z.expand(3, -1, -1))[1], G1(z)[0])
    assert torch.allclose(D3(z.expand(3, -1, -1))[1], D1(z)[0])


def test_toy_training_is_reproducible_and_runs_are_independent():
    cfg = toy.ToyConfig(steps=60)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        a, b = toy.train(cfg, seeds=2), toy.train(cfg, seeds=2)
        assert torch.get_num_threads() == 2  # train() runs on one thread and gives the caller's count back
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(a.samples, b.samples)
    assert not torch.allclose(a.samples[0], a.samples[1])


def test_plain_toy_gan_learns_the_ring_and_many_g_steps_collapse_it():
    """The lesson of notebook 04's grid, in small: balanced updates find most modes, 3 G steps per D step do not."""
    cfg = toy.ToyConfig(steps=1200)
    plain, greedy = toy.train(cfg, seeds=2), toy.train(cfg.replace(g_steps_per_d_step=3), seeds=2)
    assert float(plain.modes_covered.float().mean()) >= 6
    assert float(greedy.modes_covered.float().mean()) <= 3
    assert float(plain.good_share.mean()) > float(greedy.good_share.mean())


def test_snapshots_and_log_follow_training():
    r = toy.train(toy.ToyConfig(steps=40), seeds=2, snapshot_every=20)
    assert [s for s, _ in r.snapshots] == [0, 20, 40]
    assert r.snapshots[0][1].shape == (2, 500, 2)
    assert [s for s, _ in r.log] == [0, 20, 40]


def test_r1_and_ema_and_flips_run_and_change_the_result():
    base = toy.ToyConfig(steps=30)
    ref = toy.train(base, seeds=1).samples
    for change in (dict(r1_gamma=1.0), dict(ema_half_life=10), dict(flip_prob=0.2), dict(label_smoothing=0.2),
                   dict(d_steps_per_g_step=2)):
        out = toy.train(base.replace(**change), seeds=1).samples
        assert torch.isfinite(out).all()
        assert not torch.allclose(out, ref), change


def test_grid_table_says_which_differences_stand_above_the_spread():
    fake = {name: toy.ToyResult(toy.ToyConfig(), torch.zeros(3, 1, 2), torch.tensor(modes), torch.tensor(good), [], [], 0.0)
            for name, modes, good in (("plain", [8, 8, 7], [0.7, 0.72, 0.71]), ("collapse", [1, 0, 1], [0.1, 0.0, 0.1]),
                                      ("same", [8, 7, 8], [0.70, 0.71, 0.72]))}
    table = toy.grid_table(fake)
    rows = {line.split()[0]: line for line in table.splitlines()[2:]}
    assert "above" in rows["collapse"] and "within" in rows["same"]
    assert "(baseline)" in rows["plain"]
    assert toy.verdict(1.0, 0.2, 0.4) == "above" and toy.verdict(0.5, 0.2, 0.4) == "within"


def test_seed_table_shows_every_seed_and_pairs_the_differences_by_seed():
    fake = {name: toy.ToyResult(toy.ToyConfig(), torch.zeros(3, 1, 2), torch.tensor(modes), torch.tensor(good), [], [], 0.0)
            for name, modes, good in (("plain", [8, 8, 7], [0.70, 0.50, 0.60]), ("slow", [7, 8, 7], [0.60, 0.41, 0.49]),
                                      ("noisy", [8, 1, 8], [0.90, 0.10, 0.70]))}
    rows = {line.split()[0]: line for line in toy.seed_table(fake).splitlines()[2:]}
    assert "8 ·  70 %" in rows["plain"] and "(baseline)" in rows["plain"]
    # every seed lower by ~10 pp: paired, that stands above twice the (small) spread of the differences
    assert "-10 ± 1 pp above" in rows["slow"]
    assert "within" in rows["noisy"]


def test_train_refuses_nonsense():
    from cxrlib.errors import CxrError

    with pytest.raises(CxrError, match="seeds"):
        toy.train(toy.ToyConfig(steps=1), seeds=0)


def _no_zero_grad_step(G, D, g_opt, d_opt, real, z):
    """The broken step of notebook 04: D's gradients are never cleared, so the G step's backward feeds D."""
    with torch.no_grad():
        fake = G(z)
    rl, fl = D(real), D(fake)
    d_loss = F.binary_cross_entropy_with_logits(rl, torch.ones_like(rl)) + \
        F.binary_cross_entropy_with_logits(fl, torch.zeros_like(fl))
    d_loss.backward()
    d_opt.step()
    fl = D(G(z))
    g_loss = F.binary_cross_entropy_with_logits(fl, torch.ones_like(fl))
    g_opt.zero_grad()
    g_loss.backward()
    g_opt.step()
    return {}


def _smoothed_step(G, D, g_opt, d_opt, real, z, g_target=1.0):
    """The step of exercise 04.toy_train_step written by hand: D's targets smoothed (s = 0.1), G's target 1."""
    with torch.no_grad():
        fake = G(z)
    rl, fl = D(real), D(fake)
    d_loss = F.binary_cross_entropy_with_logits(rl, torch.full_like(rl, 0.95)) + \
        F.binary_cross_entropy_with_logits(fl, torch.full_like(fl, 0.05))
    d_opt.zero_grad()
    d_loss.backward()
    d_opt.step()
    fl = D(G(z))
    g_loss = F.binary_cross_entropy_with_logits(fl, torch.full_like(fl, g_target))
    g_opt.zero_grad()
    g_loss.backward()
    g_opt.step()


def test_toy_step_exercise_accepts_a_correct_step_and_rejects_the_broken_one(capsys):
    assert check("04.toy_train_step", _smoothed_step) is _smoothed_step
    assert "✓" in capsys.readouterr().out
    check("04.toy_train_step", toy.plain_step)  # no smoothing: D's step differs from the reference's
    assert "D's targets" in capsys.readouterr().out
    check("04.toy_train_step", lambda *a: _smoothed_step(*a, g_target=0.95))  # G's target smoothed too
    assert "G's target stays 1" in capsys.readouterr().out
    assert check("04.fix_broken_step", _no_zero_grad_step) is toy.plain_step
    out = capsys.readouterr().out
    assert "✗" in out and "modes" in out


def test_toy_step_exercise_rejects_a_step_that_never_moves_d(capsys):
    def lazy(G, D, g_opt, d_opt, real, z):
        g_loss = F.binary_cross_entropy_with_logits(D(G(z)), torch.ones(real.shape[:2]))
        g_opt.zero_grad()
        g_loss.backward()
        g_opt.step()

    check("04.toy_train_step", lazy)
    assert "D's weights have not changed" in capsys.readouterr().out


def test_ring_centres_are_evenly_spaced():
    c = toy.ring_centres(8, radius=2.0)
    gaps = (c - c.roll(1, 0)).norm(dim=1)
    assert torch.allclose(gaps, torch.full((8,), 2 * 2.0 * math.sin(math.pi / 8)), atol=1e-5)


def test_conclusions_name_the_recipes_above_and_within_the_noise():
    def fake(modes, good):
        return toy.ToyResult(toy.ToyConfig(), torch.zeros(3, 1, 2), torch.tensor(modes), torch.tensor(good), [], [], 0)

    text = toy.conclusions({"plain": fake([8, 8, 7], [0.7, 0.72, 0.71]), "collapse": fake([1, 0, 1], [0.1, 0.0, 0.1]),
                            "slow": fake([8, 8, 7], [0.2, 0.25, 0.22]), "same": fake([8, 7, 8], [0.70, 0.71, 0.72])})
    above, within = text.splitlines()
    assert above.startswith("Modes covered and good samples")  # the line says which counts it judges
    assert "collapse (-7.0 modes, -64 pp good samples)" in above and "slow (-49 pp good samples)" in above
    assert "same" in within and "collapse" not in within


def test_budget_steps_follow_the_budget():
    from cxrlib.config import budget

    assert toy.budget_steps(budget("smoke")) < toy.budget_steps(budget("cpu"))


def test_a_fixed_training_set_is_what_the_runs_learn_from():
    cfg = toy.ToyConfig(steps=5, n_train=16)
    r = toy.train(cfg, seeds=3)
    assert r.train_points.shape == (3, 16, 2)
    assert not torch.equal(r.train_points[0], r.train_points[1])  # each run its own set
    assert torch.equal(toy.train(cfg, seeds=3).train_points, r.train_points)  # the same for every recipe
    batch = toy.real_batch(cfg, 3, torch.Generator().manual_seed(0), r.train_points)
    for run in range(3):  # every real point of a batch is one of the run's own training points
        assert (batch[run][:, None] == r.train_points[run][None]).all(-1).any(-1).all()
    assert r.copied_share.shape == (3,) and toy.train(toy.ToyConfig(steps=5), seeds=2).copied_share is None


def test_sliced_distance_is_small_for_the_same_distribution_and_large_for_a_collapsed_one():
    g = torch.Generator().manual_seed(0)
    a, b = toy.ring(2000, shape=(1,), generator=g), toy.ring(2000, shape=(1,), generator=g)
    collapsed = toy.ring_centres()[:1].expand(2000, 2)[None] + 0.05 * torch.randn(1, 2000, 2, generator=g)
    same, far = float(toy.sliced_distance(a, b)), float(toy.sliced_distance(a, collapsed))
    assert same < 0.1 < far and far > 10 * same
    assert float(toy.sliced_distance(a, a)) == 0.0


def test_copied_share_flags_copies_of_training_points_not_fresh_points():
    g = torch.Generator().manual_seed(1)
    train = toy.ring(64, shape=(1,), generator=g)
    copies = train[:, torch.randint(64, (500,), generator=g)] + 1e-4 * torch.randn(1, 500, 2, generator=g)
    fresh = toy.ring(500, shape=(1,), generator=g)
    assert float(toy.copied_share(copies, train)) > 0.95
    assert float(toy.copied_share(fresh, train)) < 0.5


def test_the_notebooks_grids_change_one_thing_at_a_time():
    tricks = toy.trick_variants(100)
    base = tricks["plain"]
    for name, cfg in tricks.items():
        changed = {f for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(base, f.name)}
        assert len(changed) <= 2 and cfg.steps == 100, name  # "both learning rates" changes two fields
    data = toy.data_volume_variants(100)
    assert [data[k].n_train for k in ("16 points", "64 points", "256 points", "unlimited data")] == [16, 64, 256, 0]
    assert data["16 points, 2× wider"].hidden == 2 * data["16 points"].hidden


def test_data_volume_table_compares_data_and_width_against_the_spread():
    def fake(dist, n_train):
        d = torch.tensor(dist)
        copies = None if not n_train else torch.tensor([0.2, 0.3, 0.25])
        return toy.ToyResult(toy.ToyConfig(n_train=n_train), torch.zeros(3, 1, 2), torch.tensor([8, 8, 8]),
                             torch.tensor([0.7, 0.7, 0.7]), [], [], 0, distance=d, copied_share=copies,
                             copied_chance=copies)
    results = {"16 points": fake([0.40, 0.35, 0.45], 16), "256 points": fake([0.15, 0.14, 0.16], 256),
               "unlimited data": fake([0.13, 0.14, 0.15], 0), "16 points, 2× wider": fake([0.42, 0.30, 0.50], 16)}
    table = toy.data_volume_table(results)
    assert "more data (16 points → unlimited): distance 0.400 → 0.140 (-0.260), above" in table
    assert "wider networks on 16 points: distance 0.400 → 0.407 (+0.007), within" in table
    assert "25 ± 5 % (25 %)" in table


def test_rpgan_toy_step_is_the_pairing_loss_with_r2_on_g_points():
    """The toy's D step with loss="rpgan" is mean softplus(-(D(x) - D(G(z)))) on paired points, and R2 pulls
    on D's gradient at G's points (a different update than without it)."""
    cfg = toy.ToyConfig(loss="rpgan")
    G, D = toy.toy_models(1, seed=0)
    gen = torch.Generator().manual_seed(0)
    real, z = toy.ring(16, generator=gen, shape=(1,)), torch.randn(1, 16, 2, generator=gen)
    with torch.no_grad():
        expected = F.softplus(-(D(real).flatten() - D(G(z)).flatten())).mean()
    d_opt = torch.optim.SGD(D.parameters(), lr=0.1)
    assert toy.d_step(G, D, d_opt, real, z, cfg)["d_loss"] == pytest.approx(float(expected), rel=1e-5)
    after = {}
    for r2 in (0.0, 10.0):
        G, D = toy.toy_models(1, seed=0)
        toy.d_step(G, D, torch.optim.SGD(D.parameters(), lr=0.1), real, z, cfg.replace(r2_gamma=r2))
        after[r2] = torch.cat([p.flatten() for p in D.parameters()])
    assert not torch.allclose(after[0.0], after[10.0])


def test_modern_toy_recipe_keeps_every_mode_where_bce_with_three_g_steps_collapses():
    """Notebook 10's toy lesson in small: with RpGAN + R1 + R2 the seed's "3 G steps per D step" no longer
    collapses the ring (it does under BCE: the test above)."""
    grid = toy.modern_variants(1200)
    greedy = toy.train(grid["  + 3 G steps per D step"], seeds=2)
    assert float(greedy.modes_covered.float().min()) >= 7, greedy.modes_covered
    assert float(greedy.good_share.mean()) > 0.4


def test_modern_grid_adds_one_trick_at_a_time_to_the_modern_recipe():
    grid = toy.modern_variants(100)
    names = list(grid)
    modern = grid[names[0]]
    assert (modern.loss, modern.r1_gamma > 0, modern.r2_gamma > 0, modern.betas[0]) == ("rpgan", True, True, 0.0)
    for name in names[1:4]:
        changed = {f.name for f in dataclasses.fields(modern) if getattr(grid[name], f.name) != getattr(modern, f.name)}
        assert len(changed) == 1 and changed <= {"label_smoothing", "flip_prob", "g_steps_per_d_step"}, name
    assert grid["BCE, no tricks"] == toy.ToyConfig(steps=100)


def test_toy_refuses_a_loss_without_tricks_and_a_relativistic_g_step_without_reals():
    from cxrlib.errors import CxrError

    with pytest.raises(CxrError, match="toy loss must be one of"):
        toy.train(toy.ToyConfig(steps=1, loss="hinge"), seeds=1)
    G, D = toy.toy_models(1)
    with pytest.raises(CxrError, match="needs a batch of real points"):
        toy.g_step(G, D, torch.optim.SGD(G.parameters(), lr=0.1), torch.randn(1, 4, 2), toy.ToyConfig(loss="rpgan"))


def test_toy_trains_with_wgan_gp_and_its_grid_follows_the_papers_recipe():
    from cxrlib.errors import CxrError

    grid = toy.wgan_variants(100)
    bce, wgan, modern = grid.values()
    assert bce == toy.ToyConfig(steps=100) and modern == toy.modern_variants(100)["RpGAN + R1 + R2"]
    assert (wgan.loss, wgan.gp_weight, wgan.d_steps_per_g_step, wgan.betas) == ("wgan-gp", 10.0, 5, (0.0, 0.9))
    result = toy.train(wgan.replace(steps=30), seeds=2)
    assert torch.isfinite(result.samples).all() and result.samples.std() > 0
    # the penalty is on and drawn from the run's generator: without it the same seeds end elsewhere
    plain = toy.train(wgan.replace(steps=30, gp_weight=0.0), seeds=2)
    assert not torch.equal(result.samples, plain.samples)
    with pytest.raises(CxrError, match="not to 'wgan-gp'"):
        toy.train(wgan.replace(steps=1, label_smoothing=0.1), seeds=1)


def test_toy_steps_are_the_image_gans_steps_on_all_runs_points_as_one_batch(monkeypatch):
    """toy.train_step calls cxrlib.gan.steps.d_step / g_step (the image trainer's), d_steps_per_g_step and
    g_steps_per_d_step times, on (runs·B, …) rows; PerPoint only reshapes, so the logits are D's own."""
    from cxrlib.gan import steps

    calls = []

    def spy(name, fn):
        def wrapped(G, D, opt, *args, **kwargs):
            calls.append((name, tuple(args[0].shape)))
            return fn(G, D, opt, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(steps, "d_step", spy("d", steps.d_step))
    monkeypatch.setattr(steps, "g_step", spy("g", steps.g_step))
    cfg = toy.ToyConfig(batch=8, d_steps_per_g_step=2, loss="rpgan")
    G, D = toy.toy_models(3, seed=0)
    stats = toy.train_step(G, D, torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters()), cfg,
                           torch.Generator().manual_seed(0))
    assert calls == [("d", (24, 2)), ("d", (24, 2)), ("g", (24, 2))]
    assert set(stats) == {"d_loss", "D(x)", "D(G(z))", "g_loss"} and all(isinstance(v, float) for v in stats.values())
    x = torch.randn(3, 8, 2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(toy.PerPoint(D, 3)(x.reshape(-1, 2)), D(x).flatten())
    assert torch.equal(toy.PerPoint(G, 3)(x.reshape(-1, 2)), G(x).reshape(-1, 2))
