"""Small, comparable experiments for the notebooks: ablation runs, before/after scores, a toy GAN.

    runs = [run_variant(name, cfg, train_set, heldout) for name, cfg in variants.items()]
    print(results_table(runs, floor=metrics.swd_floor(heldout)["avg"]))

Every run trains a ``Trainer`` for its config's budget (``steps`` and/or ``minutes``, whichever ends first),
then draws samples from fixed z (the EMA generator when there is one, else G) and scores them against
held-out real images: the sliced Wasserstein distance (``metrics.swd``, ×10³, lower is closer) and the
MS-SSIM diversity (``metrics.diversity``, higher = more alike; mode collapse pushes it towards 1). Give every
variant the same data, seed and budget, and what differs between two rows of the table is the trick.

``dirac_gan`` is the smallest GAN there is (Mescheder et al. 2018): a generator with one number and a
discriminator with one number, whose training path shows in a plot why GANs oscillate and how averaging
(EMA) and R1 help.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from cxrlib import metrics
from cxrlib.config import TrainConfig
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


def results_table(results, *, floor: float | None = None, real_diversity: float | None = None) -> str:
    """A fixed-width text table: one row per run with steps, D(x), D(G(z)), SWD and diversity.

    floor: ``metrics.swd_floor(heldout)["avg"]`` (real vs real: what sampling noise alone gives), shown as
    a last row; real_diversity: ``metrics.diversity`` of real images, shown beside it.
    """
    width = max([len(r.name) for r in results] + [len("real vs real (floor)")])
    lines = [f"{'run':<{width}}  steps   D(x)  D(G(z))   SWD ×10³  diversity",
             "-" * (width + 46)]
    def number(x: float, width: int) -> str:
        return f"{'—':>{width}}" if math.isnan(x) else f"{x:{width}.2f}"  # — : never logged (e.g. not trained)

    for r in results:
        lines.append(f"{r.name:<{width}}  {r.steps:>5}  {number(r.final('D(x)'), 5)}  {number(r.final('D(G(z))'), 7)}"
                     f"  {r.swd['avg']:9.1f}  {r.diversity:9.3f}")
    if floor is not None or real_diversity is not None:
        f = f"{floor:9.1f}" if floor is not None else f"{'':9}"
        d = f"{real_diversity:9.3f}" if real_diversity is not None else ""
        lines.append(f"{'real vs real (floor)':<{width}}  {'':>5}  {'':5}  {'':7}  {f}  {d}")
    return "\n".join(lines)


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
