"""A GAN you can train in seconds: a ring of 2-D Gaussians, small MLPs, many seeds at once.

    real = toy.ring(256)                                       # (256, 2) points on 8 blobs round a circle
    result = toy.train(toy.ToyConfig(steps=2000), seeds=4)     # 4 independent runs, trained side by side
    print(result.modes_covered, result.good_share)             # one number per run

Where the point is a *mechanism* -- mode collapse, what a trick does to the game -- an image GAN on a laptop CPU
is too slow to show it with numbers: a few dozen steps make blobs, and the seed-to-seed noise swamps every
difference. The 8-Gaussian ring (Metz et al. 2017, "Unrolled GANs") is the field's standard toy: every sample can be
checked against the truth, so we can *count* what a generator does:

* **good samples**: the share of samples within 3 standard deviations of some mode's centre;
* **modes covered**: how many of the 8 modes hold at least ``min_share`` of the samples (a collapsed G covers 1–2).

``train`` trains ``seeds`` independent GANs in one batched computation (their weights are stacked along a first
"run" dimension, so one matrix multiply serves them all): a trick × seed grid runs in well under a minute on two
CPU cores, and every verdict comes with its seed-to-seed spread. The training step (:func:`train_step`) calls the
image trainer's own D step and G step (``cxrlib.gan.steps.d_step`` / ``g_step``), with the same tricks by the same
names: all runs' points form one batch of the step (:class:`PerPoint`).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import torch
from torch import nn

from cxrlib import losses
from cxrlib.errors import CxrError
from cxrlib.gan import steps as gan_steps


# ======================================================================= the best discriminator (notebook 00)
def jsd(p, q, dx: float) -> float:
    """Jensen–Shannon divergence, in nats (0 … log 2), of two densities sampled on a grid of spacing ``dx``: the
    mean of the KL divergences of ``p`` and ``q`` from their mixture m = (p + q) / 2. Unlike KL(p ‖ q) it is finite
    where one density is 0 and the other is not, and it stops growing (at log 2) once the two no longer overlap."""
    import numpy as np

    p, q = np.asarray(p, dtype=float), np.asarray(q, dtype=float)
    m = (p + q) / 2

    def kl(a, b):  # where a > 0, b = m ≥ a / 2 > 0
        on = a > 0
        return float(np.sum(a[on] * np.log(a[on] / b[on])) * dx)

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


# ======================================================================= the data
def ring_centres(modes: int = 8, radius: float = 2.0) -> torch.Tensor:
    """The modes' centres: (modes, 2), evenly spaced on a circle of ``radius``."""
    angle = torch.arange(modes) * (2 * math.pi / modes)
    return radius * torch.stack([angle.cos(), angle.sin()], dim=1)


def ring(n: int, modes: int = 8, radius: float = 2.0, std: float = 0.05, generator=None, shape=()) -> torch.Tensor:
    """n points of the ring of Gaussians: (*shape, n, 2) float; each point picks a mode uniformly."""
    centres = ring_centres(modes, radius)
    which = torch.randint(modes, (*shape, n), generator=generator)
    return centres[which] + std * torch.randn(*shape, n, 2, generator=generator)


# ======================================================================= batched networks
class RunsLinear(nn.Module):
    """``runs`` independent linear layers applied at once. x: (runs, B, n_in) → (runs, B, n_out)."""

    def __init__(self, runs: int, n_in: int, n_out: int, generator=None):
        super().__init__()
        bound = 1 / math.sqrt(n_in)  # PyTorch's nn.Linear initialisation, drawn per run
        self.weight = nn.Parameter((torch.rand(runs, n_in, n_out, generator=generator) * 2 - 1) * bound)
        self.bias = nn.Parameter((torch.rand(runs, 1, n_out, generator=generator) * 2 - 1) * bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


def mlp(runs: int, sizes: list[int], generator=None) -> nn.Sequential:
    """An MLP with ReLU between layers, ``runs`` independent copies: (runs, B, sizes[0]) → (runs, B, sizes[-1])."""
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        if k:
            layers.append(nn.ReLU())
        layers.append(RunsLinear(runs, a, b, generator))
    return nn.Sequential(*layers)


class ToyD(nn.Module):
    """Discriminator: points (runs, B, 2) → logits (runs, B)."""

    def __init__(self, runs: int, hidden: int = 64, depth: int = 2, generator=None):
        super().__init__()
        self.net = mlp(runs, [2] + [hidden] * depth + [1], generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def toy_models(runs: int, z_dim: int = 2, hidden: int = 64, depth: int = 2, seed: int = 0):
    """``(G, D)`` for ``runs`` independent runs; G: z (runs, B, z_dim) → points (runs, B, 2)."""
    gen = torch.Generator().manual_seed(seed)
    G = mlp(runs, [z_dim] + [hidden] * depth + [2], gen)
    G.z_dim = z_dim
    return G, ToyD(runs, hidden, depth, gen)


# ======================================================================= the recipe
@dataclasses.dataclass
class ToyConfig:
    """One toy recipe. The tricks have the names and meaning of ``cxrlib.config.TrainConfig``'s.

    loss: "bce" (the course's non-saturating loss), "rpgan" (the relativistic pairing loss of notebook 10,
    ``cxrlib.losses.d_loss_rpgan``; smoothing and flipping apply to its paired difference) or "wgan-gp" (the
    Wasserstein critic loss, ``cxrlib.losses.d_loss_wgan``, plus ``gp_weight`` λ times
    ``cxrlib.losses.gradient_penalty`` on points between the real and the fake points, every D update; no
    smoothing or flipping); r2_gamma: R2 penalty on G's points (R1's twin; RpGAN + R1 + R2 is R3GAN's recipe);
    steps: training iterations (each ``d_steps_per_g_step`` D updates then ``g_steps_per_d_step`` G updates);
    batch: points per batch; g_lr, d_lr, betas: Adam; label_smoothing s: D's targets 1 - s/2 and s/2;
    flip_prob: each D target swapped with this probability; r1_gamma: R1 penalty on real points;
    ema_half_life: half-life of the EMA generator in G updates (0: score G itself); n_train: 0 draws fresh
    points for every batch (unlimited data), n > 0 gives each run a fixed training set of n points to learn from
    (the data-volume experiment: can G generalise from n points, or does it copy them?).
    """

    steps: int = 2000
    batch: int = 128
    z_dim: int = 2
    hidden: int = 64
    depth: int = 2
    g_lr: float = 1e-3
    d_lr: float = 1e-3
    betas: tuple[float, float] = (0.5, 0.999)
    label_smoothing: float = 0.0
    flip_prob: float = 0.0
    g_steps_per_d_step: int = 1
    d_steps_per_g_step: int = 1
    r1_gamma: float = 0.0
    r2_gamma: float = 0.0
    loss: str = "bce"
    gp_weight: float = 10.0  # used only with loss="wgan-gp"
    ema_half_life: float = 0.0
    modes: int = 8
    std: float = 0.05
    n_train: int = 0

    def replace(self, **changes) -> ToyConfig:
        return dataclasses.replace(self, **changes)


class PerPoint(nn.Module):
    """A toy network of ``runs`` stacked runs seen as one network of points: (runs·B, n) → (runs·B, …).

    The shared steps (``cxrlib.gan.steps``) treat the first dimension as the batch; wrapped so, all runs' points
    form one batch of runs·B rows (one row per point: R1, R2 and the gradient penalty are per point, the loss is
    the mean over every run's points), folded back into (runs, B, n) for the batched MLP. It only reshapes: the
    numbers are the unwrapped network's, bit for bit."""

    def __init__(self, net: nn.Module, runs: int):
        super().__init__()
        self.net, self.runs = net, runs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(self.runs, -1, x.shape[-1])).flatten(0, 1)


def _per_point(G, D):
    """``(G, D)`` wrapped by :class:`PerPoint`."""
    runs = D.net[0].weight.shape[0]
    return PerPoint(G, runs), PerPoint(D, runs)


def _points(x: torch.Tensor) -> torch.Tensor:
    """(runs, B, n) → (runs·B, n): every run's rows as one batch."""
    return x.reshape(-1, x.shape[-1])


def d_step(G, D, d_opt, real, z, cfg: ToyConfig, generator=None) -> dict:
    """One discriminator update on real points (runs, B, 2) and G(z), z (runs, B, z_dim): the image GAN's D step
    (``cxrlib.gan.steps.d_step``) on all runs' points as one batch. Returns d_loss, D(x), D(G(z)) (floats).

    The loss is the image trainer's (``cxrlib.losses.d_loss_bce``, ``d_loss_rpgan`` with their smoothing and
    flipping, or ``d_loss_wgan``); R1 on the real points, R2 on G's, WGAN-GP's penalty (``gp_weight``, with
    loss="wgan-gp" only) on points between the two (ε drawn from ``generator``, after the flips)."""
    d_loss_fn = _loss(cfg)[0]
    loss = functools.partial(d_loss_fn, label_smoothing=cfg.label_smoothing, flip_prob=cfg.flip_prob,
                             generator=generator)
    stats = gan_steps.d_step(*_per_point(G, D), d_opt, _points(real), _points(z), loss=loss,
                             r1_gamma=cfg.r1_gamma, r2_gamma=cfg.r2_gamma,
                             gp_weight=losses.penalty_weight(cfg.loss, cfg.gp_weight), generator=generator)
    return {k: stats[k].item() for k in ("d_loss", "D(x)", "D(G(z))")}


TOY_LOSSES = losses.TRICK_LOSSES + losses.PENALISED  # the losses the toy trains with


def _loss(cfg: ToyConfig):
    if cfg.loss not in TOY_LOSSES:
        raise CxrError(f"toy loss must be one of {', '.join(TOY_LOSSES)} (got {cfg.loss!r})")
    return losses.LOSSES[cfg.loss]


def g_step(G, D, g_opt, z, cfg: ToyConfig | None = None, real=None) -> dict:
    """One generator update (``cxrlib.gan.steps.g_step`` on all runs' points as one batch): the non-saturating
    loss, or with ``cfg.loss == "rpgan"`` the relativistic one against the real points ``real`` (runs, B, 2).
    Returns g_loss (float)."""
    cfg = cfg or ToyConfig()
    g_loss_fn = _loss(cfg)[1]
    reals = None
    if cfg.loss in losses.RELATIVISTIC:  # each fake is judged against a real point (drawn by the caller)
        if real is None:
            raise CxrError("a relativistic G step needs a batch of real points")
        reals = lambda: (_points(real), None)  # noqa: E731
    stats = gan_steps.g_step(*_per_point(G, D), g_opt, _points(z), loss=g_loss_fn, real_batch=reals)
    return {"g_loss": stats["g_loss"].item()}


def real_batch(cfg: ToyConfig, runs: int, generator=None, train_points=None) -> torch.Tensor:
    """A batch of real points per run, (runs, batch, 2): fresh from the ring, or drawn with replacement from each
    run's own ``train_points`` (runs, n, 2) when given."""
    if train_points is None:
        return ring(cfg.batch, cfg.modes, std=cfg.std, generator=generator, shape=(runs,))
    idx = torch.randint(train_points.shape[1], (runs, cfg.batch, 1), generator=generator).expand(-1, -1, 2)
    return train_points.gather(1, idx)


def train_step(G, D, g_opt, d_opt, cfg: ToyConfig, generator=None, train_points=None) -> dict:
    """One iteration: ``d_steps_per_g_step`` D updates, then ``g_steps_per_d_step`` G updates; real batches are
    fresh points, or drawn from ``train_points`` (runs, n, 2) when given."""
    runs = D.net[0].weight.shape[0]
    stats = {}
    for _ in range(cfg.d_steps_per_g_step):
        real = real_batch(cfg, runs, generator, train_points)
        z = torch.randn(runs, cfg.batch, cfg.z_dim, generator=generator)
        stats.update(d_step(G, D, d_opt, real, z, cfg, generator))
    for _ in range(cfg.g_steps_per_d_step):
        z = torch.randn(runs, cfg.batch, cfg.z_dim, generator=generator)
        real = real_batch(cfg, runs, generator, train_points) if cfg.loss in losses.RELATIVISTIC else None
        stats.update(g_step(G, D, g_opt, z, cfg, real))
    return stats


# ======================================================================= counting what G does
def mode_stats(points: torch.Tensor, modes: int = 8, radius: float = 2.0, std: float = 0.05,
               min_share: float = 0.01) -> dict:
    """points: (runs, n, 2) → {"good_share": (runs,), "modes_covered": (runs,), "per_mode": (runs, modes)}.

    A sample is *good* when it lies within 3·std of its nearest mode's centre; a mode is *covered* when at least
    ``min_share`` of all samples are good samples of that mode (a share 12.5 % each when G is perfect)."""
    centres = ring_centres(modes, radius)
    dist = torch.cdist(points, centres.expand(len(points), -1, -1))  # (runs, n, modes)
    nearest, which = dist.min(-1)
    good = nearest < 3 * std
    per_mode = torch.stack([(good & (which == m)).float().mean(-1) for m in range(modes)], dim=-1)
    return {"good_share": good.float().mean(-1), "modes_covered": (per_mode >= min_share).sum(-1),
            "per_mode": per_mode}


def sliced_distance(a: torch.Tensor, b: torch.Tensor, n_directions: int = 64, seed: int = 0) -> torch.Tensor:
    """Sliced Wasserstein-1 distance between point sets a (runs, n, 2) and b (runs, n, 2) → (runs,): the mean over
    random directions of the distance between the sorted projections (the 2-D analogue of ``metrics.swd``)."""
    angle = torch.rand(n_directions, generator=torch.Generator().manual_seed(seed)) * math.pi
    dirs = torch.stack([angle.cos(), angle.sin()])  # (2, n_directions)
    pa, pb = (torch.sort(x @ dirs, dim=1).values for x in (a, b))
    return (pa - pb).abs().mean(dim=(1, 2))


def copied_share(samples: torch.Tensor, train_points: torch.Tensor) -> torch.Tensor:
    """Per run, the share of samples (runs, n, 2) that the memorisation audit flags as near-copies of one of the
    run's training points (runs, m, 2) → (runs,)."""
    from cxrlib import metrics

    return torch.stack([metrics.copy_flags(s, t).float().mean() for s, t in zip(samples, train_points)])


@dataclasses.dataclass
class ToyResult:
    """A finished batch of runs: the config, the final samples (runs, n, 2), counts per run and snapshots.

    snapshots: [(step, (runs, n_snap, 2) samples)] at ``snapshot_every``; log: [(step, modes covered per run)];
    distance: (runs,) sliced Wasserstein distance of the samples to fresh held-out points of the ring (lower is
    closer; :func:`sliced_distance`); with ``n_train`` > 0, train_points: (runs, n, 2) each run's training set and
    copied_share: (runs,) the share of samples the memorisation audit's rule flags as copies of a training point
    (``cxrlib.metrics.copy_flags`` on the points themselves), and copied_chance the share it flags among fresh
    real points -- what a generator that copies nothing gets by chance."""

    cfg: ToyConfig
    samples: torch.Tensor
    modes_covered: torch.Tensor
    good_share: torch.Tensor
    snapshots: list
    log: list
    seconds: float
    train_points: torch.Tensor | None = None
    distance: torch.Tensor | None = None
    copied_share: torch.Tensor | None = None
    copied_chance: torch.Tensor | None = None

    def summary(self) -> dict:
        """Mean and seed-to-seed standard deviation of the counts: {"modes": (m, s), "good": (m, s)}."""
        def ms(x):
            x = x.float()
            return float(x.mean()), float(x.std()) if len(x) > 1 else 0.0
        return {"modes": ms(self.modes_covered), "good": ms(self.good_share)}


def plain_step(G, D, g_opt, d_opt, real, z) -> dict:
    """The whole algorithm in one function, no tricks: a D step on real points and G(z), then a G step on G(z).

    real: (runs, B, 2) points; z: (runs, B, z_dim). Reference of the notebook's "write a training step" exercise;
    ``train(step_fn=plain_step)`` trains with it (the same as ``train_step`` with a trick-free config)."""
    return {**d_step(G, D, d_opt, real, z, ToyConfig()), **g_step(G, D, g_opt, z)}


def train(cfg: ToyConfig | None = None, seeds: int = 4, first_seed: int = 0, n_eval: int = 2000,
          snapshot_every: int = 0, step_fn=None) -> ToyResult:
    """Train ``seeds`` independent toy GANs side by side; count modes and good samples of the final generator.

    Run r uses seed ``first_seed + r`` for its weights; data, z and flips come from one generator seeded with
    ``first_seed`` (the runs still see different batches). With ``ema_half_life`` > 0 the counts come from the
    EMA generator. ``step_fn(G, D, g_opt, d_opt, real, z)`` replaces the recipe's step with one D and one G
    update on the batches it is given (what :func:`plain_step` does; the exercises use it). Runs on one CPU
    thread (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # matrices of 128×64 gain nothing from a second thread, and spinning threads cost
    try:
        return _train(cfg or ToyConfig(), seeds, first_seed, n_eval, snapshot_every, step_fn)
    finally:
        torch.set_num_threads(threads)


def _train(cfg, seeds, first_seed, n_eval, snapshot_every, step_fn) -> ToyResult:
    import copy
    import time

    if seeds < 1 or cfg.steps < 0:
        raise CxrError(f"toy.train needs seeds >= 1 and steps >= 0 (got seeds={seeds}, steps={cfg.steps})")
    t0 = time.perf_counter()
    G, D = _seeded_models(seeds, first_seed, cfg)
    g_opt = torch.optim.Adam(G.parameters(), lr=cfg.g_lr, betas=cfg.betas)
    d_opt = torch.optim.Adam(D.parameters(), lr=cfg.d_lr, betas=cfg.betas)
    ema = copy.deepcopy(G).requires_grad_(False) if cfg.ema_half_life > 0 else None
    beta = 0.5 ** (cfg.g_steps_per_d_step / cfg.ema_half_life) if ema is not None else 0.0
    gen = torch.Generator().manual_seed(first_seed)
    train_points = None
    if cfg.n_train > 0:  # each run's own fixed training set, the same for every recipe with these seeds
        train_points = ring(cfg.n_train, cfg.modes, std=cfg.std, shape=(seeds,),
                            generator=torch.Generator().manual_seed(20_000 + first_seed))
    z_eval = torch.randn(seeds, n_eval, cfg.z_dim, generator=torch.Generator().manual_seed(10_000 + first_seed))
    snapshots, log = [], []

    def look(step):
        with torch.no_grad():
            pts = (ema or G)(z_eval)
        counts = mode_stats(pts, cfg.modes, std=cfg.std)
        log.append((step, counts["modes_covered"]))
        if snapshot_every:
            snapshots.append((step, pts[:, :500].clone()))
        return pts, counts

    for step in range(cfg.steps):
        if snapshot_every and step % snapshot_every == 0:
            look(step)
        if step_fn is None:
            train_step(G, D, g_opt, d_opt, cfg, gen, train_points)
        else:
            step_fn(G, D, g_opt, d_opt, real_batch(cfg, seeds, gen, train_points),
                    torch.randn(seeds, cfg.batch, cfg.z_dim, generator=gen))
        if ema is not None:
            with torch.no_grad():
                torch._foreach_lerp_(list(ema.parameters()), list(G.parameters()), 1 - beta)
    pts, counts = look(cfg.steps)
    heldout = ring(n_eval, cfg.modes, std=cfg.std, shape=(seeds,), generator=torch.Generator().manual_seed(30_000))
    return ToyResult(cfg, pts, counts["modes_covered"], counts["good_share"], snapshots, log,
                     time.perf_counter() - t0, train_points=train_points, distance=sliced_distance(pts, heldout),
                     copied_share=None if train_points is None else copied_share(pts, train_points),
                     copied_chance=None if train_points is None else copied_share(heldout, train_points))


def _seeded_models(runs: int, first_seed: int, cfg: ToyConfig):
    """G and D whose run r is initialised exactly as a single run with seed first_seed + r would be."""
    Gs, Ds = zip(*(toy_models(1, cfg.z_dim, cfg.hidden, cfg.depth, seed=first_seed + r) for r in range(runs)))
    G, D = toy_models(runs, cfg.z_dim, cfg.hidden, cfg.depth, seed=first_seed)
    with torch.no_grad():
        for stacked, singles in ((G, Gs), (D, Ds)):
            for name, p in stacked.named_parameters():
                p.copy_(torch.cat([dict(s.named_parameters())[name] for s in singles]))
    return G, D


def grid(variants: dict[str, ToyConfig], seeds: int = 4, **kwargs) -> dict[str, ToyResult]:
    """``train`` every named config with the same seeds: {name: ToyResult}."""
    return {name: train(cfg, seeds=seeds, **kwargs) for name, cfg in variants.items()}


def verdict(diff: float, spread_a: float, spread_b: float) -> str:
    """Whether a difference of two means stands above twice the larger seed-to-seed standard deviation."""
    noise = 2 * max(spread_a, spread_b)
    return "above" if abs(diff) > noise else "within"


def grid_table(results: dict[str, ToyResult], baseline: str | None = None) -> str:
    """A text table: modes covered and good-sample share, mean ± seed-to-seed std, and for each row its difference
    from ``baseline`` (default: the first row), marked "above" when it exceeds twice the larger of the two spreads
    and "within" otherwise (then the seeds cannot tell the two recipes apart)."""
    names = list(results)
    baseline = baseline or names[0]
    (bm, bms), (bg, bgs) = results[baseline].summary().values()
    seeds = len(results[baseline].modes_covered)
    lines = [f"{seeds} seeds per recipe; differences from {baseline!r} against twice the larger seed-to-seed spread",
             f"{'recipe':<28}{'modes covered':>15}{'good samples':>16}   {'Δ modes':<18}{'Δ good samples':<18}"]
    for name in names:
        (m, ms), (g, gs) = results[name].summary().values()
        if name == baseline:
            dm = dg = "(baseline)"
        else:
            dm = f"{m - bm:+.1f} {verdict(m - bm, ms, bms)}"
            dg = f"{100 * (g - bg):+.0f} pp {verdict(g - bg, gs, bgs)}"
        lines.append(f"{name:<28}{m:>8.1f} ± {ms:<4.1f}{100 * g:>9.0f} ± {100 * gs:>2.0f} %   {dm:<18}{dg:<18}")
    return "\n".join(lines)


def conclusions(results: dict[str, ToyResult], baseline: str | None = None) -> str:
    """The grid's verdicts in words, from its numbers: which recipes differ from ``baseline`` by more than twice
    the seed-to-seed spread (in modes covered or in good samples), and which cannot be told apart from it on
    both. It judges only those two counts, and says so: read ``distance`` separately."""
    names = list(results)
    baseline = baseline or names[0]
    (bm, bms), (bg, bgs) = results[baseline].summary().values()
    above, within = [], []
    for name in names:
        if name == baseline:
            continue
        (m, ms), (g, gs) = results[name].summary().values()
        parts = []
        if verdict(m - bm, ms, bms) == "above":
            parts.append(f"{m - bm:+.1f} modes")
        if verdict(g - bg, gs, bgs) == "above":
            parts.append(f"{100 * (g - bg):+.0f} pp good samples")
        label = name.strip()  # notebook 10 indents the rows that add a trick to its first one
        (above if parts else within).append(f"{label} ({', '.join(parts)})" if parts else label)
    seeds = len(results[baseline].modes_covered)
    return (f"Modes covered and good samples, against {baseline!r}: above twice the spread of {seeds} seeds: "
            f"{'; '.join(above) or 'none'}.\n"
            f"Within it on both counts (these seeds cannot tell them from {baseline!r}): "
            f"{', '.join(within) or 'none'}.")


def seed_table(results: dict[str, ToyResult], baseline: str | None = None) -> str:
    """Each recipe's runs seed by seed (modes covered · good samples), and its good samples minus ``baseline``'s
    (default: the first row) paired by seed -- run r of every recipe starts from the same weights -- as mean ± std
    of the differences, "above" when the mean exceeds twice that std and "within" otherwise."""
    names = list(results)
    baseline = baseline or names[0]
    seeds = len(results[baseline].modes_covered)
    base_good = results[baseline].good_share.float()
    lines = [f"seed by seed: modes covered · good samples; Δ good samples against {baseline!r}, paired by seed",
             f"{'recipe':<28}" + "".join(f"{'seed ' + str(s):>12}" for s in range(seeds)) + "   Δ good samples, paired"]
    for name in names:
        r = results[name]
        row = "".join(f"{int(m):>4} · {100 * float(g):>3.0f} %" for m, g in zip(r.modes_covered, r.good_share))
        if name == baseline:
            paired = "(baseline)"
        else:
            m, s = _ms(100 * (r.good_share.float() - base_good))
            paired = f"{m:+.0f} ± {s:.0f} pp {'above' if abs(m) > 2 * s else 'within'}"
        lines.append(f"{name:<28}{row}   {paired}")
    return "\n".join(lines)


def budget_steps(budget) -> int:
    """Training steps of one toy run for a ``cxrlib.config.Budget``: 2,000 (a few seconds per recipe on a laptop
    CPU, enough for a balanced GAN to find the ring), 200 in the smoke budget (CI: the cells run, the numbers
    mean nothing)."""
    return 200 if budget.kind == "smoke" else 2000


# ======================================================================= the notebooks' grids
def trick_variants(steps: int = 2000) -> dict[str, ToyConfig]:
    """Notebook 04's grid: the plain recipe, then one trick, update ratio or learning rate changed at a time."""
    base = ToyConfig(steps=steps)
    return {
        "plain": base,
        "label smoothing 0.1": base.replace(label_smoothing=0.1),
        "label flipping 5 %": base.replace(flip_prob=0.05),
        "3 G steps per D step": base.replace(g_steps_per_d_step=3),
        "2 D steps per G step": base.replace(d_steps_per_g_step=2),
        "G learning rate ×5": base.replace(g_lr=5 * base.g_lr),
        "both learning rates ÷4": base.replace(g_lr=base.g_lr / 4, d_lr=base.d_lr / 4),
        "R1 (γ = 1)": base.replace(r1_gamma=1.0),
        "EMA of G (half-life 100)": base.replace(ema_half_life=100),
    }


def modern_variants(steps: int = 2000) -> dict[str, ToyConfig]:
    """Notebook 10's grid: the modern recipe (RpGAN + R1 + R2, Adam β₁ = 0, no tricks) first, then the original
    project's tricks added to it one at a time, then the course's BCE without and with those tricks -- does a trick
    still help once the loss is well posed?"""
    base = ToyConfig(steps=steps)
    modern = base.replace(loss="rpgan", r1_gamma=1.0, r2_gamma=1.0, betas=(0.0, 0.99))
    return {
        "RpGAN + R1 + R2": modern,
        "  + label smoothing 0.1": modern.replace(label_smoothing=0.1),
        "  + label flipping 5 %": modern.replace(flip_prob=0.05),
        "  + 3 G steps per D step": modern.replace(g_steps_per_d_step=3),
        "BCE, no tricks": base,
        "BCE + the original 3 tricks": base.replace(label_smoothing=0.1, flip_prob=0.05, g_steps_per_d_step=3),
    }


def wgan_variants(steps: int = 2000) -> dict[str, ToyConfig]:
    """Notebook 10's WGAN-GP rows, "why the field moved from WGAN-GP to R1 and RpGAN": the plain BCE recipe of
    notebook 04 (no penalties, Adam β₁ 0.5), WGAN-GP with the recipe of Gulrajani et al. 2017 (5 critic updates per G update,
    Adam β = (0, 0.9), λ = 10) and the modern RpGAN + R1 + R2 of notebook 10.

    WGAN-GP's learning rate is the toy's 1e-3, not the paper's 1e-4: the paper trains 100,000–200,000 G updates, and
    in the toy's 2,000 a G at 1e-4 has not left its starting blob (0.25 of 8 modes over 4 seeds, 2 % good samples).
    Every row makes ``steps`` G updates; WGAN-GP's 5 D updates with a double backward each cost it about 4.5× the
    seconds of a BCE step (``ToyResult.seconds``: the cost per step to set beside the counts). λ is the paper's 10;
    the authors' own 8-Gaussian script (gan_toy.py) uses 0.1 for toy tasks, which here (4 seeds, 2,000 steps) kept
    all 8 modes and about twice the good samples of λ 10; with 1 D step per G step the game did not start. These
    figures: benchmarks/RESULTS.md, "2026-12-06 — issue 28: the figures first quoted in docstrings"."""
    base = ToyConfig(steps=steps)
    return {
        "BCE, no penalties": base,
        "WGAN-GP (5 D steps, λ 10)": base.replace(loss="wgan-gp", gp_weight=10.0, d_steps_per_g_step=5,
                                                  betas=(0.0, 0.9)),
        "RpGAN + R1 + R2": modern_variants(steps)["RpGAN + R1 + R2"],
    }


def data_volume_variants(steps: int = 2000) -> dict[str, ToyConfig]:
    """Notebook 02's grid: the same recipe on 16, 64 and 256 training points and on unlimited data, and a G and D
    twice as wide (four times the weights) on the smallest and the unlimited data."""
    base = ToyConfig(steps=steps)
    wide = base.replace(hidden=2 * base.hidden)
    return {
        "16 points": base.replace(n_train=16),
        "64 points": base.replace(n_train=64),
        "256 points": base.replace(n_train=256),
        "unlimited data": base,
        "16 points, 2× wider": wide.replace(n_train=16),
        "unlimited, 2× wider": wide,
    }


def _ms(x: torch.Tensor) -> tuple[float, float]:
    x = x.float()
    return float(x.mean()), float(x.std()) if len(x) > 1 else 0.0


def data_volume_table(results: dict[str, ToyResult]) -> str:
    """The data-volume grid as text: distance to held-out points (lower is better), modes, good samples and the
    audit's flagged share (with its chance level), mean ± seed-to-seed std; then the two comparisons that matter,
    each against twice the larger spread: smallest vs largest data set, and wider vs narrower networks."""
    seeds = len(next(iter(results.values())).distance)
    lines = [f"{seeds} seeds per recipe · distance: sliced Wasserstein to fresh held-out points (lower is closer)",
             f"{'recipe':<22}{'distance':>16}{'modes':>12}{'good':>12}{'flagged as copies (chance)':>30}"]
    for name, r in results.items():
        (d, ds), (m, ms), (g, gs) = _ms(r.distance), _ms(r.modes_covered), _ms(r.good_share)
        copies = "—" if r.copied_share is None else (
            f"{100 * _ms(r.copied_share)[0]:.0f} ± {100 * _ms(r.copied_share)[1]:.0f} % "
            f"({100 * _ms(r.copied_chance)[0]:.0f} %)")
        lines.append(f"{name:<22}{d:>9.3f} ± {ds:.3f}{m:>7.1f} ± {ms:.1f}{100 * g:>7.0f} ± {100 * gs:<2.0f}%{copies:>28}")
    return "\n".join(lines + [""] + data_volume_comparisons(results))


def data_volume_comparisons(results: dict[str, ToyResult]) -> list[str]:
    """Sentences, from the numbers, comparing the distance to held-out points of pairs of recipes of
    :func:`data_volume_variants` (those present): more data, and wider networks."""
    pairs = [("16 points", "unlimited data", "more data (16 points → unlimited)"),
             ("16 points", "256 points", "more data (16 → 256 points)"),
             ("16 points", "16 points, 2× wider", "wider networks on 16 points"),
             ("unlimited data", "unlimited, 2× wider", "wider networks on unlimited data")]
    out = []
    for a, b, what in pairs:
        if a not in results or b not in results:
            continue
        (da, sa), (db, sb) = _ms(results[a].distance), _ms(results[b].distance)
        out.append(f"{what}: distance {da:.3f} → {db:.3f} ({db - da:+.3f}), {verdict(db - da, sa, sb)} twice the "
                   f"spread ({2 * max(sa, sb):.3f})")
    return out
