"""The training engine: one GAN training loop a student can read, that resumes exactly and runs fast.

    trainer = Trainer(make_config("course", size=64, steps=2000), load_dataset("phantom", size=64), out="runs/a")
    trainer.fit()                       # or, step by step in a notebook:
    trainer.d_step(); trainer.g_step()  # one discriminator update, one generator update

The engine is the same for every GAN family (``cfg.family``, ``FAMILIES``); a family supplies its
networks, how a batch is drawn and its D step and G step (the protocol of ``cxrlib.gan.family``; the engine asks
the family, never its name) -- the whole algorithm of one family is one file:
``cxrlib.unconditional`` (G(z), the course's start) and ``cxrlib.conditional`` (G(z, y) with class-conditional
norms, a projection D), whose steps are the plain functions of ``cxrlib.gan.steps``, the D step and the G step
to read (``run_d_step`` / ``run_g_step`` run them with the trainer's networks and choices), and the image-to-image
families ``cxrlib.pix2pix`` (masks → X-ray: U-Net, PatchGAN, L1) and ``cxrlib.cyclegan`` (normal ↔ pneumonia
from unpaired images: two G, two D, cycle and identity losses, an image pool). What the engine adds around them:

* An exponential moving average of G (the EMA generator, ``cxrlib.gan.ema``) is what we sample from: it
  averages out the last steps' oscillations. Its BatchNorm statistics are G's latest, copied at every update;
  with ``cfg.ema_bn_refresh`` they are recomputed for the averaged weights before it is sampled or saved.

Engineering (why the loop looks the way it does; the machinery is in ``cxrlib.engine``, one job per module, as
plain functions of the trainer that its methods call -- checkpoints and resume in ``state``, the NaN guard in
``stopping``, samples in ``sampling``, the log's sums in ``logs`` --, and the names this module offered before
stay importable from here):

* the whole data set is a uint8 tensor on the training device; a batch is ``images[randint(...)]`` turned
  into floats there (no DataLoader, no PIL). A set too large for the GPU (``device_data_limit``) or
  memory-mapped from its cache file (``ImageSet.memmap``) stays on the host: batches are read by index
  (``cxrlib.data.RowReader``) and, on a GPU, staged one ahead in pinned memory (``HostBatches``; both in
  ``cxrlib.engine.batches``);
* every random draw (batch indices, z, augmentation, label flips) comes from the trainer's own
  ``torch.Generator``; dropout draws from torch's global generator, which the D and G steps set to the
  trainer's own saved stream (``with_own_global_rng``, ``cxrlib.engine.rng``). Each stream has its own seed
  derived from ``cfg.seed`` (``distributed.stream_seed``; the initialisation uses ``cfg.seed`` itself). The states go
  into the checkpoint, so a resumed run continues *exactly* as if it had never stopped -- bit for bit on a
  CPU; on CUDA statistically the same (upsampling's backward and cuDNN's default algorithms are not
  deterministic);
* under ``torchrun`` one model trains on N processes (``cxrlib.distributed``): ``cfg.batch`` is the global
  batch, gradients are averaged before every optimiser step, rank 0 writes the files;
* ``cfg.steps`` is the length of a run; ``cfg.minutes`` is a safety net on its total training time (kept in
  the checkpoint, so a resumed run does not get it again), and ``fit`` warns when the net cut a run short;
* statistics stay tensors between log lines (no ``.item()``, no host synchronisation per step);
* bf16 autocast where the hardware has bf16 (CUDA, CPUs with AVX512-BF16/AMX), ``channels_last``, fused
  Adam (CUDA; CPU from torch 2.4; ``cxrlib.engine.hardware``), optional ``torch.compile``.

Files of a run directory ``RUN``: ``config.json``, ``log.jsonl`` (one JSON object per log interval),
``samples/step_XXXXXX.png`` (fixed-z grids), ``checkpoints/last.pt`` and ``checkpoints/step_XXXXXX.pt``
(read, upgraded and exported by ``cxrlib.engine.checkpoints``).
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
import warnings
from pathlib import Path

import torch

from cxrlib import augment, distributed, losses
from cxrlib.conditional import Conditional as Conditional
from cxrlib.conditional import class_labels as class_labels
from cxrlib.config import IMAGE_TO_IMAGE as IMAGE_TO_IMAGE
from cxrlib.config import TrainConfig, make_config
from cxrlib.cyclegan import CycleGAN as CycleGAN
from cxrlib.engine import logs, sampling, stopping
from cxrlib.engine import state as run_state
from cxrlib.engine.batches import DEVICE_DATA_SHARE as DEVICE_DATA_SHARE
from cxrlib.engine.batches import HostBatches, training_images
from cxrlib.engine.batches import device_data_limit as device_data_limit
from cxrlib.engine.benchmark import time_steps
from cxrlib.engine.checkpoints import CHECKPOINT_FORMAT as CHECKPOINT_FORMAT
from cxrlib.engine.checkpoints import CHECKPOINT_VERSION as CHECKPOINT_VERSION
from cxrlib.engine.checkpoints import export_pretrained as export_pretrained
from cxrlib.engine.checkpoints import load_checkpoint as load_checkpoint
from cxrlib.engine.checkpoints import upgrade_checkpoint as upgrade_checkpoint
from cxrlib.engine.families import FAMILIES
from cxrlib.engine.hardware import adam as adam
from cxrlib.engine.hardware import amp_dtype
from cxrlib.engine.hardware import cuda_has_native_bf16 as cuda_has_native_bf16
from cxrlib.engine.processes import join_processes, optimizers, sync_batchnorm
from cxrlib.engine.rng import own_generator, seeded_networks, with_own_global_rng
from cxrlib.engine.sampling import EMA_NORM_BATCH as EMA_NORM_BATCH
from cxrlib.engine.sampling import EMA_NORM_BATCHES as EMA_NORM_BATCHES
from cxrlib.engine.sampling import SAMPLE_BATCH
from cxrlib.engine.sampling import fixed_batches as fixed_batches
from cxrlib.engine.sampling import load_discriminator as load_discriminator
from cxrlib.engine.sampling import load_generator as load_generator
from cxrlib.engine.sampling import write_samples as write_samples
from cxrlib.engine.stopping import StopSignals, WallClockCapWarning, any_process, past_deadline
from cxrlib.errors import CxrError, TrainingStopped
from cxrlib.files import atomic_write as atomic_write
from cxrlib.files import claim_folder as claim_folder
from cxrlib.gan import dp
from cxrlib.gan import steps as gan_steps
from cxrlib.gan.ema import EMA, ema_beta
from cxrlib.gan.ema import NORM_STATS_SEED as NORM_STATS_SEED
from cxrlib.gan.ema import norm_layers as norm_layers
from cxrlib.gan.plateau import PLATEAU_THRESHOLD as PLATEAU_THRESHOLD
from cxrlib.gan.plateau import plateau_step
from cxrlib.gan.steps import frozen as frozen
from cxrlib.gan.steps import grad_norm as grad_norm
from cxrlib.images import as_images as as_images
from cxrlib.images import to_float
from cxrlib.images import to_uint8 as to_uint8
from cxrlib.models import evaluating as evaluating
from cxrlib.pix2pix import Pix2Pix as Pix2Pix
from cxrlib.unconditional import Unconditional as Unconditional

# What a log line holds, averaged over the steps since the previous line (besides step, time and lr).
LOGGED_STATS = ("d_loss", "g_loss", "d_loss_real", "d_loss_fake", "D(x)", "D(G(z))", "g_grad_norm", "d_grad_norm")
SAMPLE_SEED = 1234  # the fixed z of the sample grids and of the adaptive-lr quality signal


def checked_config(cfg: TrainConfig | dict | None, data) -> TrainConfig:
    """The config a ``Trainer`` gets (None: ``make_config()``; a dict: its fields), validated, with training data."""
    if cfg is None:
        cfg = make_config()
    cfg = (TrainConfig.from_dict(cfg) if isinstance(cfg, dict) else cfg).validate()
    if data is None:
        raise CxrError("Trainer needs training data: an ImageSet or a uint8 tensor (N, 1, S, S)")
    return cfg


def private_training(trainer) -> dp.PrivacyAccount:
    """DP-SGD's plan for a trainer's run (``cfg.dp_epsilon``): δ (default 1 / the training images), the Poisson
    rate batch / images, σ for the run's D steps, and a check that D scores each image alone."""
    t, cfg = trainer, trainer.cfg
    if t.world > 1:
        raise CxrError("DP-SGD runs in one process: its noise is added once to the whole batch's clipped gradients")
    delta = cfg.dp_delta if cfg.dp_delta is not None else 1.0 / t.n_train
    if delta > 1.0 / t.n_train:
        raise CxrError(f"dp_delta {delta:g} is above 1 / {t.n_train} training images: δ is the chance the guarantee "
                       "fails outright, so it must stay below one patient in the set (default 1/N)")
    mixing = norm_layers(t.D)
    if mixing:
        raise CxrError(f"DP-SGD needs a D that scores each image alone; this D's {type(mixing[0]).__name__} "
                       "normalises each image with its batch's statistics")
    return dp.PrivacyAccount(cfg.dp_epsilon, delta, cfg.dp_max_grad_norm, cfg.batch / t.n_train,
                             cfg.steps * cfg.d_steps_per_g_step, t.device)


def warn_penalty_with_batchnorm(cfg: TrainConfig, D: torch.nn.Module) -> None:
    """WGAN-GP's per-image gradient penalty is not the paper's when D has BatchNorm: say so in one warning."""
    if cfg.loss in losses.PENALISED and norm_layers(D):
        warnings.warn(f"loss 'wgan-gp' with the {cfg.preset} D, which has BatchNorm: each image's score "
                      "then depends on its batch, so the per-image gradient penalty is not the paper's "
                      "(Gulrajani et al. use no BatchNorm in the critic); --preset course has a D without it",
                      stacklevel=3)


# ======================================================================= the trainer
class Trainer:
    """Train a GAN (G, D) on uint8 images with a ``TrainConfig``.

    cfg: a ``TrainConfig`` (or a dict of its fields; default ``make_config("course")``); data: an ``ImageSet``
    or a uint8 tensor (N, 1, S, S) with S = ``cfg.size``; out: the run directory (None: nothing is written;
    nothing is written there before ``fit`` holds its lock, which writes ``config.json`` first);
    callbacks: functions ``cb(trainer, record)`` called with every log record (live curves in a notebook); one
    with an ``on_samples(trainer, step, grid, nrow)`` method also gets each sample grid ``save_samples`` draws.

    Attributes: ``G``, ``D``, ``ema`` (None without EMA), ``g_opt``, ``d_opt``, ``step`` (iterations done),
    ``images_seen`` (real images shown to D), ``seconds`` (training wall-clock of the run, over all ``fit``
    calls and resumes), ``rng`` (the trainer's generator), ``device``, ``dp`` (a private run's DP-SGD budget and
    accountant, ``cxrlib.gan.dp.PrivacyAccount``; None without ``cfg.dp_epsilon``); after ``fit``: ``target_step``
    (its step target, None for a time-only run) and ``stopped_by_time`` (True when the wall-clock cap ended it
    before).
    """

    def __init__(self, cfg: TrainConfig | dict | None = None, data=None, out=None, callbacks=()):
        cfg = checked_config(cfg, data)
        family = FAMILIES[cfg.family]
        self.cfg = cfg = family.configure(cfg, data)
        # this process's place in the run: under torchrun one of several (cxrlib.engine.processes), else rank 0 of 1
        self.rank, self.world, self.device, self.batch = join_processes(cfg.device, cfg.batch)  # batch: per process
        self.writer = self.rank == 0  # the process that writes the run's files
        self.amp_dtype = amp_dtype(cfg.amp, self.device)
        self.out = Path(out) if out is not None else None
        self.callbacks = list(callbacks)
        # the training images: all of them on the device when they fit, else batches from the host
        # (cxrlib.engine.batches); heldout: the adaptive learning rate's images, which D never sees
        self.images, self.labels, self.heldout, self.rows, self.on_host, self.reader = training_images(
            data, cfg, self.device)

        # G and D, initialised from cfg.seed (and dropout's own random stream, cxrlib.engine.rng)
        G, D, self.global_rng = seeded_networks(family, cfg, self.rank)
        self.memory_format = fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.G, self.D = G.to(self.device, memory_format=fmt), D.to(self.device, memory_format=fmt)
        self.z_dim = getattr(G, "z_dim", 0)  # 0: an image-to-image G, which takes no latent
        distributed.broadcast_module(self.G)  # every process starts from rank 0's weights
        distributed.broadcast_module(self.D)
        self.ema = EMA(self.G) if cfg.ema_half_life_kimg > 0 else None  # the EMA generator we sample from
        self.G, self.D = sync_batchnorm(self.G, self.D, self.world, self.device, family.sync_batchnorm)
        # torch.compile wraps the forward passes; state dicts stay those of G and D
        self.G_fwd = torch.compile(self.G) if cfg.compile else self.G
        self.D_fwd = torch.compile(self.D) if cfg.compile else self.D
        self.g_opt, self.d_opt = optimizers(self.G, self.D, cfg, self.world)
        self.d_loss_fn, self.g_loss_fn = losses.LOSSES[cfg.loss]
        self.ada = None  # ADA: p starts at 0 and follows D's overfitting signal r_t
        if cfg.ada and cfg.augment:
            self.ada = augment.AdaptiveAugment(target=cfg.ada_target, speed_kimg=cfg.ada_speed_kimg, device=self.device)
        # every other random draw of training comes from the trainer's own generator (checkpointed: exact resume)
        self.rng = own_generator(cfg.seed, self.device, self.rank, self.global_rng)
        self.host_batches = None  # a GPU run whose data stays on the host: batches staged one ahead
        if self.on_host:
            self.host_batches = HostBatches(self.reader or self.images, self.device,
                                            distributed.stream_seed(cfg.seed, "batches", self.rank), self.rows)
        self.dp = private_training(self) if cfg.dp_epsilon is not None else None  # DP-SGD on D: cxrlib.gan.dp
        self.family = family(self, data)  # the D step and G step of this kind of GAN
        # e.g. pix2pix's l1, and WGAN-GP's penalty (on every D step: averaged like the losses)
        penalty = ("gp",) if cfg.loss in losses.PENALISED else ()
        self.logged_stats = LOGGED_STATS + tuple(self.family.extra_stats) + penalty
        warn_penalty_with_batchnorm(cfg, self.D)

        self.step, self.images_seen, self.d_updates, self.seconds = 0, 0, 0, 0.0
        self.target_step, self.stopped_by_time = cfg.steps, False  # set by fit()
        self.lr_scale = 1.0  # changed by the adaptive (reduce-on-plateau) schedule
        self.lr_decay = 1.0  # the linear decay of cfg.lr_decay_start (CycleGAN), recomputed every step
        self.plateau = {"best": math.inf, "bad": 0}
        n_grid = 64 if cfg.size <= 128 else 16
        self.z_fixed = torch.randn(n_grid, self.z_dim, generator=torch.Generator().manual_seed(SAMPLE_SEED))
        self._sums, self._n_summed, self._last_log, self._pending_finite = None, 0, None, None
        self.run_opened, self.resumed_at = False, None  # nothing is written to out before fit claims it

    # ------------------------------------------------------------------ building blocks
    @property
    def n_train(self) -> int:
        """How many training images batches are drawn from."""
        return len(self.rows) if self.rows is not None else len(self.images)

    def count_images(self, n: int) -> None:
        """Count n real images shown to D by this process (``images_seen`` counts those of all processes)."""
        self.images_seen += int(n) * self.world

    def on_device(self):
        """CUDA calls inside go to the training device (not the current one; matters with ``cuda:1``)."""
        return torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext()

    def autocast(self):
        """bf16 autocast on the training device when ``cfg.amp`` allows it, else a no-op."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def next_batch(self, batch: int | None = None) -> torch.Tensor:
        """B random training images (with replacement; default this process's share of ``cfg.batch``):
        (B, 1, S, S) float in [-1, 1] on the device."""
        n = batch or self.batch
        if self.host_batches is not None and self.dp is None:
            return to_float(self.host_batches.take(n)).contiguous(memory_format=self.memory_format)
        return self.images_at(self.batch_indices(n))

    def batch_indices(self, n: int) -> torch.Tensor:
        """Indices of n random training images, with replacement (0 … ``n_train`` - 1, on the device); under DP-SGD a
        Poisson sample instead, each image with probability n / ``n_train``: its size varies around n, and its mask
        comes from the accountant's secret ``sampling`` stream, not from ``rng`` (which images a step read is
        private: ``cxrlib.gan.dp``)."""
        if self.dp is not None:
            return dp.poisson_sample(self.n_train, n / self.n_train, self.dp.sampling, self.device)
        return torch.randint(self.n_train, (n,), generator=self.rng, device=self.device)

    def images_at(self, idx: torch.Tensor) -> torch.Tensor:
        """Training images by index (0 … ``n_train`` - 1) → (B, 1, S, S) float in [-1, 1] on the device, in
        the training layout. Images kept on the host are gathered there and copied over."""
        if self.rows is not None:
            idx = self.rows[idx.cpu()]
        if self.reader is not None or self.images.device != self.device:
            x = self.reader.read(idx.cpu()) if self.reader is not None else self.images[idx.cpu()]
            x = (x.pin_memory() if self.device.type == "cuda" else x).to(self.device, non_blocking=True)
        else:
            x = self.images[idx]
        return to_float(x).contiguous(memory_format=self.memory_format)

    def sample_z(self, batch: int | None = None) -> torch.Tensor:
        """Latent vectors z ~ N(0, I): (B, z_dim) on the device (default B: this process's batch)."""
        return torch.randn(batch or self.batch, self.z_dim, generator=self.rng, device=self.device)

    @property
    def aug_p(self) -> float | torch.Tensor:
        """Probability of each augmentation (adaptive with ADA); 0 without augmentation."""
        if not self.cfg.augment:
            return 0.0
        return self.ada.p if self.ada is not None else self.cfg.augment_p

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """DiffAugment with this step's policy and p -- the same for real and fake batches."""
        if not self.cfg.augment:
            return x
        return augment.diff_augment(x, policy=self.cfg.augment, p=self.aug_p, generator=self.rng)

    def d_loss(self, real_logits, fake_logits):
        """D's loss and statistics from its logits on real and fake images (the config's loss and tricks)."""
        if self.cfg.loss in losses.TRICK_LOSSES:
            return self.d_loss_fn(real_logits, fake_logits, label_smoothing=self.cfg.label_smoothing,
                                  flip_prob=self.cfg.flip_prob, generator=self.rng)
        return self.d_loss_fn(real_logits, fake_logits)

    def update_ema(self) -> None:
        """Move the EMA generator toward G (after each G update)."""
        if self.ema is not None:
            cfg = self.cfg
            self.ema.update(self.G, ema_beta(cfg.batch, cfg.ema_half_life_kimg, self.images_seen, cfg.ema_rampup))

    # ------------------------------------------------------------------ the engine's side of cxrlib.gan.steps
    # A family draws the batch, its labels and z from the trainer's generator, in that order; these run the plain
    # step with the trainer's networks and choices (the step then draws the augmentations and the label flips).
    def run_d_step(self, real: torch.Tensor, z: torch.Tensor, real_labels: torch.Tensor | None = None,
                   fake_labels: torch.Tensor | None = None) -> dict:
        """``cxrlib.gan.steps.d_step`` with this trainer's G, D, optimiser, loss and augmentation.

        R1/R2 are added every ``reg_every`` D updates (lazy regularisation), WGAN-GP's penalty (``cfg.gp_weight``,
        loss "wgan-gp") on every one, both with the uncompiled D (a compiled one cannot differentiate twice);
        ADA sees D's logits on the reals (``Trainer.d_step`` then counts the update and the images).
        Returns 0-d tensors: d_loss, d_loss_real, d_loss_fake, D(x), D(G(z)), d_grad_norm (+ r1, r2, gp)."""
        cfg = self.cfg
        if self.dp is not None:  # DP-SGD: each real image's gradient clipped and noised (cxrlib.gan.dp)
            self.dp.step()  # counted first: a step past the budget is refused before it runs
            return dp.dp_d_step(self.G_fwd, self.D, self.d_opt, real, z, real_labels=real_labels,
                                fake_labels=fake_labels, loss=self.d_loss, augment=self.augment,
                                max_grad_norm=self.dp.max_grad_norm, noise_multiplier=self.dp.noise_multiplier,
                                expected_batch=self.batch, noise_generator=self.dp.noise, autocast=self.autocast)
        lazy = self.d_updates % cfg.reg_every == 0  # lazy R1/R2: every reg_every steps
        r1_gamma, r2_gamma = (cfg.r1_gamma, cfg.r2_gamma) if lazy else (0.0, 0.0)
        gp_weight = losses.penalty_weight(cfg.loss, cfg.gp_weight)  # ε is drawn only when it is on
        D = self.D if r1_gamma > 0 or r2_gamma > 0 or gp_weight > 0 else self.D_fwd
        stats = gan_steps.d_step(self.G_fwd, D, self.d_opt, real, z, real_labels=real_labels, fake_labels=fake_labels,
                             loss=self.d_loss, augment=self.augment, r1_gamma=r1_gamma, r2_gamma=r2_gamma,
                             reg_every=cfg.reg_every, gp_weight=gp_weight, generator=self.rng, autocast=self.autocast,
                             on_real_logits=None if self.ada is None else self.ada.update)
        if self.ada is not None:
            self.ada.step(len(real))
        return stats

    def run_g_step(self, z: torch.Tensor, fake_labels: torch.Tensor | None = None, real_batch=None) -> dict:
        """``cxrlib.gan.steps.g_step`` with this trainer's networks and settings (``Trainer.g_step`` then moves
        the EMA of G).

        real_batch: a function returning (real images, labels), called only with a relativistic loss (G's loss
        then also reads D on a real batch). Returns 0-d tensors g_loss, g_grad_norm."""
        relativistic = self.cfg.loss in losses.RELATIVISTIC
        stats = gan_steps.g_step(self.G_fwd, self.D_fwd, self.g_opt, z, fake_labels=fake_labels, loss=self.g_loss_fn,
                             augment=self.augment, real_batch=real_batch if relativistic else None,
                             autocast=self.autocast)
        return stats

    # ------------------------------------------------------------------ the training step (the family's)
    @with_own_global_rng
    def d_step(self, real: torch.Tensor | None = None, labels: torch.Tensor | None = None) -> dict:
        """One discriminator update: D learns to call real images real and G(z) fake (the family's D step,
        whose algorithm is ``cxrlib.gan.steps.d_step``).

        real: (B, 1, S, S) float in [-1, 1] on the device (default: a random training batch); labels: their
        classes (conditional family). Returns 0-d tensors: d_loss, d_loss_real, d_loss_fake, D(x), D(G(z)),
        d_grad_norm (+ r1, r2). Afterwards the update and the real images D saw are counted, for every family."""
        stats, shown = self.family.d_step(real, labels)
        if self.family.trains_d:
            self.d_updates += 1
        self.count_images(shown if self.dp is None else self.batch)  # a Poisson sample's size is private: its mean
        return stats

    @with_own_global_rng
    def g_step(self) -> dict:
        """One generator update: G learns to make D call G(z) real (the family's G step; the algorithm is
        ``cxrlib.gan.steps.g_step``), then the EMA of G follows and the step's real images (if any) are counted.
        Returns 0-d tensors g_loss, g_grad_norm."""
        stats, shown = self.family.g_step()
        self.update_ema()
        self.count_images(shown)
        return stats

    def lr_decay_factor(self) -> float:
        """The learning rates' linear decay: 1 until ``cfg.lr_decay_start`` of the run (by steps, or by the
        time cap for a run without a step count), then linearly to 0 at its end (CycleGAN's schedule)."""
        start = self.cfg.lr_decay_start
        if start >= 1:
            return 1.0
        if self.cfg.steps:
            done = self.step / self.cfg.steps
        elif self.cfg.minutes:
            done = self.seconds / (60 * self.cfg.minutes)
        else:
            return 1.0
        return float(min(1.0, max(0.0, (1 - done) / (1 - start))))

    def train_step(self) -> dict:
        """One iteration: ``d_steps_per_g_step`` D updates, then ``g_steps_per_d_step`` G updates."""
        if self.cfg.lr_decay_start < 1:
            decay = self.lr_decay_factor()
            if decay != self.lr_decay:
                self.lr_decay = decay
                self.set_lr_scale(self.lr_scale)
        with self.on_device():
            for _ in range(self.cfg.d_steps_per_g_step):
                d_stats = self.d_step()
            for _ in range(self.cfg.g_steps_per_d_step):
                g_stats = self.g_step()
        self.step += 1
        stats = {**g_stats, **d_stats}
        stopping.check_finite(self, stats)  # the NaN guard (on a GPU it reads the previous step's flag)
        logs.accumulate(self, stats)  # running sums on the device, averaged by the next log()
        return stats

    # ------------------------------------------------------------------ the run
    def fit(self, steps: int | None = None, minutes: float | None = None, progress: bool = True) -> list[dict]:
        """Train, logging, sampling and checkpointing on the way; returns this call's log records.

        steps: how many *more* iterations to run; minutes: wall-clock cap of this call. With neither, run up
        to ``cfg.steps`` iterations in total within ``cfg.minutes`` of training in total (``self.seconds``,
        which the checkpoint keeps): a resumed run continues to the same totals, it does not get the time again.
        Afterwards ``stopped_by_time`` says whether the cap ended the call before its step target
        (``target_step``); then a ``WallClockCapWarning`` says so in one line.
        Raises ``CxrError`` (after keeping the last good checkpoint) when a loss becomes NaN or infinite.

        SIGINT or SIGTERM (Ctrl-C, ``kill``, a SLURM preemption): the current step is finished, ``log.jsonl``
        gets its line, ``checkpoints/last.pt`` is written at that step and ``TrainingStopped`` (a
        ``KeyboardInterrupt`` naming the checkpoint) is raised; with several processes every one stops at the
        same step. The signal handlers in place before ``fit`` are restored when it returns. While it runs, the
        run directory is claimed (``RUN/.lock``, see ``cxrlib.files.claim_folder``): a second writer is refused,
        in one line, before it writes anything (a trainer writes nothing into ``out`` before its ``fit``).
        """
        from cxrlib.progress import progress as progress_line

        cfg = self.cfg
        if steps is None and minutes is None:
            target, minutes = cfg.steps, cfg.minutes
            seconds_left = None if minutes is None else max(0.0, 60.0 * minutes - self.seconds)
        else:
            target = None if steps is None else self.step + int(steps)
            seconds_left = None if minutes is None else 60.0 * minutes
        deadline = None if seconds_left is None else time.perf_counter() + seconds_left
        if self.dp is not None:  # a private run refuses to start steps its budget cannot pay for
            self.dp.check_fits(None if target is None else max(0, target - self.step) * cfg.d_steps_per_g_step)
        self.target_step, self.stopped_by_time = target, False
        records: list[dict] = []
        self._clock = time.perf_counter() - self.seconds
        self._last_log = (time.perf_counter(), self.images_seen)
        bar = progress_line(total=None if target is None else max(0, target - self.step), desc="training",
                            unit="steps", disable=not progress or not self.writer)
        with run_state.claimed(self.out, self.writer, self.world), StopSignals() as stop:
            run_state.open_run(self)  # config.json (and a resumed run's log cut back) once the folder is ours
            try:
                stopped = self._loop(target, deadline, stop, bar, records)
            finally:
                bar.close()
            if stopped:  # a signal: finish as the run would, then say where its checkpoint is
                if self._n_summed:
                    records.append(self.log())
                path = self.save_checkpoint() if self.out is not None and self.step > 0 else None
                raise TrainingStopped(stop.signum or signal.SIGTERM, self.step, path)
            return self._finish(target, minutes, records)

    def _loop(self, target, deadline, stop, bar, records) -> bool:
        """The training loop of ``fit``; True when a signal stopped it."""
        cfg = self.cfg
        while (target is None or self.step < target) and not past_deadline(deadline, self.world, time.perf_counter):
            self.train_step()
            self.seconds = time.perf_counter() - self._clock
            bar.update(1)
            if self.step % cfg.log_every == 0:
                records.append(self.log())
                bar.set_postfix(d_loss=f"{records[-1]['d_loss']:.3f}", g_loss=f"{records[-1]['g_loss']:.3f}")
            if cfg.adaptive_lr and self.step % cfg.adaptive_every == 0:
                self.adapt_lr()
            if self.out is not None and self.writer and self.step % cfg.sample_every == 0:
                self.save_samples()
            if self.out is not None and self.step % cfg.checkpoint_every == 0:
                self.save_checkpoint(periodic=True)  # every process: the checkpoint holds all their streams
            if any_process(stop.signum is not None, self.world):  # several processes: all stop at this step
                return True
        return False

    def _finish(self, target, minutes, records) -> list[dict]:
        if target is not None and self.step < target:  # the loop only ends early at the deadline
            self.stopped_by_time = True
            warnings.warn(f"stopped by the wall-clock cap ({minutes:g} min) after {self.step} of {target} steps: "
                          "results differ from a full run; raise minutes or run on a quieter machine",
                          WallClockCapWarning, stacklevel=3)
        if self._n_summed:
            records.append(self.log())
        if self.out is not None and self.step > 0:
            if self.writer:
                self.save_samples()
            self.save_checkpoint()
        distributed.check_in_sync(self.G, self.D)  # several processes: they must end with the same weights
        return records

    def log(self) -> dict:
        """Average the statistics since the last line into a record; append it to ``log.jsonl``; call the callbacks
        (``cxrlib.engine.logs``)."""
        return logs.log(self, time.perf_counter())

    # ------------------------------------------------------------------ samples (cxrlib.engine.sampling)
    def generate(self, z: torch.Tensor, ema: bool = True, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images of the EMA generator (or of G with ``ema=False`` or without EMA), eval mode.

        z: (B, z_dim) → (B, 1, S, S) float in [-1, 1] on the device; labels: (B,) classes for a conditional
        G (None: the classes in turn)."""
        return sampling.generate(self, z, ema=ema, labels=labels)

    def refresh_ema_norm_stats(self, force: bool = False) -> None:
        """Recompute the EMA generator's BatchNorm statistics for its averaged weights (see
        ``EMA.refresh_norm_stats``) when ``cfg.ema_bn_refresh`` and a G step changed the average since the
        last time, or now with ``force`` (whatever the config; the next G step copies G's back). ``generate``
        and ``state_dict`` call it, so samples and checkpoints carry statistics that match the weights;
        training's random streams are untouched."""
        sampling.refresh_ema_norm_stats(self, force)

    def sample(self, n: int, seed: int = 0, ema: bool = True, batch: int = SAMPLE_BATCH, label=None) -> torch.Tensor:
        """n images from z drawn with ``seed`` (same seed, same images, whatever n: image i is always computed
        in a call of ``batch`` rows; training randomness untouched).

        label (conditional family): a class name or index for all n, or a tensor of n indices (None: the
        classes in turn). Returns uint8 (n, 1, S, S) on the CPU."""
        return sampling.sample(self, n, seed=seed, ema=ema, batch=batch, label=label)

    def save_samples(self, path=None) -> Path:
        """A grid of the fixed-z samples → ``RUN/samples/step_XXXXXX.png`` (or ``path``); the callbacks' ``on_samples``
        get it too."""
        return sampling.save_samples(self, path)

    # ------------------------------------------------------------------ adaptive learning rate
    def set_lr_scale(self, scale: float) -> None:
        """Set both learning rates to ``scale`` × the configured ``g_lr`` / ``d_lr``."""
        self.lr_scale = float(scale)
        for opt, lr, betas in ((self.g_opt, self.cfg.g_lr, self.cfg.g_betas), (self.d_opt, self.cfg.d_lr, self.cfg.d_betas)):
            for group in opt.param_groups:
                group["lr"], group["betas"] = lr * self.lr_scale * self.lr_decay, tuple(betas)

    def quality(self, n: int = 256) -> float:
        """Sliced Wasserstein distance (average over pyramid levels) of n EMA samples to the held-out images."""
        from cxrlib import metrics

        real = self.heldout if self.heldout is not None else self.images[:n].cpu()
        with torch.random.fork_rng(devices=[]):  # the metric's randomness must not shift training's
            return float(metrics.swd(real[:n], self.sample(min(n, max(len(real), 64)), seed=SAMPLE_SEED))["avg"])

    def adapt_lr(self) -> dict:
        """Reduce on plateau: measure ``quality()``; when it has not improved by 1 % for ``adaptive_patience``
        measurements, multiply both learning rates by ``adaptive_factor``. Returns {"swd", "lr_scale"}."""
        d = self.quality() if self.writer else math.nan
        d = distributed.broadcast_object(d)  # rank 0 measures; every process takes the same decision
        best, bad, reduce = plateau_step(self.plateau["best"], self.plateau["bad"], d, self.cfg.adaptive_patience)
        self.plateau = {"best": best, "bad": bad}
        if reduce:
            self.set_lr_scale(self.lr_scale * self.cfg.adaptive_factor)
        info = {"step": self.step, "swd": d, "lr_scale": self.lr_scale}
        if self.out is not None and self.writer:
            run_state.open_run(self)  # config.json first, when called outside fit
            with open(self.out / "adaptive_lr.jsonl", "a") as f:
                f.write(json.dumps(info) + "\n")
        return info

    # ------------------------------------------------------------------ checkpoints (cxrlib.engine.state)
    def state_dict(self) -> dict:
        """Everything needed to continue exactly: weights, optimisers, counters, RNG states, config.

        With ``cfg.ema_bn_refresh`` the EMA generator's BatchNorm statistics are refreshed first
        (``refresh_ema_norm_stats``), so a checkpoint samples as the trainer does; they depend on its weights
        alone and the next G step replaces them, so training continues exactly the same either way."""
        return run_state.state_dict(self)

    def load_state_dict(self, state: dict, optimizers: bool = True, rng: bool = True) -> None:
        """Restore a ``state_dict()`` (weights always; optimiser moments, counters and RNG states unless told not)."""
        run_state.load_state_dict(self, state, optimizers=optimizers, rng=rng)

    def save_checkpoint(self, path=None, periodic: bool = False) -> Path:
        """Write the state to ``path`` (default ``RUN/checkpoints/last.pt``; ``periodic`` also keeps
        ``step_XXXXXX.pt``), atomically: a temporary file in the same folder, then a rename."""
        return run_state.save_checkpoint(self, path, periodic)

    @classmethod
    def resume(cls, src, data, out=None, callbacks=(), **overrides) -> Trainer:
        """Continue a run exactly where its checkpoint left off.

        src: a run directory (uses ``checkpoints/last.pt``) or a checkpoint file; data: the same training
        images; overrides: config fields to change (e.g. ``steps`` to train longer). ``minutes`` caps the run's
        total training time, the checkpoint's ``seconds`` included: a resumed run gets what is left of it.
        """
        return run_state.resume(cls, src, data, out=out, callbacks=callbacks, **overrides)

    @classmethod
    def finetune(cls, ckpt, data, out=None, *, lr_scale: float = 0.5, d_lr_scale: float = 1.0,
                 betas: tuple[float, float] = (0.0, 0.99), adaptive: bool = False, steps: int | None = None,
                 minutes: float | None = None, callbacks=(), **overrides) -> Trainer:
        """The original project's second phase: continue a trained model with lower learning rates and an EMA
        generator.

        ckpt: a checkpoint file, a run directory or a loaded ``load_checkpoint`` dict; out: a new run directory.

        G's lr becomes ``lr_scale`` × the checkpoint's, D's ``d_lr_scale`` × (defaults give the original
        project's values from its 1e-4/1e-4 run: G 5e-5, D 1e-4), Adam betas ``betas`` (the original project's:
        (0, 0.99)) with fresh moments; an EMA generator is switched on when the run had none (the original
        project's 0.999 per step).
        ``adaptive``: reduce-on-plateau of the SWD quality signal (see ``adapt_lr``), held-out images taken
        from ``data``. steps: iterations to add; minutes: wall-clock cap of the fine-tuning, on its own clock
        (``seconds`` starts at 0); with neither, the budget's step count (``config.budget().steps``, as the CLI's
        ``finetune``), not the checkpoint's own total, which it has already reached. ADA's p and its statistics
        carry over when both runs use ADA.
        """
        return run_state.finetune(cls, ckpt, data, out=out, lr_scale=lr_scale, d_lr_scale=d_lr_scale, betas=betas,
                              adaptive=adaptive, steps=steps, minutes=minutes, callbacks=callbacks, **overrides)


# ======================================================================= throughput
def throughput(preset: str = "dcgan", size: int = 64, batch: int | None = None, steps: int = 10, warmup: int = 3,
               amp: str = "auto", device: str = "auto", channels_last: bool = True, **overrides) -> dict:
    """Measure training speed of a preset on random data: {"images_per_s", "ms_per_step", "batch", …}.

    Runs ``warmup`` iterations untimed, then ``steps`` timed ones (synchronising the device at both ends:
    ``cxrlib.engine.benchmark.time_steps``).
    """
    cfg = make_config(preset, size=size, steps=steps + warmup, amp=amp, device=device,
                      channels_last=channels_last, **({"batch": batch} if batch else {}), **overrides)
    data = torch.randint(0, 256, (max(cfg.batch, 64), 1, size, size), dtype=torch.uint8)
    t = Trainer(cfg, data)
    dt, peak = time_steps(t.train_step, t.device, steps, warmup)
    result = {"preset": preset, "size": size, "batch": cfg.batch, "amp": str(t.amp_dtype or "fp32").replace("torch.", ""),
              "device": t.device.type, "images_per_s": cfg.batch * cfg.d_steps_per_g_step * steps / dt,
              "ms_per_step": 1000 * dt / steps}
    if peak is not None:
        result["peak_memory_gb"] = peak / 2**30
    return result
