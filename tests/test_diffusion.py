"""The diffusion model (``cxrlib.diffusion``): its forward noising, its denoising step, DDIM against an exact
noise oracle, the K it refuses, exact resume on the engine, ``sample --steps``, the refusals of a GAN's options, and
the one line without diffusers. Tiny: 32 px, a U-Net of a quarter width, two DDIM steps."""

from __future__ import annotations

import math
import sys
import types

import pytest
import torch
from conftest import assert_same_training_state

from cxrlib import config, losses, models
from cxrlib.cli import main
from cxrlib.config import make_config
from cxrlib.errors import CxrError

pytest.importorskip("diffusers")

from cxrlib import diffusion  # noqa: E402
from cxrlib.models.diffusion import denoising_unet  # noqa: E402
from cxrlib.train import Trainer, load_generator  # noqa: E402

TINY = dict(size=32, batch=4, width=0.25, amp="off", model_kwargs={"sampling_steps": 2})
TINY_FLAGS = ["--size", 32, "--batch", 4, "--n-images", 16, "--set", "width=0.25", "--set", "amp=\"off\"",
              "--set", 'model_kwargs={"sampling_steps": 2}', "--quiet"]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    # the test machine is shared: one thread per test process avoids OpenMP oversubscription stalls (the steps
    # called here without a trainer too: two threads made a 16-px U-Net's step take 14 s instead of 0.2 s)
    monkeypatch.setattr(config, "set_threads", lambda n=None: torch.set_num_threads(1) or 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(*argv) -> int:
    return main([str(a) for a in argv])


def phantoms(n=16, size=32):
    from cxrlib.data import load_dataset

    return load_dataset("phantom", size=size, n=n, seed=0)


# ----------------------------------------------------------------------------------------------- the algorithm
def cosine_alpha_bar(levels: int) -> torch.Tensor:
    """ᾱ_t of Nichol & Dhariwal's cosine schedule, from its formula: f(t) = cos²((t/T + s)/(1 + s) · π/2), β_t =
    min(1 − f(t+1)/f(t), 0.999), ᾱ_t = ∏_{s ≤ t} (1 − β_s)."""
    f = [math.cos((t / levels + 0.008) / 1.008 * math.pi / 2) ** 2 for t in range(levels + 1)]
    betas = torch.tensor([min(1 - f[t + 1] / f[t], 0.999) for t in range(levels)], dtype=torch.float64)
    return torch.cumprod(1 - betas, 0)


class NoisyInputs(torch.nn.Module):
    """A stand-in denoiser that keeps what the step fed it: x_t and t."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t):
        self.seen = (x.detach().clone(), t)
        return types.SimpleNamespace(sample=x * self.w)


@pytest.mark.parametrize("beta_schedule", ["cosine", "linear"])
def test_the_forward_noising_has_the_mean_and_variance_of_q_xt_given_x0(beta_schedule):
    levels = 1000
    schedule, _ = diffusion.noise_schedules(levels, beta_schedule)
    if beta_schedule == "cosine":
        alpha_bar = cosine_alpha_bar(levels)
    else:  # the DDPM paper's: β linear from 1e-4 to 0.02
        alpha_bar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, levels, dtype=torch.float64), 0)
    torch.testing.assert_close(schedule.alphas_cumprod.double(), alpha_bar, rtol=1e-5, atol=1e-6)

    g = torch.Generator().manual_seed(0)
    x0 = torch.full((4096, 1, 4, 4), 0.6)
    for t in (0, 250, 500, 999):
        net = NoisyInputs()
        noise = torch.randn(x0.shape, generator=g)
        diffusion.denoising_step(net, torch.optim.SGD(net.parameters(), lr=0.0), schedule, x0, noise,
                                 torch.full((len(x0),), t), loss=losses.denoising_loss)
        x_t, seen_t = net.seen
        assert torch.equal(seen_t, torch.full((len(x0),), t))
        a = float(alpha_bar[t])
        assert float(x_t.mean()) == pytest.approx(math.sqrt(a) * 0.6, abs=0.01)  # √ᾱ_t · x_0
        assert float(x_t.var()) == pytest.approx(1 - a, abs=0.01 + 0.02 * (1 - a))  # (1 − ᾱ_t)


class PointMassOracle(torch.nn.Module):
    """The exact noise predictor of a data distribution that is one image c: ε̂(x_t, t) = (x_t − √ᾱ_t · c) /
    √(1 − ᾱ_t), shaped like diffusers' U-Net output; it keeps the noise it predicted at each step."""

    def __init__(self, c, alpha_bar):
        super().__init__()
        self.c, self.alpha_bar, self.eps = c.double(), alpha_bar.double(), []

    def forward(self, x, t):
        a = self.alpha_bar[int(t)]
        eps = (x.double() - a.sqrt() * self.c) / (1 - a).sqrt()
        self.eps.append(eps)
        return types.SimpleNamespace(sample=eps)


@pytest.mark.parametrize("steps", [1, 2, 50])
def test_ddim_with_the_exact_noise_of_a_point_mass_returns_that_image(steps):
    # deterministic DDIM (η = 0) keeps the noise direction of x_T all the way down and lands on x_0 = c at the last
    # step (ᾱ = 1 there): a stochastic step (η ≠ 0) or an x fed at another level than its t would change the noise
    # the oracle sees; a final ᾱ below 1 leaves √(1 − ᾱ_0) of noise in the image (0.02 here)
    _, sampler = diffusion.noise_schedules()
    c = torch.linspace(-0.9, 0.9, 64).reshape(1, 1, 8, 8).repeat(3, 1, 1, 1)
    z = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    oracle = PointMassOracle(c, sampler.alphas_cumprod)
    x = diffusion.ddim_sample(oracle, sampler, z, steps)
    assert len(oracle.eps) == steps and x.dtype == torch.float32
    # K = 1 divides by √ᾱ_999 = 5e-5 once: float32 rounding of x_T grows to ~2e-3 there
    torch.testing.assert_close(x, c, rtol=0, atol=5e-3 if steps == 1 else 1e-5)
    assert max(float((e - oracle.eps[0]).abs().max()) for e in oracle.eps) < 5e-3


def test_ddim_steps_that_do_not_divide_the_noise_levels_are_refused_naming_the_nearest():
    for steps in (1, 2, 25, 40, 50, 1000):
        assert diffusion.check_steps(steps) == steps
    with pytest.raises(CxrError, match=r"30 DDIM steps do not divide the 1000 noise levels.*#9261.*take 25 or 40"):
        diffusion.check_steps(30)
    with pytest.raises(CxrError, match="take 500 or 1000"):
        diffusion.check_steps(999)
    with pytest.raises(CxrError, match="take 2 or 4"):
        diffusion.DiffusionGenerator(16, channels=(8, 16), sampling_steps=3)


def test_denoising_steps_lower_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    unet = denoising_unet(16, channels=(8, 16))
    schedule, _ = diffusion.noise_schedules()
    opt = torch.optim.Adam(unet.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    real = phantoms(n=8, size=32).images[:, :, ::2, ::2].float() / 127.5 - 1
    noise = torch.randn(real.shape, generator=g)
    timesteps = torch.randint(0, 1000, (len(real),), generator=g)
    losses_seen = [float(diffusion.denoising_step(unet, opt, schedule, real, noise, timesteps,
                                                  loss=losses.denoising_loss)["g_loss"]) for _ in range(8)]
    assert losses_seen[-1] < 0.8 * losses_seen[0], losses_seen


def test_the_denoising_loss_is_the_mean_squared_error_of_the_noise():
    noise = torch.ones(2, 1, 4, 4)
    loss, stats = losses.denoising_loss(torch.zeros(2, 1, 4, 4), noise)
    assert float(loss) == 1.0 and stats == {}
    assert float(losses.denoising_loss(noise.bfloat16(), noise)[0]) == 0.0


def test_the_unet_has_about_the_course_generators_parameters_and_width_scales_it():
    course_g, _ = models.build_models("course", 64)
    G, D = diffusion.Diffusion.build_models(make_config("diffusion", size=64))
    n_course, n_unet = models.count_params(course_g), models.count_params(G)
    assert 0.8 < n_unet / n_course < 1.25, (n_unet, n_course)
    assert G.unet.config.block_out_channels == (32, 32, 64, 64) and G.z_dim == 64 * 64
    assert models.count_params(D) == 0
    half, _ = diffusion.Diffusion.build_models(make_config("diffusion", size=64, width=0.5))
    assert models.count_params(half) < 0.4 * n_unet


# ----------------------------------------------------------------------------------------------- on the engine
def test_resume_continues_exactly(tmp_path):
    cfg = make_config("diffusion", steps=4, checkpoint_every=2, log_every=2, sample_every=1000, **TINY)
    reference = Trainer(cfg, phantoms())
    reference.fit(progress=False)

    first = Trainer(cfg, phantoms(), out=tmp_path / "run")
    first.fit(2, progress=False)
    torch.randn(100)  # an unrelated draw from torch's global RNG between the two halves changes nothing
    resumed = Trainer.resume(tmp_path / "run", phantoms())
    assert resumed.step == 2
    resumed.fit(progress=False)
    a, b = reference.state_dict(), resumed.state_dict()
    assert_same_training_state(a, b)
    assert (reference.images_seen, reference.d_updates) == (resumed.images_seen, resumed.d_updates) == (16, 0)
    assert torch.equal(reference.rng.get_state(), resumed.rng.get_state())
    assert not torch.equal(a["G"]["unet.conv_in.weight"], first.state_dict()["G"]["unet.conv_in.weight"])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A diffusion run trained from the command line: 4 steps of phantoms, checkpoints at 2 and 4."""
    out = tmp_path_factory.mktemp("diffusion") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(config, "set_threads", lambda n=None: torch.set_num_threads(1) or 1)
        assert run("train", "--family", "diffusion", "--data", "phantom", "--out", out, "--steps", 4,
                   "--checkpoint-every", 2, "--log-every", 2, *TINY_FLAGS) == 0
    return out


def test_train_writes_a_run_folder_as_a_gan_does(tiny_run):
    import json

    assert {p.name for p in (tiny_run / "checkpoints").iterdir()} == {"last.pt", "step_000002.pt", "step_000004.pt"}
    saved = json.loads((tiny_run / "config.json").read_text())
    assert (saved["family"], saved["preset"], saved["loss"]) == ("diffusion", "diffusion", "denoising")
    log = [json.loads(x) for x in (tiny_run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4] and all(r["g_loss"] > 0 and r["d_loss"] == 0 for r in log)
    assert [p.name for p in (tiny_run / "samples").glob("*.png")] == ["step_000004.png"]
    G, cfg = load_generator(tiny_run)  # the Python API of a GAN's generator: G(z) is DDIM from the noise z
    z = torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(0))
    x = G(z)
    assert x.shape == (2, 1, 32, 32) and x.min() >= -1 and x.max() <= 1 and torch.equal(x, G(z))
    with diffusion.denoising_steps(G, 1):
        assert not torch.equal(G(z), x)
    assert G.sampling_steps == 2


def test_sample_steps_writes_n_images_the_same_for_a_seed(tiny_run, tmp_path, capsys):
    def pngs(folder):
        return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}

    for name, seed, steps in (("a", 3, 2), ("b", 3, 2), ("c", 4, 2), ("d", 3, 1)):
        assert run("sample", "--ckpt", tiny_run, "--n", 3, "--out", tmp_path / name, "--seed", seed,
                   "--steps", steps) == 0
    assert "3 samples (EMA generator, diffusion 32px, 2 DDIM steps, seed 3)" in capsys.readouterr().out
    a, b, c, d = (pngs(tmp_path / k) for k in "abcd")
    assert list(a) == ["sample_00000.png", "sample_00001.png", "sample_00002.png"] and a == b
    assert all(a[k] != c[k] for k in a) and all(a[k] != d[k] for k in a)


def test_finetune_starts_from_a_diffusion_run(tiny_run, tmp_path):
    t = Trainer.finetune(tiny_run, phantoms(), out=tmp_path / "ft", steps=1)
    assert t.g_opt.param_groups[0]["lr"] == pytest.approx(1e-4)  # half the preset's 2e-4
    t.fit(progress=False)
    assert t.step == 5 and (tmp_path / "ft" / "checkpoints" / "last.pt").exists()


# ----------------------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("flags, words", [
    (["--set", "r1_gamma=1"], "'r1_gamma'=1"),
    (["--set", "label_smoothing=0.1"], "'label_smoothing'=0.1"),
    (["--set", "augment=translation"], "'augment'='translation'"),
    (["--set", "ada=true"], "'ada'=True"),
    (["--set", "z_dim=64"], "'z_dim'=64"),
    (["--set", "loss=bce"], "the diffusion family takes denoising"),
    (["--conditional"], "--conditional and --family diffusion contradict each other"),
    (["--set", 'model_kwargs={"blocks": 2}'], "the diffusion model does not take blocks"),
], ids=["r1", "smoothing", "augment", "ada", "z_dim", "gan-loss", "conditional", "model-kwargs"])
def test_a_gans_options_are_refused_in_one_line(tmp_path, capsys, flags, words):
    assert run("train", "--family", "diffusion", "--data", "phantom", "--out", tmp_path / "r", "--steps", 1,
               *TINY_FLAGS, *flags) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "r" / "config.json").exists()


def test_the_gan_losses_refuse_the_denoising_loss():
    with pytest.raises(CxrError, match="implemented for the diffusion family only"):
        make_config("course", loss="denoising")


def test_sample_steps_is_refused_for_a_gan_in_one_line(tmp_path, capsys):
    assert run("sample", "--ckpt", "pretrained", "--n", 1, "--out", tmp_path / "s", "--steps", 10) == 2
    err = capsys.readouterr().err
    assert "--steps sets a diffusion model's denoising steps" in err and err.count("\n") == 1, err
    assert not list(tmp_path.glob("s/*.png"))


def test_sample_steps_out_of_range_is_one_line(tiny_run, tmp_path, capsys):
    assert run("sample", "--ckpt", tiny_run, "--n", 1, "--out", tmp_path / "s", "--steps", 0) == 2
    assert "DDIM steps must be a whole number from 1 to 1000" in capsys.readouterr().err


def test_sample_steps_that_do_not_divide_the_noise_levels_is_one_line(tiny_run, tmp_path, capsys):
    assert run("sample", "--ckpt", tiny_run, "--n", 1, "--out", tmp_path / "s", "--steps", 30) == 2
    err = capsys.readouterr().err
    assert "take 25 or 40" in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not list(tmp_path.glob("s/*.png"))


def test_without_diffusers_train_fails_in_one_line_naming_the_extra(tmp_path, capsys, monkeypatch):
    from cxrlib import cli

    monkeypatch.setitem(sys.modules, "diffusers", None)  # `import diffusers` now raises ImportError
    monkeypatch.setattr(cli, "_training_data", lambda *a, **k: pytest.fail("the data was read before the check"))
    assert run("train", "--family", "diffusion", "--data", "phantom", "--out", tmp_path / "r", "--steps", 1,
               *TINY_FLAGS) == 2
    err = capsys.readouterr().err
    assert 'pip install "cxrlib[diffusion]"' in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "r").exists()
    with pytest.raises(CxrError, match=r"cxrlib\[diffusion\]"):
        diffusion.Diffusion.build_models(make_config("diffusion", size=32))
