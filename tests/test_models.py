"""Generators and discriminators: shapes, the seed's exact layers, skips, dropout, spectral norm, counting."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from cxrlib import models
from cxrlib.errors import CxrError
from cxrlib.models import (
    NETWORKS,
    PRESET_NOTES,
    MinibatchStd,
    SampleDropout,
    build_models,
    count_params,
    flops_per_image,
    forward_flops,
    in_layout,
    layer_table,
    layout_of,
)


def convs(module: nn.Module, kind=nn.Conv2d) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, kind)]


@pytest.mark.parametrize("preset", NETWORKS)
@pytest.mark.parametrize("size", [32, 64, 128])
def test_every_preset_maps_latents_to_images_and_images_to_one_logit(preset, size):
    torch.manual_seed(0)
    G, D = build_models(preset, size)
    z = torch.randn(2, G.z_dim)
    x = G(z)
    assert x.shape == (2, 1, size, size)
    logits = D(x)
    assert logits.shape == (2,)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("preset", NETWORKS)
@pytest.mark.parametrize("size", [256, 512])
@torch.no_grad()
def test_large_sizes_have_the_right_shapes(preset, size):
    G, D = build_models(preset, size, width=0.125)  # same layers, 1/64 of the arithmetic
    x = G(torch.randn(1, G.z_dim))
    assert x.shape == (1, 1, size, size)
    assert D(x).shape == (1,)


@pytest.mark.parametrize("size", [16, 48, 100, 1024, 64.0])
def test_sizes_other_than_powers_of_two_from_32_to_512_are_refused(size):
    with pytest.raises(CxrError, match="size"):
        build_models("course", size)


def test_unknown_preset_and_unknown_keywords_are_refused():
    with pytest.raises(CxrError, match="preset"):
        build_models("stylegan9", 64)
    with pytest.raises(CxrError, match="does not take"):
        build_models("dcgan", 64, skips=True)


def test_default_latent_sizes_follow_the_papers_and_can_be_changed():
    assert build_models("original", 32)[0].z_dim == 256
    assert build_models("dcgan", 32)[0].z_dim == 100
    G, _ = build_models("course", 32, z_dim=64)
    assert G.z_dim == 64 and G(torch.randn(3, 64)).shape == (3, 1, 32, 32)


@pytest.mark.parametrize("preset", NETWORKS)
def test_generator_output_stays_in_the_tanh_range_even_for_extreme_latents(preset):
    torch.manual_seed(1)
    G, _ = build_models(preset, 32)
    G.eval()
    with torch.no_grad():
        for p in G.parameters():
            p.mul_(10)  # blow the pre-activation up: only a final tanh keeps it inside [-1, 1]
        x = G(50 * torch.randn(4, G.z_dim))
    assert x.min() >= -1 and x.max() <= 1
    assert (x.abs() > 0.999).any()


def test_preset_notes_describe_every_preset():
    assert set(PRESET_NOTES) == set(NETWORKS)
    assert all(len(text) > 200 for text in PRESET_NOTES.values())


#: the public names of ``cxrlib.models`` before it became a package of one file per architecture (7319734)
PRE_SPLIT_NAMES = (
    "CLASS_DIM", "CONDITIONAL_NETWORKS", "ClassBatchNorm2d", "ConditionalGenerator", "CourseDiscriminator",
    "DCGANDiscriminator", "DCGANGenerator", "FeaturesHead", "LEGACY_NETWORKS", "MAX_SIZE", "MIN_SIZE",
    "MinibatchStd", "NETWORKS", "ORIGINAL_D_WIDTHS", "ORIGINAL_G_KERNELS", "ORIGINAL_G_WIDTHS", "ORIGINAL_Z_DIM",
    "OriginalDiscriminator", "PRESETS", "PRESET_KEYWORDS", "PRESET_NOTES", "PatchDiscriminator",
    "ProjectionDiscriminator", "ResnetGenerator", "SEED_D_WIDTHS", "SEED_G_KERNELS", "SEED_G_WIDTHS", "SEED_Z_DIM",
    "SampleDropout", "SeedDiscriminator", "SkipGenerator", "UNetGenerator", "build_models", "check_size",
    "conv2d_params", "count_params", "course_generator", "course_width", "evaluating", "flops_per_image",
    "forward_flops", "in_layout", "largest_singular_value", "layer_table", "layout_of", "n_doublings",
    "original_generator", "output_size", "patch_layers", "projection_logit", "receptive_field",
    "receptive_field_of", "scaled", "seed_generator", "transpose_conv_block", "upsample2", "upsample_conv_block",
    "upsampling_stack",
)  # fmt: skip


def test_every_network_lives_in_its_architectures_file_and_is_still_a_models_name():
    """One file per architecture family; ``cxrlib.models`` re-exports every name it had before the split."""
    for name in PRE_SPLIT_NAMES:
        assert getattr(models, name, None) is not None and name in models.__all__, name
    homes = {
        "course": (models.course_generator, models.CourseDiscriminator, models.MinibatchStd),
        "original": (models.original_generator, models.OriginalDiscriminator, models.SampleDropout),
        "dcgan": (models.DCGANGenerator, models.DCGANDiscriminator),
        "conditional": (models.ConditionalGenerator, models.ProjectionDiscriminator, models.ClassBatchNorm2d),
        "common": (models.SkipGenerator, models.FeaturesHead, models.evaluating, models.check_size),
        "inspection": (models.count_params, models.layer_table, models.flops_per_image),
        "nb02": (models.upsampling_stack, models.upsample_conv_block, models.largest_singular_value),
    }
    for module, objects in homes.items():
        assert all(obj.__module__ == f"cxrlib.models.{module}" for obj in objects), module


# ------------------------------------------------------------------------------------------- the seed


def test_seed_generator_at_512_has_the_original_layers():
    with torch.device("meta"):
        G, D = build_models("original", 512)
    dense = [m for m in G.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in dense] == [(256, 4 * 4 * 1024)]
    c = convs(G)
    assert [m.kernel_size[0] for m in c] == [7, 7, 5, 5, 5, 5, 3, 3]
    assert [m.out_channels for m in c] == [512, 512, 256, 256, 192, 128, 64, 1]
    assert c[0].in_channels == 1024
    ups = [m for m in G.modules() if isinstance(m, nn.Upsample)]
    assert len(ups) == 7 and all(m.mode == "nearest" for m in ups)
    assert len([m for m in G.modules() if isinstance(m, nn.BatchNorm2d)]) == 7
    drops = [m for m in G.modules() if isinstance(m, SampleDropout)]
    assert len(drops) == 7 and all(m.p == 0.1 for m in drops)

    dc = convs(D)
    assert [m.out_channels for m in dc] == [32, 64, 128, 256, 512]
    assert all(m.kernel_size == (5, 5) and m.stride == (2, 2) for m in dc)
    dense = [m for m in D.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in dense] == [(16 * 16 * 512, 128), (128, 1)]
    assert all(m.p == 0.3 for m in D.modules() if isinstance(m, nn.Dropout))


def test_seed_at_64_keeps_the_finest_generator_blocks_and_the_first_discriminator_blocks():
    G, D = build_models("original", 64)
    c = convs(G)
    assert [m.kernel_size[0] for m in c] == [5, 5, 5, 3, 3]
    assert [m.out_channels for m in c] == [256, 192, 128, 64, 1]
    assert c[0].in_channels == 512  # twice the first kept block, as 1024 → 512 in the original
    assert [m.out_channels for m in convs(D)] == [32, 64, 128, 256]
    assert D.head[1].in_features == 4 * 4 * 256


def test_width_scales_every_layer():
    G1, D1 = build_models("original", 32)
    G2, D2 = build_models("original", 32, width=0.5)
    assert [m.out_channels for m in convs(G2)][:-1] == [m.out_channels // 2 for m in convs(G1)][:-1]
    assert count_params(D2) < count_params(D1) / 2


def test_seed_dropout_draws_its_own_elementwise_mask_for_every_sample():
    torch.manual_seed(0)
    drop = SampleDropout(0.25)  # mode="element", as Keras Dropout
    x = torch.ones(4, 8, 16, 16)
    y = drop(x)
    kept = y != 0
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.75))  # kept values are rescaled
    assert abs(1 - kept.float().mean().item() - 0.25) < 0.03
    assert not torch.equal(kept[0], kept[1])  # each sample has its own mask ...
    assert not torch.equal(kept[0, 0], kept[0, 1])  # ... drawn for every element, not per channel
    drop.eval()
    assert torch.equal(drop(x), x)


def test_channel_dropout_mask_is_shared_by_all_positions_of_a_channel():
    torch.manual_seed(0)
    y = SampleDropout(0.5, mode="channel")(torch.ones(8, 16, 4, 4))
    kept = y != 0
    per_channel = kept.flatten(2)
    assert (per_channel.all(2) | ~per_channel.any(2)).all()  # every map is kept whole or dropped whole
    assert not torch.equal(kept[0], kept[1])


def test_seed_generator_is_random_in_training_and_deterministic_in_eval():
    torch.manual_seed(0)
    G, _ = build_models("original", 32)
    z = torch.randn(1, G.z_dim).repeat(2, 1)
    x = G(z)  # train mode: two copies of the same z get different dropout masks
    assert not torch.allclose(x[0], x[1])
    G.eval()
    x = G(z)
    assert torch.equal(x[0], x[1])


# ------------------------------------------------------------------------------------------- skips


@pytest.mark.parametrize("preset,kw", [("course", {"skips": True}), ("original", {"skips": True})])
def test_skip_levels_sum_to_the_pre_tanh_output(preset, kw):
    torch.manual_seed(0)
    G, _ = build_models(preset, 32, **kw)
    G.eval()
    z = torch.randn(3, G.z_dim)
    x, levels = G(z, return_levels=True)
    assert len(levels) == int(math.log2(32 / 4)) + 1  # 4, 8, 16, 32 px
    assert all(y.shape == (3, 1, 32, 32) for y in levels)
    assert torch.allclose(torch.tanh(sum(levels)), x, atol=1e-5)
    assert torch.equal(x, G(z))
    # every resolution contributes; level 0 is the 4×4 image of the stem, brought to full size
    assert all(y.abs().mean() > 1e-3 for y in levels)
    y4 = G.to_images[0](G.stem(z))
    assert y4.shape == (3, 1, 4, 4)
    up = nn.functional.interpolate(y4, scale_factor=2, mode="bilinear")
    for _ in range(2):
        up = nn.functional.interpolate(up, scale_factor=2, mode="bilinear")
    assert torch.allclose(levels[0], up, atol=1e-5)


def test_generators_without_skips_report_a_single_level():
    for preset in ("original", "dcgan", "course"):
        G, _ = build_models(preset, 32)
        G.eval()
        x, levels = G(torch.randn(2, G.z_dim), return_levels=True)
        assert len(levels) == 1 and torch.allclose(torch.tanh(levels[0]), x, atol=1e-6)


def test_seed_with_skips_adds_only_the_to_image_layers():
    G0, _ = build_models("original", 64)
    G1, _ = build_models("original", 64, skips=True)
    one_by_one = [m for m in convs(G1) if m.kernel_size == (1, 1)]
    assert len(one_by_one) == 4  # after the dense layer and after blocks 1–3; block 4 ends in the seed's 3×3
    assert count_params(G1) - count_params(G0) == sum(count_params(m) for m in one_by_one)


# ------------------------------------------------------------------------------------------- DCGAN


def test_dcgan_at_64_is_the_radford_network():
    torch.manual_seed(0)
    G, D = build_models("dcgan", 64)
    tconvs = convs(G, nn.ConvTranspose2d)
    assert [m.out_channels for m in tconvs] == [512, 256, 128, 64, 1]
    assert tconvs[0].in_channels == 100
    assert all(m.kernel_size == (4, 4) for m in tconvs)
    assert [m.out_channels for m in convs(D)] == [64, 128, 256, 512, 1]
    assert len([m for m in D.modules() if isinstance(m, nn.BatchNorm2d)]) == 3  # none on the first layer
    w = torch.cat([m.weight.flatten() for m in tconvs + convs(D)])
    assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.002


def test_dcgan_adds_a_block_per_doubling():
    n = {s: len(convs(build_models("dcgan", s)[0], nn.ConvTranspose2d)) for s in (32, 64, 128)}
    assert n == {32: 4, 64: 5, 128: 6}


# ------------------------------------------------------------------------------------------- course


def test_course_networks_are_lean_by_default_and_each_layer_is_one_keyword_away():
    G, D = build_models("course", 64)
    assert not any(parametrize.is_parametrized(m) for m in D.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in G.modules())
    assert [m.kernel_size for m in convs(G)].count((1, 1)) == 1  # the last level's to-image layer only
    G1, D1 = build_models("course", 64, **models.LEGACY_NETWORKS["course"])
    assert len([m for m in G1.modules() if isinstance(m, nn.BatchNorm2d)]) == len(G.blocks) * 2 + 1
    assert [m.kernel_size for m in convs(G1)].count((1, 1)) == len(G.blocks) + 1
    assert count_params(D1) == count_params(D)
    # the conditional pair keeps all three (class-conditional BatchNorm carries the class)
    Gc, Dc = build_models("course", 64, n_classes=2)
    assert Gc.class_norms and any(parametrize.is_parametrized(m) for m in Dc.modules())


def test_course_discriminator_with_spectral_norm_has_it_on_every_weight_layer_and_a_minibatch_std():
    _, D = build_models("course", 64, spectral_norm=True)
    layers = [m for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) >= 10
    assert all(parametrize.is_parametrized(m, "weight") for m in layers)
    assert any(isinstance(m, MinibatchStd) for m in D.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in D.modules())


def test_course_discriminator_without_spectral_norm_has_the_same_layers_unnormalised():
    _, D_sn = build_models("course", 32, spectral_norm=True)
    _, D = build_models("course", 32, spectral_norm=False)
    layers = [m for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert not any(parametrize.is_parametrized(m, "weight") for m in layers)
    assert count_params(D) == count_params(D_sn)
    assert D(torch.randn(4, 1, 32, 32)).shape == (4,)


def test_spectral_norm_keeps_each_layer_near_unit_spectral_norm_after_training_steps():
    torch.manual_seed(0)
    _, D = build_models("course", 32, spectral_norm=True)
    x = torch.randn(8, 1, 32, 32)
    for _ in range(15):  # power iteration runs on every training-mode forward
        D(x)
    D.eval()
    lin = D.head[-1]
    sigma = torch.linalg.matrix_norm(lin.weight, ord=2)
    assert abs(sigma.item() - 1) < 0.05


def test_course_is_small_enough_for_a_laptop_at_64_px():
    G, D = build_models("course", 64)
    assert 0.3e6 < count_params(G) < 2.5e6
    assert 0.3e6 < count_params(D) < 2.5e6
    f = flops_per_image(G, D, 64)
    dcgan = flops_per_image(*build_models("dcgan", 64), 64)
    assert f["train_step"] < dcgan["train_step"]  # no more arithmetic per step than the baseline


def test_minibatch_std_sees_variety_within_consecutive_groups_only():
    layer = MinibatchStd(group_size=4)
    same = torch.ones(4, 3, 2, 2)
    varied = torch.randn(4, 3, 2, 2)
    y = layer(torch.cat([same, varied]))
    assert y.shape == (8, 4, 2, 2)
    assert y[:4, 3].abs().max() < 1e-3  # a collapsed group: no variety
    assert y[4:, 3].min() > 0.3
    assert layer(torch.randn(6, 3, 2, 2)).shape == (6, 4, 2, 2)  # B not a multiple of 4: groups of 3


def old_minibatch_std(x, group_size=4):
    """The divisible-batch computation before ragged groups existed (the fast path must not change beyond
    rounding: the variance is now written out, which is 5× faster on CPU than Tensor.var over that view)."""
    B, C, H, W = x.shape
    g = max(d for d in range(1, min(group_size, B) + 1) if B % d == 0)
    std = (x.float().reshape(B // g, g, C, H, W).var(dim=1, unbiased=False) + 1e-8).sqrt()
    s = std.mean(dim=(1, 2, 3)).repeat_interleave(g).reshape(B, 1, 1, 1).expand(B, 1, H, W)
    return torch.cat([x, s], dim=1)


@pytest.mark.parametrize("B", [1, 2, 4, 6, 8, 12])
def test_minibatch_std_divisible_batches_are_unchanged(B):
    x = torch.randn(B, 3, 4, 4, generator=torch.Generator().manual_seed(B))
    assert torch.allclose(MinibatchStd(4)(x), old_minibatch_std(x), atol=1e-6)


@pytest.mark.parametrize("B", [7, 13, 31])
def test_minibatch_std_with_a_prime_batch_still_sees_variety(B):
    layer = MinibatchStd(group_size=4)
    varied = torch.randn(B, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    same = torch.ones(B, 3, 2, 2)
    assert layer(same)[:, 3].abs().max() < 1e-3  # identical samples: no variety
    assert layer(varied)[:, 3].min() > 0.3  # before: every group had one sample, a constant ~0 channel
    # groups stay consecutive: one collapsed group of 4, the rest varied
    y = layer(torch.cat([same[:4], varied[4:]]))
    assert y[:4, 3].abs().max() < 1e-3 and y[4:, 3].min() > 0.3


def test_minibatch_std_ragged_groups_merge_a_lone_last_sample():
    layer = MinibatchStd(group_size=4)
    x = torch.ones(13, 2, 2, 2)  # groups of 4, 4 and 5: the 13th sample joins the third group
    x[12] = 3.0
    s = layer(x)[:, 2, 0, 0]
    assert s[:8].abs().max() < 1e-3
    assert torch.allclose(s[8:], torch.full((5,), 0.8))  # std of {1, 1, 1, 1, 3}
    x7 = torch.ones(7, 2, 2, 2)  # groups of 4 and 3
    x7[6] = 4.0
    s7 = layer(x7)[:, 2, 0, 0]
    assert s7[:4].abs().max() < 1e-3 and torch.allclose(s7[4:], torch.full((3,), 2 ** 0.5))  # std of {1, 1, 4}


def test_course_discriminator_trains_on_a_prime_batch():
    torch.manual_seed(0)
    _, D = build_models("course", 32, width=0.25)
    x = torch.randn(7, 1, 32, 32, requires_grad=True)
    D(x).sum().backward()
    assert D(x).shape == (7,) and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------- fast paths


@pytest.mark.parametrize("preset", NETWORKS)
def test_models_run_channels_last_under_bf16_autocast_and_backpropagate(preset):
    torch.manual_seed(0)
    G, D = build_models(preset, 32, width=0.5)
    G.to(memory_format=torch.channels_last)
    D.to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = G(torch.randn(4, G.z_dim))
        logits = D(x.contiguous(memory_format=torch.channels_last))
    assert x.shape == (4, 1, 32, 32) and logits.shape == (4,)
    assert x.dtype == torch.bfloat16  # autocast really ran the convolutions in bf16
    logits.float().mean().backward()
    grads = [p.grad for p in G.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_in_layout_restrides_a_one_channel_image_that_contiguous_leaves_in_nchw():
    x = torch.randn(4, 1, 16, 16)
    assert x.contiguous(memory_format=torch.channels_last).stride(1) != 1  # the trap: a no-op for C = 1
    y = in_layout(x, torch.channels_last)
    assert y.stride(1) == 1 and torch.equal(y, x)
    assert in_layout(x, torch.contiguous_format) is x
    z = torch.randn(4, 8, 16, 16).to(memory_format=torch.channels_last)
    assert in_layout(z, torch.channels_last) is z  # already laid out: no copy


def test_layout_of_reads_the_format_a_module_was_put_in():
    _, D = build_models("course", 32, width=0.5)
    assert layout_of(D) == torch.contiguous_format
    assert layout_of(D.to(memory_format=torch.channels_last)) == torch.channels_last
    assert layout_of(nn.Linear(3, 2)) == torch.contiguous_format  # no 4-D weight at all


def _inputs_of(module: nn.Module, call) -> list[torch.Tensor]:
    seen = []
    handle = module.register_forward_pre_hook(lambda m, i: seen.append(i[0]))
    try:
        call()
    finally:
        handle.remove()
    return seen


@pytest.mark.parametrize("preset", ["course", "seed"])
def test_channels_last_networks_keep_every_convolution_on_the_channels_last_path(preset):
    """G's stem map (from Unflatten), D's one-channel input image and minibatch-std's cat would otherwise reach
    their convolutions with NCHW strides (oneDNN's slower path)."""
    torch.manual_seed(0)
    G, D = (m.to(memory_format=torch.channels_last) for m in build_models(preset, 32))
    x = torch.randn(4, 1, 32, 32)  # NCHW strides, as G's tanh output and the data batches have them
    for net, call in ((G, lambda: G(torch.randn(4, G.z_dim))), (D, lambda: D(x))):
        for conv in convs(net):
            if conv.in_channels > 1 or net is D:
                (inp,) = _inputs_of(conv, call)
                assert inp.stride(1) == 1, f"{preset}: {conv} got NCHW strides {inp.stride()}"
    D.eval()  # the seed D's dropout off
    flat = copy.deepcopy(D).to(memory_format=torch.contiguous_format)
    assert torch.allclose(flat(x), D(x), atol=1e-5)  # the layout changes the speed, not the logits


def test_course_activations_run_in_place_and_still_give_the_same_logits_and_r1():
    torch.manual_seed(0)
    G, D = build_models("course", 32, width=0.5)
    relus = [m for m in list(G.modules()) + list(D.modules()) if isinstance(m, nn.LeakyReLU)]
    assert relus and all(m.inplace for m in relus)
    x = torch.randn(4, 1, 32, 32, requires_grad=True)
    D.eval()  # spectral norm's power iteration off: both calls see the same weights

    def r1_and_grads():
        D.zero_grad()
        (g,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
        g.square().sum().backward()  # R1 differentiates through the in-place activations twice
        return g.detach(), [p.grad.clone() for p in D.parameters() if p.grad is not None]

    g_in, grads_in = r1_and_grads()
    for m in relus:
        m.inplace = False
    g_out, grads_out = r1_and_grads()
    assert torch.equal(g_in, g_out) and all(torch.equal(a, b) for a, b in zip(grads_in, grads_out))


# ------------------------------------------------------------------------------------------- counting


@pytest.mark.parametrize("preset", NETWORKS)
def test_layer_table_lists_layers_in_order_and_its_params_add_up(preset):
    G, D = build_models(preset, 32)
    g_rows = layer_table(G)
    assert sum(r["params"] for r in g_rows) == count_params(G)
    assert g_rows[-1]["output_shape"] == (1, 32, 32)
    d_rows = layer_table(D, size=32)
    assert sum(r["params"] for r in d_rows) == count_params(D)
    assert d_rows[0]["type"].endswith("Conv2d") and math.prod(d_rows[-1]["output_shape"]) == 1
    assert G.training and D.training  # mode restored


def test_forward_flops_count_two_per_multiply_add():
    conv = nn.Conv2d(1, 2, 3, padding=1)  # 8·8 outputs × 2 channels × 9 taps
    assert forward_flops(conv, torch.randn(3, 1, 8, 8)) == 2 * 64 * 2 * 9
    lin = nn.Linear(10, 5)
    assert forward_flops(lin, torch.randn(4, 10)) == 2 * 50
    tconv = nn.ConvTranspose2d(3, 4, 4, 2, 1)  # each of 5·5 inputs × 3 channels scatters 4·16 products
    assert forward_flops(tconv, torch.randn(1, 3, 5, 5)) == 2 * 25 * 3 * 4 * 16


def test_flops_per_image_uses_the_stated_training_step_formula():
    G, D = build_models("dcgan", 32)
    f = flops_per_image(G, D, 32)
    assert f["train_step"] == 4 * f["G"] + 8 * f["D"]
    # DCGAN 32 px by hand: the 4×4 layer, two 4×4 stride-2 blocks, the output layer
    g_macs = 100 * 256 * 16 + 16 * 256 * 128 * 16 + 64 * 128 * 64 * 16 + 256 * 64 * 1 * 16
    assert f["G"] == 2 * g_macs


def test_course_options_build_working_variants():
    torch.manual_seed(0)
    G, D = build_models("course", 32, norm="none", down="avgpool", convs_per_block=1, skips=False, ch_out=8)
    G.eval()
    x, levels = G(torch.randn(2, G.z_dim), return_levels=True)
    assert x.shape == (2, 1, 32, 32) and len(levels) == 1
    assert x.std() > 0.05  # He initialisation: the signal survives the stack without a norm layer
    assert D(x).shape == (2,)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in G.modules())
    assert any(isinstance(m, nn.AvgPool2d) for m in D.modules())
    with pytest.raises(CxrError, match="norm"):
        build_models("course", 32, norm="group")


def test_the_original_projects_preset_keeps_its_old_name_as_an_alias():
    from cxrlib.config import make_config

    assert make_config("seed").preset == "original"  # an older config or checkpoint still loads
    assert make_config("seed").to_dict() == make_config("original").to_dict()
    G_old, _ = build_models("seed", 32)
    G_new, _ = build_models("original", 32)
    assert [p.shape for p in G_old.parameters()] == [p.shape for p in G_new.parameters()]
