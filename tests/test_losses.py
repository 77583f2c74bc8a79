"""Losses: smoothed and flipped BCE targets, non-saturating G loss, hinge, R1."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cxrlib.errors import CxrError
from cxrlib.losses import (
    LOSSES,
    bce_targets,
    d_loss_bce,
    d_loss_hinge,
    g_loss_bce,
    g_loss_hinge,
    r1_penalty,
    r1_weight,
)


def bce(logit: float, target: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def test_label_smoothing_gives_the_seeds_targets():
    t_real, t_fake = bce_targets(3, 2, label_smoothing=0.1)
    assert torch.allclose(t_real, torch.full((3,), 0.95))
    assert torch.allclose(t_fake, torch.full((2,), 0.05))


def test_d_loss_bce_matches_a_hand_computation_with_smoothing():
    real = torch.tensor([2.0, -0.5])
    fake = torch.tensor([-1.0, 0.3])
    loss, stats = d_loss_bce(real, fake, label_smoothing=0.1)
    want_real = (bce(2.0, 0.95) + bce(-0.5, 0.95)) / 2
    want_fake = (bce(-1.0, 0.05) + bce(0.3, 0.05)) / 2
    assert loss.item() == pytest.approx(want_real + want_fake, rel=1e-5)
    assert stats["d_loss_real"].item() == pytest.approx(want_real, rel=1e-5)
    assert stats["d_loss_fake"].item() == pytest.approx(want_fake, rel=1e-5)
    assert stats["D(x)"].item() == pytest.approx((sigmoid(2.0) + sigmoid(-0.5)) / 2, rel=1e-5)
    assert stats["D(G(z))"].item() == pytest.approx((sigmoid(-1.0) + sigmoid(0.3)) / 2, rel=1e-5)
    unsmoothed, _ = d_loss_bce(real, fake)
    assert unsmoothed.item() == pytest.approx(
        (bce(2.0, 1) + bce(-0.5, 1)) / 2 + (bce(-1.0, 0) + bce(0.3, 0)) / 2, rel=1e-5
    )


def test_stats_stay_on_the_device_as_detached_tensors():
    real = torch.randn(4, requires_grad=True)
    fake = torch.randn(4, requires_grad=True)
    for d_loss in (d_loss_bce, d_loss_hinge):
        loss, stats = d_loss(real, fake)
        assert loss.requires_grad and loss.dim() == 0
        assert all(isinstance(v, torch.Tensor) and not v.requires_grad for v in stats.values())
        assert {"d_loss_real", "d_loss_fake", "D(x)", "D(G(z))"} <= set(stats)


def test_labels_flip_at_the_requested_rate_and_reproducibly():
    n = 20_000
    t_real, t_fake = bce_targets(
        n, n, label_smoothing=0.1, flip_prob=0.05, generator=torch.Generator().manual_seed(3)
    )
    flipped_real = (t_real == 0.05).float().mean().item()
    flipped_fake = (t_fake == 0.95).float().mean().item()
    assert 0.045 < flipped_real < 0.055 and 0.045 < flipped_fake < 0.055
    assert t_real.unique().tolist() == pytest.approx([0.05, 0.95])  # a flip swaps, it does not add noise
    again = bce_targets(n, n, label_smoothing=0.1, flip_prob=0.05, generator=torch.Generator().manual_seed(3))
    assert torch.equal(again[0], t_real) and torch.equal(again[1], t_fake)
    other = bce_targets(n, n, label_smoothing=0.1, flip_prob=0.05, generator=torch.Generator().manual_seed(4))
    assert not torch.equal(other[0], t_real)
    assert torch.all(bce_targets(n, n)[0] == 1)  # flip_prob=0: nothing flips


def test_flipping_changes_the_loss_as_swapped_targets_would():
    real, fake = torch.full((1,), 3.0), torch.full((1,), -3.0)
    flipped, _ = d_loss_bce(real, fake, flip_prob=1.0)  # every label swapped: D is confidently wrong
    assert flipped.item() == pytest.approx(bce(3.0, 0) + bce(-3.0, 1), rel=1e-5)


def test_bad_smoothing_and_flip_values_are_refused():
    with pytest.raises(CxrError):
        bce_targets(2, 2, label_smoothing=1.5)
    with pytest.raises(CxrError):
        bce_targets(2, 2, flip_prob=-0.1)


def test_generator_bce_is_non_saturating():
    logits = torch.tensor([-10.0, 0.0, 10.0], requires_grad=True)
    loss, stats = g_loss_bce(logits)
    assert loss.item() == pytest.approx(sum(bce(v, 1.0) for v in (-10.0, 0.0, 10.0)) / 3, rel=1e-5)
    loss.backward()
    # -log D(G(z)) still pushes hard where D confidently rejects the sample; log(1 - D(G(z))) would not
    assert logits.grad[0].item() == pytest.approx(-1 / 3, rel=1e-3)
    assert stats["D(G(z))"].item() == pytest.approx((sigmoid(-10) + 0.5 + sigmoid(10)) / 3, rel=1e-5)


def test_hinge_losses_match_hand_values():
    real = torch.tensor([0.5, 2.0])
    fake = torch.tensor([-0.5, -3.0])
    loss, stats = d_loss_hinge(real, fake)
    assert loss.item() == pytest.approx((0.5 + 0.0) / 2 + (0.5 + 0.0) / 2)
    assert stats["d_loss_real"].item() == pytest.approx(0.25)
    g, _ = g_loss_hinge(fake)
    assert g.item() == pytest.approx(1.75)
    with pytest.raises(CxrError, match="bce"):
        d_loss_hinge(real, fake, label_smoothing=0.1)


def test_losses_table_pairs_d_and_g_losses():
    assert LOSSES["bce"] == (d_loss_bce, g_loss_bce)
    assert LOSSES["hinge"] == (d_loss_hinge, g_loss_hinge)


def test_r1_of_a_linear_discriminator_is_the_squared_weight_norm():
    torch.manual_seed(0)
    D = nn.Sequential(nn.Flatten(), nn.Linear(1 * 4 * 4, 1))
    x = torch.randn(5, 1, 4, 4).requires_grad_()
    r1 = r1_penalty(D(x).squeeze(1), x)
    w = D[1].weight
    assert r1.shape == (5,)
    assert torch.allclose(r1, (w**2).sum().expand(5), rtol=1e-5)
    r1.mean().backward()  # the penalty trains D: d‖w‖²/dw = 2w
    assert torch.allclose(w.grad, 2 * w, rtol=1e-5)


def test_r1_of_a_quadratic_discriminator_depends_on_each_image():
    x = torch.randn(3, 1, 2, 2).requires_grad_()
    logits = (x**2).flatten(1).sum(1)  # ∇ = 2x → ‖∇‖² = 4‖x‖²
    assert torch.allclose(r1_penalty(logits, x), 4 * (x.detach() ** 2).flatten(1).sum(1))


def test_r1_needs_gradients_on_the_real_images():
    x = torch.randn(2, 1, 2, 2)
    with pytest.raises(CxrError, match="requires_grad"):
        r1_penalty(x.sum((1, 2, 3)), x)


def test_lazy_r1_weight_compensates_for_the_interval():
    assert r1_weight(10.0) == 5.0
    assert r1_weight(10.0, every=16) == 80.0
    with pytest.raises(CxrError):
        r1_weight(1.0, every=0)


# ----------------------------------------------------------------------------------------------- WGAN-GP
def test_wgan_critic_loss_rewards_a_critic_that_scores_reals_higher():
    from cxrlib.losses import d_loss_wgan, g_loss_wgan

    real, fake = torch.tensor([2.0, 1.0]), torch.tensor([-1.0, 0.0])
    good, stats = d_loss_wgan(real, fake)
    bad, _ = d_loss_wgan(fake, real)  # the same scores, the critic the wrong way round
    assert good.item() == pytest.approx(-0.5 - 1.5) and bad.item() == pytest.approx(2.0) and good < bad
    assert stats["D(x)"].item() == pytest.approx(1.5) and stats["D(G(z))"].item() == pytest.approx(-0.5)  # scores
    assert stats["d_loss_real"].item() == pytest.approx(-1.5) and stats["d_loss_fake"].item() == pytest.approx(-0.5)
    g, g_stats = g_loss_wgan(fake)
    assert g.item() == pytest.approx(0.5) and g_stats["D(G(z))"].item() == pytest.approx(-0.5)
    assert LOSSES["wgan-gp"] == (d_loss_wgan, g_loss_wgan)


def test_wgan_refuses_label_smoothing_in_one_line():
    from cxrlib.losses import d_loss_wgan

    with pytest.raises(CxrError, match="not to 'wgan-gp'") as err:
        d_loss_wgan(torch.zeros(2), torch.zeros(2), label_smoothing=0.1)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("w", [[0.6, 0.8], [3.0, 4.0], [0.3, 0.4]])
def test_gradient_penalty_of_a_linear_critic_is_its_weight_norm_gap(w):
    """D(x) = w·x + b has ∇D = w everywhere: the penalty is (‖w‖ − 1)², zero for a unit-norm (1-Lipschitz) w."""
    from cxrlib.losses import gradient_penalty, interpolates

    critic = nn.Linear(2, 1)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([w]))
    points = interpolates(torch.randn(5, 2), torch.randn(5, 2), torch.Generator().manual_seed(0))
    gp = gradient_penalty(critic(points).squeeze(1), points)
    norm = math.hypot(*w)
    assert gp.shape == (5,) and gp.dtype == torch.float32
    assert torch.allclose(gp, torch.full((5,), (norm - 1) ** 2), atol=1e-6), gp
    gp.mean().backward()  # the graph reaches the critic's weights: d/dw (‖w‖ − 1)² = 2(‖w‖ − 1) w/‖w‖
    want = torch.tensor([w]) * 2 * (norm - 1) / norm
    assert torch.allclose(critic.weight.grad, want, atol=1e-5)


def test_interpolates_lie_between_real_and_fake_with_one_reproducible_eps_per_image():
    from cxrlib.losses import interpolates

    real, fake = torch.ones(4, 1, 3, 3), torch.zeros(4, 1, 3, 3)
    a = interpolates(real, fake, torch.Generator().manual_seed(7))
    b = interpolates(real, fake, torch.Generator().manual_seed(7))
    c = interpolates(real, fake, torch.Generator().manual_seed(8))
    assert a.requires_grad and torch.equal(a, b) and not torch.equal(a, c)
    eps = a.flatten(1)  # with real = 1 and fake = 0, x̂ = ε
    assert torch.equal(eps, eps[:, :1].expand_as(eps)) and bool(((eps > 0) & (eps < 1)).all())
    assert torch.equal(eps[:, 0], torch.rand(4, generator=torch.Generator().manual_seed(7)))
    with pytest.raises(CxrError, match="same shape"):
        interpolates(real, fake[:2])
    mixed = interpolates(real, fake.bfloat16(), torch.Generator().manual_seed(7))  # G's fakes under autocast
    assert mixed.dtype == torch.float32 and torch.equal(mixed, a)


def test_every_loss_is_a_config_choice_and_named_in_the_cli_help():
    import argparse

    from cxrlib import cli
    from cxrlib.config import LOSS_CHOICES

    assert set(LOSSES) == set(LOSS_CHOICES)
    p = argparse.ArgumentParser()
    cli._add_train_options(p)
    help_text = " ".join(p.format_help().split())
    assert all(name in help_text for name in LOSS_CHOICES), help_text


def test_only_the_penalised_losses_carry_the_gradient_penalty():
    from cxrlib.losses import LOSSES, PENALISED, penalty_weight

    assert {loss: penalty_weight(loss, 10.0) for loss in LOSSES} == {
        loss: 10.0 if loss == "wgan-gp" else 0.0 for loss in LOSSES}
    assert PENALISED == ("wgan-gp",) and penalty_weight("wgan-gp", 2.5) == 2.5
