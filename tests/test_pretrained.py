"""The shipped pretrained generator: export, sha256 check, `--ckpt pretrained`, and what the shipped file samples."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cxrlib import assets, config, metrics, models, phantom
from cxrlib.config import make_config
from cxrlib.engine.sampling import draw_images
from cxrlib.errors import CxrError
from cxrlib.train import Trainer, export_pretrained, load_checkpoint, load_generator, to_uint8

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setattr(config, "set_threads", lambda n=None: torch.set_num_threads(1) or 1)


@pytest.fixture
def small_run(tmp_path):
    """A 3-step course run at 32 px with an EMA generator; returns its run directory."""
    data = torch.randint(0, 256, (16, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    cfg = make_config("course", size=32, batch=4, width=0.25, steps=3, log_every=1, amp="off")
    Trainer(cfg, data, out=tmp_path / "run").fit(progress=False)
    return tmp_path / "run"


@pytest.fixture
def shipped(monkeypatch, small_run, tmp_path):
    """Pretend the small run's export is the checkpoint shipped in cxrlib/assets."""
    dst = tmp_path / "assets" / "course_phantom_64.pt"
    export_pretrained(small_run, dst)
    monkeypatch.setattr(assets, "PRETRAINED", dst)
    return dst


def test_export_keeps_the_ema_generator_in_half_precision_with_its_sha256(small_run, tmp_path):
    dst = tmp_path / "out" / "g.pt"
    line = export_pretrained(small_run, dst)
    assert str(dst) in line and "sha256" in line
    full, small = load_checkpoint(small_run), load_checkpoint(dst)
    assert dst.stat().st_size < (small_run / "checkpoints" / "last.pt").stat().st_size / 2
    assert (tmp_path / "out" / "g.sha256").read_text().split() == [assets.sha256(dst), "g.pt"]
    for name, w in full["G_ema"].items():
        if w.is_floating_point():
            assert small["G_ema"][name].dtype == torch.float16
            assert torch.allclose(small["G_ema"][name].float(), w, atol=1e-2, rtol=1e-2), name
    G, cfg = load_generator(dst)
    assert cfg.size == 32 and G(torch.randn(2, G.z_dim)).shape == (2, 1, 32, 32)
    ft = Trainer.finetune(dst, torch.randint(0, 256, (16, 1, 32, 32), dtype=torch.uint8), steps=1)
    ft.fit(progress=False)  # fresh optimiser moments: the export needs none
    assert ft.step == full["step"] + 1


def test_export_refuses_a_run_without_ema(tmp_path):
    data = torch.randint(0, 256, (8, 1, 32, 32), dtype=torch.uint8)
    Trainer(make_config("dcgan", size=32, batch=4, steps=1), data, out=tmp_path / "run").fit(progress=False)
    with pytest.raises(CxrError, match="no EMA generator"):
        export_pretrained(tmp_path / "run", tmp_path / "g.pt")
    assert not (tmp_path / "g.pt").exists()


def test_pretrained_checkpoint_is_none_when_absent_or_altered(shipped, monkeypatch, tmp_path):
    assert assets.pretrained_checkpoint() == shipped
    assert load_checkpoint("pretrained")["config"]["size"] == 32
    with open(shipped, "ab") as f:  # one byte more: the sha256 no longer matches
        f.write(b"\0")
    assert assets.pretrained_checkpoint() is None
    with pytest.raises(CxrError, match="sha256 does not match"):
        load_checkpoint("pretrained")
    monkeypatch.setattr(assets, "PRETRAINED", tmp_path / "missing.pt")
    assert assets.pretrained_checkpoint() is None
    with pytest.raises(CxrError, match="not installed.*make pretrained"):
        load_generator("pretrained")


def test_cli_sample_ckpt_pretrained(shipped, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # "pretrained" is a name, not a folder here
    from cxrlib.cli import main

    assert main(["sample", "--ckpt", "pretrained", "--n", "3", "--out", "samples"]) == 0
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [f"sample_0000{i}.png" for i in range(3)]


# ------------------------------------------------------------------------------ the file in the repository
SHIPPED = assets.pretrained_checkpoint()
needs_shipped = pytest.mark.skipif(SHIPPED is None, reason="no pretrained checkpoint in cxrlib/assets")


def test_shipped_file_is_registered_as_package_data():
    text = (REPO / "pyproject.toml").read_text()
    assert 'cxrlib = ["assets/*"]' in text


@needs_shipped
def test_shipped_checkpoint_is_small_and_a_course_generator_at_64px():
    assert SHIPPED.stat().st_size <= 10 * 2**20
    state = load_checkpoint(SHIPPED)
    assert state["config"]["preset"] == "course" and state["config"]["size"] == 64
    assert state["config"]["ema_half_life_kimg"] > 0 and state["step"] >= 1000


@needs_shipped
def test_shipped_generator_samples_phantom_chest_xrays():
    """Its samples are far closer to new phantoms than an untrained generator's, and look like them on average."""
    torch.manual_seed(0)
    G, cfg = load_generator(SHIPPED, device="cpu")
    real = phantom.generate(256, size=64, seed=12345, workers=1).images  # new patients: a seed it never saw
    z = torch.randn(256, G.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fake = to_uint8(G(z))
        untrained, _ = models.build_models("course", 64)
        noise = to_uint8(untrained.eval()(z))
    d_fake = metrics.swd(real, fake)["avg"]
    d_noise = metrics.swd(real, noise)["avg"]
    assert d_fake < 0.2 * d_noise, (d_fake, d_noise)
    mean_real, mean_fake = real.float().mean(0).flatten(), fake.float().mean(0).flatten()
    assert torch.corrcoef(torch.stack([mean_real, mean_fake]))[0, 1] > 0.9  # lungs, mediastinum, diaphragm in place
    assert fake.float().std(0).mean() > 0.5 * real.float().std(0).mean()  # not one image over and over


def test_make_pretrained_reproduces_the_shipped_file_from_one_command():
    make = (REPO / "Makefile").read_text()
    recipe = make.split("\npretrained:", 1)[1].split("\n\n", 1)[0]
    assert "--data phantom" in recipe and "--preset course" in recipe and "--seed 0" in recipe
    assert "export_pretrained" in recipe and "cxrlib/assets/course_phantom_64.pt" in recipe


def test_cli_help_mentions_pretrained():
    out = subprocess.run([sys.executable, "-m", "cxrlib", "sample", "--help"], capture_output=True, text=True,
                         cwd=REPO).stdout
    assert "pretrained" in out


def test_an_exported_generator_cannot_be_resumed_exactly_and_says_what_to_do(shipped):
    data = torch.randint(0, 256, (16, 1, 32, 32), dtype=torch.uint8)
    with pytest.raises(CxrError, match="no optimiser state.*finetune"):
        Trainer.resume(shipped, data)


def test_shipped_conditional_generator_draws_each_class():
    """The conditional twin (`make pretrained-conditional`): small, a course generator at 64 px with the phantoms'
    two classes, and its samples of each class are told apart by a classifier trained on real phantoms."""
    from cxrlib import classifier
    from cxrlib.data import load_dataset

    path = assets.pretrained_checkpoint(name="pretrained-conditional")
    assert path is not None, "cxrlib/assets/conditional_phantom_64.pt is missing or its sha256 does not match"
    assert path.stat().st_size < 10e6
    G, cfg = load_generator("pretrained-conditional", device="cpu")
    assert (cfg.family, cfg.preset, cfg.size, cfg.classes) == ("conditional", "course", 64, ("normal", "pneumonia"))
    clf = classifier.train_classifier(load_dataset("phantom", size=64, n=300, seed=5), steps=150, seed=0)
    normal, pneu = (draw_images(G, 64, seed=0, labels=torch.full((64,), c)) for c in (0, 1))
    p_normal = classifier.predict_proba(clf, normal)[:, 1].mean()
    p_pneu = classifier.predict_proba(clf, pneu)[:, 1].mean()
    assert p_pneu - p_normal > 0.3, (float(p_normal), float(p_pneu))  # the label moves the classifier's verdict
    # without labels it draws the classes in turn, each image as in a draw of all n (the same z, the same class)
    mixed = draw_images(G, 5, seed=0)
    assert torch.equal(mixed[0::2], normal[0:5:2]) and torch.equal(mixed[1::2], pneu[1:5:2])
    assert torch.equal(draw_images(G, 3, seed=0), mixed[:3])  # an image does not depend on how many are drawn


def test_shipped_cyclegan_adds_pneumonia_and_keeps_the_patient():
    """The shipped CycleGAN (`make pretrained-cyclegan`): small, normal ↔ pneumonia at 64 px; its normal → pneumonia
    translations move a real-trained classifier's verdict and change little outside the lungs."""
    from cxrlib import classifier, metrics
    from cxrlib.data import load_dataset
    from cxrlib.translation import load_translator, translate

    path = assets.pretrained_checkpoint(name="pretrained-cyclegan")
    assert path is not None, "cxrlib/assets/cyclegan_phantom_64.pt is missing or its sha256 does not match"
    assert path.stat().st_size < 10e6
    G, cfg = load_translator("pretrained-cyclegan", device="cpu")
    assert (cfg.family, cfg.size, cfg.domains) == ("cyclegan", 64, ("normal", "pneumonia"))
    normals = load_dataset("phantom", size=64, n=48, seed=11, masks=True, pneumonia_fraction=0.0)
    ill = translate(G, cfg, normals.images, "a2b")
    clf = classifier.train_classifier(load_dataset("phantom", size=64, n=300, seed=5), steps=150, seed=0)
    p_before = classifier.predict_proba(clf, normals.images)[:, 1].mean()
    p_after = classifier.predict_proba(clf, ill)[:, 1].mean()
    assert p_after - p_before > 0.3, (float(p_before), float(p_after))
    lungs = normals.masks[:, :1] > 127
    assert float(metrics.masked_l1(normals.images, ill, ~lungs).mean()) < 0.08


def test_shipped_style_generator_mixes_anatomy_in_coarse_layers_and_truncates_toward_typical():
    """The shipped style generator (`make pretrained-style`, notebook 09): small, a StyleGenerator at 64 px whose
    coarse layers carry the layout (outline, diaphragm, heart) and fine ones only detail; lower ψ gives images
    more alike each other."""
    from cxrlib.models import style

    path = assets.pretrained_checkpoint(name="pretrained-style")
    assert path is not None, "cxrlib/assets/style_phantom_64.pt is missing or its sha256 does not match"
    assert path.stat().st_size < 10e6
    recipe = (REPO / "Makefile").read_text().split("\npretrained-style:", 1)[1].split("\n\n", 1)[0]
    assert "--preset style" in recipe and "--seed 0" in recipe and "cxrlib/assets/style_phantom_64.pt" in recipe
    G, cfg = load_generator("pretrained-style", device="cpu")
    assert (cfg.preset, cfg.size, type(G).__name__) == ("style", 64, "StyleGenerator")
    effect = style.mixing_effect(G, n=32)
    assert effect["coarse"]["layout_from_b"] > 0.8 and effect["fine"]["layout_from_b"] < 0.2, effect
    assert effect["coarse"]["share"] > 2 * effect["fine"]["share"], effect
    real = phantom.generate(64, size=64, seed=12345, workers=1).images
    sweep = {r["psi"]: r for r in style.truncation_sweep(G, real, psis=(0.5, 1.0), n=64, n_pairs=100)}
    assert sweep[0.5]["ms_ssim"] > sweep[1.0]["ms_ssim"] + 0.05, sweep
