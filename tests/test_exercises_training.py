"""The checks of notebooks 04 and 05 catch the mistakes students make (and accept correct variants)."""

from __future__ import annotations

import math

import pytest
import torch

from cxrlib import exercises as ex


def verdict(name, fn, capsys):
    returned = ex.check(name, fn)
    return returned is fn, capsys.readouterr().out


def targets(n_real, n_fake, *, label_smoothing=0.0, flip_prob=0.0, generator=None, device=None, shared=False,
            smooth_one_side=False):
    hi = 1.0 - label_smoothing / 2 if not smooth_one_side else 1.0 - label_smoothing
    lo = label_smoothing / 2 if not smooth_one_side else 0.0
    t_real, t_fake = torch.full((n_real,), hi), torch.full((n_fake,), lo)
    if flip_prob > 0:
        # a correct variant that draws the flips differently (one rand per side) must pass too
        n = max(n_real, n_fake) if shared else None
        f_real = torch.rand(n or n_real, generator=generator) < flip_prob
        f_fake = f_real if shared else torch.rand(n_fake, generator=generator) < flip_prob
        t_real = torch.where(f_real[:n_real], lo, t_real)
        t_fake = torch.where(f_fake[:n_fake], hi, t_fake)
    return t_real, t_fake


def test_bce_targets_accepts_a_different_correct_way_of_drawing_flips(capsys):
    kept, out = verdict("04.bce_targets", targets, capsys)
    assert kept and "✓ correct" in out


@pytest.mark.parametrize("mistake, message", [
    (dict(smooth_one_side=True), "label_smoothing=0.1"),
    (dict(shared=True), "flipped together"),
])
def test_bce_targets_catches_wrong_smoothing_and_shared_flips(mistake, message, capsys):
    kept, out = verdict("04.bce_targets", lambda *a, **k: targets(*a, **k, **mistake), capsys)
    assert not kept and "✗" in out and message in out


def test_bce_targets_catches_flips_that_ignore_the_generator(capsys):
    def unseeded(n_real, n_fake, *, label_smoothing=0.0, flip_prob=0.0, generator=None, device=None):
        return targets(n_real, n_fake, label_smoothing=label_smoothing, flip_prob=flip_prob, generator=None)

    kept, out = verdict("04.bce_targets", unseeded, capsys)
    assert not kept and "generator" in out


def test_rescue_refuses_a_recipe_that_just_drops_the_extra_g_steps(capsys):
    kept, out = verdict("04.rescue_collapse", lambda cfg: cfg.replace(g_steps_per_d_step=1), capsys)
    assert not kept and "keep g_steps_per_d_step=3" in out


def test_ema_beta_catches_a_missing_rampup_and_a_zero_half_life(capsys):
    kept, out = verdict("05.ema_beta", lambda b, h, images_seen=0, rampup=0.0: 0.5 ** (b / (h * 1000)) if h else 0.0,
                        capsys)
    assert not kept and "ramp-up" in out

    def frozen_when_zero(batch, half_life_kimg, images_seen=0, rampup=0.0):
        half_life = half_life_kimg * 1000
        if rampup > 0:
            half_life = min(half_life, images_seen * rampup)
        return 0.5 ** (batch / half_life) if half_life > 0 else 1.0  # 1.0 would freeze the average at init

    kept, out = verdict("05.ema_beta", frozen_when_zero, capsys)
    assert not kept and "half-life 0" in out


def test_reduce_on_plateau_catches_a_rule_without_threshold_or_reset(capsys):
    def no_threshold(history, patience=2, factor=0.5, threshold=0.01):
        best, bad, scale, out = math.inf, 0, 1.0, []
        for d in history:
            if d < best:
                best, bad = d, 0
            else:
                bad += 1
                if bad >= patience:
                    scale, bad = scale * factor, 0
            out.append(scale)
        return out

    kept, out = verdict("05.reduce_on_plateau", no_threshold, capsys)
    assert not kept and "1 %" in out

    def no_reset(history, patience=2, factor=0.5, threshold=0.01):
        best, bad, scale, out = math.inf, 0, 1.0, []
        for d in history:
            if d < best * (1 - threshold):
                best, bad = d, 0
            else:
                bad += 1
                if bad >= patience:
                    scale *= factor  # forgets to start counting again
            out.append(scale)
        return out

    kept, out = verdict("05.reduce_on_plateau", no_reset, capsys)
    assert not kept


def test_ema_beta_rejects_the_notebooks_broken_beta_per_image(capsys):
    def per_image(batch, half_life_kimg, images_seen=0, rampup=0.0):  # the broken code notebook 05 hands out
        half_life = half_life_kimg * 1000.0
        if rampup > 0:
            half_life = min(half_life, images_seen * rampup)
        return 0.5 ** (1 / half_life) if half_life > 0 else 0.0

    kept, out = verdict("05.ema_beta", per_image, capsys)
    assert not kept and "expected 0.999, got 0.999875" in out


def test_reduce_on_plateau_rejects_the_notebooks_broken_rule_that_keeps_the_last_measurement(capsys):
    def keeps_last(history, patience=2, factor=0.5, threshold=0.01):  # the broken code notebook 05 hands out
        best, bad, scale, scales = math.inf, 0, 1.0, []
        for d in history:
            improved = d < best * (1 - threshold)
            best = d
            if improved:
                bad = 0
            else:
                bad += 1
                if bad >= patience:
                    scale, bad = scale * factor, 0
            scales.append(scale)
        return scales

    kept, out = verdict("05.reduce_on_plateau", keeps_last, capsys)
    assert not kept and "expected 0.5 at [3], got 1" in out


@pytest.mark.parametrize("rule", [lambda s, b: s * b / 2000, lambda s, b: 10 * b / 1000,
                                  lambda s, b: math.sqrt(s * b / 2 * 10 * b) / 1000])
def test_finetune_half_life_accepts_any_rule_between_the_two_demands(rule, capsys):
    kept, out = verdict("05.finetune_half_life", rule, capsys)
    assert kept and "✓ passes" in out and "meets demands (a) and (b)" in out and "matches `" not in out


@pytest.mark.parametrize("rule, message", [
    (lambda s, b: 5.0, "only 49% of the EMA"),  # the course's half-life: the phase hardly shows
    (lambda s, b: 0.1, "spans only 3.1 steps"),  # too short to average
    (lambda s, b: s * b / 3 / 1000, "a phase of 25 steps at batch 32, a half-life of 0.266667 thousand images spans "
                                    "only 8.3 steps"),  # a third of the phase, with no floor for short phases
    (lambda s, b: -1.0, "a positive number"),
    (lambda s, b: "1.6k", "a number of thousands of images"),
])
def test_finetune_half_life_names_the_demand_a_rule_breaks(rule, message, capsys):
    kept, out = verdict("05.finetune_half_life", rule, capsys)
    assert not kept and message in out
