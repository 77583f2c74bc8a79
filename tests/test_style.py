"""The style-based generator (mapping network, modulated convolutions, noise, mixing, truncation), the
relativistic pairing loss with R1 + R2, the ``style`` and ``modern`` presets, and ``sample --truncation/--mix-*``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cxrlib import config, losses
from cxrlib.cli import main
from cxrlib.config import make_config
from cxrlib.errors import CxrError
from cxrlib.models import build_models
from cxrlib.models.style import (
    ModulatedConv2d,
    StyleGenerator,
    mix,
    parse_layers,
    style_layer_groups,
    truncate,
)
from cxrlib.train import Trainer

TINY = ["--set", "width=0.25", "--set", "amp=\"off\"", "--quiet"]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("CXRLIB_SMOKE", "1")
    monkeypatch.setattr(config, "set_threads", lambda n=None: torch.set_num_threads(1) or 1)


def small_G(size=32, **kw) -> StyleGenerator:
    torch.manual_seed(0)
    return StyleGenerator(size, width=0.25, w_dim=32, z_dim=16, **kw)


# ----------------------------------------------------------------------------------------------- the network


@pytest.mark.parametrize("size, num_ws", [(32, 8), (64, 10), (128, 12)])
def test_every_size_draws_images_in_range_with_one_style_per_layer(size, num_ws):
    G = small_G(size).eval()
    x = G(torch.randn(3, 16))
    assert x.shape == (3, 1, size, size) and x.abs().max() <= 1
    assert G.num_ws == num_ws == len(G.layer_resolutions) and G.layer_resolutions[0] == 4
    assert G.layer_resolutions[-1] == size and list(G.layer_resolutions) == sorted(G.layer_resolutions)
    groups = style_layer_groups(G)
    assert sorted(sum(groups.values(), [])) == list(range(num_ws)) and groups["coarse"] == [0, 1, 2]


def test_demodulation_makes_the_output_independent_of_the_style_scale():
    torch.manual_seed(0)
    conv = ModulatedConv2d(4, 6, 3, w_dim=8)
    x, w = torch.randn(2, 4, 8, 8), torch.randn(2, 8)
    a = conv(x, w)
    with torch.no_grad():
        conv.affine.weight.mul_(5)
        conv.affine.bias.mul_(5)  # s → 5·s
    assert torch.allclose(conv(x, w), a, atol=1e-4)
    conv.demodulate = False
    assert not torch.allclose(conv(x, w), a, atol=1e-2)  # without demodulation the scale passes through


def test_the_fast_form_equals_modulating_the_weights_per_sample():
    torch.manual_seed(1)
    conv = ModulatedConv2d(3, 5, 3, w_dim=4)
    x, w = torch.randn(2, 3, 6, 6), torch.randn(2, 4)
    s = conv.affine(w)
    ref = []
    for i in range(2):  # the paper's form: weights scaled by s, each output channel normalised
        wi = conv.weight * s[i][None, :, None, None]
        wi = wi / wi.pow(2).sum((1, 2, 3), keepdim=True).add(1e-8).sqrt()
        ref.append(F.conv2d(x[i:i + 1], wi, conv.bias, padding=1))
    assert torch.allclose(conv(x, w), torch.cat(ref), atol=1e-5)


def test_eval_noise_is_fixed_and_random_noise_changes_only_with_a_learned_strength():
    G = small_G().eval()
    z = torch.randn(2, 16)
    assert torch.equal(G(z), G(z))  # const noise: a seed is an image
    assert torch.allclose(G(z, noise_mode="random"), G(z), atol=1e-6)  # strengths start at 0
    with torch.no_grad():
        for layer in G.layers:
            layer.noise_strength.fill_(0.5)
    assert not torch.allclose(G(z, noise_mode="random"), G(z, noise_mode="random"))
    assert not torch.allclose(G(z, noise_mode="none"), G(z))  # the stored maps now add detail


def test_w_avg_follows_w_in_training_only_and_truncation_pulls_toward_it():
    G = small_G(mixing_prob=0.0)
    z = torch.randn(64, 16)
    G.train()
    G(z)
    assert G.w_avg.abs().sum() > 0
    before = G.w_avg.clone()
    G.eval()
    G(z)
    assert torch.equal(G.w_avg, before)
    w = G.mapping(z)
    assert torch.equal(truncate(G, w, 1.0), w)
    half = truncate(G, w, 0.5)
    assert torch.allclose(half - G.w_avg, 0.5 * (w - G.w_avg), atol=1e-6)
    with pytest.raises(CxrError, match=r"\(0, 1\]"):
        truncate(G, w, 0.0)
    spread = [G.synthesis(G.ws(z[:16], psi)).std(0).mean() for psi in (1.0, 0.2)]
    assert spread[1] < spread[0]  # a truncated batch varies less


def test_style_mixing_regularisation_mixes_two_latents_in_training():
    z = torch.randn(4, 16)
    G = small_G(mixing_prob=1.0).train()
    torch.manual_seed(3)
    ws = G.ws(z)
    assert not torch.allclose(ws[:, 0], ws[:, -1])  # the last layers come from a second latent
    G.mixing_prob = 0.0
    ws = G.ws(z)
    assert torch.equal(ws[:, 0], ws[:, -1])
    G = small_G(mixing_prob=1.0).eval()
    ws = G.ws(z)
    assert torch.equal(ws[:, 0], ws[:, -1])  # never when drawing samples


def test_mix_takes_the_named_layers_from_b():
    G = small_G().eval()
    w_a, w_b = G.mapping(torch.randn(2, 16)), G.mapping(torch.randn(2, 16))
    all_b = mix(G, w_a, w_b, range(G.num_ws))
    assert torch.allclose(all_b, G.synthesis(w_b[:, None].expand(-1, G.num_ws, -1)), atol=1e-6)
    coarse = mix(G, w_a, w_b, "0-2")
    a = G.synthesis(w_a[:, None].expand(-1, G.num_ws, -1))
    assert not torch.allclose(coarse, a) and not torch.allclose(coarse, all_b)
    assert parse_layers("0-2,5", 8) == [0, 1, 2, 5]
    with pytest.raises(CxrError, match="8 style layers, 0-7"):
        parse_layers("6-9", 8)
    with pytest.raises(CxrError, match="no mapping network"):
        mix(build_models("course", 32, width=0.25)[0], w_a, w_b, [0])


def test_a_conditional_style_generator_keeps_the_class_when_mixing():
    torch.manual_seed(0)
    G, D = build_models("style", 32, width=0.25, n_classes=2)
    assert G.base.mapping.label_dim == G.embed.embedding_dim > 0
    y = torch.tensor([0, 1])
    x = G(torch.randn(2, G.z_dim), y)
    assert x.shape == (2, 1, 32, 32) and D(x, y).shape == (2,)


# ----------------------------------------------------------------------------------------------- losses


def test_rpgan_is_bce_on_the_paired_difference_and_takes_the_seed_tricks():
    r, f = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([1.0, 1.0, -3.0])
    d, stats = losses.d_loss_rpgan(r, f)
    assert d == pytest.approx(F.softplus(-(r - f)).mean().item())
    assert stats["d_loss_fake"] == 0
    g, _ = losses.g_loss_rpgan(f, r)
    assert g == pytest.approx(F.softplus(-(f - r)).mean().item())
    smooth, _ = losses.d_loss_rpgan(r, f, label_smoothing=0.2)
    assert smooth == pytest.approx(F.binary_cross_entropy_with_logits(r - f, torch.full((3,), 0.9)).item())
    gen = torch.Generator().manual_seed(0)
    flipped, _ = losses.d_loss_rpgan(r, f, flip_prob=0.49, generator=gen)
    assert flipped != pytest.approx(d.item())
    with pytest.raises(CxrError, match="as many fakes as reals"):
        losses.d_loss_rpgan(r, f[:2])


def test_r2_penalises_the_gradient_on_fakes():
    x = torch.randn(3, 1, 4, 4, requires_grad=True)
    assert torch.allclose(losses.r2_penalty((2 * x).flatten(1).sum(1), x), torch.full((3,), 4.0 * 16))
    with pytest.raises(CxrError, match="requires_grad"):
        losses.r2_penalty(x.sum((1, 2, 3)), x.detach())


# ----------------------------------------------------------------------------------------------- presets


def test_the_modern_preset_is_the_course_networks_with_rpgan_r1_r2_and_no_tricks():
    m, c = make_config("modern"), make_config("course")
    assert (m.loss, m.r2_gamma, m.r1_gamma, m.label_smoothing, m.flip_prob, m.g_betas[0]) == ("rpgan", 0.1, 0.1, 0, 0, 0)
    assert m.ema_half_life_kimg > 0
    diff = {k for k, v in m.to_dict().items() if c.to_dict()[k] != v}
    assert diff == {"preset", "loss", "r2_gamma"}
    G, _ = build_models("modern", 32)
    assert type(G).__name__ == "SkipGenerator"
    with pytest.raises(CxrError, match="BCE and RpGAN"):
        Trainer(make_config("course", loss="hinge", label_smoothing=0.1), torch.zeros(4, 1, 64, 64, dtype=torch.uint8))
    with pytest.raises(CxrError, match="relativistic"):
        make_config("pix2pix", loss="rpgan")


@pytest.mark.parametrize("preset", ["style", "modern"])
def test_style_and_modern_train_and_resume_exactly(tmp_path, preset):
    imgs = torch.randint(0, 256, (40, 1, 32, 32), dtype=torch.uint8)
    cfg = make_config(preset, size=32, batch=8, steps=4, width=0.25, amp="off", r1_every=2, log_every=2,
                      sample_every=10**6, checkpoint_every=2)
    t = Trainer(cfg, imgs, out=tmp_path / "a")
    t.fit(progress=False)
    log = [json.loads(x) for x in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["d_loss"]) and np.isfinite(r["g_loss"]) for r in log)
    if preset == "modern":
        assert all(r["r2"] > 0 for r in log)
    r = Trainer.resume(tmp_path / "a" / "checkpoints" / "step_000002.pt", imgs, out=tmp_path / "b")
    r.fit(progress=False)
    for p, q in zip(t.G.state_dict().values(), r.G.state_dict().values()):
        assert torch.equal(p, q)


# ----------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def style_run(tmp_path):
    root = tmp_path / "data" / "normal"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(root / f"im{i:02d}.png")
    run_dir = tmp_path / "style"
    assert main(["train", "--data", str(root.parent), "--out", str(run_dir), "--preset", "style", "--size", "32",
                 "--steps", "2", "--batch", "4", *TINY]) == 0
    return run_dir


def test_sample_with_truncation_and_mixing(tmp_path, style_run, capsys):
    pics = {}
    for name, extra in [("plain", []), ("trunc", ["--truncation", "0.5"]),
                        ("mixed", ["--mix-seed", "7", "--mix-layers", "0-2"])]:
        out = tmp_path / name
        assert main(["sample", "--ckpt", str(style_run), "--n", "3", "--out", str(out), *extra]) == 0
        pics[name] = np.stack([np.array(Image.open(out / f"sample_{i:05d}.png")) for i in range(3)])
    text = capsys.readouterr().out
    assert "truncation ψ=0.5" in text and "style layers 0-2 from seed 7" in text
    assert not np.array_equal(pics["plain"], pics["trunc"]) and not np.array_equal(pics["plain"], pics["mixed"])


@pytest.mark.parametrize("extra, message", [
    (["--truncation", "1.5"], "(0, 1]"),
    (["--mix-seed", "1", "--mix-layers", "0-99"], "style layers"),
    (["--mix-layers", "0-2"], "needs --mix-seed"),
])
def test_bad_style_options_are_one_line(tmp_path, style_run, capsys, extra, message):
    assert main(["sample", "--ckpt", str(style_run), "--n", "1", "--out", str(tmp_path / "s"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err


def test_truncation_of_a_generator_without_mapping_network_is_one_line(tmp_path, capsys):
    assert main(["sample", "--ckpt", "pretrained", "--n", "1", "--out", str(tmp_path / "s"), "--truncation", "0.7"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no mapping network" in err and "\n" not in err
    assert not (tmp_path / "s").exists()


def test_a_conditional_style_run_samples_a_class_with_truncation_and_mixing(tmp_path, capsys):
    rng = np.random.default_rng(1)
    for cls in ("normal", "pneumonia"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(tmp_path / "data" / cls / f"{i}.png")
    run_dir = tmp_path / "cond"
    assert main(["train", "--data", str(tmp_path / "data"), "--out", str(run_dir), "--preset", "style",
                 "--conditional", "--size", "32", "--steps", "2", "--batch", "4", *TINY]) == 0
    pics = []
    for extra in ([], ["--truncation", "0.5", "--mix-seed", "3"]):
        out = tmp_path / f"s{len(extra)}"
        assert main(["sample", "--ckpt", str(run_dir), "--n", "2", "--class", "pneumonia", "--out", str(out),
                     *extra]) == 0
        pics.append(np.array(Image.open(out / "sample_00000.png")))
    assert "class pneumonia, truncation ψ=0.5, style layers 0-2 from seed 3" in capsys.readouterr().out
    assert not np.array_equal(*pics)


def test_modulated_weights_is_the_per_sample_form_the_layer_computes_fast():
    from cxrlib.models.style import modulated_weights

    torch.manual_seed(2)
    conv = ModulatedConv2d(3, 4, 3, w_dim=5)
    x, w = torch.randn(2, 3, 6, 6), torch.randn(2, 5)
    s = conv.affine(w)
    weights = modulated_weights(conv.weight, s)  # (B, C_out, C_in, k, k)
    assert weights.shape == (2, 4, 3, 3, 3)
    assert torch.allclose(weights.pow(2).sum((2, 3, 4)), torch.ones(2, 4), atol=1e-5)  # unit norm per output
    grouped = F.conv2d(x.reshape(1, 6, 6, 6), weights.reshape(8, 3, 3, 3), padding=1, groups=2).reshape(2, 4, 6, 6)
    assert torch.allclose(grouped + conv.bias[None, :, None, None], conv(x, w), atol=1e-5)
    plain = modulated_weights(conv.weight, s, demodulate=False)
    assert torch.allclose(plain[1, :, 2], conv.weight[:, 2] * s[1, 2], atol=1e-6)


def test_truncate_toward_is_the_lerp_to_w_avg():
    from cxrlib.models.style import truncate_toward

    w, w_avg = torch.randn(3, 2, 4), torch.randn(4)
    assert torch.allclose(truncate_toward(w, w_avg, 0.0), w_avg.expand(3, 2, 4))
    assert torch.allclose(truncate_toward(w, w_avg, 0.25), w_avg + 0.25 * (w - w_avg), atol=1e-6)


def test_mixing_effect_measures_what_a_group_of_layers_takes_from_b():
    """Swapping every layer gives parent B itself (share 1, layout from B in every pair); swapping none of them
    changes nothing; a conditional generator is refused with a one-line pointer."""
    from cxrlib.models.style import mixing_effect

    torch.manual_seed(0)
    G = StyleGenerator(32, width=0.25).eval()
    out = mixing_effect(G, n=8, groups={"all": list(range(G.num_ws)), "first": [0]})
    assert out["all"]["share"] == pytest.approx(1.0, abs=1e-5) and out["all"]["layout_from_b"] == 1.0
    assert out["all"]["change"] == pytest.approx(out["parents"]["change"], rel=1e-5)
    assert 0 < out["first"]["share"] < 1
    with pytest.raises(CxrError, match="unconditional"):
        mixing_effect(build_models("style", 32, n_classes=2, width=0.25)[0], n=2)


def test_truncation_sweep_and_the_explorer_pull_images_together_as_psi_falls():
    from cxrlib import widgets
    from cxrlib.models.style import truncation_sweep

    torch.manual_seed(0)
    G = StyleGenerator(32, width=0.25)
    with torch.no_grad():
        G.w_avg.copy_(G.mapping(torch.randn(256, G.z_dim)).mean(0))
    real = torch.randint(0, 256, (16, 1, 32, 32), dtype=torch.uint8)
    rows = truncation_sweep(G, real, psis=(0.1, 1.0), n=16, n_pairs=40)
    assert [r["psi"] for r in rows] == [0.1, 1.0] and G.training  # mode restored
    assert rows[0]["ms_ssim"] > rows[1]["ms_ssim"]
    assert rows[0]["ms_ssim_seeds"] == [rows[0]["ms_ssim"]] and len(rows[1]["swd_seeds"]) == 1  # one seed
    assert "judged" not in rows[0]
    # a judge that calls an image "bright" when its mean is above the median of its batch: the share it reports
    # is the share of images it gives at least 0.5, per seed, and their mean over the two seeds
    judged = truncation_sweep(G, real, psis=(0.1, 1.0), n=16, n_pairs=40, seeds=(0, 1),
                              judge=lambda x: (x.mean((1, 2, 3)) > x.mean((1, 2, 3)).median()).float())
    for r in judged:
        assert len(r["judged_seeds"]) == 2 and all(0 <= v <= 1 for v in r["judged_seeds"])
        assert r["judged"] == pytest.approx(sum(r["judged_seeds"]) / 2)
        assert r["judged"] == pytest.approx(8 / 16)  # torch's median of 16 is the lower middle value: 8 lie above it
    assert truncation_sweep(G, real, psis=(1.0,), n=8, n_pairs=10, judge=lambda x: torch.ones(len(x)))[0]["judged"] == 1
    views = widgets.truncation_views(G, 0.1, n=4), widgets.truncation_views(G, 1.0, n=4)
    assert views[0].shape == (4, 1, 32, 32) and views[0].std(0).mean() < views[1].std(0).mean()
    box = widgets.truncation_explorer(G, n=3)
    slider, image = box.children
    first = image.value
    slider.value = 0.3
    assert image.value[:4] == b"\x89PNG" and image.value != first


def test_path_lengths_and_noise_share_measure_the_generator():
    """A W path is measured in W (lerp), a Z path in Z (slerp) then mapped; noise with zero strength changes
    nothing, and with a strength its share of the image's variation grows."""
    from cxrlib.models.style import noise_share, path_lengths

    torch.manual_seed(0)
    G = StyleGenerator(32, width=0.25)
    lengths = path_lengths(G, n=16)
    assert lengths["z"] > 0 and lengths["w"] > 0 and lengths["ends"] > 0
    assert set(lengths) == {"z", "w", "z_median", "w_median", "ends"}
    assert noise_share(G, n=4, draws=3)["noise_std"] == 0
    with torch.no_grad():
        for layer in G.layers:
            layer.noise_strength.fill_(1.0)
    assert noise_share(G, n=4, draws=3)["share"] > 0.1
