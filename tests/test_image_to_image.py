"""The image-to-image families on the shared engine: Pix2Pix (masks → X-ray) and CycleGAN (normal ↔ pneumonia)."""

from __future__ import annotations

import json

import pytest
import torch

from cxrlib import cli, metrics, models, translation
from cxrlib.config import make_config
from cxrlib.cyclegan import ImagePool, cycle_l1, cycle_loss
from cxrlib.data import load_dataset
from cxrlib.errors import CxrError
from cxrlib.phantom import MASK_NAMES, write_phantoms
from cxrlib.pix2pix import Pix2Pix, mask_picture
from cxrlib.train import Trainer, load_checkpoint
from cxrlib.translation import load_translator, translate, translate_folder

SMALL = dict(size=32, width=0.25, log_every=1, sample_every=1000, checkpoint_every=1000, amp="off")


@pytest.fixture(scope="module")
def pairs():
    return load_dataset("phantom", size=32, n=24, seed=3, masks=True)


def _weights(module):
    return torch.cat([p.detach().flatten().clone() for p in module.parameters()])


# ----------------------------------------------------------------------------------------------- networks
def test_patchgan_receptive_field_is_the_papers_70_at_three_layers_and_scales_with_the_image():
    assert models.receptive_field(models.PatchDiscriminator(2, n_layers=3)) == 70
    assert models.receptive_field(models.PatchDiscriminator(2, n_layers=1)) == 16
    assert [models.patch_layers(s) for s in (64, 128, 256, 512)] == [1, 2, 3, 4]
    # the field is what one logit actually depends on: the extent of its input gradient
    for n in (1, 2):
        D = models.PatchDiscriminator(1, ndf=4, n_layers=n, norm="none")
        x = torch.randn(1, 1, 96, 96, requires_grad=True)
        y = D(x)
        y[0, 0, y.shape[2] // 2, y.shape[3] // 2].backward()
        rows = (x.grad[0, 0].abs().sum(1) > 0).nonzero().flatten()
        assert rows.max() - rows.min() + 1 == models.receptive_field(D)


def test_unet_keeps_the_size_and_its_skips_carry_the_input():
    G = models.UNetGenerator(4, 32, ngf=8).eval()
    x = torch.randn(2, 4, 32, 32)
    assert G(x).shape == (2, 1, 32, 32) and G.z_dim == 0
    assert len(G.down) == 5  # 32 px → 1×1
    # a change in one input pixel changes the output mostly near that pixel (the skip path), not everywhere
    x2 = x.clone()
    x2[:, :, 2, 2] += 5.0
    diff = (G(x2) - G(x)).abs()[0, 0]
    assert diff[:6, :6].mean() > 3 * diff[16:, 16:].mean()


def test_resnet_generator_shape():
    G = models.ResnetGenerator(1, 1, ngf=8, n_blocks=2)
    assert G(torch.randn(2, 1, 32, 32)).shape == (2, 1, 32, 32)


def test_mask_picture_draws_each_structure_in_its_shade():
    m = torch.zeros(1, 2, 4, 4, dtype=torch.uint8)
    m[0, 0, 0, 0] = 255
    m[0, 1, 1, 1] = 255
    pic = mask_picture(m, ["lungs", "heart"])
    assert pic.shape == (1, 1, 4, 4)
    assert pic[0, 0, 0, 0] == pytest.approx(0.35 * 2 - 1) and pic[0, 0, 1, 1] == pytest.approx(0.6 * 2 - 1)
    assert pic[0, 0, 3, 3] == -1


# ----------------------------------------------------------------------------------------------- pix2pix
def test_pix2pix_config_takes_the_structures_from_the_data(pairs):
    t = Trainer(make_config("pix2pix", steps=1, **SMALL), pairs)
    assert t.cfg.structures == MASK_NAMES
    assert t.G.in_channels == 4 and t.D.in_channels == 5


def test_pix2pix_needs_masks():
    plain = load_dataset("phantom", size=32, n=8, seed=0)
    with pytest.raises(CxrError, match="no masks"):
        Trainer(make_config("pix2pix", steps=1, **SMALL), plain)


def test_image_to_image_preset_and_family_go_together():
    with pytest.raises(CxrError, match="same name"):
        make_config("course", family="pix2pix")
    with pytest.raises(CxrError, match="same name"):
        make_config("pix2pix", family="unconditional")


def test_pix2pix_learns_the_image_from_the_masks(pairs):
    t = Trainer(make_config("pix2pix", steps=40, seed=1, **SMALL), pairs)
    recs = t.fit(progress=False)
    assert recs[-1]["l1"] < 0.6 * recs[0]["l1"]
    assert recs[-1]["g_loss"] == pytest.approx(recs[-1]["g_gan"] + 100 * recs[-1]["l1"], rel=1e-4)


def test_pix2pix_g_step_trains_on_the_pair_the_d_step_drew(pairs):
    t = Trainer(make_config("pix2pix", steps=1, **SMALL), pairs)
    t.d_step()
    real, masks = t.family._pair
    state = t.rng.get_state()
    t.g_step()
    assert torch.equal(t.rng.get_state(), state)  # no new batch was drawn
    assert t.family._pair is None


def test_l1_only_ablation_leaves_d_untouched(pairs):
    t = Trainer(make_config("pix2pix", steps=3, gan_weight=0.0, **SMALL), pairs)
    d0, g0 = _weights(t.D), _weights(t.G)
    recs = t.fit(progress=False)
    assert torch.equal(_weights(t.D), d0) and not torch.equal(_weights(t.G), g0)
    assert recs[-1]["g_gan"] == 0 and recs[-1]["g_loss"] == pytest.approx(100 * recs[-1]["l1"], rel=1e-5)


def test_pix2pix_resumes_exactly(tmp_path, pairs):
    cfg = make_config("pix2pix", steps=4, **SMALL)
    a = Trainer(cfg, pairs, out=tmp_path / "a")
    a.fit(progress=False)
    a.fit(steps=2, progress=False)
    Trainer(cfg, pairs, out=tmp_path / "b").fit(progress=False)
    b = Trainer.resume(tmp_path / "b", pairs)
    b.fit(steps=2, progress=False)
    assert torch.equal(_weights(a.G), _weights(b.G)) and torch.equal(_weights(a.D), _weights(b.D))


def test_pix2pix_samples_are_strips_and_it_cannot_sample_from_z(tmp_path, pairs):
    t = Trainer(make_config("pix2pix", steps=1, **SMALL), pairs, out=tmp_path / "run")
    grid, nrow = t.family.sample_grid()
    assert nrow == 3 and grid.shape == (24, 1, 32, 32)
    assert torch.equal(grid[2::3], t.images_at(t.family.grid_idx))  # the third column is the true image
    with pytest.raises(CxrError, match="translate"):
        t.sample(4)


# ----------------------------------------------------------------------------------------------- cyclegan
def test_image_pool_fills_then_swaps_half():
    g = torch.Generator().manual_seed(0)
    pool = ImagePool(4, g)
    first = torch.arange(4.0).reshape(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first)  # filling: the fakes themselves
    new = torch.arange(100.0, 500.0).reshape(400, 1, 1, 1)
    out = pool.query(new)
    swapped = out != new
    assert 150 < swapped.sum().item() < 250  # each swapped for a stored one with probability 1/2
    assert set(out[swapped].tolist()) <= set(range(4)) | set(range(100, 500))  # only earlier fakes come back
    assert (out[swapped][:1] < 4).all() and len(pool.images) == 4
    assert torch.equal(ImagePool(0).query(first), first)


def test_cycle_loss_is_the_l1_of_the_round_trips():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(3, 1, 8, 8, generator=g) * 2 - 1, torch.rand(3, 1, 8, 8, generator=g) * 2 - 1
    g_ab, g_ba = (lambda x: torch.tanh(x + 0.3)), (lambda x: 0.5 * x)
    want = (g_ba(g_ab(a)) - a).abs().mean() + (g_ab(g_ba(b)) - b).abs().mean()
    assert torch.equal(cycle_loss(a, b, g_ab, g_ba), want)
    assert torch.equal(cycle_l1(a, g_ba(g_ab(a)), b, g_ab(g_ba(b))), want)
    assert cycle_l1(a, a.bfloat16().float(), b, b).dtype == torch.float32


def test_cyclegan_domains_default_to_the_two_classes_sorted(pairs):
    t = Trainer(make_config("cyclegan", steps=1, **SMALL), pairs)
    assert t.cfg.domains == ("normal", "pneumonia")
    assert set(t.G.keys()) == {"a2b", "b2a"} and set(t.D.keys()) == {"a", "b"}
    a, b = t.family.real_batch(8)
    labels_a = set(t.labels[t.family.idx["a"]].tolist())
    assert labels_a == {0} and a.shape == b.shape == (8, 1, 32, 32)


def test_cyclegan_unknown_domain_is_one_line(pairs):
    with pytest.raises(CxrError, match="not a class"):
        Trainer(make_config("cyclegan", steps=1, domains=("normal", "covid"), **SMALL), pairs)


def test_cyclegan_trains_cycle_down_and_decays_lr_in_the_second_half(pairs):
    t = Trainer(make_config("cyclegan", steps=20, seed=2, batch=4, **SMALL), pairs)
    recs = t.fit(progress=False)
    assert recs[-1]["cycle"] < recs[0]["cycle"]
    lrs = [r["g_lr"] for r in recs]
    assert lrs[9] == pytest.approx(2e-4) and lrs[14] == pytest.approx(2e-4 * (20 - 14) / 10)
    assert lrs[-1] == pytest.approx(2e-4 * (20 - 19) / 10)
    assert recs[-1]["g_loss"] == pytest.approx(recs[-1]["g_gan"] + 10 * recs[-1]["cycle"] + 5 * recs[-1]["identity"],
                                               rel=1e-4)


def test_cyclegan_resumes_exactly_with_its_pools(tmp_path, pairs):
    cfg = make_config("cyclegan", steps=3, pool_size=5, **SMALL)
    a = Trainer(cfg, pairs, out=tmp_path / "a")
    a.fit(progress=False)
    a.fit(steps=2, progress=False)
    Trainer(cfg, pairs, out=tmp_path / "b").fit(progress=False)
    assert len(load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["family"]["pool_a"]["images"]) == 5
    b = Trainer.resume(tmp_path / "b", pairs)
    b.fit(steps=2, progress=False)
    assert torch.equal(_weights(a.G), _weights(b.G)) and torch.equal(_weights(a.D), _weights(b.D))


def test_cyclegan_identity_weight_zero_skips_the_identity_loss(pairs):
    t = Trainer(make_config("cyclegan", steps=1, identity_weight=0.0, **SMALL), pairs)
    assert t.g_step()["identity"] == 0


# ----------------------------------------------------------------------------------------------- translate
@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ph") / "data"
    write_phantoms(root, 10, size=32, seed=5, masks=True)
    return root


def _listing(root):
    return sorted((str(p.relative_to(root)), p.stat().st_mtime_ns) for p in root.rglob("*"))


def test_cli_pix2pix_train_and_translate_names_outputs_after_the_images(tmp_path, phantom_dir, capsys):
    before = _listing(phantom_dir)
    run = tmp_path / "run"
    assert cli.main(["train", "--family", "pix2pix", "--data", str(phantom_dir), "--out", str(run), "--size", "32",
                     "--steps", "2", "--quiet", "--set", "width=0.25"]) == 0
    assert json.loads((run / "config.json").read_text())["structures"] == list(MASK_NAMES)
    dst = tmp_path / "out"
    assert cli.main(["translate", "--ckpt", str(run), "--src", str(phantom_dir), "--dst", str(dst)]) == 0
    images = sorted(str(p.relative_to(phantom_dir)) for p in phantom_dir.glob("*/*.png") if p.parts[-2] != "masks")
    images = [p for p in images if not p.startswith("masks")]
    assert sorted(str(p.relative_to(dst)) for p in dst.rglob("*.png")) == images
    assert _listing(phantom_dir) == before  # the source is never written to
    assert "masks (lungs, heart, ribs, clavicles) → X-ray" in capsys.readouterr().out


def test_translate_refuses_a_mask_folder_without_a_trained_structure(tmp_path, phantom_dir, capsys):
    run = tmp_path / "run"
    cli.main(["train", "--family", "pix2pix", "--data", str(phantom_dir), "--out", str(run), "--size", "32",
              "--steps", "1", "--quiet", "--set", "width=0.25"])
    src = tmp_path / "src"
    (src / "masks").mkdir(parents=True)
    for k in ("lungs", "heart"):
        (src / "masks" / k).symlink_to(phantom_dir / "masks" / k)
    capsys.readouterr()
    assert cli.main(["translate", "--ckpt", str(run), "--src", str(src), "--dst", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'ribs'" in err


def test_cli_cyclegan_translates_a_folder_both_ways(tmp_path, phantom_dir):
    run = tmp_path / "cyc"
    assert cli.main(["train", "--family", "cyclegan", "--data", str(phantom_dir), "--out", str(run), "--size", "32",
                     "--steps", "2", "--quiet", "--set", "width=0.125"]) == 0
    G, cfg = load_translator(run)
    assert cfg.domains == ("normal", "pneumonia")
    src = phantom_dir / "normal"
    for direction in ("a2b", "b2a"):
        dst = tmp_path / direction
        msg = translate_folder(run, src, dst, direction)
        assert ("normal → pneumonia" if direction == "a2b" else "pneumonia → normal") in msg
        assert sorted(p.name for p in dst.glob("*.png")) == sorted(p.name for p in src.glob("*.png"))
    x = torch.randint(0, 256, (3, 1, 32, 32), dtype=torch.uint8)
    assert translate(G, cfg, x).dtype == torch.uint8


def test_translate_and_sample_refuse_the_other_kind_of_checkpoint(tmp_path, pairs, capsys):
    uncond = Trainer(make_config("dcgan", size=32, steps=1, width=0.125, amp="off"),
                     load_dataset("phantom", size=32, n=8, seed=0), out=tmp_path / "u")
    uncond.fit(progress=False)
    assert cli.main(["translate", "--ckpt", str(tmp_path / "u"), "--src", str(tmp_path / "u"),
                     "--dst", str(tmp_path / "x")]) == 2
    assert "draws images from noise" in capsys.readouterr().err
    p2p = Trainer(make_config("pix2pix", steps=1, **SMALL), pairs, out=tmp_path / "p")
    p2p.fit(progress=False)
    assert cli.main(["sample", "--ckpt", str(tmp_path / "p"), "--n", "2", "--out", str(tmp_path / "s")]) == 2
    assert "translate" in capsys.readouterr().err


def test_cli_flags_of_one_family_are_refused_for_another(tmp_path, phantom_dir, capsys):
    assert cli.main(["train", "--data", str(phantom_dir), "--out", str(tmp_path / "r"), "--domains", "a,b",
                     "--steps", "1"]) == 2
    assert "cyclegan" in capsys.readouterr().err
    assert cli.main(["train", "--family", "pix2pix", "--conditional", "--data", "phantom",
                     "--out", str(tmp_path / "r2"), "--steps", "1"]) == 2
    assert "contradict" in capsys.readouterr().err


def test_pix2pix_translation_apply_matches_the_trainer(pairs):
    t = Trainer(make_config("pix2pix", steps=2, **SMALL), pairs)
    t.fit(progress=False)
    out = Pix2Pix.apply(t.G, pairs.masks[:3])
    assert out.shape == (3, 1, 32, 32) and torch.allclose(out, t.family.translate(pairs.masks[:3]))


def test_pix2pix_translates_a_folder_of_masks_alone(tmp_path, phantom_dir, pairs):
    t = Trainer(make_config("pix2pix", steps=1, **SMALL), pairs, out=tmp_path / "p")
    t.fit(progress=False)
    src = tmp_path / "only_masks"
    (src / "masks").mkdir(parents=True)
    for k in MASK_NAMES:
        (src / "masks" / k).symlink_to(phantom_dir / "masks" / k)
    msg = translate_folder(tmp_path / "p", src, tmp_path / "o")
    stems = sorted(p.stem for p in (phantom_dir / "masks" / "lungs").glob("*.png"))
    assert sorted(p.stem for p in (tmp_path / "o").rglob("*.png")) == stems and "translated 10" in msg


# ----------------------------------------------------------------------------------------------- evaluation
def test_pixel_linear_baseline_recovers_an_image_that_is_linear_in_the_masks(pairs):
    w = torch.tensor([40.0, 80.0, 30.0, 20.0])
    truth = (10 + (pairs.masks.float() / 255 * w.view(1, 4, 1, 1)).sum(1, keepdim=True)).round().to(torch.uint8)
    pred = translation.pixel_linear_baseline(pairs.masks[:16], truth[:16], pairs.masks[16:])
    assert pred.dtype == torch.uint8 and pred.shape == truth[16:].shape
    # pixels where the training pairs vary enough to fit all weights are reproduced exactly
    assert (pred.int() - truth[16:].int()).abs().float().mean() < 2.0


def test_nearest_anatomy_baseline_returns_the_training_film_with_the_closest_masks(pairs):
    train_m, train_x = pairs.masks[:16], pairs.images[:16]
    # a query equal to training patient 5's masks except a few flipped pixels still finds patient 5
    q = train_m[[5, 11]].clone()
    q[:, 0, :2, :3] = 255 - q[:, 0, :2, :3]
    pred = translation.nearest_anatomy_baseline(train_m, train_x, q, chunk=1)
    assert torch.equal(pred, train_x[[5, 11]])
    other = translation.nearest_anatomy_baseline(train_m, train_x, pairs.masks[16:])
    assert other.shape == pairs.images[16:].shape and other.dtype == torch.uint8
    assert all(any(torch.equal(o, x) for x in train_x) for o in other)  # every answer is a real training film
    with pytest.raises(CxrError, match="cannot be matched"):
        translation.nearest_anatomy_baseline(train_m, train_x, train_m[:, :2])


def test_evaluate_pix2pix_scores_the_true_image_perfectly_and_the_baselines_below(pairs):
    class Oracle(torch.nn.Module):  # "translates" by looking the true image up
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))  # a device to run on

        def forward(self, x):
            hit = (pairs.masks.float() / 127.5 - 1 - x[:, None]).abs().flatten(2).sum(2).argmin(1)
            return pairs.images[hit].float() / 127.5 - 1

    cfg = make_config("pix2pix", size=32, structures=MASK_NAMES)
    scores = translation.evaluate_pix2pix(Oracle(), cfg, pairs, pairs, extra={"blank": torch.zeros_like(pairs.images)})
    assert scores["pix2pix"]["corr"] > 0.999 and scores["pix2pix"]["l1"] < 1e-3
    assert scores["mean image"]["dev_corr"] == pytest.approx(0.0, abs=0.01)  # the mean rounded to uint8
    assert scores["linear model"]["corr"] < scores["pix2pix"]["corr"]
    assert scores["nearest anatomy"]["corr"] > 0.999  # test = train here: the nearest anatomy is the patient's own film
    assert scores["blank"]["corr"] == 0.0 and scores["blank"]["l1"] > 0.1  # an extra prediction is scored too


def test_ideal_translations_fit_the_masks_and_average_into_a_blur():
    test = load_dataset("phantom", size=32, n=12, seed=21, masks=True)
    ideal = translation.ideal_translations(12, 32, 21, draws=6)
    assert set(ideal) == {"ideal sample", "ideal mean"}
    sample, mean = (metrics.paired_scores(ideal[k], test.images) for k in ("ideal sample", "ideal mean"))
    assert 0.5 < sample["corr"] < 0.99  # another film of the same anatomy: close, never the patient's own
    assert mean["corr"] > sample["corr"] + 0.02  # averaging the draws wins on correlation ...
    assert metrics.sharpness(ideal["ideal mean"]) < 0.8 * metrics.sharpness(ideal["ideal sample"])  # ... by blurring
    assert not torch.equal(translation.ideal_samples(12, 32, 21, 2)[1], ideal["ideal sample"])  # draws differ
    with pytest.raises(CxrError, match="draws must be at least 1"):
        translation.ideal_samples(4, 32, 21, 0)


def test_evaluate_cyclegan_of_an_identity_translation_changes_nothing():
    from cxrlib import phantom

    normals = load_dataset("phantom", size=32, n=6, seed=4, masks=True, pneumonia_fraction=0.0)
    twins = load_dataset("phantom", size=32, n=6, seed=4, masks=True, pneumonia_fraction=1.0)
    class Same(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))  # a device to run on

        def forward(self, x):
            return x

    G = torch.nn.ModuleDict({"a2b": Same(), "b2a": Same()})
    cfg = make_config("cyclegan", size=32, domains=("normal", "pneumonia"), classes=phantom.CLASSES)
    always_ill = lambda net, x: torch.ones(len(x))  # noqa: E731
    rep = translation.evaluate_cyclegan(G, cfg, normals, twins, None, judge_fn=always_ill)
    assert rep["outside_l1"] == pytest.approx(0, abs=1e-6) and rep["lung_change"] == pytest.approx(0, abs=1e-6)
    assert rep["twin_lung_change"] > 0 and rep["change_ratio"] == pytest.approx(0, abs=1e-6)
    assert rep["round_trip_l1"] == pytest.approx(0, abs=1e-6) and rep["judged pneumonia: translated"] == 1.0


def test_a_cpu_budget_trains_cyclegan_with_the_shipped_networks_and_a_gpu_with_the_papers(tmp_path, phantom_dir,
                                                                                          monkeypatch, capsys):
    """Issue 28, defaults that work: `train --family cyclegan` on a CPU trains what `make pretrained-cyclegan` does
    (width 0.25, U-Net G, ndf 128), says so in one line; a flag or --set wins field by field; a GPU keeps the paper's
    ResNet generators at full width; make_config never changes by machine."""
    from cxrlib import config

    shipped = {"width": 0.25, "model_kwargs": {"generator": "unet", "ndf": 128}}
    assert config.budget("cpu").recipe("cyclegan") == config.budget("smoke").recipe("cyclegan") == shipped
    assert config.budget("gpu").recipe("cyclegan") == {} and config.budget("cpu").recipe("course") == {}
    config.budget("cpu").recipe("cyclegan")["model_kwargs"]["ndf"] = 1  # a copy: the table stays as it is
    assert config.CPU_RECIPES["cyclegan"] == shipped
    assert (make_config("cyclegan").width, make_config("cyclegan").model_kwargs) == (1.0, {})

    def trained(kind, *flags):
        monkeypatch.setattr(config, "budget", lambda k=None, real=config.budget: real(k or kind))
        run = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        assert cli.main(["train", "--family", "cyclegan", "--data", str(phantom_dir), "--out", str(run), "--size",
                         "32", "--steps", "1", "--quiet", *flags]) == 0
        saved = json.loads((run / "config.json").read_text())
        return {k: saved[k] for k in shipped}, capsys.readouterr().out

    cfg, out = trained("cpu")
    assert cfg == shipped and "cpu budget: preset 'cyclegan' with its CPU networks" in out
    assert "(the preset's own: --set 'width=1.0' --set 'model_kwargs={}')" in out
    assert trained("cpu", "--set", "width=0.125")[0] == {**shipped, "width": 0.125}
    cfg, out = trained("cpu", "--set", "width=1", "--set", "model_kwargs={}")
    assert cfg == {"width": 1, "model_kwargs": {}} and "CPU networks" not in out
    cfg, out = trained("gpu", "--device", "cpu")
    assert cfg == {"width": 1.0, "model_kwargs": {}} and "CPU networks" not in out
