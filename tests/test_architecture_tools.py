"""Helpers of notebook 02: upsampling blocks and their checkerboards, output sizes, parameter counts, σ_max."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from cxrlib import exercises, metrics, models
from cxrlib.errors import CxrError


def _centre(y: torch.Tensor, margin: int = 8) -> torch.Tensor:
    return y[..., margin:-margin, margin:-margin]


def test_random_transposed_stack_turns_a_constant_into_a_period_two_pattern_and_upsample_conv_does_not():
    x = torch.ones(1, 16, 8, 8)
    with torch.no_grad():
        up = _centre(models.upsampling_stack("upsample", seed=0)(x))
        tr = _centre(models.upsampling_stack("transpose", seed=0)(x))
    assert up.std() < 1e-5  # constant in, constant out (away from the zero-padded borders)
    assert tr.std() > 1e-3
    spectrum = metrics.power_spectrum(tr)
    h = spectrum.shape[-1]
    assert spectrum[0, 0] > spectrum[h // 2 + 1, h // 2 + 1] + 2  # the stride frequency beats its neighbourhood


@pytest.mark.parametrize(("kind", "k"), [("upsample", 3), ("upsample", 5), ("transpose", 3), ("transpose", 4),
                                         ("transpose", 5)])
def test_both_blocks_double_the_size(kind, k):
    block = (models.upsample_conv_block if kind == "upsample" else models.transpose_conv_block)(3, 5, k)
    assert block(torch.zeros(2, 3, 7, 7)).shape == (2, 5, 14, 14)
    assert models.output_size(7, block) == 14


def test_upsampling_stack_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    a, b = models.upsampling_stack("transpose", seed=3), models.upsampling_stack("transpose", seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    with pytest.raises(CxrError, match="upsampling"):
        models.upsampling_stack("pixelshuffle")


def test_output_size_agrees_with_a_forward_pass_through_the_preset_networks():
    for preset in ("original", "dcgan", "course"):
        G, D = models.build_models(preset, 32)
        layers = list(D.features) if hasattr(D, "features") else list(D.net)
        x = torch.zeros(2, 1, 32, 32)
        assert models.output_size(32, layers) == nn.Sequential(*layers).eval()(x).shape[-1]
    stack = nn.Sequential(nn.Conv2d(1, 1, 3, stride=3), nn.AvgPool2d(2), nn.Upsample(scale_factor=4),
                          nn.ConvTranspose2d(1, 1, 3, stride=2, padding=1, output_padding=1))
    assert models.output_size(20, stack) == stack(torch.zeros(1, 1, 20, 20)).shape[-1] == 24


def test_conv2d_params_counts_what_pytorch_allocates():
    for c_in, c_out, k, bias in ((1, 8, 3, True), (64, 128, 5, True), (16, 1, 1, False)):
        assert models.conv2d_params(c_in, c_out, k, bias) == models.count_params(nn.Conv2d(c_in, c_out, k, bias=bias))


def test_spectral_norm_brings_the_largest_singular_value_to_one():
    torch.manual_seed(0)
    layer = nn.Linear(64, 32)
    with torch.no_grad():
        layer.weight.mul_(5)
    raw = models.largest_singular_value(layer.weight)
    assert raw > 3
    sn = spectral_norm(layer)
    for _ in range(20):  # one power iteration per training-mode forward pass
        sn(torch.randn(4, 64))
    assert models.largest_singular_value(sn.weight) == pytest.approx(1.0, abs=0.02)
    assert models.largest_singular_value(sn.parametrizations.weight.original) == pytest.approx(raw, rel=1e-5)


def test_seed_networks_at_512_px_can_be_measured_without_allocating_them():
    with torch.device("meta"):
        G, D = models.build_models("original", 512)
    assert G.blocks[0][1].weight.is_meta  # no memory, no time: a forward pass on "meta" would be slow (lazy kernels)
    assert 45e6 < models.count_params(G) < 55e6 and 15e6 < models.count_params(D) < 25e6
    assert [b[1].out_channels for b in G.blocks] == list(models.ORIGINAL_G_WIDTHS)


def test_exercise_checks_of_notebooks_02_and_03_catch_typical_mistakes(capsys):
    def no_bias(c_in, c_out, k, bias=True):
        return c_out * c_in * k * k

    def transposed(c_in, c_out, k=3):
        return models.transpose_conv_block(c_in, c_out, k)

    def no_padding(c_in, c_out, k=3):
        return nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(c_in, c_out, k), nn.LeakyReLU(0.2))

    def frobenius(weight):  # the broken code the student of notebook 02 is given
        return weight / weight.norm()

    def by_parameters(widths, wide_steps, size, batch):  # the broken code the student of notebook 04 is given
        cost = {w: sum(models.count_params(m) for m in models.build_models("course", size, width=w)) for w in widths}
        budget = cost[max(widths)] * wide_steps
        return {w: max(1, round(budget / cost[w])) for w in widths}

    for name, wrong in (("02.conv_params", no_bias),
                        ("02.upsample_conv_block", transposed), ("02.upsample_conv_block", no_padding),
                        ("02.spectral_normalise", frobenius), ("03.scale_equal_compute", by_parameters)):
        assert exercises.check(name, wrong) is not wrong
        assert "not right yet" in capsys.readouterr().out


def test_conv_params_check_names_the_usual_slips_by_their_numbers(capsys):
    checked = exercises.check("02.conv_params", lambda c_in, c_out, k, bias=True: c_out * c_in * k * k)
    out = capsys.readouterr().out
    assert checked is not None and "✗" in out and "your count is 72, PyTorch allocates 80" in out and "8 biases" in out
    exercises.check("02.conv_params", lambda c_in, c_out, k, bias=True: c_out * (c_in * k + 1))
    assert "k×k = 9 numbers" in capsys.readouterr().out
    exercises.check("02.conv_params", lambda c_in, c_out, k, bias=True: c_out * (c_in * k * k + 1))
    assert "bias=False" in capsys.readouterr().out


# ----------------------------------------------------------------------------- FLOP counts vs torch's counter
def _counted(fn) -> dict:
    """FLOPs of ``fn()`` by aten op name, as ``torch.utils.flop_counter.FlopCounterMode`` counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}


@pytest.mark.parametrize(("preset", "size"), [("original", 32), ("dcgan", 32), ("course", 32), ("course", 64),
                                              ("style", 32)])
def test_forward_flops_match_torchs_flop_counter(preset, size):
    """``forward_flops`` (2 per multiply-add of the conv and linear layers) against torch's own counter, which
    reads the aten calls (convolution, addmm, mm). Only the style generator's demodulation — a (B, C_in) ×
    (C_in, C_out) mm per modulated layer, documented as not counted — is left out: under 0.5 % of its G."""
    torch.manual_seed(0)
    G, D = models.build_models(preset, size)
    G.eval()
    D.eval()  # the counter's module tracker wants autograd on: no torch.no_grad here
    for net, example in ((G, torch.randn(2, G.z_dim)), (D, torch.randn(2, 1, size, size))):
        counted = _counted(lambda net=net, example=example: net(example))
        ours = models.forward_flops(net, example) * 2
        mm = counted.pop("aten.mm", 0)
        assert ours == sum(counted.values()), (type(net).__name__, ours, counted)
        assert mm == 0 or (preset == "style" and net is G and mm < 0.005 * ours), mm


@pytest.mark.parametrize("preset", ["course", "dcgan"])
def test_train_step_flops_are_what_torch_counts_for_a_d_and_a_g_step(preset):
    """``flops_per_image``'s ``train_step = 4·G + 8·D`` against the counter over one D step (G forward without
    gradients, D forward and backward on reals and fakes) and one G step (G forward and backward, D forward and
    a backward for its input only). The formula prices every backward at twice its forward; the first layers of
    G (from z) and of D's D step (from the images) never compute an input gradient, so the counter is a
    little lower: 0.2–0.5 % measured, never higher."""
    size, batch = 32, 2
    torch.manual_seed(0)
    G, D = models.build_models(preset, size)
    real = torch.randn(batch, 1, size, size)

    def steps():
        with torch.no_grad():
            fake = G(torch.randn(batch, G.z_dim))
        (D(real).mean() - D(fake).mean()).backward()
        D.requires_grad_(False)
        (-D(G(torch.randn(batch, G.z_dim))).mean()).backward()
        D.requires_grad_(True)

    counted = sum(_counted(steps).values()) / batch
    formula = models.flops_per_image(G, D, size)["train_step"]
    assert 0.99 * formula < counted <= formula, (counted, formula)
