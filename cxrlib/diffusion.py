"""A small diffusion model on the same X-rays and the same engine: DDPM training, DDIM sampling (Ho et al. 2020;
Song et al. 2021), built on Hugging Face diffusers -- the baseline a GAN is measured against.

* **forward noising** -- q(x_t | x_0) = N(√ᾱ_t · x_0, (1 − ᾱ_t) I): an image x_0 with ``TIMESTEPS`` = 1,000 levels of
  Gaussian noise mixed in, ᾱ_t falling from ~1 (t = 0) to ~0 (t = 999). The schedule is the cosine one (Nichol &
  Dhariwal 2021; diffusers' ``squaredcos_cap_v2``): at 64 px and below, the linear β of the DDPM paper turns the
  image into near-pure noise over the last quarter of the steps, which the model then spends its capacity on for
  nothing; ``beta_schedule="linear"`` (through ``model_kwargs``) is the paper's.
* **the training step** (:func:`denoising_step`) -- noise a batch of real images at random t and teach the U-Net
  (``cxrlib.models.diffusion``) to predict the noise ε that was added: the loss is ‖ε − ε̂(x_t, t)‖² (the
  simplified objective of the DDPM paper, :func:`cxrlib.losses.denoising_loss`). Gradients are clipped to norm 1, as
  in the DDPM paper.
* **sampling** (:func:`ddim_sample`) -- start from pure noise x_T = z and denoise in K steps with DDIM (η = 0:
  deterministic, so one z always gives one image), diffusers' ``DDIMScheduler`` with "trailing" timesteps
  (999, 979, …, 19 for K = 50: the first step starts where training's noise is strongest; Lin et al. 2024).
  Each step is one pass of the U-Net, so K steps cost K of a GAN's forward passes. K must divide the 1,000 levels
  (1, 2, 4, 5, 8, 10, 20, 25, 40, 50, 100, 125, 200, 250, 500, 1000): for other K diffusers' DDIM steps to
  t − ⌊1000 / K⌋ rather than the next listed timestep (huggingface/diffusers#9261), so each step hands the U-Net an
  image at another noise level than the t it is told; :func:`check_steps` refuses such K, naming the nearest exact ones.

**Why it rides the GAN engine** (``cxrlib.train.Trainer``) rather than a loop of its own: everything around a step is
the same -- checkpoints (atomic, weights-only loading), ``config.json``, ``log.jsonl``, sample grids, budgets (steps,
minutes, SIGINT/SIGTERM), the EMA, exact resume on a CPU, samples and evaluation -- and the ``Trainer`` did not have
to change for it (``sample`` gained ``--steps``, the family protocol ``check_available``). The engine trains a pair
(G, D); here "G" is :class:`DiffusionGenerator`, the U-Net with its noise schedule, whose
forward pass *is* the sampler: G(z) maps z: (B, S·S), the starting noise of one image per row, to images (B, 1, S, S)
in [-1, 1], so ``Trainer.sample``, ``load_generator``, ``python -m cxrlib sample`` and the metrics take it like a
GAN's generator. The family's G step is the denoising step (the EMA of the U-Net follows it, as the EMA of a GAN's
G does); there is no D: :class:`NoDiscriminator` stands in the engine's D slot, its D steps do nothing
(``trains_d`` False) and ``log.jsonl``'s D columns stay 0, while ``g_loss`` is the denoising loss. What a GAN run
reads from D -- label tricks, R1/R2, DiffAugment/ADA -- is refused by ``TrainConfig.validate`` for this family.
``Trainer.finetune`` works as for a GAN (lower learning rate, fresh Adam moments).

``G.sampling_steps`` (default ``SAMPLING_STEPS`` = 50) is the K that G(z) uses; ``denoising_steps(G, K)`` changes it
for a block, ``sample --steps K`` on the command line. A run's sample grid (``N_GRID`` = 16 images) costs 16 × K
passes of the U-Net, tens of seconds on a 2-core CPU, and its time counts in the run's training time: for
comparisons at equal minutes, make ``sample_every`` large.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from cxrlib import models
from cxrlib.config import TrainConfig
from cxrlib.errors import CxrError
from cxrlib.gan.family import Family
from cxrlib.models.diffusion import denoising_unet, import_diffusers

TIMESTEPS = 1000  # noise levels of the forward process (the DDPM paper's)
SAMPLING_STEPS = 50  # DDIM steps of G(z) unless told otherwise
BETA_SCHEDULES = {"cosine": "squaredcos_cap_v2", "linear": "linear"}  # our name → diffusers'
MAX_GRAD_NORM = 1.0  # gradient clipping of the denoising step (the DDPM paper's)
MODEL_KEYWORDS = ("channels", "layers_per_block", "beta_schedule", "timesteps", "sampling_steps")
N_GRID = 16  # images in a run's sample grid: each costs SAMPLING_STEPS passes of the U-Net


# ----------------------------------------------------------------------------------------------- the step
def denoising_step(unet, opt, schedule, real, noise, timesteps, *, loss, autocast=contextlib.nullcontext,
                   max_grad_norm: float = MAX_GRAD_NORM) -> dict:
    """One update of the denoiser: noise ``real`` to level ``timesteps`` with ``noise`` (q(x_t | x_0), the
    schedule's ``add_noise``), predict the noise and step towards predicting it better.

    unet: the U-Net (x_t, t) → ``.sample`` ε̂; opt: its optimiser; schedule: diffusers' ``DDPMScheduler``;
    real: (B, 1, S, S) float in [-1, 1]; noise: ε, the same shape, N(0, I); timesteps: (B,) integers in
    [0, ``schedule.config.num_train_timesteps``); loss: ``loss(noise_pred, noise) -> (loss, stats)``; autocast: the
    context of the forward pass. Returns 0-d tensors g_loss (the denoising loss) and g_grad_norm (before clipping)."""
    noisy = schedule.add_noise(real, noise, timesteps)  # √ᾱ_t · x_0 + √(1 − ᾱ_t) · ε
    with autocast():
        noise_pred = unet(noisy, timesteps).sample
    g_loss, stats = loss(noise_pred, noise)
    opt.zero_grad(set_to_none=True)
    g_loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(unet.parameters(), max_grad_norm)
    opt.step()
    return {"g_loss": g_loss.detach(), "g_grad_norm": grad_norm.detach(), **stats}


# ----------------------------------------------------------------------------------------------- sampling
@torch.no_grad()
def ddim_sample(unet, sampler, x: torch.Tensor, steps: int) -> torch.Tensor:
    """Denoise pure noise ``x`` = x_T: (B, 1, S, S) in ``steps`` DDIM steps (η = 0: deterministic) → x_0, float
    (B, 1, S, S) in [-1, 1]. sampler: diffusers' ``DDIMScheduler`` (its timesteps are set here)."""
    sampler.set_timesteps(int(steps))
    x = x.float()
    for t in sampler.timesteps:  # 0-d CPU tensors: the U-Net moves t to x's device
        noise_pred = unet(x, t).sample.float()
        x = sampler.step(noise_pred, t, x, eta=0.0).prev_sample
    return x.clamp(-1, 1)


def noise_schedules(timesteps: int = TIMESTEPS, beta_schedule: str = "cosine"):
    """(training's ``DDPMScheduler``, sampling's ``DDIMScheduler``) of one noise schedule: ``timesteps`` levels,
    β ``"cosine"`` or ``"linear"``; predicted images are clipped to [-1, 1] on the way (``clip_sample``)."""
    if beta_schedule not in BETA_SCHEDULES:
        raise CxrError(f"beta_schedule {beta_schedule!r}: choose one of {', '.join(BETA_SCHEDULES)}")
    if int(timesteps) < 2:
        raise CxrError(f"timesteps must be at least 2, got {timesteps}")
    diffusers = import_diffusers()
    kw = dict(num_train_timesteps=int(timesteps), beta_schedule=BETA_SCHEDULES[beta_schedule], clip_sample=True)
    return diffusers.DDPMScheduler(**kw), diffusers.DDIMScheduler(**kw, timestep_spacing="trailing",
                                                                   set_alpha_to_one=True)


class DiffusionGenerator(nn.Module):
    """The diffusion model as the engine sees a generator: ``G(z)`` → images, by DDIM from the noise z.

    z: (B, ``z_dim``) with ``z_dim`` = size², the starting noise x_T of one image per row (N(0, I)) → (B, 1, S, S)
    float in [-1, 1], after ``sampling_steps`` passes of ``unet``. ``schedule`` (diffusers' ``DDPMScheduler``) noises
    images for training; ``sampler`` (its ``DDIMScheduler``) denoises. The weights are the U-Net's; the schedules
    come from the config (``model_kwargs``), never from a checkpoint."""

    def __init__(self, size: int, width: float = 1.0, channels=None, layers_per_block: int = 1,
                 beta_schedule: str = "cosine", timesteps: int = TIMESTEPS, sampling_steps: int = SAMPLING_STEPS):
        super().__init__()
        self.size, self.z_dim = int(size), int(size) ** 2
        self.unet = denoising_unet(self.size, width, channels=channels, layers_per_block=layers_per_block)
        self.schedule, self.sampler = noise_schedules(timesteps, beta_schedule)
        self.sampling_steps = sampling_steps

    @property
    def sampling_steps(self) -> int:
        """K, the DDIM steps of ``G(z)``: a whole number from 1 to the noise levels (checked when set)."""
        return self._sampling_steps

    @sampling_steps.setter
    def sampling_steps(self, steps: int) -> None:
        self._sampling_steps = check_steps(steps, self.schedule.config.num_train_timesteps)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return ddim_sample(self.unet, self.sampler, z.reshape(-1, 1, self.size, self.size), self.sampling_steps)


def check_steps(steps, levels: int = TIMESTEPS) -> int:
    """``steps`` as a number of DDIM steps, or ``CxrError``: a whole number from 1 to ``levels`` (the noise levels)
    that divides ``levels`` -- other K step to the wrong noise level in diffusers' DDIM (huggingface/diffusers#9261)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= levels:
        raise CxrError(f"the DDIM steps must be a whole number from 1 to {levels} (the noise levels), got {steps!r}")
    if levels % steps:
        below = max(k for k in range(1, steps) if levels % k == 0)
        above = min(k for k in range(steps + 1, levels + 1) if levels % k == 0)
        raise CxrError(f"{steps} DDIM steps do not divide the {levels} noise levels, and diffusers' DDIM would then "
                       f"step to the wrong level (huggingface/diffusers#9261): take {below} or {above}")
    return steps


@contextlib.contextmanager
def denoising_steps(G: DiffusionGenerator, steps: int):
    """``with denoising_steps(G, 10): G(z)`` samples with 10 DDIM steps inside the block, G's own K after it."""
    old = G.sampling_steps
    G.sampling_steps = steps
    try:
        yield G
    finally:
        G.sampling_steps = old


class NoDiscriminator(nn.Module):
    """What stands in the engine's D slot: a diffusion model has no discriminator. The engine gives D an Adam
    optimiser (which refuses an empty parameter list: hence one empty parameter) and checkpoints it; nothing calls
    or trains it."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(0))

    def forward(self, x):
        raise CxrError("a diffusion model has no discriminator")


# ----------------------------------------------------------------------------------------------- the family
class Diffusion(Family):
    """The diffusion model on the shared engine: G is :class:`DiffusionGenerator`, its G step
    :func:`denoising_step` on a batch of training images; no D."""

    name = "diffusion"
    draws_from_z = True  # z is the starting noise: Trainer.sample and `sample` work as for a GAN
    losses = ("denoising",)
    sync_batchnorm = False  # GroupNorm only
    trains_d = False

    @staticmethod
    def check_available() -> None:
        import_diffusers()

    @staticmethod
    def build_models(cfg: TrainConfig) -> tuple[nn.Module, nn.Module]:
        """(:class:`DiffusionGenerator` of the config's size, width and ``model_kwargs``, :class:`NoDiscriminator`)."""
        kw = dict(cfg.model_kwargs)
        unknown = set(kw) - set(MODEL_KEYWORDS)
        if unknown:
            raise CxrError(f"the diffusion model does not take {', '.join(sorted(unknown))} (it takes "
                           f"{', '.join(MODEL_KEYWORDS)})")
        models.check_size(cfg.size)
        return DiffusionGenerator(cfg.size, cfg.width, **kw), NoDiscriminator()

    def d_step(self, real: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> tuple[dict, int]:
        """Nothing: there is no D (the engine counts neither an update nor images; its log's d_loss is 0)."""
        return {"d_loss": torch.zeros((), device=self.t.device)}, 0

    def g_step(self) -> tuple[dict, int]:
        """One denoising update (:func:`denoising_step`) on a random training batch, its noise and its timesteps,
        drawn from the trainer's generator in that order. Returns g_loss, g_grad_norm and the batch size: the
        images it showed the model."""
        t = self.t
        G = t.G
        real = t.next_batch(t.batch)
        noise = torch.randn(real.shape, generator=t.rng, device=t.device)
        timesteps = torch.randint(0, G.schedule.config.num_train_timesteps, (len(real),), generator=t.rng,
                                  device=t.device)
        stats = denoising_step(G.unet, t.g_opt, G.schedule, real, noise, timesteps, loss=t.g_loss_fn,
                               autocast=t.autocast)
        return stats, len(real)

    def sample_grid(self) -> tuple[torch.Tensor, int]:
        """The images of ``RUN/samples/step_XXXXXX.png``: the first ``N_GRID`` fixed z, rows of 8."""
        t = self.t
        return t.generate(t.z_fixed[:N_GRID]), 8
