"""DiffAugment and the ADA controller: identity at p=0, reproducible, differentiable, no flips, adaptive p."""

from __future__ import annotations

import pytest
import torch

from cxrlib.augment import AdaptiveAugment, diff_augment, parse_policy
from cxrlib.errors import CxrError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(b: int = 8, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 1, size, size, generator=gen(seed)) * 2 - 1


def test_p_zero_leaves_images_untouched():
    x = images()
    assert diff_augment(x, p=0.0) is x
    assert torch.equal(diff_augment(x, p=torch.tensor(0.0), generator=gen()), x)  # the tensor path too


def test_the_same_generator_seed_gives_the_same_augmentation():
    x = images()
    a = diff_augment(x, generator=gen(1))
    b = diff_augment(x, generator=gen(1))
    c = diff_augment(x, generator=gen(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, x)


def test_gradients_flow_back_to_the_input():
    x = images().requires_grad_()
    y = diff_augment(x, generator=gen())
    (y * torch.randn_like(y)).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad != 0).float().mean() > 0.3  # everywhere except erased or shifted-out pixels


def test_translation_is_a_pure_shift_of_at_most_an_eighth_with_zero_fill():
    x = images(b=16, size=32, seed=5)
    y = diff_augment(x, "translation", generator=gen(3))
    assert y.shape == x.shape
    pad = torch.nn.functional.pad(x, (4, 4, 4, 4))
    shifts = []
    for i in range(16):
        found = [
            (dy, dx)
            for dy in range(-4, 5)
            for dx in range(-4, 5)
            if torch.equal(y[i, 0], pad[i, 0, 4 + dy : 36 + dy, 4 + dx : 36 + dx])
        ]
        assert len(found) == 1, f"sample {i} is not a shifted copy of its input"
        shifts.append(found[0])
    assert len(set(shifts)) > 4  # each sample draws its own shift


def test_cutout_erases_one_square_of_at_most_half_the_side():
    x = torch.ones(32, 1, 16, 16)
    y = diff_augment(x, "cutout", generator=gen(4))
    for img in y[:, 0]:
        erased = img == 0
        rows, cols = erased.any(1).nonzero().flatten(), erased.any(0).nonzero().flatten()
        assert 0 < len(rows) <= 8 and 0 < len(cols) <= 8
        assert erased.sum() == len(rows) * len(cols)  # a solid rectangle (a square clipped by the border)
        assert torch.all(img[~erased] == 1)


def test_brightness_and_contrast_stay_within_their_ranges_and_keep_the_order_of_pixels():
    x = images(b=64, seed=6)
    y = diff_augment(x, "brightness", generator=gen(5))
    shift = (y - x).flatten(1)
    assert torch.allclose(shift, shift[:, :1].expand_as(shift), atol=1e-6)  # one offset per image
    assert shift.abs().max() <= 0.5
    z = diff_augment(x, "contrast", generator=gen(6))
    xc, zc = x - x.mean((1, 2, 3), keepdim=True), z - z.mean((1, 2, 3), keepdim=True)
    factor = (zc * xc).sum((1, 2, 3)) / (xc * xc).sum((1, 2, 3))
    assert factor.min() >= 0.5 - 1e-5 and factor.max() <= 1.5 + 1e-5
    assert torch.allclose(zc, factor.view(-1, 1, 1, 1) * xc, atol=1e-5)


def test_each_sample_is_augmented_with_probability_p():
    x = torch.zeros(4000, 1, 4, 4)
    y = diff_augment(x, "brightness", p=0.3, generator=gen(7))
    touched = (y != 0).flatten(1).any(1).float().mean().item()
    assert 0.27 < touched < 0.33
    y = diff_augment(x, "brightness", p=torch.tensor(0.3), generator=gen(7))  # ADA passes a tensor
    assert 0.27 < (y != 0).flatten(1).any(1).float().mean().item() < 0.33


def test_images_are_never_mirrored():
    # a left-to-right ramp: a mirrored copy would correlate negatively with it
    ramp = torch.linspace(-1, 1, 32).expand(32, 32)
    x = ramp.expand(256, 1, 32, 32).clone()
    y = diff_augment(x, generator=gen(8))
    yc = y - y.mean((2, 3), keepdim=True)
    corr = (yc * ramp).sum((1, 2, 3))
    assert (corr > 0).all()
    with pytest.raises(CxrError, match="symmetric"):
        parse_policy("color,flip")


def test_policies_expand_and_unknown_names_are_refused():
    assert parse_policy("color,translation,cutout") == ("brightness", "contrast", "translation", "cutout")
    assert parse_policy(" cutout , color ") == ("cutout", "brightness", "contrast")
    with pytest.raises(CxrError, match="unknown augmentation"):
        parse_policy("color,saturation")


def test_channels_last_and_bf16_inputs_keep_their_dtype():
    x = images().to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    y = diff_augment(x, generator=gen())
    assert y.dtype == torch.bfloat16 and y.shape == x.shape


# ------------------------------------------------------------------------------------------- ADA


def test_ada_raises_p_when_d_is_sure_of_the_reals():
    ada = AdaptiveAugment(target=0.6, speed_kimg=1.0, interval=4)
    for _ in range(4):
        ada.update(torch.full((32,), 3.0))  # every real scored "real": r_t = 1 > 0.6 → overfitting
        p = ada.step(32)
    assert ada.r_t.item() == pytest.approx(1.0)
    assert p.item() == pytest.approx(4 * 32 / 1000)  # (batch · interval) / speed images


def test_ada_lowers_p_when_d_is_not_overfitting_and_stays_within_bounds():
    ada = AdaptiveAugment(target=0.6, speed_kimg=1.0, interval=1, p_init=0.5)
    logits = torch.tensor([1.0, -1.0, 1.0, -1.0])  # r_t = 0 < 0.6
    for _ in range(3):
        ada.update(logits)
        ada.step(100)
    assert ada.p.item() == pytest.approx(0.5 - 3 * 0.1)
    for _ in range(10):
        ada.update(logits)
        ada.step(100)
    assert ada.p.item() == 0.0
    for _ in range(30):
        ada.update(torch.ones(4))
        ada.step(100)
    assert ada.p.item() == pytest.approx(0.8)  # p_max


def test_ada_only_adjusts_every_interval_and_without_measurements_keeps_p():
    ada = AdaptiveAugment(speed_kimg=1.0, interval=4)
    for _ in range(3):
        ada.update(torch.ones(8))
        ada.step(8)
    assert ada.p.item() == 0.0
    quiet = AdaptiveAugment(speed_kimg=1.0, interval=1, p_init=0.2)
    quiet.step(8)
    assert quiet.p.item() == pytest.approx(0.2)


def test_ada_state_round_trips_for_exact_resume():
    a = AdaptiveAugment(speed_kimg=1.0, interval=3)
    for i in range(5):
        a.update(torch.randn(8, generator=gen(i)) + 1)
        a.step(8)
    b = AdaptiveAugment(speed_kimg=1.0, interval=3)
    b.load_state_dict(a.state_dict())
    for i in range(5, 9):
        logits = torch.randn(8, generator=gen(i)) + 1
        for ada in (a, b):
            ada.update(logits)
            ada.step(8)
    assert torch.equal(a.p, b.p) and a.p.item() > 0
