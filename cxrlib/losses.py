"""GAN losses on discriminator logits, the R1 gradient penalty, and the denoising loss of the diffusion model.

Every loss takes *logits* (raw D outputs, shape (B,)), never probabilities: ``binary_cross_entropy_with_logits``
is the numerically safe form of sigmoid + log. Every loss returns ``(loss, stats)``: ``loss`` is a 0-dim tensor
to call ``backward()`` on; ``stats`` holds detached 0-dim tensors named as in the literature (``d_loss_real``,
``d_loss_fake``, ``D(x)``, ``D(G(z))`` = mean sigmoid probabilities). Nothing here calls ``.item()``: the
trainer reads the stats only at log intervals, so the device never waits for the host.

``LOSSES = {"bce": …, "hinge": …, "lsgan": …, "rpgan": …, "wgan-gp": …}``: each a pair (D loss, G loss). The
relativistic loss (``RELATIVISTIC``) compares each fake with a real image, so its G loss takes the real logits as
well: ``g_loss(fake_logits, real_logits)``. "wgan-gp" is the Wasserstein critic loss; its gradient penalty
(:func:`gradient_penalty` on :func:`interpolates`) is added by the D step, as R1 and R2 are. "denoising" is not a
GAN loss: the diffusion family's (``cxrlib.diffusion``), which has no D (its pair is ``(None, denoising_loss)``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cxrlib.config import TRICK_LOSSES  # the losses that take label smoothing and flipping
from cxrlib.errors import CxrError


def _probs(logits: torch.Tensor) -> torch.Tensor:
    """Mean sigmoid probability, detached and in float32: "how real D thinks these are", in [0, 1]."""
    return torch.sigmoid(logits.detach().float()).mean()


def _d_stats(d_loss_real, d_loss_fake, d_real, d_fake) -> dict:
    """The D losses' statistics: both halves of the loss (detached) and D's mean verdict on each side."""
    return {"d_loss_real": d_loss_real.detach(), "d_loss_fake": d_loss_fake.detach(), "D(x)": d_real, "D(G(z))": d_fake}


def _no_label_tricks(loss: str, label_smoothing: float, flip_prob: float) -> None:
    """Smoothing and flipping are tricks of the BCE-type losses: a non-zero value is refused, not ignored."""
    if label_smoothing or flip_prob:
        raise CxrError(f"label smoothing and label flipping apply to the {' and '.join(map(repr, TRICK_LOSSES))} "
                       f"losses only, not to {loss!r}")


# ----------------------------------------------------------------------------------------------- BCE


def bce_targets(
    n_real: int,
    n_fake: int,
    *,
    label_smoothing: float = 0.0,
    flip_prob: float = 0.0,
    generator: torch.Generator | None = None,
    device=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The discriminator's BCE targets, as the original project made them: ``(t_real (n_real,), t_fake (n_fake,))``.

    Label smoothing s moves both targets toward 1/2: real ``1 - s/2``, fake ``s/2`` (s = 0.1 → 0.95 / 0.05),
    so D is never rewarded for infinitely confident logits. Label flipping ("label swapping" in the original project):
    each target is independently swapped real↔fake with probability ``flip_prob`` -- a little noise that
    keeps D from winning outright. The flips are drawn from ``generator`` (on ``device``) so a run is
    reproducible.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise CxrError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if not 0.0 <= flip_prob <= 1.0:
        raise CxrError(f"flip_prob must be in [0, 1], got {flip_prob}")
    hi, lo = 1.0 - label_smoothing / 2, label_smoothing / 2
    t_real = torch.full((n_real,), hi, device=device)
    t_fake = torch.full((n_fake,), lo, device=device)
    if flip_prob > 0:
        flip = torch.rand(n_real + n_fake, generator=generator, device=device) < flip_prob
        t_real = torch.where(flip[:n_real], lo, t_real)
        t_fake = torch.where(flip[n_real:], hi, t_fake)
    return t_real, t_fake


def d_loss_bce(
    real_logits: torch.Tensor,
    fake_logits: torch.Tensor,
    *,
    label_smoothing: float = 0.0,
    flip_prob: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict]:
    """Discriminator BCE: ``d_loss = BCE(D(x), t_real) + BCE(D(G(z)), t_fake)`` (each a batch mean).

    real_logits: (B,) = D(x); fake_logits: (B',) = D(G(z)). Targets from :func:`bce_targets`
    (``label_smoothing``, ``flip_prob``, ``generator``). Returns ``(d_loss, stats)`` with stats
    ``d_loss_real``, ``d_loss_fake``, ``D(x)``, ``D(G(z))``.
    """
    t_real, t_fake = bce_targets(
        real_logits.shape[0],
        fake_logits.shape[0],
        label_smoothing=label_smoothing,
        flip_prob=flip_prob,
        generator=generator,
        device=real_logits.device,
    )
    d_loss_real = F.binary_cross_entropy_with_logits(real_logits.float(), t_real)
    d_loss_fake = F.binary_cross_entropy_with_logits(fake_logits.float(), t_fake)
    loss = d_loss_real + d_loss_fake
    stats = _d_stats(d_loss_real, d_loss_fake, _probs(real_logits), _probs(fake_logits))
    return loss, stats


def g_loss_bce(fake_logits: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Non-saturating generator loss: ``g_loss = -log D(G(z))`` = BCE(D(G(z)), 1), no smoothing.

    Goodfellow et al. (2014): minimising ``log(1 - D(G(z)))`` gives G almost no gradient while D easily
    rejects its samples (early training); maximising ``log D(G(z))`` instead gives a strong one.
    fake_logits: (B,). Returns ``(g_loss, {"D(G(z))": …})``.
    """
    loss = F.softplus(-fake_logits.float()).mean()  # = -log(sigmoid(l)) = BCE(l, 1)
    return loss, {"D(G(z))": _probs(fake_logits)}


# ----------------------------------------------------------------------------------------------- hinge


def d_loss_hinge(
    real_logits: torch.Tensor,
    fake_logits: torch.Tensor,
    *,
    label_smoothing: float = 0.0,
    flip_prob: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict]:
    """Hinge loss for D (Lim & Ye 2017; SAGAN, BigGAN): ``mean(relu(1 - D(x))) + mean(relu(1 + D(G(z))))``.

    D is only pushed until reals score above +1 and fakes below -1, then it stops caring: a margin instead of
    ever more confident logits. Returns ``(d_loss, stats)`` like :func:`d_loss_bce`. It takes the same
    keywords as :func:`d_loss_bce` so the two are interchangeable, but smoothing and flipping are BCE tricks:
    non-zero values are refused rather than silently ignored.
    """
    _no_label_tricks("hinge", label_smoothing, flip_prob)
    d_loss_real = F.relu(1.0 - real_logits.float()).mean()
    d_loss_fake = F.relu(1.0 + fake_logits.float()).mean()
    stats = _d_stats(d_loss_real, d_loss_fake, _probs(real_logits), _probs(fake_logits))
    return d_loss_real + d_loss_fake, stats


def g_loss_hinge(fake_logits: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Hinge loss for G: ``-mean(D(G(z)))``. Returns ``(g_loss, {"D(G(z))": …})``."""
    return -fake_logits.float().mean(), {"D(G(z))": _probs(fake_logits)}


# ----------------------------------------------------------------------------------------------- R1


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """R1 gradient penalty (Mescheder et al. 2018): ``‖∇ₓ D(x)‖²`` per real image, shape (B,), float32.

    Penalising D's gradient on real images flattens D around the data, which removes the oscillation around
    the equilibrium. ``real_images`` must have ``requires_grad`` set *before* D is run on them::

        x = real.detach().requires_grad_()
        r1 = r1_penalty(D(x), x)                       # (B,)
        (r1_weight(gamma=1.0, every=16) * r1.mean()).backward()

    The graph is kept (``create_graph=True``) so the penalty can be back-propagated into D's weights.
    """
    return _grad_sq(real_logits, real_images, "r1_penalty needs real_images")


def _input_grad(logits: torch.Tensor, images: torch.Tensor, what: str) -> torch.Tensor:
    """∇ₓ Σ logits, flattened per image (B, N), float32, graph kept; ``what`` names the missing requires_grad."""
    if not images.requires_grad:
        raise CxrError(f"{what}.requires_grad_() before D is run on them")
    (grad,) = torch.autograd.grad(logits.float().sum(), images, create_graph=True)
    return grad.float().flatten(1)


def _grad_sq(logits: torch.Tensor, images: torch.Tensor, what: str) -> torch.Tensor:
    """‖∇ₓ Σ logits‖² per image (B,), float32, graph kept."""
    return _input_grad(logits, images, what).pow(2).sum(1)


def r1_weight(gamma: float, every: int = 1) -> float:
    """Weight of ``r1_penalty(...).mean()`` in the D loss: ``gamma / 2 · every``.

    R1 is ``gamma/2 · E‖∇D(x)‖²``. Lazy regularisation (StyleGAN2): compute it only every ``every``-th D step
    and multiply by ``every`` so that on average it weighs the same while costing ``1/every`` of the time.
    """
    if every < 1:
        raise CxrError(f"R1 interval must be at least 1, got {every}")
    return gamma / 2 * every


# ----------------------------------------------------------------------------------------------- least squares
def d_loss_lsgan(
    real_logits: torch.Tensor,
    fake_logits: torch.Tensor,
    *,
    label_smoothing: float = 0.0,
    flip_prob: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict]:
    """Least-squares loss for D (Mao et al. 2017; CycleGAN): ``mean((D(x) − 1)²) + mean(D(G(z))²)``.

    D's outputs are scores regressed to 1 (real) and 0 (fake), not logits of a probability; the quadratic
    keeps pulling samples that D already calls fake but that lie far from the data. The stats ``D(x)`` and
    ``D(G(z))`` are the mean scores (targets 1 and 0). Smoothing and flipping are refused as for hinge."""
    _no_label_tricks("lsgan", label_smoothing, flip_prob)
    d_loss_real = (real_logits.float() - 1).pow(2).mean()
    d_loss_fake = fake_logits.float().pow(2).mean()
    stats = _d_stats(d_loss_real, d_loss_fake, real_logits.detach().float().mean(), fake_logits.detach().float().mean())
    return d_loss_real + d_loss_fake, stats


def g_loss_lsgan(fake_logits: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Least-squares loss for G: ``mean((D(G(z)) − 1)²)``. Returns ``(g_loss, {"D(G(z))": mean score})``."""
    return (fake_logits.float() - 1).pow(2).mean(), {"D(G(z))": fake_logits.detach().float().mean()}


# ----------------------------------------------------------------------------------------------- relativistic pairing
def d_loss_rpgan(
    real_logits: torch.Tensor,
    fake_logits: torch.Tensor,
    *,
    label_smoothing: float = 0.0,
    flip_prob: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict]:
    """Relativistic pairing loss for D (Jolicoeur-Martineau 2019; Huang et al. 2025, R3GAN):
    ``mean(softplus(-(D(x_i) − D(G(z_i)))))`` -- D learns that each real image looks *more real than its paired
    fake*, not that reals score high and fakes low in absolute terms. With R1 and R2 the game has a single
    well-behaved equilibrium (R3GAN's argument for dropping the bag of tricks).

    It is BCE on the difference logit with target 1, so the original project's tricks carry over for the experiment of
    notebook 10: ``label_smoothing`` s makes the target 1 − s/2, ``flip_prob`` reverses a pair's target.
    Pairs real_logits[i] with fake_logits[i] (equal batch sizes). Stats as for :func:`d_loss_bce`
    (``d_loss_real`` = the pairs' loss, ``d_loss_fake`` = 0: the loss has only one term)."""
    if real_logits.shape != fake_logits.shape:
        raise CxrError(f"the pairing loss needs as many fakes as reals, got {real_logits.shape[0]} and "
                       f"{fake_logits.shape[0]}")
    diff = real_logits.float() - fake_logits.float()
    target, _ = bce_targets(len(diff), 0, label_smoothing=label_smoothing, flip_prob=flip_prob,
                            generator=generator, device=diff.device)
    loss = F.binary_cross_entropy_with_logits(diff, target)
    return loss, _d_stats(loss, torch.zeros_like(loss), _probs(real_logits), _probs(fake_logits))


def g_loss_rpgan(fake_logits: torch.Tensor, real_logits: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Relativistic pairing loss for G: ``mean(softplus(-(D(G(z_i)) − D(x_i))))``: each fake should look more
    real than its paired real image. ``real_logits`` need no gradient (G cannot change them)."""
    diff = fake_logits.float() - real_logits.detach().float()
    return F.softplus(-diff).mean(), {"D(G(z))": _probs(fake_logits)}


def r2_penalty(fake_logits: torch.Tensor, fake_images: torch.Tensor) -> torch.Tensor:
    """R2 gradient penalty: ``‖∇ₓ D(x)‖²`` on *fake* images, shape (B,) -- R1's twin on the other side of the
    game (R3GAN uses both: R1 alone still lets D grow sharp around the fakes). ``fake_images`` need
    ``requires_grad`` before D runs on them, as for :func:`r1_penalty`; the same weight rule (:func:`r1_weight`)."""
    return _grad_sq(fake_logits, fake_images, "r2_penalty needs fake_images")


# ----------------------------------------------------------------------------------------------- Wasserstein, gradient penalty
def d_loss_wgan(
    real_logits: torch.Tensor,
    fake_logits: torch.Tensor,
    *,
    label_smoothing: float = 0.0,
    flip_prob: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict]:
    """Wasserstein critic loss (Arjovsky et al. 2017): ``mean(D(G(z))) − mean(D(x))``.

    D is a *critic*: its outputs are scores, not logits of a probability, and ``−d_loss`` estimates the
    Wasserstein-1 distance between the real and the generated images -- but only while D is 1-Lipschitz. WGAN-GP
    (Gulrajani et al. 2017, "Improved Training of Wasserstein GANs") keeps it so softly: the D step adds
    λ · :func:`gradient_penalty` on :func:`interpolates` (``TrainConfig.gp_weight``, ``ToyConfig.gp_weight``).
    Without the penalty the critic's scores grow without bound. The paper's recipe (its Algorithm 1): λ = 10,
    n_critic = 5 critic updates per G update (``d_steps_per_g_step=5``), Adam with lr 1e-4 and β = (0, 0.9) for
    both networks, and no BatchNorm in the critic (it makes each image's score depend on the batch, so the
    per-image penalty no longer constrains the critic the loss uses; the paper suggests layer norm instead).
    On the CLI: ``--set loss=wgan-gp --set ada=false --set r1_gamma=0 --set d_steps_per_g_step=5 --set g_lr=1e-4
    --set d_lr=1e-4 --set g_betas=[0,0.9] --set d_betas=[0,0.9]`` (``gp_weight`` is 10 by default; ADA is refused
    with this loss: it reads the sign of D's outputs, which the critic's loss leaves arbitrary; the penalty
    replaces R1).

    Stats as for :func:`d_loss_lsgan`: ``D(x)`` and ``D(G(z))`` are the mean *scores* (their difference is the
    critic's distance estimate), ``d_loss_real`` = −mean(D(x)), ``d_loss_fake`` = mean(D(G(z))). Smoothing and
    flipping are refused as for hinge."""
    _no_label_tricks("wgan-gp", label_smoothing, flip_prob)
    d_real, d_fake = real_logits.float().mean(), fake_logits.float().mean()
    return d_fake - d_real, _d_stats(-d_real, d_fake, d_real.detach(), d_fake.detach())


def g_loss_wgan(fake_logits: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Wasserstein generator loss: ``−mean(D(G(z)))``. Returns ``(g_loss, {"D(G(z))": mean score})``."""
    d_fake = fake_logits.float().mean()
    return -d_fake, {"D(G(z))": d_fake.detach()}


def interpolates(real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP's points: ``x̂ = ε·x + (1 − ε)·G(z)``, one ε ~ U(0, 1) per image, drawn from ``generator`` (on
    the images' device; ε has shape (B, 1, …)).

    real, fake: (B, …) of the same shape, e.g. the (augmented) images D has just scored; either may be bfloat16
    (G's fakes under autocast). Returns x̂ in float32, detached from both, with ``requires_grad`` set, ready for
    ``gradient_penalty(D(x̂), x̂)``."""
    if real.shape != fake.shape:
        raise CxrError(f"interpolates needs reals and fakes of the same shape, got {tuple(real.shape)} and "
                       f"{tuple(fake.shape)}")
    eps = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), generator=generator, device=real.device)
    return torch.lerp(fake.detach().float(), real.detach().float(), eps).requires_grad_()


def gradient_penalty(critic_scores: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """WGAN-GP's penalty (Gulrajani et al. 2017): ``(‖∇ D(x̂)‖₂ − 1)²`` per point, shape (B,), float32.

    critic_scores: (B,) = D(x̂); points: the x̂ D was run on, with ``requires_grad`` (:func:`interpolates` sets
    it). Unlike R1 it pulls the gradient's norm towards 1 (two-sided), on random points between the reals and the
    fakes: a 1-Lipschitz critic has norm ≤ 1 everywhere and, at the optimum, exactly 1 along those lines. The
    graph is kept so the penalty back-propagates into D's weights; weight it with λ (paper: 10) every D step.
    A critic that mixes the images of a batch (BatchNorm; the course D's minibatch-std layer mixes groups of
    4) gets each point's gradient of the *summed* scores, as R1 does."""
    sq = _grad_sq(critic_scores, points, "gradient_penalty needs points")
    return (torch.sqrt(sq + 1e-12) - 1).pow(2)  # 1e-12: a finite second derivative where D is flat


def denoising_loss(noise_pred: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """The diffusion model's loss (Ho et al. 2020, their simplified objective): the mean squared error between the
    noise ε mixed into an image and the network's prediction ε̂ of it. noise_pred, noise: (B, 1, S, S); computed in
    float32. Returns (loss, {}): a network that predicts 0 scores 1 (ε has variance 1)."""
    return F.mse_loss(noise_pred.float(), noise.float()), {}


LOSSES = {"bce": (d_loss_bce, g_loss_bce), "hinge": (d_loss_hinge, g_loss_hinge), "lsgan": (d_loss_lsgan, g_loss_lsgan),
          "rpgan": (d_loss_rpgan, g_loss_rpgan), "wgan-gp": (d_loss_wgan, g_loss_wgan),
          "denoising": (None, denoising_loss)}  # the diffusion family's: no D
RELATIVISTIC = ("rpgan",)  # losses whose G loss also reads D's logits on real images
PENALISED = ("wgan-gp",)  # losses whose D step adds the gradient penalty on interpolates (gp_weight)


def penalty_weight(loss: str, gp_weight: float) -> float:
    """λ of the gradient penalty in a D step with ``loss``: ``gp_weight`` for the losses that carry it
    (``PENALISED``), else 0 (ε is then never drawn), whatever ``gp_weight`` says (its default, 10, is WGAN-GP's)."""
    return gp_weight if loss in PENALISED else 0.0
