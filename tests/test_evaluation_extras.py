"""The small library pieces notebook 06 uses: the audit's rule on embeddings, in-memory seed augmentation,
and the exercises of notebook 06 (their checkers catch the classic mistakes)."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from cxrlib import augment
from cxrlib import exercises as ex
from cxrlib import metrics as M
from cxrlib.errors import CxrError
from cxrlib.phantom import generate


@functools.lru_cache(maxsize=1)
def _sets():
    pool = generate(90, 32, seed=5).images
    train, holdout = pool[:60], pool[60:90]
    return train, holdout


def test_copy_flags_agrees_with_the_memorization_audit():
    train, holdout = _sets()
    noisy = (train[:20].float() + 6 * torch.randn(20, 1, 32, 32, generator=torch.Generator().manual_seed(0)))
    fake = torch.cat([train[:20], noisy.clamp(0, 255).to(torch.uint8), holdout])
    flags = M.copy_flags(M.audit_embedding(fake), M.audit_embedding(train))
    audit = M.memorization_audit(fake, train)
    assert flags.dtype == torch.bool and flags.shape == (70,)
    assert flags.tolist() == audit["per_sample"]["flagged"]
    assert flags[:40].all() and not flags[40:].any()  # copies (exact and noisy) flagged, held-out ones not


def test_seed_augment_images_changes_pixels_but_the_audit_still_sees_copies():
    train, holdout = _sets()
    copies = augment.original_augment_images(train[:20], seed=3)
    assert copies.dtype == torch.uint8 and copies.shape == train[:20].shape
    assert (copies.float() - train[:20].float()).abs().mean() > 2  # brightness ±0.1 moves pixels by up to ~25
    assert torch.equal(copies, augment.original_augment_images(train[:20], seed=3))  # same seed, same copies
    assert not torch.equal(copies, augment.original_augment_images(train[:20], seed=4))
    assert M.memorization_audit(copies, train, holdout)["flagged_fraction"] >= 0.95


def test_seed_augment_images_refuses_float_images():
    with pytest.raises(CxrError, match="uint8"):
        augment.original_augment_images(torch.zeros(2, 1, 8, 8))


def test_compare_sets_tells_a_brightness_shift_and_a_collapse_from_fresh_images():
    train, holdout = _sets()
    train, holdout = train[:40], holdout[:16]  # small sets: SWD is the slow part
    brighter = (holdout.int() + 26).clamp(0, 255).to(torch.uint8)  # +0.1 on the [0, 1] scale
    collapsed = holdout[:1].expand(len(holdout), -1, -1, -1)
    table = M.compare_sets(train, {"fresh": holdout, "brighter": brighter, "collapsed": collapsed}, n_pairs=60)
    assert list(table) == ["fresh", "brighter", "collapsed"] and list(table["fresh"]) == list(M.COMPARE_COLUMNS)
    assert table["brighter"]["hist. W1"] > 0.08 > 2 * table["fresh"]["hist. W1"]  # the histogram sees the shift
    assert table["brighter"]["SWD"] < 2 * table["fresh"]["SWD"] + 5  # SWD normalises it away
    assert table["collapsed"]["MS-SSIM"] > 0.99 > table["fresh"]["MS-SSIM"]
    assert table["collapsed"]["recall"] < table["fresh"]["recall"] - 0.3
    assert table["fresh"]["precision"] == M.precision_recall(train, holdout)["precision"]  # cached real features
    some = M.compare_sets(train, {"fresh": holdout}, columns=["recall", "MS-SSIM"], n_pairs=60)
    assert some == {"fresh": {"recall": table["fresh"]["recall"], "MS-SSIM": table["fresh"]["MS-SSIM"]}}
    text = M.format_table(table, digits=2).splitlines()
    assert len(text) == 4 and text[3].startswith("collapsed") and "MS-SSIM" in text[0]


def test_image_rows_and_metric_bars_draw_one_panel_per_image_and_per_column():
    from cxrlib import viz

    train, _ = _sets()
    fig = viz.image_rows({"a": train[:4], "b": train[4:7].float() / 127.5 - 1}, "rows", col_titles="wxyz")
    assert [ax.get_ylabel() for ax in fig.axes] == ["a", "b"]  # one strip per row
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == list("wxyz")
    strip_b = fig.axes[1].images[0].get_array()
    assert strip_b.shape == (32, 4 * 34 - 2) and (strip_b[:, 3 * 34 :] == 1).all()  # b has 3 images: blank 4th
    assert abs(float(strip_b[:, :32].mean()) - float(train[4].float().mean() / 255)) < 1e-3
    table = {"x": {"SWD": 1.0, "recall": 0.5}, "y": {"SWD": 2.0, "recall": 0.25}}
    fig = viz.metric_bars(table, "bars", floor="x")
    assert [ax.get_title() for ax in fig.axes] == ["SWD", "recall"]
    assert [p.get_height() for p in fig.axes[1].patches] == [0.5, 0.25]
    assert fig.axes[1].get_ylabel() == M.COMPARE_COLUMNS["recall"]
    assert fig.axes[1].lines[0].get_ydata()[0] == 0.5  # the floor row as a dashed line


# ----------------------------------------------------------------------- truncation
def test_truncated_z_resamples_only_the_tails_into_a_truncated_normal():
    from cxrlib.widgets import truncated_z

    plain = torch.randn(400, 128, generator=torch.Generator().manual_seed(3))
    z = truncated_z(400, 128, 1.0, torch.Generator().manual_seed(3))
    assert z.shape == (400, 128) and z.abs().max() <= 1.0
    inside = plain.abs() <= 1.0
    assert torch.equal(z[inside], plain[inside])  # components already inside keep their first draw
    # a standard normal truncated to [-1, 1]: mean 0, variance 1 - 2φ(1)/(2Φ(1) - 1) = 0.2911, CDF Φ-shaped
    normal = torch.distributions.Normal(0.0, 1.0)
    mass = 2 * normal.cdf(torch.tensor(1.0)) - 1
    variance = 1 - 2 * normal.log_prob(torch.tensor(1.0)).exp() / mass
    assert abs(float(z.mean())) < 0.01 and float(z.var()) == pytest.approx(float(variance), abs=0.01)
    grid = torch.linspace(-0.9, 0.9, 19)
    expected_cdf = (normal.cdf(grid) - normal.cdf(torch.tensor(-1.0))) / mass
    empirical_cdf = (z.reshape(-1, 1) <= grid).float().mean(0)
    assert (empirical_cdf - expected_cdf).abs().max() < 0.01  # Kolmogorov-Smirnov distance on a grid


def test_truncated_z_without_a_threshold_is_plain_randn_and_latent_follows_it():
    from cxrlib import widgets

    z = widgets.truncated_z(5, 16, math.inf, torch.Generator().manual_seed(7))
    assert torch.equal(z, torch.randn(5, 16, generator=torch.Generator().manual_seed(7)))
    assert torch.equal(widgets.latent(16, 7), torch.randn(16, generator=torch.Generator().manual_seed(7)))
    assert widgets.latent(16, 7, threshold=0.5).abs().max() <= 0.5
    with pytest.raises(CxrError, match="threshold"):
        widgets.truncated_z(2, 16, 0.0)


def test_latent_views_truncate_every_latent_they_draw():
    from cxrlib import models, widgets

    G, _ = models.build_models("course", 32)
    seen = []
    forward = G.forward
    G.forward = lambda z: seen.append(z.clone()) or forward(z)
    views = widgets.latent_views(G, seed=2, t=0.5, threshold=1.0, walk_step=0)
    z = seen[0]
    assert views["images"].shape == (4, 1, 32, 32)
    assert torch.equal(z[0], widgets.latent(G.z_dim, 2, 1.0)) and torch.equal(z[2], widgets.latent(G.z_dim, 3, 1.0))
    assert z[[0, 2, 3]].abs().max() <= 1.0  # A, B and the walk's start; the slerp midpoint mixes two of them
    # slerp's weights at t = 0.5 sum to 1/cos(Ω/2): about √2 for the near-right angle Ω between two latents
    assert 1.0 < z[1].abs().max() < 1.5


# ----------------------------------------------------------------------- exercises of notebook 06
def _verdict(name, fn, capsys) -> str:
    ex.check(name, fn)
    return capsys.readouterr().out


def test_slerp_exercise_rejects_lerp_and_the_bare_formula_and_accepts_the_formula_with_its_limit(capsys):
    from cxrlib.widgets import lerp

    assert "✗" in _verdict("06.slerp", lambda z0, z1, t: lerp(z0, z1, t), capsys)

    def formula(z0, z1, t):
        omega = torch.acos((z0 / z0.norm() * z1 / z1.norm()).sum().clamp(-1, 1))
        return (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.sin(omega)

    verdict = _verdict("06.slerp", formula, capsys)  # 0/0 when z1 = 2·z0
    assert "✗" in verdict and "Ω = 0" in verdict and "yours nan" in verdict

    def slerp(z0, z1, t):
        omega = torch.acos((z0 / z0.norm() * z1 / z1.norm()).sum().clamp(-1, 1))
        if torch.sin(omega).abs() < 1e-6:  # the same direction: the arc is the straight line
            return lerp(z0, z1, t)
        return formula(z0, z1, t)

    assert "✓" in _verdict("06.slerp", slerp, capsys)


def test_histogram_distance_exercise_rejects_the_histogram_difference(capsys):
    def l1_of_histograms(real, fake, bins=256):  # a classic slip: compares histograms, not their CDFs
        h_r, h_f = M.intensity_histogram(real, bins), M.intensity_histogram(fake, bins)
        return float((h_r - h_f).abs().sum() / bins)

    def w1(real, fake, bins=256):
        h_r, h_f = M.intensity_histogram(real, bins), M.intensity_histogram(fake, bins)
        return float((h_r.cumsum(0) - h_f.cumsum(0)).abs().sum() / bins)

    assert "✗" in _verdict("06.histogram_distance", l1_of_histograms, capsys)
    assert "✓" in _verdict("06.histogram_distance", w1, capsys)


def test_copy_flags_exercise_rejects_a_rule_without_the_ratio_test(capsys):
    def authenticity_only(e_fake, e_train, alpha=0.5, ratio_threshold=0.8):
        d = torch.cdist(e_fake, e_train)
        d1, nearest = d.min(1)
        rho = (torch.cdist(e_train, e_train) + torch.eye(len(e_train)) * 1e9).min(1).values
        return d1 < alpha * rho[nearest]

    def full_rule(e_fake, e_train, alpha=0.5, ratio_threshold=0.8):
        d = torch.cdist(e_fake, e_train)
        two, idx = d.topk(2, dim=1, largest=False)
        rho = (torch.cdist(e_train, e_train) + torch.eye(len(e_train)) * 1e9).min(1).values
        return (two[:, 0] < alpha * rho[idx[:, 0]]) & (two[:, 0] / two[:, 1] < ratio_threshold)

    assert "✗" in _verdict("06.copy_flags", authenticity_only, capsys)
    assert "✓" in _verdict("06.copy_flags", full_rule, capsys)
