"""Small, comparable experiments for the notebooks: ablation runs, before/after scores, a toy GAN.

    runs = [run_variant(name, cfg, train_set, heldout) for name, cfg in variants.items()]
    print(results_table(runs, floor=metrics.swd_floor(heldout)["avg"]))

Every run trains a ``Trainer`` for its config's budget (``steps`` and/or ``minutes``, whichever ends first),
then draws samples from fixed z (the EMA generator when there is one, else G) and scores them against
held-out real images: the sliced Wasserstein distance (``metrics.swd``, ×10³, lower is closer) and the
MS-SSIM diversity (``metrics.diversity``, higher = more alike; mode collapse pushes it towards 1). Give every
variant the same data, seed and budget, and what differs between two rows of the table is the trick.

One training run gives one number per variant. ``split_half`` measures it twice, on disjoint halves of the
images, and ``noise_verdict`` says whether a difference between variants stands out from that measurement noise
(it cannot see what another training seed would do: that needs another run):

    a, b = swd_halves(run, heldout)  # one run's SWD, measured on two disjoint halves of the images
    print(compare_line("run - other run", run.swd["avg"] - other.swd["avg"], noise=abs(a - b), fmt="+.1f"))

``dirac_gan`` is the smallest GAN there is (Mescheder et al. 2018): a generator with one number and a
discriminator with one number, whose training path shows in a plot why GANs oscillate and how averaging
(EMA) and R1 help.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
from pathlib import Path

import torch

from cxrlib import metrics
from cxrlib.config import TrainConfig, make_config
from cxrlib.errors import CxrError
from cxrlib.train import Trainer

EVAL_SEED = 0  # z of every evaluation sample set: the same latents for every variant


@dataclasses.dataclass
class RunResult:
    """One finished run: its name, trainer, log records, evaluation samples and scores.

    samples: uint8 (n, 1, S, S) from z seeded ``EVAL_SEED``; swd: ``metrics.swd`` dict (``"avg"`` and per
    level); diversity: mean MS-SSIM of random sample pairs; ema: whether the samples come from the EMA generator;
    steps, seconds: the trainer's iterations and training time when it was scored (it may train on later).
    """

    name: str
    trainer: Trainer | None
    log: list[dict]
    samples: torch.Tensor
    swd: dict
    diversity: float
    ema: bool
    steps: int = 0
    seconds: float = 0.0

    def final(self, key: str, window: int = 3) -> float:
        """Mean of ``key`` over the last ``window`` log records (nan when never logged)."""
        values = [r[key] for r in self.log[-window:] if r.get(key) is not None]
        return float(sum(values) / len(values)) if values else math.nan


def evaluate(trainer: Trainer, heldout, n: int | None = None, ema: bool = True, seed: int = EVAL_SEED) -> dict:
    """Score a trainer's generator against held-out real images.

    heldout: an ``ImageSet`` or uint8 (N, 1, S, S) never trained on; n: samples to draw (default N).
    Returns {"samples": uint8 (n, 1, S, S), "swd": {...}, "diversity": float, "ema": bool} -- ``ema`` says
    whether the EMA generator was used (False when the trainer has none).
    """
    real = getattr(heldout, "images", heldout)
    n = len(real) if n is None else int(n)
    if n < 2 or len(real) < 2:
        raise CxrError(f"evaluation needs at least 2 held-out images and 2 samples, got {len(real)} and {n}")
    samples = trainer.sample(n, seed=seed, ema=ema)
    with torch.random.fork_rng(devices=[]):  # the metrics' randomness must not shift anybody's training
        score = metrics.swd(real, samples)
        div = metrics.diversity(samples, n_pairs=min(500, n * (n - 1) // 2))
    return {"samples": samples, "swd": score, "diversity": div, "ema": bool(ema and trainer.ema is not None)}


def run_variant(name: str, cfg: TrainConfig, data, heldout, *, n_eval: int | None = None, out=None,
                callbacks=(), progress: bool = False, keep_trainer: bool = True) -> RunResult:
    """Train ``cfg`` on ``data`` for its budget, then evaluate it against ``heldout`` (see :func:`evaluate`).

    name: the row label; out: a run directory (None: nothing written); callbacks: ``Trainer`` callbacks;
    keep_trainer: False drops the trainer (networks, optimiser moments) once scored, so an ablation of many
    runs holds only their samples, logs and scores in memory (``RunResult.trainer`` is then None).
    """
    trainer = Trainer(cfg, data, out=out, callbacks=callbacks)
    log = trainer.fit(progress=progress)
    scores = evaluate(trainer, heldout, n=n_eval)
    return RunResult(name, trainer if keep_trainer else None, log, scores["samples"], scores["swd"],
                     scores["diversity"], scores["ema"], trainer.step, float(trainer.seconds))


def result_of(name: str, trainer: Trainer, heldout, *, log=None, n_eval: int | None = None,
              ema: bool = True) -> RunResult:
    """A ``RunResult`` for a trainer trained elsewhere (``Trainer.finetune``, a resumed run, …)."""
    scores = evaluate(trainer, heldout, n=n_eval, ema=ema)
    return RunResult(name, trainer, list(log or []), scores["samples"], scores["swd"], scores["diversity"],
                     scores["ema"], trainer.step, float(trainer.seconds))


def results_table(results, *, floor: float | None = None, real_diversity: float | None = None,
                  halves: dict | None = None) -> str:
    """A fixed-width text table: one row per run with steps, D(x), D(G(z)), SWD and diversity.

    floor: ``metrics.swd_floor(heldout)["avg"]`` (real vs real: what sampling noise alone gives), shown as
    a last row; real_diversity: ``metrics.diversity`` of real images, shown beside it; halves: {run name:
    (SWD on half A, SWD on half B)} from :func:`swd_halves`, shown as two more columns (the same score measured
    twice on disjoint halves: how far apart they are is the noise of the measurement).
    """
    width = max([len(r.name) for r in results] + [len("real vs real (floor)")])
    extra = "     half A  half B" if halves else ""
    lines = [f"{'run':<{width}}  steps   D(x)  D(G(z))   SWD ×10³  diversity{extra}",
             "-" * (width + 46 + len(extra))]
    def number(x: float, width: int) -> str:
        return f"{'—':>{width}}" if math.isnan(x) else f"{x:{width}.2f}"  # — : never logged (e.g. not trained)

    for r in results:
        row = (f"{r.name:<{width}}  {r.steps:>5}  {number(r.final('D(x)'), 5)}  {number(r.final('D(G(z))'), 7)}"
               f"  {r.swd['avg']:9.1f}  {r.diversity:9.3f}")
        if halves and r.name in halves:
            a, b = halves[r.name]
            row += f"  {a:9.1f}  {b:6.1f}"
        lines.append(row)
    if floor is not None or real_diversity is not None:
        f = f"{floor:9.1f}" if floor is not None else f"{'':9}"
        d = f"{real_diversity:9.3f}" if real_diversity is not None else ""
        lines.append(f"{'real vs real (floor)':<{width}}  {'':>5}  {'':5}  {'':7}  {f}  {d}".rstrip())
    return "\n".join(lines)


# ======================================================================= is a difference larger than the noise?
def split_halves(x, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint random halves of ``x`` along its first axis, ``N // 2`` items each (an odd last one is left
    out). x: a tensor (N, ...) or an ``ImageSet`` (its ``images``). The same ``seed`` and N give the same split."""
    x = getattr(x, "images", x)
    n = len(x)
    if n < 2:
        raise CxrError(f"splitting into two halves needs at least 2 items, got {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    half = n // 2
    return x[perm[:half]], x[perm[half:2 * half]]


def split_half(stat, *sets, seed: int = 0) -> tuple[float, float]:
    """Make one measurement twice, on disjoint random halves of its data: ``(stat(*halves A), stat(*halves B))``.

    stat: a function of one or more image sets that returns a number, e.g. ``lambda x: float(x.float().std())``
    or ``lambda fake, real: metrics.swd(real, fake)["avg"]``; sets: its arguments (tensors (N, ...) or
    ``ImageSet``), each split on its own (:func:`split_halves`, seeds ``seed``, ``seed + 1``, …). The two values
    are independent measurements of the same thing from half the images each: how far apart they are shows how
    much the number moves by the luck of which images went into it (read it with :func:`noise_verdict`).
    The global random state is left as it was.
    """
    halves = [split_halves(x, seed=seed + k) for k, x in enumerate(sets)]
    with torch.random.fork_rng(devices=[]):
        a = float(stat(*(h[0] for h in halves)))
        b = float(stat(*(h[1] for h in halves)))
    return a, b


def swd_halves(result: RunResult, heldout, seed: int = 0) -> tuple[float, float]:
    """A run's SWD ×10³ measured twice: half of its samples against half of the held-out images, and the other
    halves against each other (:func:`split_half`). Scores from fewer images sit a little higher than the full
    score; what matters is how far apart the two are."""
    real = getattr(heldout, "images", heldout)
    return split_half(lambda fake, ref: metrics.swd(ref, fake)["avg"], result.samples, real, seed=seed)


def noise_verdict(difference: float, noise: float) -> str:
    """Whether a difference between two measurements stands out from their noise: "larger than the noise" when
    ``|difference| > noise``, else "within the noise"; "no noise estimate" when noise is not a finite number.

    noise: a half-to-half difference ``|a - b|`` of :func:`split_half` (take the largest over the measurements
    compared). For a number whose sampling variance falls as 1/N, a half-to-half difference is typically about
    1.1 standard deviations of the difference of two full-size measurements, and the largest of three or four
    about two, so a smaller difference is not resolved. A rule of thumb, not a significance test; and it knows
    only the noise of which images were measured, not what another training seed would do.
    """
    if noise is None or not math.isfinite(noise):
        return "no noise estimate"
    return "larger than the noise" if abs(difference) > noise else "within the noise"


def compare_line(label: str, difference: float, noise: float, fmt: str = "+.3f") -> str:
    """One line: ``"<label>: +0.061 (noise 0.008) → larger than the noise"``; fmt formats both numbers."""
    plain = fmt.lstrip("+- ")
    return f"{label}: {difference:{fmt}} (noise {noise:{plain}}) → {noise_verdict(difference, noise)}"


# ======================================================================= the Dirac-GAN (a toy with two numbers)
def dirac_gan(steps: int = 400, lr: float = 0.2, *, r1_gamma: float = 0.0, theta: float = 1.0,
              psi: float = 1.0) -> torch.Tensor:
    """Train the Dirac-GAN (Mescheder et al. 2018) and return its path: (steps + 1, 2) float64 of (θ, ψ).

    The real data is one point, x = 0. The generator outputs one number, G = θ; the discriminator is
    D(x) = sigmoid(ψ·x). Alternating gradient steps (D first, then G, learning rate ``lr``) on the BCE losses
    ``d_loss = -log D(0) - log(1 - D(θ))`` (+ ``r1_gamma``/2·ψ², the R1 penalty: ∇ₓ logit = ψ) and the
    non-saturating ``g_loss = -log D(θ)``. The equilibrium is θ = ψ = 0. Without R1 the path circles it
    forever; the average of the path sits near it (that is what an EMA of G exploits); with R1 it spirals in.
    """
    if steps < 1 or lr <= 0:
        raise CxrError(f"dirac_gan needs steps >= 1 and lr > 0, got steps={steps}, lr={lr}")
    path = torch.empty(steps + 1, 2, dtype=torch.float64)
    path[0] = torch.tensor([theta, psi])
    for t in range(steps):
        # ∂d_loss/∂ψ = θ·sigmoid(ψθ) + γψ  (the real point x = 0 contributes nothing)
        psi = psi - lr * (theta / (1 + math.exp(-psi * theta)) + r1_gamma * psi)
        # ∂g_loss/∂θ = -ψ·sigmoid(-ψθ)
        theta = theta + lr * psi / (1 + math.exp(psi * theta))
        path[t + 1] = torch.tensor([theta, psi])
    return path


# ======================================================================= notebook 01's leak experiment
LEAK_ARMS = ("offline jitter", "DiffAugment", "clean control")


def exposure_spread(x) -> float:
    """x: (N, 1, H, W) uint8 → the standard deviation of the images' mean brightness (how unevenly exposed)."""
    return float(metrics.mean_brightness(x).std())


def leak_runs(clean, jittered, *, steps: int, size: int, batch: int, p: float, seed: int = 0,
              minutes: float | None = None, measure_every: int | None = None, n_samples: int = 256,
              callbacks_for=None) -> dict:
    """Notebook 01's augmentation-leak experiment: three course runs with the same seed, steps and p.

    clean: uint8 (N, 1, S, S) training images; jittered: the same plus offline-jittered copies. The arms
    (``LEAK_ARMS``): *offline jitter* (jittered data, DiffAugment ``translation,cutout``), *DiffAugment* (clean data,
    ``color,translation,cutout``), *clean control* (clean data, ``translation,cutout``); every transform with
    probability ``p``, ADA off. ``callbacks_for(name)`` may return Trainer callbacks for an arm.

    Returns {arm: {"samples": uint8 (n_samples, 1, S, S) of the EMA generator (z seed 1), "steps", "seconds",
    "exposure_spread"}}."""
    policies = {"offline jitter": (jittered, "translation,cutout"), "DiffAugment": (clean, "color,translation,cutout"),
                "clean control": (clean, "translation,cutout")}
    out = {}
    for name in LEAK_ARMS:
        images, policy = policies[name]
        cfg = make_config("course", size=size, batch=batch, steps=steps, minutes=minutes, augment=policy, ada=False,
                          augment_p=p, log_every=measure_every or max(1, steps // 5), seed=seed)
        trainer = Trainer(cfg, images, callbacks=list(callbacks_for(name)) if callbacks_for else [])
        trainer.fit(progress=False)
        x = trainer.sample(n_samples, seed=1)
        out[name] = {"samples": x, "steps": trainer.step, "seconds": trainer.seconds,
                     "exposure_spread": exposure_spread(x)}
        del trainer  # free one arm's networks and optimiser states before the next is built
    return out


# ======================================================================= notebook 05's continuations
FINETUNE_ARMS = ("continue", "original recipe", "adaptive")
ORIGINAL_FINETUNE_RATES = dict(g_lr=5e-5, d_lr=1e-4, betas=(0.0, 0.99))  # the original project's fine-tuning recipe
SEED_FINETUNE_RATES = ORIGINAL_FINETUNE_RATES  # old name, kept for older code


def finetune_arms(shipped: dict, train, heldout, *, out, steps: int, warmup: int = 8, seed: int = 0) -> dict:
    """From an exported generator (weights without Adam moments, e.g. the shipped one): ``warmup`` steps of its own
    recipe rebuild the optimiser state into ``out/base``; then three continuations of ``steps`` each
    (``FINETUNE_ARMS``): *continue* (``Trainer.resume``: same rates, Adam moments kept), *original recipe*
    (``Trainer.finetune`` with the original project's rates ``ORIGINAL_FINETUNE_RATES``, fresh moments), *adaptive*
    (the same plus reduce-on-plateau). Every trainer uses ``seed``. Returns {"before" and each arm: {"swd": SWD ×10³
    of the EMA generator against ``heldout`` (``evaluate``), "swd_raw": the same for the raw G, "seconds"}}."""
    from pathlib import Path

    out = Path(out)
    base = Trainer.finetune(shipped, train, out=out / "base", lr_scale=1.0, d_lr_scale=1.0,
                            betas=tuple(shipped["config"]["g_betas"]), steps=warmup, seed=seed,
                            log_every=max(1, warmup))
    base.fit(progress=False)
    ckpt = out / "base" / "checkpoints" / "last.pt"
    start = base.step
    log_every = max(1, steps // 10)
    def scores(trainer):  # the EMA generator's SWD (what every table uses) and the raw G's, from the same z
        return {"swd": evaluate(trainer, heldout)["swd"]["avg"],
                "swd_raw": evaluate(trainer, heldout, ema=False)["swd"]["avg"]}

    result = {"before": {**scores(base), "seconds": 0.0}}
    arms = {
        "continue": lambda: Trainer.resume(ckpt, train, out=out / "continue", steps=start + steps, minutes=None,
                                           log_every=log_every),
        "original recipe": lambda: Trainer.finetune(ckpt, train, out=out / "finetune", steps=steps, seed=seed,
                                                log_every=log_every, **ORIGINAL_FINETUNE_RATES),
        "adaptive": lambda: Trainer.finetune(ckpt, train, out=out / "adaptive", steps=steps, seed=seed,
                                             log_every=log_every, adaptive=True,
                                             adaptive_every=max(1, steps // 6), adaptive_patience=1,
                                             **ORIGINAL_FINETUNE_RATES),
    }
    for name in FINETUNE_ARMS:
        trainer = arms[name]()
        already = trainer.seconds
        trainer.fit(progress=False)
        result[name] = {**scores(trainer), "seconds": trainer.seconds - already}
        del trainer
    return result


# ======================================================================= notebook 02's data volume
def volume_arm(n: int) -> str:
    """The row label of a data-volume arm: ``"50 images"``."""
    return f"{n} images"


def data_volume_runs(pool, heldout, *, volumes=(50, 200, 1000), steps: int, batch: int = 32, seed: int = 0,
                     n_eval: int = 1000, minutes: float | None = None, **overrides) -> dict:
    """The same ``course`` recipe, the same steps, on training sets of different sizes.

    pool: uint8 (N, 1, S, S) with N ≥ max(volumes); each arm trains on ``volumes[i]`` images drawn from it by
    ``seed`` (so the seed-to-seed spread includes which images a small set happens to hold). heldout: uint8 images
    of other patients. Per arm ({``volume_arm(n)``: ...}): "swd" (×10³, ``n_eval`` EMA samples against ``heldout``),
    "flagged" (the share of those samples the memorisation audit calls copies of the arm's training images),
    "chance" (the share of held-out *real* images it flags against the same set: what the audit flags by chance at
    this set size), "steps", "seconds". ``overrides`` change the recipe (``make_config`` fields, e.g. ``augment=""``).
    """
    pool = getattr(pool, "images", pool)
    real = getattr(heldout, "images", heldout)
    if max(volumes) > len(pool):
        raise CxrError(f"the largest training set ({max(volumes)}) needs that many images, the pool has {len(pool)}")
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))
    out = {}
    for n in volumes:
        train = pool[order[:n]]
        cfg = make_config("course", size=pool.shape[-1], batch=batch, steps=steps, minutes=minutes, seed=seed,
                          log_every=max(1, steps // 10), sample_every=10**9, checkpoint_every=10**9,
                          **overrides)
        trainer = Trainer(cfg, train)
        trainer.fit(progress=False)
        scores = evaluate(trainer, real, n=n_eval)
        audit = metrics.memorization_audit(scores["samples"], train, real[:n_eval], n_top=0)
        out[volume_arm(n)] = {"swd": scores["swd"]["avg"], "flagged": audit["flagged_fraction"],
                              "chance": audit["holdout_flagged_fraction"], "steps": trainer.step,
                              "seconds": trainer.seconds}
        del trainer
    return out


# ======================================================================= the privacy notebook: membership vs size and length
def membership_arm(n: int, steps: int) -> str:
    """The row label of a membership arm: ``"50 images · 2000 steps"``."""
    return f"{volume_arm(n)} · {steps} steps"


def attack_figures(audit: dict) -> dict:
    """What the bank keeps of ``privacy.audit_checkpoint``: {attack: {"auc", "auc_interval", "tpr1",
    "tpr1_interval"}} (TPR at 1 % FPR)."""
    return {name: {"auc": r["auc"], "auc_interval": r["auc_interval"], "tpr1": r["tpr_at_fpr"]["1%"]["tpr"],
                   "tpr1_interval": r["tpr_at_fpr"]["1%"]["interval"]} for name, r in audit["attacks"].items()}


def membership_runs(pool, heldout, *, volumes=(50, 200, 1000), lengths=(500, 2000, 8000), batch: int = 32,
                    seed: int = 0, n_generated: int = 1000, n_boot: int = 200, out, **overrides) -> dict:
    """Membership inference against training-set size and length: the ``course`` recipe of ``data_volume_runs``
    (the same draw of ``volumes[i]`` images from ``pool`` by ``seed``), trained to each of ``lengths`` steps in
    turn and attacked there with every attack of ``cxrlib.privacy.audit_checkpoint`` — members: its n training
    images; non-members: the first n of ``heldout`` (other patients; ``heldout`` needs ≥ max(volumes)).

    Per arm ``membership_arm(n, steps)``: {"attacks": {attack: {"auc", "auc_interval", "tpr1", "tpr1_interval"}}
    (TPR at 1 % FPR), "swd" (×10³, the EMA generator's ``n_generated`` samples against all of ``heldout``),
    "seconds" (training so far)}. ``out``: a scratch folder for the checkpoint each audit reads (emptied after)."""
    from cxrlib import privacy

    pool = getattr(pool, "images", pool)
    real = getattr(heldout, "images", heldout)
    if max(volumes) > min(len(pool), len(real)):
        raise CxrError(f"the largest training set ({max(volumes)}) needs that many images in the pool ({len(pool)}) "
                       f"and as many held-out non-members ({len(real)})")
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))
    out = Path(out)
    ckpt = out / "membership.pt"
    result = {}
    try:
        for n in volumes:
            train = pool[order[:n]]
            cfg = make_config("course", size=pool.shape[-1], batch=batch, steps=max(lengths), seed=seed,
                              log_every=10**9, sample_every=10**9, checkpoint_every=10**9, **overrides)
            trainer = Trainer(cfg, train)
            for steps in sorted(lengths):
                trainer.fit(steps=steps - trainer.step, progress=False)
                trainer.save_checkpoint(ckpt)
                audit = privacy.audit_checkpoint(ckpt, train, real[:n], n_generated=n_generated, seed=seed,
                                                 n_boot=n_boot, device="cpu")
                result[membership_arm(n, steps)] = {"attacks": attack_figures(audit), "steps": trainer.step,
                                                    "swd": evaluate(trainer, real, n=n_generated)["swd"]["avg"],
                                                    "seconds": trainer.seconds}
            del trainer
    finally:
        ckpt.unlink(missing_ok=True)
    return result


def privacy_arms(epsilons=(10, 1)) -> dict:
    """The arms of ``privacy_tradeoff`` and what each sets: the course recipe; the DP recipe without DP-SGD
    (``config.DP_RECIPE``: what a private run changes besides clipping and noise, so that ε = ∞ is a fair
    control); DP-SGD at each ε."""
    from cxrlib.config import DP_RECIPE

    return {"course recipe": {}, "DP recipe, ε = ∞": dict(DP_RECIPE),
            **{f"ε = {e:g}": {"dp_epsilon": float(e)} for e in epsilons}}


def privacy_tradeoff(train, heldout, *, judge, epsilons=(10, 1), steps: int, batch: int = 32, seed: int = 0,
                     n_generated: int = 1000, n_boot: int = 200, out, **overrides) -> dict:
    """The privacy–quality trade-off: a conditional ``course`` GAN on ``train`` (an ``ImageSet`` with classes) for
    ``steps`` steps in every arm of ``privacy_arms(epsilons)``, each then scored — "swd" (×10³, ``n_generated``
    EMA samples, the classes in turn, against ``heldout``), "consistency" (the share of them ``judge``, a
    classifier trained on other real images, calls their intended class), "attacks" (``privacy.audit_checkpoint``,
    members: ``train``; non-members: as many of ``heldout``, other patients; {attack: {"auc", "auc_interval",
    "tpr1", "tpr1_interval"}}), "epsilon_spent" (None without DP-SGD), "seconds". ``out``: scratch for the
    checkpoints the audits read (removed after)."""
    from cxrlib import classifier, privacy

    real = getattr(heldout, "images", heldout)
    if len(heldout) < len(train):
        raise CxrError(f"{len(train)} members need as many held-out non-members, got {len(heldout)}")
    out = Path(out)
    ckpt = out / "privacy.pt"
    y = torch.arange(n_generated) % len(train.classes)
    result = {}
    try:
        for arm, settings in privacy_arms(epsilons).items():
            cfg = make_config("course", size=train.images.shape[-1], batch=batch, steps=steps, seed=seed,
                              family="conditional", log_every=10**9, sample_every=10**9, checkpoint_every=10**9,
                              **{**settings, **overrides})
            trainer = Trainer(cfg, train)
            trainer.fit(progress=False)
            trainer.save_checkpoint(ckpt)
            audit = privacy.audit_checkpoint(ckpt, train, heldout.subset(range(len(train))), n_generated=n_generated,
                                             seed=seed, n_boot=n_boot, device="cpu")
            fake = trainer.sample(n_generated, seed=seed + 1000, label=y)
            with torch.random.fork_rng(devices=[]):
                swd = metrics.swd(real, fake)["avg"]
            result[arm] = {
                "swd": swd, "consistency": classifier.class_consistency(judge, fake, y)["overall"],
                "attacks": attack_figures(audit),
                "epsilon_spent": None if trainer.dp is None else trainer.dp.spent(), "steps": trainer.step,
                "seconds": trainer.seconds}
            del trainer
    finally:
        ckpt.unlink(missing_ok=True)
    return result


# ======================================================================= GANs and diffusion at equal training time
def diffusion_arm(model: str, minutes: float, steps: int | None = None) -> str:
    """The row label of a GAN-vs-diffusion arm: ``"GAN · 5 min"``, ``"diffusion, 10 steps · 5 min"``."""
    return f"{model}{'' if steps is None else f', {steps} steps'} · {minutes:g} min"


def gan_vs_diffusion(train, heldout, *, budgets=(5, 20), sampling_steps=(10, 50), n_eval: int = 500, seed: int = 0,
                     batch: int = 32, log=None) -> dict:
    """The course GAN and the diffusion model (``cxrlib.diffusion``, a U-Net of about the GAN generator's parameter
    count at 64 px) trained on the same ``train`` images for the same training time: each trains until ``budgets[i]``
    minutes of its own training time in turn (the engine's clock: evaluation is not counted) and is scored there.

    Per row — ``diffusion_arm``: the GAN, and the diffusion model sampled with each K of ``sampling_steps`` DDIM steps —
    "swd" (×10³, ``n_eval`` EMA samples against ``heldout``), "precision"/"recall"/"density"/"coverage"
    (``metrics.precision_recall``), "flagged" (the memorisation audit's share of samples called copies of ``train``),
    "pixel"/"embedding" (AUC of the black-box membership attacks, ``privacy.distance_scores``: the first ``n_eval``
    training images vs as many of ``heldout``), "sample_s" (seconds to draw 1,000 images, from the ``n_eval`` drawn,
    on this machine), "steps" (training steps reached), "seconds" (training time)."""
    import time

    from cxrlib import privacy
    from cxrlib.classifier import roc_auc
    from cxrlib.diffusion import denoising_steps

    log = log or (lambda *a: None)
    x, real = getattr(train, "images", train), getattr(heldout, "images", heldout)
    if min(len(x), len(real)) < n_eval:
        raise CxrError(f"the attacks need {n_eval} training and {n_eval} held-out images, got {len(x)} and {len(real)}")
    queries = torch.cat([x[:n_eval], real[:n_eval]])
    member = torch.cat([torch.ones(n_eval), torch.zeros(n_eval)])
    rows = {}
    for model, preset in (("GAN", "course"), ("diffusion", "diffusion")):
        cfg = make_config(preset, size=x.shape[-1], batch=batch, steps=10**9, seed=seed, log_every=10**9,
                          sample_every=10**9, checkpoint_every=10**9)
        trainer = Trainer(cfg, x)
        for minutes in sorted(budgets):
            trainer.fit(minutes=max(0.0, minutes - trainer.seconds / 60), progress=False)
            G = trainer.ema.model if trainer.ema is not None else trainer.G
            for k in ([None] if model == "GAN" else sampling_steps):
                with contextlib.nullcontext() if k is None else denoising_steps(G, k):
                    trainer.sample(min(n_eval, 16), seed=seed)  # untimed warm-up (kernel choice, first pass)
                t0 = time.perf_counter()
                with contextlib.nullcontext() if k is None else denoising_steps(G, k):
                    fakes = trainer.sample(n_eval, seed=seed + 1000)
                sample_s = (time.perf_counter() - t0) * 1000 / n_eval
                with torch.random.fork_rng(devices=[]):
                    pr = metrics.precision_recall(real, fakes)
                    row = {"swd": metrics.swd(real, fakes)["avg"],
                           **{m: pr[m] for m in ("precision", "recall", "density", "coverage")},
                           "flagged": metrics.memorization_audit(fakes, x, n_top=0)["flagged_fraction"],
                           **{space: roc_auc(privacy.distance_scores(queries, fakes, space), member)
                              for space in privacy.SPACES},
                           "sample_s": sample_s, "steps": trainer.step, "seconds": trainer.seconds}
                rows[diffusion_arm(model, minutes, k)] = row
                log(diffusion_arm(model, minutes, k), "· SWD", round(row["swd"], 2), "·", trainer.step, "steps")
        del trainer
    return rows


# ======================================================================= notebook 02's widths at equal compute
def width_arm(width: float) -> str:
    """The row label of a width arm: ``"width 0.5"``."""
    return f"width {width:g}"


def step_flops(width: float, size: int, batch: int) -> int:
    """FLOPs of one training step of the ``course`` networks at ``width`` and ``size`` px with ``batch`` images
    (``models.flops_per_image``: forward and backward, D step and G step)."""
    from cxrlib import models

    return models.flops_per_image(*models.build_models("course", size, width=width), size)["train_step"] * batch


def equal_compute_steps(widths, wide_steps: int, size: int, batch: int) -> dict:
    """{width: steps} so that every width spends the FLOPs of ``wide_steps`` steps of the widest one (whole steps,
    at least 1): a step's cost is its FLOPs (:func:`step_flops`), not its parameter count."""
    cost = {w: step_flops(w, size, batch) for w in widths}
    compute = cost[max(widths)] * wide_steps
    return {w: max(1, round(compute / cost[w])) for w in widths}


def width_runs(train, heldout, *, widths=(0.5, 2.0), wide_steps: int, batch: int, seed: int = 0,
               n_eval: int | None = None, minutes: float | None = None, log=None) -> dict:
    """The "What to scale" notebook's "larger is not better": the ``course`` recipe at several widths for the **same
    compute**.

    The widest model trains ``wide_steps`` steps; every other as many steps as the same FLOPs buy it
    (``models.flops_per_image``, forward and backward of a step). train, heldout: uint8 (N, 1, S, S) (or image sets);
    minutes: a safety net only. ``log(width, result)`` is called after each run. Returns {width: {"params" (G + D),
    "step_flops", "compute", "steps", "seconds", "fake" (``n_eval`` EMA samples, z seed 1), "swd" (×10³ against
    ``heldout``), "halves" (the same SWD on two disjoint halves, ``split_half``)}}.
    """
    from cxrlib import models

    train = getattr(train, "images", train)
    real = getattr(heldout, "images", heldout)
    size = train.shape[-1]
    flops = {w: step_flops(w, size, batch) for w in widths}
    compute = flops[max(widths)] * wide_steps
    plan = equal_compute_steps(widths, wide_steps, size, batch)

    def swd(fake, ref):
        return metrics.swd(ref, fake)["avg"]

    out = {}
    for w in widths:
        cfg = make_config("course", size=size, batch=batch, width=w, steps=plan[w],
                          minutes=minutes, log_every=10, seed=seed, sample_every=10**9, checkpoint_every=10**9)
        trainer = Trainer(cfg, train)
        trainer.fit(progress=False)
        fake = trainer.sample(n_eval or len(real), seed=1)
        with torch.random.fork_rng(devices=[]):
            out[w] = dict(params=models.count_params(trainer.G) + models.count_params(trainer.D),
                          step_flops=flops[w], compute=compute, steps=trainer.step, seconds=trainer.seconds,
                          fake=fake, swd=swd(fake, real), halves=split_half(swd, fake, real))
        del trainer  # free one run's networks and optimiser states before the next is built
        if log is not None:
            log(w, out[w])
    return out


# ======================================================================= notebook 07 (issue 29): what synthetic X-rays are worth
def utility_arms(ks=(1, 3, 10), extra=(1, 3)) -> list[str]:
    """The arms of :func:`utility_study`, in order: real; real + offline aug; real + k×n synthetic for each k;
    synthetic only; real + k×n more real for each k in ``extra`` (the ceiling a synthetic image competes with)."""
    return (["real", "real + offline aug"] + [f"real + {k}×n synthetic" for k in ks] + ["synthetic only"]
            + [f"real + {k}×n real" for k in extra])


GAN_FILES = {"config.json", "log.jsonl", "samples", "checkpoints", "checks.json", ".lock"}  # what _judged_gan writes


def _judged_gan(cfg: TrainConfig, train, judge, check_every, target, out, seed: int, log):
    """``utility_study``'s GAN: trained in chunks of ``check_every`` steps (all at once without), its last
    checkpoint kept in ``out`` after each chunk (resumed from there when it holds one) and read by the judge when
    there is a ``target``; stops at ``cfg.steps``, its ``minutes`` or the first check at or above ``target``.
    A resume first makes the check of the step it resumes at, if the stop came before it was recorded, so a
    stopped study ends where an unstopped one would. Returns (trainer, [[step, consistency], …])."""
    import json

    from cxrlib import classifier
    from cxrlib.files import atomic_write

    y = torch.arange(1000) % len(train.classes)

    def check():
        fake = gan.sample(len(y), seed=seed + 2000, label=y)
        checks.append([gan.step, classifier.class_consistency(judge, fake, y)["overall"]])
        log("GAN step", gan.step, "· the judge's check", round(checks[-1][1], 3))
        if out is not None:
            atomic_write(out / "checks.json", lambda tmp: tmp.write_text(json.dumps(checks)))

    out = None if out is None else Path(out)
    last = None if out is None else out / "checkpoints" / "last.pt"
    if last is not None and last.exists():
        gan = Trainer.resume(last, train)
        checks = json.loads((out / "checks.json").read_text()) if (out / "checks.json").exists() else []
        checks = [c for c in checks if c[0] <= gan.step]
        log("GAN resumed at step", gan.step, "from", last)
        if target is not None and gan.step and (not checks or checks[-1][0] != gan.step):
            check()
    else:
        if out is not None and out.exists():
            if not {p.name for p in out.iterdir()} <= GAN_FILES:
                raise CxrError(f"'{out}' holds files the study did not write: give an empty or new folder for the "
                               "study's GAN")
            shutil.rmtree(out)  # a run stopped before its first checkpoint: nothing to keep
        gan, checks = Trainer(cfg, train, out=out), []
    every = check_every or cfg.steps
    while gan.step < cfg.steps and not (checks and target is not None and checks[-1][1] >= target):
        left = None if cfg.minutes is None else max(0.0, cfg.minutes - gan.seconds / 60)  # minutes: in total
        gan.fit(steps=min(every, cfg.steps - gan.step), minutes=left, progress=False)  # (writes last.pt)
        if target is not None:
            check()
        if gan.stopped_by_time:
            break
    return gan, checks


def utility_study(train, test, *, judge, gan_steps: int, pool=None, ks=(1, 3, 10), extra=(1, 3),
                  clf_steps: int = 1000, copies: int = 3, batch: int = 32, seed: int = 0,
                  min_consistency: float = 0.8, specificity: float = 0.9, n_audit: int = 1000,
                  minutes: float | None = None, gan_config: dict | None = None, check_every: int | None = None,
                  target: float | None = None, out=None, log=None) -> dict:
    """Do a GAN's images help a classifier that has few real ones? One seed of the study of issue 29.

    train: n labelled real images (an ``ImageSet``), the only images the GAN learns from; test: labelled real
    images of other patients (never trained on); judge: a classifier trained on *other* real images, which
    decides whether the GAN draws the class it is asked for; pool: more real images of other patients (an
    ``ImageSet``, at least max(extra) × n) for the "real + k×n real" arms (None: those arms are left out).

    A conditional ``course`` GAN (DiffAugment + ADA, the recipe's defaults; ``gan_config``: fields to change, e.g.
    ``{"width": 0.5}``) trains on ``train`` alone, ``gan_steps`` (or ``minutes``) at most: with ``target``, the
    judge reads 1,000 of its images (a draw of their own) every ``check_every`` steps and training stops at the
    first check at or above ``target`` (early stopping on the judge, which never sees the test set; the verdict
    below is read on another draw). ``out``: a folder for the GAN's last checkpoint (rewritten at each check), from
    which a stopped study resumes its GAN. Then it draws max(ks) × n images, classes balanced, and the same classifier
    (``cxrlib.classifier``, ``clf_steps`` steps, seed ``seed``) trains on each arm of :func:`utility_arms` and
    is scored on ``test``: ROC-AUC and the sensitivity at ``specificity``. "synthetic only" learns from n
    synthetic images (as many as the real arm's). The GAN is **usable** when the judge calls at least
    ``min_consistency`` of its images their intended class; the synthetic arms are trained either way (what a
    weak GAN does is worth seeing) and the caller excludes an unusable seed from the verdict.

    Returns {"arms": {arm: AUC}, "sensitivity": {arm: …}, "consistency": {"GAN": share, "real": the judge's
    share on ``test`` -- the ceiling}, "usable", "gan_swd" (×10³ against ``test``), "memorisation":
    {"GAN": share of samples flagged as copies of ``train``, "held-out": share of ``test`` flagged by chance},
    "gan_steps", "gan_checks" ([[step, consistency], …] of the checks), "n", "seconds"}.
    """
    import time

    from cxrlib import augment, classifier

    t0 = time.perf_counter()
    log = log or (lambda *a: None)
    n, n_classes = len(train), len(train.classes)
    if pool is not None and len(pool) < max(extra, default=0) * n:
        raise CxrError(f"the pool of extra real images holds {len(pool)}, the arms need {max(extra) * n}")
    cfg = make_config("course", size=train.images.shape[-1], batch=batch, steps=gan_steps, minutes=minutes,
                      seed=seed, family="conditional", log_every=max(1, gan_steps // 10), sample_every=10**9,
                      checkpoint_every=10**9, **(gan_config or {}))
    gan, checks = _judged_gan(cfg, train, judge, check_every, target, out, seed, log)
    n_fake = max(ks) * n
    y_fake = torch.arange(n_fake) % n_classes
    fake = gan.sample(n_fake, seed=seed + 1000, label=y_fake)
    gan_steps = gan.step
    del gan  # keep the samples, not the networks, while the classifiers train
    consistency = classifier.class_consistency(judge, fake, y_fake)["overall"]
    ceiling = classifier.class_consistency(judge, test.images, test.labels)["overall"]
    log("GAN", gan_steps, "steps · consistency", round(consistency, 3), "· judge on real", round(ceiling, 3))

    def with_fake(k):
        return torch.cat([train.images, fake[:k * n]]), torch.cat([train.labels, y_fake[:k * n]])

    sets = {"real": (train.images, train.labels),
            "real + offline aug": (augment.augment_images(train.images, copies=copies, seed=seed),
                                   train.labels.repeat(1 + copies))}
    sets.update({f"real + {k}×n synthetic": with_fake(k) for k in ks})
    sets["synthetic only"] = (fake[:n], y_fake[:n])
    if pool is not None:
        sets.update({f"real + {k}×n real": (torch.cat([train.images, pool.images[:k * n]]),
                                            torch.cat([train.labels, pool.labels[:k * n]])) for k in extra})
    aucs, sens = {}, {}
    for arm, (x, y) in sets.items():
        clf = classifier.train_classifier(x, y, classes=train.classes, steps=clf_steps, seed=seed)
        r = classifier.evaluate_classifier(clf, test.images, test.labels, specificity=specificity)
        aucs[arm], sens[arm] = r["auc"], r["sensitivity"]
        log(arm, round(r["auc"], 4))
    m = min(n_audit, len(test), n_fake)
    audit = metrics.memorization_audit(fake[:m], train.images, holdout=test.images[:m])
    return {"arms": aucs, "sensitivity": sens, "consistency": {"GAN": consistency, "real": ceiling},
            "usable": consistency >= min_consistency,
            "gan_swd": {"GAN": float(metrics.swd(test.images[:m], fake[:m])["avg"])},
            "memorisation": {"GAN": audit["flagged_fraction"], "held-out": audit["holdout_flagged_fraction"]},
            "gan_steps": gan_steps, "gan_checks": checks, "n": n, "seconds": time.perf_counter() - t0}
