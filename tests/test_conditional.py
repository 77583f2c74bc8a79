"""The conditional GAN family on the shared engine: networks, batches, checkpoints, the CLI -- and that old
(unconditional) checkpoints keep loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import png_class_folder

from cxrlib import config, models
from cxrlib.cli import main
from cxrlib.conditional import class_index, class_labels
from cxrlib.config import make_config
from cxrlib.data import ImageSet, load_dataset
from cxrlib.errors import CxrError
from cxrlib.train import Trainer, load_checkpoint, load_generator, write_samples

TINY = dict(size=32, batch=8, width=0.25, amp="off", log_every=2, sample_every=10**6, checkpoint_every=10**6)


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setattr(config, "set_threads", lambda n=None: torch.set_num_threads(1) or 1)


def two_class_set(n_dark: int = 24, n_bright: int = 24, size: int = 32, classes=("dark", "bright")) -> ImageSet:
    """Class 0 dark images, class 1 bright ones (with noise): a class difference any G can learn fast."""
    g = torch.Generator().manual_seed(0)
    dark = torch.randint(20, 60, (n_dark, 1, size, size), generator=g)
    bright = torch.randint(190, 230, (n_bright, 1, size, size), generator=g)
    images = torch.cat([dark, bright]).to(torch.uint8)
    labels = torch.cat([torch.zeros(n_dark), torch.ones(n_bright)]).long()
    return ImageSet(images, labels, list(classes))


def test_projection_logit_is_psi_of_phi_plus_class_inner_product():
    torch.manual_seed(0)
    G, D = models.build_models("course", 32, width=0.25, n_classes=3)
    D.eval()
    x, y = torch.randn(5, 1, 32, 32), torch.tensor([0, 1, 2, 0, 1])
    h = D.base.phi(x)
    expected = D.base.psi(h) + (D.embed(y) * h).sum(1)
    assert torch.allclose(D(x, y), expected, atol=1e-5)
    # the class term is what changes with y: same images, other classes → other logits
    assert not torch.allclose(D(x, y), D(x, (y + 1) % 3))
    assert torch.allclose(D(x, y) - D(x, (y + 1) % 3), (h * (D.embed(y) - D.embed((y + 1) % 3))).sum(1), atol=1e-5)


@pytest.mark.parametrize("preset", ["course", "dcgan", "original"])
def test_conditional_generator_draws_per_class_and_defaults_to_classes_in_turn(preset):
    torch.manual_seed(0)
    G, D = models.build_models(preset, 32, width=0.25, n_classes=2)
    G.eval()
    z = torch.randn(4, G.z_dim)
    zeros, ones = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    assert G.class_norms and G.embed is None  # these presets' G has BatchNorm: class-conditional norms
    assert torch.allclose(G(z, zeros), G(z, ones))  # γ = 1, β = 0 for every class: starts as plain BatchNorm
    for norm in G.class_norms:  # as training would: per-class scales and shifts
        torch.nn.init.normal_(norm.beta.weight, std=0.5)
    a, b = G(z, zeros), G(z, ones)
    assert a.shape == (4, 1, 32, 32) and not torch.allclose(a, b)
    assert torch.allclose(G(z), G(z, torch.tensor([0, 1, 0, 1])))
    D.eval()
    assert D(a, torch.zeros(4, dtype=torch.long)).shape == (4,)


def test_generator_without_batchnorm_reads_a_class_embedding_beside_z():
    G, _ = models.build_models("course", 32, width=0.25, n_classes=2, norm="none")
    assert G.embed is not None and not G.class_norms
    assert G.base.stem[0].in_features == G.z_dim + models.CLASS_DIM
    z = torch.randn(3, G.z_dim)
    assert not torch.allclose(G(z, torch.zeros(3, dtype=torch.long)), G(z, torch.ones(3, dtype=torch.long)))


def test_discriminator_split_leaves_unconditional_logits_unchanged():
    for preset in ("course", "dcgan", "original"):
        _, D = models.build_models(preset, 32, width=0.25)
        D.eval()
        x = torch.randn(3, 1, 32, 32)
        assert torch.allclose(D(x), D.psi(D.phi(x)), atol=1e-5), preset


def test_trainer_takes_classes_from_data_and_checkpoint_keeps_them(tmp_path):
    data = two_class_set()
    t = Trainer(make_config("course", steps=2, family="conditional", **TINY), data, out=tmp_path / "run")
    assert t.cfg.classes == ("dark", "bright")
    t.fit(progress=False)
    state = load_checkpoint(tmp_path / "run")
    assert state["config"]["family"] == "conditional" and state["config"]["classes"] == ["dark", "bright"]
    G, cfg = load_generator(tmp_path / "run")
    assert isinstance(G, models.ConditionalGenerator) and cfg.classes == ("dark", "bright")


def test_conditional_resume_is_exact(tmp_path):
    data = two_class_set()
    cfg = make_config("course", steps=6, family="conditional", checkpoint_every=3,
                      **{k: v for k, v in TINY.items() if k != "checkpoint_every"})
    straight = Trainer(cfg, data)
    straight.fit(progress=False)
    first = Trainer(cfg.replace(steps=3), data, out=tmp_path / "r")
    first.fit(progress=False)
    resumed = Trainer.resume(tmp_path / "r", data, steps=6)
    resumed.fit(progress=False)
    for a, b in zip(straight.G.state_dict().values(), resumed.G.state_dict().values()):
        assert torch.equal(a, b)


def test_fake_labels_follow_class_frequencies_or_are_balanced():
    data = two_class_set(n_dark=36, n_bright=12)  # 75 % / 25 %
    t = Trainer(make_config("course", steps=1, family="conditional", **TINY), data)
    y = t.family.fake_labels(4000)
    assert abs(float((y == 0).float().mean()) - 0.75) < 0.03
    _, y_real = t.family.real_batch(4000)
    assert abs(float((y_real == 0).float().mean()) - 0.75) < 0.03
    b = Trainer(make_config("course", steps=1, family="conditional", class_sampling="balanced", **TINY), data)
    x, y_real = b.family.real_batch(4000)
    assert abs(float((y_real == 0).float().mean()) - 0.5) < 0.03
    assert abs(float((b.family.fake_labels(4000) == 0).float().mean()) - 0.5) < 0.03
    # balanced real batches still pair each image with its own label: dark images are class 0
    assert bool(((x.mean((1, 2, 3)) < 0) == (y_real == 0)).all())


def test_sample_grid_has_one_row_per_class_with_shared_latents():
    t = Trainer(make_config("course", steps=1, family="conditional", **TINY), two_class_set())
    z, y = t.family.grid(t.z_fixed)
    assert len(z) == len(y) == 64
    assert y[:8].eq(0).all() and y[8:16].eq(1).all() and y[16:24].eq(0).all()
    assert torch.equal(z[:8], z[8:16]) and not torch.equal(z[:8], z[16:24])


def test_conditional_gan_learns_the_class_difference():
    """After 80 steps on dark-vs-bright images, G asked for 'bright' draws brighter images than for 'dark'
    (an unconditional or a label-ignoring G would draw the same mix for both)."""
    t = Trainer(make_config("course", steps=80, family="conditional", **{**TINY, "batch": 16}), two_class_set())
    t.fit(progress=False)
    dark = t.sample(64, label="dark", ema=False).float().mean()
    bright = t.sample(64, label="bright", ema=False).float().mean()
    assert bright - dark > 60, (float(dark), float(bright))


def test_bad_labels_and_classes_are_one_line_errors(tmp_path):
    cfg = make_config("course", steps=1, family="conditional", **TINY)
    with pytest.raises(CxrError, match="labelled images"):
        Trainer(cfg, two_class_set().images)  # a bare tensor has no classes
    one = two_class_set(n_bright=0)
    with pytest.raises(CxrError, match="at least 2 classes.*'dark'"):
        Trainer(cfg, one)
    three = ImageSet(two_class_set().images, two_class_set().labels, ["dark", "bright", "grey"])
    with pytest.raises(CxrError, match="'grey' has no training images"):
        Trainer(cfg.replace(class_sampling="balanced"), three)
    with pytest.raises(CxrError, match="knows 0=dark, 1=bright"):
        class_index(["dark", "bright"], "pneumonia")
    assert class_index(["NORMAL", "PNEUMONIA"], "pneumonia") == 1 and class_index(["a", "b"], "1") == 1
    with pytest.raises(CxrError, match="unconditional"):
        class_labels(make_config("course"), "pneumonia", 4)
    t = Trainer(cfg, two_class_set(), out=tmp_path / "run")
    t.fit(progress=False)
    other = two_class_set(classes=("cat", "dog"))
    with pytest.raises(CxrError, match="not the run's dark, bright"):
        Trainer.resume(tmp_path / "run", other)
    # the same classes named in upper case (Kaggle's NORMAL/PNEUMONIA) are the same classes
    Trainer.resume(tmp_path / "run", two_class_set(classes=("DARK", "BRIGHT")))


def test_old_checkpoint_without_family_fields_still_loads(tmp_path):
    """Checkpoints written before the families existed have no family/classes/class_sampling in their config."""
    data = two_class_set()
    t = Trainer(make_config("course", steps=2, **TINY), data, out=tmp_path / "old")
    t.fit(progress=False)
    state = load_checkpoint(tmp_path / "old")
    for key in ("family", "classes", "class_sampling"):
        del state["config"][key]
    torch.save(state, tmp_path / "old" / "checkpoints" / "last.pt")
    G, cfg = load_generator(tmp_path / "old")
    assert cfg.family == "unconditional" and not isinstance(G, models.ConditionalGenerator)
    resumed = Trainer.resume(tmp_path / "old", data, steps=3)
    resumed.fit(progress=False)
    assert resumed.step == 3
    assert write_samples(tmp_path / "old", 2, tmp_path / "s").startswith("wrote 2 samples")


def test_cli_conditional_train_sample_evaluate(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CXRLIB_SMOKE", "1")
    data = png_class_folder(tmp_path / "kaggle", two_class_set(classes=("NORMAL", "PNEUMONIA")))
    run = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(run), "--size", "32", "--steps", "2", "--batch", "8",
            "--conditional", "--set", "width=0.25", "--set", 'amp="off"', "--quiet"]
    assert main(args) == 0
    assert "conditional" in capsys.readouterr().out
    assert main(["sample", "--ckpt", str(run), "--per-class", "8", "--out", str(tmp_path / "pc")]) == 0
    assert sorted(p.name for p in (tmp_path / "pc").iterdir()) == ["NORMAL", "PNEUMONIA"]
    assert len(list((tmp_path / "pc" / "PNEUMONIA").glob("*.png"))) == 8
    assert main(["sample", "--ckpt", str(run), "--class", "pneumonia", "--n", "2", "--out", str(tmp_path / "one")]) == 0
    assert "class PNEUMONIA" in capsys.readouterr().out
    assert main(["sample", "--ckpt", str(run), "--class", "covid", "--n", "2", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "0=NORMAL, 1=PNEUMONIA" in err
    assert main(["evaluate", "--real", str(data), "--fake", str(tmp_path / "pc")]) == 0
    out = capsys.readouterr().out
    assert "SWD class NORMAL" in out and "SWD class PNEUMONIA" in out


def test_cli_class_of_unconditional_checkpoint_is_one_line(tmp_path, capsys):
    t = Trainer(make_config("course", steps=1, **TINY), two_class_set(), out=tmp_path / "u")
    t.fit(progress=False)
    for extra in (["--class", "dark", "--n", "2"], ["--per-class", "2"]):
        assert main(["sample", "--ckpt", str(tmp_path / "u"), "--out", str(tmp_path / "s"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "unconditional" in err and "\n" not in err


def test_phantom_folder_trains_conditionally(tmp_path):
    data = load_dataset("phantom", size=32, n=32, seed=0)
    t = Trainer(make_config("course", steps=1, family="conditional", **TINY), data)
    t.fit(progress=False)
    assert t.cfg.classes == ("normal", "pneumonia")
    assert np.isfinite(float(t.sample(2, label="pneumonia").float().mean()))


@pytest.mark.parametrize("preset", ["original", "dcgan"])
def test_other_presets_train_conditionally_with_their_tricks(preset):
    """The seed preset's label smoothing and flipping (BCE), dcgan's plain recipe: unchanged under the conditional
    family -- a few steps run, losses are finite, and the checkpoint state round-trips."""
    cfg = make_config(preset, steps=2, family="conditional", **{**TINY, "batch": 4})
    t = Trainer(cfg, two_class_set())
    t.fit(progress=False)
    assert t.step == 2 and np.isfinite(float(t.d_step()["d_loss"]))
    other = Trainer(cfg, two_class_set())
    other.load_state_dict(t.state_dict())
    for a, b in zip(t.G.state_dict().values(), other.G.state_dict().values()):
        assert torch.equal(a, b)
