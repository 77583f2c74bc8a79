"""Configuration: the hardware budget, the device, threads and where caches live, and the training configuration.

``budget()`` is what every notebook prints in its opening cell: it picks image size, data-set size,
batch and number of steps for the hardware, so nobody edits numbers to make a notebook fast.
The budget of a training run is its number of steps, so every machine trains the same run and gets the
same numbers, only faster or slower; ``minutes`` is a safety net (about 3× the expected time) that stops a
run on a much slower or overloaded machine, and training says so when it does. Three budgets exist:

* ``smoke`` when the environment variable ``CXRLIB_SMOKE=1`` is set (CI: tiny runs, every training cell in seconds),
* ``cpu``  on a laptop (80 steps of the course preset at 64 px; how long they take: benchmarks/RESULTS.md),
* ``gpu``  when CUDA is available (real runs at 256 px and above).

A budget can also change a preset's networks: ``Budget.recipe`` (``CPU_RECIPES``: on a CPU, the smaller networks
measured to work in its time, e.g. CycleGAN's), which ``train`` on the command line starts from.

The training configuration lives here too (section "training configuration" below): ``TrainConfig``, every
setting of a run (stored in its checkpoints), and ``PRESETS``, one recipe per preset name -- ``original`` (old
name ``seed``), ``dcgan``, ``course``, ``style``, ``modern``, ``pix2pix``, ``cyclegan``, ``diffusion``; ``make_config(preset,
**overrides)`` builds a checked config from one. ``cxrlib.train`` trains with it.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path

SMOKE_ENV = "CXRLIB_SMOKE"


def is_smoke() -> bool:
    """True when ``CXRLIB_SMOKE`` is set to a true value (CI and quick checks)."""
    return os.environ.get(SMOKE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def cpu_cores() -> int:
    """Cores this process may use (respects affinity masks and container limits where visible)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        n = os.cpu_count() or 1
    return max(1, n)


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads: ``n``, else ``$CXRLIB_THREADS``, else the number of usable cores (shared
    out among the processes torchrun started on this machine, ``LOCAL_WORLD_SIZE``).

    Returns the number set. On a machine shared with other busy processes, fewer threads than cores is
    often faster (OpenMP threads spin while waiting for a core): set ``CXRLIB_THREADS=1`` there."""
    import torch

    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE") or 1))
    n = n or int(os.environ.get("CXRLIB_THREADS") or 0) or max(1, cpu_cores() // local)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def get_device(device: str | None = "auto"):
    """``"auto"`` → CUDA when available, else Apple ``mps``, else CPU; any other string is passed to torch."""
    import torch

    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def cpu_model() -> str:
    """The CPU's model name ("AMD EPYC", "Intel(R) Core(TM) i5-8250U …"), for the records a run leaves; Linux reads
    ``/proc/cpuinfo``, elsewhere ``platform.processor()``, else the architecture."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_has_bf16() -> bool:
    """True when this CPU has native bf16 arithmetic (AVX512-BF16 or AMX), where bf16 autocast pays off.

    False as well when ``ONEDNN_MAX_CPU_ISA`` keeps oneDNN below those instructions (e.g. ``AVX2``: how the
    benchmarks time an AVX2-only laptop on a newer CPU)."""
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if isa and isa not in ("ALL", "DEFAULT") and "BF16" not in isa and "AMX" not in isa:
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


MEMMAP_ENV = "CXRLIB_MEMMAP_BYTES"


def host_memory_available() -> int:
    """Bytes of memory available to new allocations on this machine (Linux: MemAvailable; else total × ½)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def memmap_threshold() -> int:
    """Bytes of decoded pixels above which a data set stays memory-mapped in its cache file rather than being
    read into memory: ``$CXRLIB_MEMMAP_BYTES`` (e.g. ``0`` maps every set), else a quarter of the memory
    available now (~6 GB on a 24 GB machine: 90,000 images at 256 px, 23,000 at 512 px)."""
    from cxrlib.errors import CxrError

    value = os.environ.get(MEMMAP_ENV, "").strip()
    if value:
        try:
            return int(float(value))
        except ValueError:
            raise CxrError(f"${MEMMAP_ENV} must be a number of bytes, got {value!r}") from None
    return host_memory_available() // 4


def cache_dir() -> Path:
    """Where decoded data sets are cached: ``$CXRLIB_CACHE`` or ``~/.cache/cxrlib`` (never a source folder)."""
    root = os.environ.get("CXRLIB_CACHE")
    if root:
        return Path(root).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cxrlib"


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much work a notebook cell or ``make demo`` may do on this machine.

    kind: ``"smoke"``, ``"cpu"`` or ``"gpu"``; size: image side in px; n_images: data-set size;
    batch: training batch; steps: training iterations (one D step each) -- *the* budget of a training run;
    minutes: a safety net on a run's wall-clock (about 3× what ``steps`` take on the machine the budget is
    for), not a length: it only binds on a much slower or busy machine, and ``Trainer.fit`` then warns;
    eval_images: images per side for metrics.
    """

    kind: str
    device: str
    size: int
    n_images: int
    batch: int
    steps: int
    minutes: float
    eval_images: int
    threads: int

    def recipe(self, preset: str) -> dict:
        """What this budget changes in ``preset``'s recipe: on the ``cpu`` and ``smoke`` budgets (no GPU's time) the
        networks measured to work on a CPU, ``CPU_RECIPES`` (a copy); on the ``gpu`` budget nothing, the preset's own
        networks (the papers'). ``train`` on the command line starts from it, under every flag, ``--set`` and
        ``--config``; ``make_config`` never applies it (the same preset is the same run on every machine)."""
        if self.kind == "gpu":
            return {}
        return copy.deepcopy(CPU_RECIPES.get(PRESET_ALIASES.get(preset, preset), {}))

    def __str__(self) -> str:
        return (
            f"budget: {self.kind} on {self.device} ({self.threads} CPU threads) · {self.size}px · "
            f"{self.n_images} images · batch {self.batch} · {self.steps} steps (≤ {self.minutes:g} min) · "
            f"{self.eval_images} images for metrics"
        )


def budget(kind: str | None = None) -> Budget:
    """The budget for this machine, or the named one (``"smoke"``, ``"cpu"``, ``"gpu"``)."""
    dev = get_device("auto")
    if kind is None:
        kind = "smoke" if is_smoke() else ("gpu" if dev.type == "cuda" else "cpu")
    threads = cpu_cores()
    if kind == "smoke":
        return Budget("smoke", dev.type, 32, 96, 16, 40, 2.0, 64, threads)
    if kind == "cpu":  # 80 course steps at 64 px, batch 32 (what a step takes on which CPU: benchmarks/RESULTS.md)
        return Budget("cpu", dev.type, 64, 1000, 32, 80, 5.0, 500, threads)
    if kind == "gpu":
        return Budget("gpu", dev.type, 256, 3000, 32, 20000, 30.0, 2000, threads)
    raise ValueError(f"unknown budget {kind!r}: choose 'smoke', 'cpu' or 'gpu'")


# ======================================================================= training configuration
# One dataclass for the CLI and the notebooks. ``make_config("course", steps=500)`` starts from a preset and
# overrides fields by name; ``TrainConfig.to_dict()`` / ``from_dict()`` round-trip through JSON and
# checkpoints (primitives only, so a checkpoint loads with ``torch.load(weights_only=True)``).

AMP_CHOICES = ("auto", "bf16", "off")
GAN_LOSSES = ("bce", "hinge", "lsgan", "rpgan", "wgan-gp")
LOSS_CHOICES = (*GAN_LOSSES, "denoising")  # denoising: the diffusion family's, which trains no D
TRICK_LOSSES = ("bce", "rpgan")  # the losses that take label smoothing and flipping
# The GAN families by name, and what each is: the answers of its class in ``cxrlib.engine.families.FAMILIES`` to
# the questions ``cxrlib.gan.family.Family`` documents. ``validate`` asks them here, because the engine imports this
# module and not the other way round; a test holds this table to the classes.
FAMILY_TRAITS: dict[str, dict] = {
    "unconditional": dict(draws_from_z=True, takes_labels=False, needs_masks=False, needs_domains=False,
                          losses=GAN_LOSSES),
    "conditional": dict(draws_from_z=True, takes_labels=True, needs_masks=False, needs_domains=False,
                        losses=("bce", "hinge", "lsgan", "rpgan")),
    "pix2pix": dict(draws_from_z=False, takes_labels=False, needs_masks=True, needs_domains=False,
                    losses=("bce", "hinge", "lsgan")),
    "cyclegan": dict(draws_from_z=False, takes_labels=False, needs_masks=False, needs_domains=True,
                     losses=("bce", "hinge", "lsgan")),
    "diffusion": dict(draws_from_z=True, takes_labels=False, needs_masks=False, needs_domains=False,
                      losses=("denoising",)),
}
FAMILY_CHOICES = tuple(FAMILY_TRAITS)
IMAGE_TO_IMAGE = tuple(n for n, t in FAMILY_TRAITS.items() if not t["draws_from_z"])  # they translate images
#: why a loss is missing from some families' ``losses``
LOSS_LIMITS = {"rpgan": "the relativistic pairing loss pairs each real image with a fake drawn from z",
               "wgan-gp": "its penalty scores points between a real and a fake image, which need one label",
               "denoising": "it trains a diffusion model, which has no D"}
#: what a GAN reads from its D, refused with the denoising loss (the diffusion family), and why
NO_D_FIELDS = (("label_smoothing", "label smoothing softens D's targets"), ("flip_prob", "label flipping swaps D's targets"),
               ("r1_gamma", "R1 penalises D's gradient"), ("r2_gamma", "R2 penalises D's gradient"),
               ("augment", "DiffAugment augments what D sees"), ("ada", "ADA steers DiffAugment by D's outputs"),
               ("d_steps_per_g_step", "it has one update per step"), ("g_steps_per_d_step", "it has one update per step"),
               ("z_dim", "its z is the starting noise, one number per pixel"))


def families_that(trait: str, value=True) -> tuple[str, ...]:
    """The names of the families whose ``trait`` (a key of ``FAMILY_TRAITS``) is ``value``, or, for ``losses``,
    holds ``value``."""
    return tuple(n for n, t in FAMILY_TRAITS.items() if (value in t[trait] if trait == "losses" else t[trait] == value))


def family_preset(family: str) -> str | None:
    """The preset holding ``family``'s own networks and recipe (an image-to-image family's), or None for a family
    that trains the networks of any other preset (the unconditional and conditional families)."""
    return next((p for p, recipe in PRESETS.items() if recipe.get("family") == family), None)
CLASS_SAMPLING_CHOICES = ("frequency", "balanced")


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs besides the data.

    Family: ``family`` "unconditional" (G(z)) or "conditional" (G(z, y) with class-conditional norms, a
    projection D; ``classes`` are the class names, taken from the data's sub-folders and kept in the
    checkpoint; ``class_sampling`` "frequency" draws the fakes' classes with the training set's class
    frequencies, "balanced" draws real and fake batches with every class equally often), or one of the
    image-to-image families (preset of the same name): "pix2pix" translates anatomy masks to an X-ray
    (``structures``: the mask channels, in order; loss ``gan_weight``·GAN + ``l1_weight``·L1, gan_weight 0
    is the L1-only ablation), "cyclegan" translates between two unpaired ``domains`` (class names of the
    data; ``cycle_weight`` λ, ``identity_weight`` × λ for the identity loss, ``pool_size`` earlier fakes
    shown to D). Or "diffusion" (preset of the same name, ``cxrlib.diffusion``): not a GAN but the baseline a GAN is
    measured against, a denoising U-Net trained with loss "denoising" and sampled by DDIM from z, the starting noise
    (``model_kwargs``: ``channels``, ``layers_per_block``, ``beta_schedule``, ``timesteps``, ``sampling_steps``;
    ``width`` scales the U-Net); it has no D, so the options a GAN reads from D are refused (``NO_D_FIELDS``).
    ``lr_decay_start`` f < 1 decays both learning rates linearly to 0 over the last 1 − f of the run (CycleGAN: 0.5).

    Architecture: ``preset`` names the networks *and* (through ``PRESETS``) their training recipe: "original" (the
    original project's; old name "seed"), "dcgan", "course", "style", "modern" (the course networks with the
    modern recipe), or "pix2pix" / "cyclegan" (the image-to-image families' networks and recipes); ``size`` is the
    image side in px (a power of two, 32–512); ``z_dim`` None keeps the preset's latent size; ``width`` scales
    every layer's channels; ``model_kwargs`` go to ``models.build_models``.

    Length: ``steps`` training iterations (each = ``d_steps_per_g_step`` D updates and
    ``g_steps_per_d_step`` G updates) and/or ``minutes`` of wall-clock, whichever ends first. ``minutes``
    caps the run's *total* training time (over resumes); with ``steps`` it is a safety net, and
    ``Trainer.fit`` warns when it binds. A field missing from an older config dict takes its default here.

    Losses and tricks: ``loss`` "bce" (non-saturating), "hinge", "lsgan" (least squares), "rpgan" (the
    relativistic pairing loss of R3GAN) or "wgan-gp" (the Wasserstein critic loss with ``gp_weight`` λ times the
    gradient penalty on random points between reals and fakes, every D step; Gulrajani et al. 2017, whose recipe
    is λ = 10, ``d_steps_per_g_step`` 5, Adam lr 1e-4 with betas (0, 0.9): ``cxrlib.losses.d_loss_wgan``; its
    critic must not mix the images of a batch: the course, modern and style D have no BatchNorm -- their
    minibatch-std layer mixes groups of 4, as under R1 --, the dcgan D has, and training warns; unconditional
    family only); ``label_smoothing`` s gives D targets
    1 - s/2 and s/2 (the original project's 0.1 → 0.95/0.05); ``flip_prob`` swaps real/fake labels per sample (the
    original project's "label swapping"; both for bce and rpgan); ``r1_gamma`` > 0 adds the R1 gradient penalty on real
    images and ``r2_gamma`` > 0 the R2 penalty on fakes, both lazily every ``reg_every`` D steps (its old name
    ``r1_every``, from before R2, still works: in configs and checkpoints, in ``make_config``/``replace``, as an
    attribute); ``augment`` is a DiffAugment policy ("" = none, e.g. "color,translation,cutout")
    applied with probability ``augment_p`` to real and fake alike, or with an adaptive p when ``ada``
    (raised while the sign of D's real logits, r_t = E[sign D(x)], is above ``ada_target``; p can move
    from 0 to 1 in ``ada_speed_kimg`` thousand images).

    EMA: the sampling generator is an exponential moving average of G with a half-life of
    ``ema_half_life_kimg`` thousand images (per G step beta = 0.5 ** (batch / (half_life_kimg * 1000)));
    ``ema_rampup`` r caps the half-life at r × images seen so early samples are not stuck near the random
    init (StyleGAN2-ADA); 0 disables the EMA (samples then come from G itself). ``ema_bn_refresh``
    recomputes the EMA generator's BatchNorm statistics for its averaged weights before it is sampled or
    saved; off (the default), it uses G's latest statistics, copied at every update. Off because it measured
    no better (benchmarks/RESULTS.md, "EMA generator and BatchNorm statistics").

    Optimisers: Adam with ``g_lr``/``d_lr`` and ``g_betas``/``d_betas``. ``adaptive_lr`` (fine-tuning)
    halves both rates (``adaptive_factor``) when the quality signal — the sliced Wasserstein distance of EMA
    samples to held-out real images, measured every ``adaptive_every`` steps — has not improved for
    ``adaptive_patience`` measurements (reduce on plateau).

    Speed: ``amp`` "auto" (bf16 autocast on CUDA and on CPUs with native bf16, else fp32), "bf16" or "off";
    ``channels_last`` memory format; ``compile`` wraps G and D in ``torch.compile``; ``device`` "auto",
    "cpu", "cuda", ….

    Bookkeeping (in steps): ``log_every`` (a line in ``log.jsonl``), ``sample_every`` (a fixed-z sample
    grid), ``checkpoint_every`` (``checkpoints/step_XXXXXX.pt`` and ``last.pt``).

    Privacy: ``dp_epsilon`` ε (None: not private) trains D with DP-SGD (``cxrlib.gan.dp``): each real image's
    gradient clipped to norm ``dp_max_grad_norm`` C, Gaussian noise calibrated so that the run's D steps spend at
    most ε at ``dp_delta`` δ (None: 1 / the number of training images), real batches Poisson-sampled; G is private
    by post-processing. ``make_config(..., dp_epsilon=E)`` applies ``DP_RECIPE`` under the overrides; ``validate``
    refuses what per-image privacy cannot carry, one line each. Needs Opacus (``pip install "cxrlib[privacy]"``).
    """

    preset: str = "course"
    family: str = "unconditional"
    classes: tuple[str, ...] = ()
    class_sampling: str = "frequency"
    structures: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    size: int = 64
    batch: int = 32
    steps: int | None = 2000
    minutes: float | None = None
    seed: int = 0
    z_dim: int | None = None
    width: float = 1.0
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    # losses and tricks
    loss: str = "bce"
    label_smoothing: float = 0.0
    flip_prob: float = 0.0
    g_steps_per_d_step: int = 1
    d_steps_per_g_step: int = 1
    r1_gamma: float = 0.0
    reg_every: int = 16  # lazy regularisation interval of R1 and R2 (old name r1_every: RENAMED_FIELDS)
    r2_gamma: float = 0.0
    gp_weight: float = 10.0  # λ of WGAN-GP's gradient penalty, used only with loss="wgan-gp"
    augment: str = ""
    augment_p: float = 1.0
    ada: bool = False
    ada_target: float = 0.6
    ada_speed_kimg: float = 20.0
    # image-to-image losses
    l1_weight: float = 100.0
    gan_weight: float = 1.0
    cycle_weight: float = 10.0
    identity_weight: float = 0.5
    pool_size: int = 50
    # optimisers
    g_lr: float = 2e-4
    d_lr: float = 2e-4
    g_betas: tuple[float, float] = (0.5, 0.999)
    d_betas: tuple[float, float] = (0.5, 0.999)
    adaptive_lr: bool = False
    adaptive_every: int = 200
    adaptive_patience: int = 2
    adaptive_factor: float = 0.5
    lr_decay_start: float = 1.0
    # generator EMA
    ema_half_life_kimg: float = 0.0
    ema_rampup: float = 0.0
    ema_bn_refresh: bool = False
    # bookkeeping
    log_every: int = 50
    sample_every: int = 500
    checkpoint_every: int = 1000
    # privacy (DP-SGD on D)
    dp_epsilon: float | None = None
    dp_delta: float | None = None
    dp_max_grad_norm: float = 1.0
    # speed
    amp: str = "auto"
    channels_last: bool = True
    compile: bool = False
    device: str = "auto"

    def __post_init__(self):
        self.g_betas = tuple(float(b) for b in self.g_betas)
        self.d_betas = tuple(float(b) for b in self.d_betas)
        self.classes = tuple(str(c) for c in self.classes)
        self.structures = tuple(str(c) for c in self.structures)
        self.domains = tuple(str(c) for c in self.domains)
        self.model_kwargs = dict(self.model_kwargs or {})

    def validate(self) -> TrainConfig:
        """Raise ``CxrError`` with one line naming the first field that makes no sense; return self."""
        from cxrlib.errors import CxrError

        def bad(field, why):
            raise CxrError(f"config field '{field}'={getattr(self, field)!r}: {why}")

        self.preset = PRESET_ALIASES.get(self.preset, self.preset)  # an older config or checkpoint
        if self.preset not in PRESETS:
            bad("preset", f"unknown preset (choose one of {', '.join(PRESETS)})")
        if self.family not in FAMILY_CHOICES:
            bad("family", f"unknown GAN family (choose one of {', '.join(FAMILY_CHOICES)})")
        if self.class_sampling not in CLASS_SAMPLING_CHOICES:
            bad("class_sampling", f"choose one of {', '.join(CLASS_SAMPLING_CHOICES)}")
        family = FAMILY_TRAITS[self.family]
        if self.classes and not (family["takes_labels"] or family["needs_domains"]):
            readers = families_that("takes_labels") + families_that("needs_domains")
            bad("classes", f"class names belong to a family that reads the data's classes ({', '.join(readers)}), "
                f"not to the {self.family} family")
        own = PRESETS[self.preset].get("family") or family_preset(self.family)  # a family with networks of its own
        if own is not None and (self.preset, self.family) != (family_preset(own), own):
            owners = [f for f in FAMILY_CHOICES if family_preset(f)]
            bad("preset", f"the {own} family has its own networks and recipe: use preset and family of the same name "
                f"({' or '.join(f'make_config({family_preset(f)!r})' for f in owners)})")
        if not family["draws_from_z"]:
            for f, why in (("augment", "DiffAugment is not implemented for paired/unpaired translation"),
                           ("r1_gamma", "R1 is not implemented for the image-to-image families"),
                           ("r2_gamma", "R2 is not implemented for the image-to-image families"),
                           ("adaptive_lr", "the adaptive schedule measures samples from z"),
                           ("ema_bn_refresh", "it recomputes statistics from z")):
                if getattr(self, f):
                    bad(f, f"not available for {self.family}: {why}")
        if self.structures and not family["needs_masks"]:
            bad("structures", f"mask structures are the input of the {', '.join(families_that('needs_masks'))} family")
        if self.domains and (not family["needs_domains"] or len(self.domains) != 2 or len(set(self.domains)) != 2):
            bad("domains", f"two different domain names, for the {', '.join(families_that('needs_domains'))} family")
        if not 0 < self.lr_decay_start <= 1:
            bad("lr_decay_start", "the fraction of the run after which the learning rates decay to 0, in (0, 1]")
        if self.pool_size < 0:
            bad("pool_size", "must be >= 0 (0: no history pool)")
        if self.size < 8 or self.size & (self.size - 1):
            bad("size", "must be a power of two, e.g. 32, 64, …, 512")
        for f in ("batch", "g_steps_per_d_step", "d_steps_per_g_step", "reg_every", "log_every",
                  "sample_every", "checkpoint_every", "adaptive_every", "adaptive_patience"):
            if int(getattr(self, f)) < 1:
                bad(f, "must be a positive integer")
        if self.g_steps_per_d_step > 1 and self.d_steps_per_g_step > 1:
            bad("d_steps_per_g_step", "set either g_steps_per_d_step or d_steps_per_g_step above 1, not both")
        if self.steps is None and self.minutes is None:
            bad("steps", "give a number of steps, a number of minutes, or both")
        if self.steps is not None and self.steps < 0:
            bad("steps", "must be >= 0")
        if self.minutes is not None and self.minutes <= 0:
            bad("minutes", "must be > 0")
        if self.loss not in LOSS_CHOICES:
            bad("loss", f"choose one of {', '.join(LOSS_CHOICES)}")
        if self.amp not in AMP_CHOICES:
            bad("amp", f"choose one of {', '.join(AMP_CHOICES)}")
        if not 0 <= self.label_smoothing < 1:
            bad("label_smoothing", "must be in [0, 1)")
        if not 0 <= self.flip_prob < 0.5:
            bad("flip_prob", "must be in [0, 0.5)")
        if not 0 <= self.augment_p <= 1:
            bad("augment_p", "must be in [0, 1]")
        for f in ("g_lr", "d_lr"):
            if not getattr(self, f) > 0:
                bad(f, "must be > 0")
        if self.loss not in family["losses"]:
            takers = families_that("losses", self.loss)
            why = f" ({LOSS_LIMITS[self.loss]})" if self.loss in LOSS_LIMITS else ""
            bad("loss", f"implemented for the {' and '.join(takers)} famil{'y' if len(takers) == 1 else 'ies'} only"
                f"{why}; the {self.family} family takes {', '.join(family['losses'])}")
        if self.ada and self.loss == "wgan-gp":
            bad("ada", "ADA steers p by the sign of D's outputs, which a Wasserstein critic leaves arbitrary (its "
                "loss and penalty ignore a constant offset): turn it off with loss='wgan-gp' (--set ada=false)")
        for f in ("r1_gamma", "r2_gamma", "gp_weight", "ema_half_life_kimg", "ema_rampup", "width", "l1_weight", "gan_weight",
                  "cycle_weight", "identity_weight"):
            if getattr(self, f) < 0:
                bad(f, "must be >= 0")
        if self.loss not in GAN_LOSSES:  # the denoising loss: a diffusion model, no D to read these
            for f, why in NO_D_FIELDS:
                default = getattr(TrainConfig, f)
                if getattr(self, f) != default:
                    bad(f, f"a GAN option, and the {self.family} model has no D ({why}): leave it at {default!r}")
        if self.loss not in TRICK_LOSSES and (self.label_smoothing or self.flip_prob):
            raise CxrError(f"label_smoothing and flip_prob belong to the BCE and RpGAN losses; set them to 0 with "
                           f"loss='{self.loss}'")
        if self.dp_epsilon is not None:
            self._validate_private(bad)
        else:
            for f, default in (("dp_delta", None), ("dp_max_grad_norm", 1.0)):
                if getattr(self, f) != default:
                    bad(f, "a DP-SGD setting, and this run is not private: give dp_epsilon (--dp-epsilon) too, or "
                        "leave it out")
        return self

    def _validate_private(self, bad) -> None:
        """``validate``'s rules for DP-SGD (``dp_epsilon`` set): what per-image privacy cannot carry, one line
        each (``cxrlib.gan.dp`` says why; ``make_config(..., dp_epsilon=E)`` applies ``DP_RECIPE``)."""
        if not self.dp_epsilon > 0:
            bad("dp_epsilon", "the privacy budget ε must be > 0")
        if self.dp_delta is not None and not 0 < self.dp_delta < 1:
            bad("dp_delta", "δ must be in (0, 1); leave it out for 1 / the number of training images")
        if not self.dp_max_grad_norm > 0:
            bad("dp_max_grad_norm", "the clipping norm C must be > 0")
        if self.family not in DP_FAMILIES:
            bad("dp_epsilon", f"DP-SGD on D cannot make {self.family} private: its G reads real images too "
                f"({' and '.join(DP_FAMILIES)} runs can)")
        if not self.steps:
            bad("steps", "DP-SGD calibrates its noise to the run's D steps: give a number of steps (not only minutes)")
        alone = "DP-SGD needs a D that scores each image alone, so that one image's gradient reaches no other"
        if self.preset == "dcgan":
            bad("preset", f"{alone}; the dcgan D's BatchNorm normalises each image with its batch's statistics "
                "(--preset course)")
        if self.preset in MINIBATCH_STD_PRESETS and self.model_kwargs.get("mbstd_group", 4) != 1:  # 4: D's default
            bad("model_kwargs", f"{alone}; the {self.preset} D's minibatch-std layer compares each image with others "
                "of its batch: set mbstd_group=1 (make_config(..., dp_epsilon=E) does)")
        unfit = {"r1_gamma": "R1 differentiates D twice per image", "r2_gamma": "R2 differentiates D twice per image",
                 "ada": "ADA's p follows D's outputs on the real images, outside the private step",
                 "adaptive_lr": "its quality signal reads held-out real images"}
        for f, why in unfit.items():
            if getattr(self, f):
                bad(f, f"not available with DP-SGD: {why} (make_config(..., dp_epsilon=E) turns it off)")
        if self.loss in ("wgan-gp", "rpgan"):
            why = ("its penalty mixes a real and a fake image and differentiates D twice" if self.loss == "wgan-gp"
                   else "its G step reads D's scores of real images, outside the private D step")
            bad("loss", f"not available with DP-SGD: {why} (bce, hinge and lsgan are)")
        if self.class_sampling == "balanced":
            bad("class_sampling", "DP-SGD samples each image independently (Poisson), not class by class")

    def to_dict(self) -> dict:
        """Plain JSON-able dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["g_betas"], d["d_betas"] = list(self.g_betas), list(self.d_betas)
        d["classes"] = list(self.classes)
        d["structures"], d["domains"] = list(self.structures), list(self.domains)
        return d

    @property
    def r1_every(self) -> int:
        """Old name of ``reg_every`` (the interval paces R2 as well as R1)."""
        return self.reg_every

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Inverse of ``to_dict``; unknown keys raise ``CxrError`` naming them; old field names
        (``RENAMED_FIELDS``, e.g. an older checkpoint's ``r1_every``) are read as the new ones."""
        from cxrlib.errors import CxrError

        d = renamed_fields(d)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise CxrError(f"unknown training option(s) {', '.join(unknown)} (known: {', '.join(sorted(names))})")
        return cls(**d)

    def replace(self, **changes) -> TrainConfig:
        """A copy with some fields changed (unknown names raise ``CxrError``)."""
        return TrainConfig.from_dict({**self.to_dict(), **renamed_fields(changes)})


#: older names of config fields that still work (configs and checkpoints written before the rename keep loading)
RENAMED_FIELDS = {"r1_every": "reg_every"}


def renamed_fields(d: dict) -> dict:
    """``d`` with old field names (``RENAMED_FIELDS``) replaced by the new ones; both names with different values
    raise ``CxrError``."""
    from cxrlib.errors import CxrError

    out = dict(d)
    for old, new in RENAMED_FIELDS.items():
        if old in out:
            value = out.pop(old)
            if new in out and out[new] != value:
                raise CxrError(f"{old} is the old name of {new}: give one of them, not both ({old}={value!r}, "
                               f"{new}={out[new]!r})")
            out[new] = value
    return out


#: older preset names that still work (configs and checkpoints written before the rename keep loading)
PRESET_ALIASES = {"seed": "original"}

# The recipes. Only the differences from the TrainConfig defaults are listed.
PRESETS: dict[str, dict] = {
    # The original project, faithfully: BCE with label smoothing 0.1 and label flipping 5 %, Adam 1e-4 for both with
    # Keras' default betas, batch 8, no EMA, no R1, no differentiable augmentation.
    "original": dict(
        preset="original", batch=8, loss="bce", label_smoothing=0.1, flip_prob=0.05,
        g_lr=1e-4, d_lr=1e-4, g_betas=(0.9, 0.999), d_betas=(0.9, 0.999),
        r1_gamma=0.0, augment="", ema_half_life_kimg=0.0,
    ),
    # Radford et al. 2016: Adam 2e-4, beta1 0.5, batch 64 (at 64 px), plain BCE.
    "dcgan": dict(
        preset="dcgan", batch=64, loss="bce", g_lr=2e-4, d_lr=2e-4,
        g_betas=(0.5, 0.999), d_betas=(0.5, 0.999), r1_gamma=0.0, augment="", ema_half_life_kimg=0.0,
    ),
    # Our recipe: Adam 2e-4 with beta1 = 0 (StyleGAN2-style, less lag in the min-max game), batch 32, a light
    # lazy R1 (gamma 0.1 every 16 D steps; the course D has no spectral norm), DiffAugment (translation + cutout,
    # no flips) with an ADA-adapted p (0 until D starts to memorise, r_t > 0.6), EMA of G with a 5k-image
    # half-life ramped up over the first images. Compared against dcgan by benchmarks/quality_bar.py.
    "course": dict(
        preset="course", batch=32, loss="bce", g_lr=2e-4, d_lr=2e-4,
        g_betas=(0.0, 0.99), d_betas=(0.0, 0.99), r1_gamma=0.1, reg_every=16,
        augment="translation,cutout", augment_p=1.0, ada=True, ada_target=0.6, ada_speed_kimg=20.0,
        ema_half_life_kimg=5.0, ema_rampup=0.05,
    ),
    # Karras et al. 2019/2020: the style-based G (mapping network, modulated convolutions, noise inputs, skip
    # to-image outputs, style mixing 0.9) with the course D (spectral norm on), trained with the course recipe -- which is
    # StyleGAN2's in small (non-saturating loss, lazy R1, Adam beta1 0, EMA, ADA).
    "style": dict(
        preset="style", batch=32, loss="bce", g_lr=2e-4, d_lr=2e-4,
        g_betas=(0.0, 0.99), d_betas=(0.0, 0.99), r1_gamma=0.1, reg_every=16,
        augment="translation,cutout", augment_p=1.0, ada=True, ada_target=0.6, ada_speed_kimg=20.0,
        ema_half_life_kimg=5.0, ema_rampup=0.05,
    ),
    # Huang et al. 2025 (R3GAN) at our scale, on the course networks: the relativistic pairing loss with R1
    # *and* R2 (same gamma, lazily every 16 D steps as the course's R1), no label tricks, EMA, Adam beta1 0.
    # ADA stays on as in R3GAN's own runs. Everything else as "course", so the two differ only in the loss.
    "modern": dict(
        preset="modern", batch=32, loss="rpgan", g_lr=2e-4, d_lr=2e-4,
        g_betas=(0.0, 0.99), d_betas=(0.0, 0.99), r1_gamma=0.1, r2_gamma=0.1, reg_every=16,
        label_smoothing=0.0, flip_prob=0.0,
        augment="translation,cutout", augment_p=1.0, ada=True, ada_target=0.6, ada_speed_kimg=20.0,
        ema_half_life_kimg=5.0, ema_rampup=0.05,
    ),
    # Isola et al. 2017: U-Net G, PatchGAN D on (mask, image) pairs, BCE + 100·L1, Adam 2e-4 with beta1 0.5,
    # D's loss halved. The paper trained with batch 1-10; batch 16 keeps a 2-core CPU busy at 64 px.
    "pix2pix": dict(
        preset="pix2pix", family="pix2pix", batch=16, loss="bce", g_lr=2e-4, d_lr=2e-4,
        g_betas=(0.5, 0.999), d_betas=(0.5, 0.999), r1_gamma=0.0, augment="", ema_half_life_kimg=0.0,
        l1_weight=100.0, gan_weight=1.0,
    ),
    # Zhu et al. 2017: two ResNet-block G, two PatchGAN D, least-squares loss, cycle 10, identity 0.5·10, a
    # pool of 50 earlier fakes for D, Adam 2e-4 with beta1 0.5 and a linear decay to 0 over the second half.
    # The paper trained with batch 1; batch 4 suits a CPU (instance norm makes the batch size matter little).
    "cyclegan": dict(
        preset="cyclegan", family="cyclegan", batch=4, loss="lsgan", g_lr=2e-4, d_lr=2e-4,
        g_betas=(0.5, 0.999), d_betas=(0.5, 0.999), r1_gamma=0.0, augment="", ema_half_life_kimg=0.0,
        cycle_weight=10.0, identity_weight=0.5, pool_size=50, lr_decay_start=0.5,
    ),
    # Ho et al. 2020 in small (cxrlib.diffusion): a U-Net of the course G's parameter count predicts the noise of
    # 1,000 cosine-scheduled levels (Nichol & Dhariwal 2021), Adam 2e-4 with the DDPM paper's betas, batch 32 as the
    # course, and the course's EMA (5k-image half-life, ramped up); samples by DDIM, 50 steps. No D.
    "diffusion": dict(
        preset="diffusion", family="diffusion", batch=32, loss="denoising", g_lr=2e-4, g_betas=(0.9, 0.999),
        r1_gamma=0.0, augment="", ema_half_life_kimg=5.0, ema_rampup=0.05,
    ),
}


#: What ``dp_epsilon`` changes in a preset's recipe (``make_config`` applies it under the overrides; its
#: ``model_kwargs`` only to ``MINIBATCH_STD_PRESETS``): no R1/R2 (a second derivative per
#: image), no ADA (its p reads D's outputs on the reals; the preset's fixed ``augment_p`` stays, and DiffAugment
#: acts on each image alone), and a minibatch-std layer that sees one image (``mbstd_group`` 1: a constant channel).
DP_RECIPE: dict = dict(r1_gamma=0.0, r2_gamma=0.0, ada=False, model_kwargs={"mbstd_group": 1})
#: the families whose G learns from D alone, so that a private D makes it private (a list, not a trait: a new
#: family is not private until someone has checked that no real image reaches its G another way)
DP_FAMILIES = ("unconditional", "conditional")
#: the presets whose networks have the course D, with its minibatch-std layer (``model_kwargs`` mbstd_group)
MINIBATCH_STD_PRESETS = ("course", "modern", "style")


#: What a preset's recipe becomes on a CPU budget (``Budget.recipe``): networks measured to reach the family's goals in
#: a CPU's minutes, where the paper's networks are too slow. cyclegan: width 0.25, U-Net generators and 32-channel
#: PatchGANs (ndf 128 × 0.25), the shipped CycleGAN's networks (`make pretrained-cyclegan`; benchmarks/RESULTS.md,
#: "CycleGAN normal → pneumonia"), where the paper's full-width ResNet generators missed the goals (issue 28).
CPU_RECIPES: dict[str, dict] = {
    "cyclegan": dict(width=0.25, model_kwargs={"generator": "unet", "ndf": 128}),
}


def make_config(preset: str = "course", **overrides) -> TrainConfig:
    """``TrainConfig`` of a preset ("original", "dcgan", "course", …; "seed" is the original's old name) with fields overridden by name.

    ``make_config("dcgan", size=32, steps=100)``; unknown presets or fields raise ``CxrError``.
    """
    from cxrlib.errors import CxrError

    preset = PRESET_ALIASES.get(preset, preset)
    if preset not in PRESETS:
        raise CxrError(f"unknown preset {preset!r} (choose one of {', '.join(PRESETS)})")
    overrides = renamed_fields(overrides)
    private = {}
    if overrides.get("dp_epsilon") is not None:  # DP-SGD: the recipe per-image privacy needs, under the overrides
        private = {k: v for k, v in DP_RECIPE.items() if k != "model_kwargs"}
        if preset in MINIBATCH_STD_PRESETS:
            kwargs = {**PRESETS[preset].get("model_kwargs", {}), **DP_RECIPE["model_kwargs"]}
            private["model_kwargs"] = {**kwargs, **(overrides.pop("model_kwargs", None) or {})}
    return TrainConfig.from_dict({**TrainConfig().to_dict(), **PRESETS[preset], **private, **overrides}).validate()
