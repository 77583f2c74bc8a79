"""Differentially private training of the discriminator: DP-SGD (Abadi et al. 2016) on D's step.

**What is private, and why only D.** Of a GAN's two networks only D ever reads a real image; G learns from D's
verdicts on its own fakes. If every D update is differentially private, G, its EMA and every sample drawn from
them are computed from those updates alone, so they inherit the guarantee by post-processing (Xie et al. 2018,
DPGAN). Here D's step clips each real image's gradient to norm ≤ C and adds Gaussian noise of std σ·C to their
sum; G's step is the usual one.

**The D step** (:func:`dp_d_step`), next to the plain ``cxrlib.gan.steps.d_step``:

1. one gradient *per real image*, ∇θ ℓ(D(xᵢ)) = ℓ'(D(xᵢ)) · ∇θ D(xᵢ): :func:`per_example_grads` runs D on one image
   at a time with ``torch.func`` (vmap over ``grad``) for ∇θ D(xᵢ); the loss, called once on the whole batch as in the
   plain step, gives each image's slope ℓ'(D(xᵢ)) -- so label smoothing and flipping work unchanged;
2. :func:`clip_and_noise`: each image's gradient scaled down to norm ≤ C, the clipped gradients summed, noise
   N(0, σ²C²) added, divided by the expected batch. Adding or removing one patient's image moves the sum by at most
   C, and the noise hides a move of that size: that is the whole guarantee;
3. the fake half of the loss is differentiated as usual and added unclipped and without noise. The fakes are
   G(z) for fresh z, and G and D's current weights are themselves outputs of the earlier private steps: the fake
   half's gradient is a function of what has already been released plus public randomness, so it costs no privacy
   (post-processing again). Clipping it too would only weaken D. The number of fakes is the configured batch, never the
   size of the real sample (a Poisson sample's size depends on the data set; the fakes must not tell it).

**Sampling.** The accountant's bound (the sampled Gaussian mechanism, Mironov et al. 2019) assumes *Poisson*
sampling: each training image joins a step's batch independently with probability q = B / N, so the batch size
varies around B (:func:`poisson_sample`; the trainer counts B images per step, not the realised size, for the
same reason as the fakes). Fixed-size batches drawn with replacement, the trainer's usual draw, are not what
that bound covers, so a private run draws its real batches this way. Which images a step drew is part of the secret
too (the bound assumes the attacker does not know the batches): the Poisson masks come from a second secret stream
(``PrivacyAccount.sampling``, seeded from the operating system like the noise's), never from the run's seed, and
the checkpoint keeps its state so that a resume continues it exactly.

**The accountant.** The noise multiplier σ is chosen once, before training, from the target ε, δ (default 1/N), q
and the number of D steps (:func:`noise_multiplier`, Opacus' ``get_noise_multiplier``); Opacus' RDP accountant
(Rényi DP, Mironov 2017) counts the steps taken and converts them into the ε spent (:class:`PrivacyAccount`).
Opacus' tighter PRV accountant took seconds per call where RDP takes milliseconds; RDP's ε is an upper bound.

**What the guarantee covers.** The networks (G, its EMA, D), the samples and the exported generator
(``export_pretrained``). Not the run's ``log.jsonl`` (its d_loss_real and D(x) read the real batch directly), nor
a full checkpoint (it holds the states of the noise's and the batches' random streams, from which the noise and
the batches can be rebuilt -- those streams are seeded secretly, never from the run's seed, for the same reason),
nor the class shares that a conditional
run's fakes are drawn with (treated as public). The noise is drawn with torch's generator, not a cryptographic one
(Opacus' ``secure_mode`` would be: floating-point noise can leak in theory, Mironov 2012).

**Why torch.func and not Opacus' ``GradSampleModule``.** Opacus computes per-sample gradients with hooks on each
layer; on the course D its hooks refuse the in-place LeakyReLU, and they never see the projection D's class
embedding (read as a weight, not called as a layer). ``torch.func`` differentiates any network that scores each
image on its own. On a tiny case (course D, 32 px, batch 16, one CPU thread) the per-image gradients took ~2× a
plain forward-backward pass, Opacus' hooks (with LeakyReLU made out-of-place) ~2.8×.

**What cannot be made private here** (``TrainConfig.validate`` refuses it in one line, ``make_config(...,
dp_epsilon=E)`` applies ``config.DP_RECIPE``): layers that mix the images of a batch (BatchNorm in D,
minibatch-std with groups of more than one image: one image's gradient would reach the others), penalties that
differentiate D twice (R1, R2, WGAN-GP), ADA (its p follows D's outputs on the real images), the relativistic loss
(its G step reads real images), the adaptive learning rate (it reads held-out images), and the image-to-image
families (their G reads real images).

Student tier: no trainer, no engine; Opacus is imported only when a private run needs the accountant.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import warnings

import torch
from torch.func import functional_call, grad, vmap

from cxrlib.errors import CxrError
from cxrlib.gan.steps import grad_norm, identity, run

OPACUS_HINT = 'DP-SGD (--dp-epsilon) needs Opacus, the privacy extra: pip install "cxrlib[privacy]"'
#: the Rényi orders the accountant tries: Opacus' defaults and some higher ones, which give a tighter ε for short
#: runs at a large ε (there the best order is the largest; the bound holds either way)
RDP_ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [64, 80, 96, 128, 192, 256]


# ------------------------------------------------------------------ the private D step
def per_example_grads(D, x: torch.Tensor, labels: torch.Tensor | None = None,
                      autocast=contextlib.nullcontext) -> tuple[list[torch.Tensor], torch.Tensor]:
    """∇θ D(xᵢ) for every image, one at a time: ([(B, *θ.shape) for each trainable θ of D], logits D(xᵢ) (B,)).

    x: (B, 1, S, S) float; labels: (B,) classes of a conditional D (None: unconditional). ``torch.func.vmap``
    calls D on each image alone (a layer that mixes images sees a batch of one); dropout draws a mask per image
    from torch's global generator. The weights go in as contiguous copies: under vmap an image cannot be laid
    out channels-last."""
    named = [(n, p) for n, p in D.named_parameters() if p.requires_grad]
    if len(x) == 0:  # an empty Poisson sample
        return [p.new_zeros((0, *p.shape)) for _, p in named], x.new_zeros(0)
    params = {n: p.detach().contiguous() for n, p in named}
    buffers = dict(D.named_buffers())

    def logit(p, xi, yi):
        with autocast():
            out = functional_call(D, (p, buffers), (xi[None],) if yi is None else (xi[None], yi[None]))
        return out.float().sum(), out.detach().float().reshape(())

    per_image = vmap(grad(logit, has_aux=True), in_dims=(None, 0, None if labels is None else 0),
                     randomness="different")
    grads, logits = per_image(params, x, labels)
    return [grads[n] for n, _ in named], logits


def clip_and_noise(grads: list[torch.Tensor], max_grad_norm: float, noise_multiplier: float, expected_batch: float,
                   generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """DP-SGD's private gradient from per-example gradients (Abadi et al. 2016, Algorithm 1).

    grads: one tensor (B, *θ.shape) per parameter, row i the gradient of example i. Each example's gradient (all
    parameters together) is scaled to norm ≤ C = ``max_grad_norm``; the B clipped gradients are summed; noise
    N(0, (σ·C)²), σ = ``noise_multiplier``, drawn from ``generator``, is added to each coordinate; the result is
    divided by ``expected_batch``. Returns one tensor θ.shape per parameter."""
    norms = torch.stack([g.flatten(1).float().norm(dim=1) for g in grads], 1).norm(dim=1)  # (B,) ‖gᵢ‖
    scale = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)  # 1 for a small gradient, C/‖gᵢ‖ for a large one
    out = []
    for g in grads:
        clipped_sum = torch.einsum("i,i...->...", scale.to(g.dtype), g)
        noise = torch.randn(clipped_sum.shape, generator=generator, device=g.device, dtype=g.dtype)
        out.append((clipped_sum + noise_multiplier * max_grad_norm * noise) / expected_batch)
    return out


def dp_d_step(G, D, d_opt, real, z, *, real_labels=None, fake_labels=None, loss, augment=identity,
              max_grad_norm: float, noise_multiplier: float, expected_batch: float,
              noise_generator: torch.Generator | None = None, autocast=contextlib.nullcontext) -> dict:
    """One private discriminator update: ``cxrlib.gan.steps.d_step`` with each real image's gradient clipped and
    noised (the module's docstring says why each piece is so).

    real: (B_real, 1, S, S) float in [-1, 1], a Poisson sample (B_real may be 0); z: (B, z_dim) latents of the
    fakes, B the expected batch; max_grad_norm C, noise_multiplier σ, expected_batch B: DP-SGD's; noise_generator:
    the noise's random stream (secret); the other arguments as for ``d_step`` (augment must treat each image on
    its own, as DiffAugment does). Returns 0-d tensors: d_loss, the loss's statistics, d_grad_norm."""
    with torch.no_grad(), autocast():  # G is not trained in the D step
        fake = run(G, z, fake_labels)
    real_in = augment(real)
    grads, real_logits = per_example_grads(D, real_in, real_labels, autocast)  # ∇θ D(xᵢ), D(xᵢ)
    with autocast():
        fake_logits = run(D, augment(fake), fake_labels)
    real_logits.requires_grad_(True)
    d_loss, stats = loss(real_logits, fake_logits.float())
    d_opt.zero_grad(set_to_none=True)
    d_loss.backward()  # D's weights get the fake half's gradient; real_logits.grad = ∂d_loss/∂D(xᵢ)
    slopes = real_logits.grad * len(real)  # ℓ'(D(xᵢ)): the loss averages over the batch, one image's does not
    per_image = [slopes.reshape(-1, *[1] * (g.dim() - 1)) * g for g in grads]  # ∇θ ℓ(D(xᵢ))
    private = clip_and_noise(per_image, max_grad_norm, noise_multiplier, expected_batch, noise_generator)
    for p, g in zip([p for p in D.parameters() if p.requires_grad], private):
        p.grad = g if p.grad is None else p.grad + g
    if len(real) == 0:  # an empty sample (chance (1 − q)^N): no real half to report
        d_loss = stats["d_loss_fake"]
        stats.update({"d_loss_real": torch.zeros_like(d_loss), "D(x)": torch.zeros_like(d_loss)})
    stats["d_grad_norm"] = grad_norm(D)
    d_opt.step()
    return {"d_loss": d_loss.detach(), **stats}


def poisson_sample(n: int, rate: float, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Indices of a Poisson sample of ``range(n)``: each index independently with probability ``rate`` (so the
    sample's size varies, n·rate on average) -- the sampling DP-SGD's accountant assumes. (k,) int64."""
    return torch.nonzero(torch.rand(n, generator=generator, device=device) < rate).flatten()


# ------------------------------------------------------------------ the accountant (Opacus)
def require_opacus():
    """Opacus' accountants (its ``accountants`` and ``accountants.utils`` modules); without Opacus a ``CxrError``
    naming the extra to install."""
    try:
        import opacus.accountants as accountants
        import opacus.accountants.utils as utils
    except ImportError:
        raise CxrError(OPACUS_HINT) from None
    return accountants, utils


def noise_multiplier(epsilon: float, delta: float, sample_rate: float, steps: int) -> float:
    """The smallest σ (to Opacus' search tolerance, 0.01 in ε) whose ``steps`` steps at Poisson rate ``sample_rate``
    spend at most ``epsilon`` at ``delta`` by the RDP accountant (Opacus' ``get_noise_multiplier``)."""
    _, utils = require_opacus()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Optimal order is the largest alpha")  # a valid, slightly loose bound
        return float(utils.get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=sample_rate,
                                                steps=steps, accountant="rdp", alphas=RDP_ORDERS))


def epsilon_spent(history, delta: float) -> float:
    """ε spent at ``delta`` by the steps of ``history``: [(σ, q, number of steps), …] (Opacus' RDP accountant)."""
    accountants, _ = require_opacus()
    accountant = accountants.RDPAccountant()
    accountant.history = [tuple(h) for h in history]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Optimal order is the largest alpha")
        return float(accountant.get_epsilon(delta, alphas=RDP_ORDERS)) if accountant.history else 0.0


class PrivacyAccount:
    """A private run's budget and its accountant: the target ``epsilon``, ``delta``, the clipping norm
    ``max_grad_norm`` C, the Poisson ``sample_rate`` q and the number of D steps ``steps`` σ is calibrated for
    (``noise_multiplier``); ``history`` [(σ, q, steps taken)] is what Opacus' RDP accountant composes; ``noise``
    the noise's own random stream and ``sampling`` the Poisson masks' (which images each step reads), both seeded
    from the operating system, never from the run's seed."""

    def __init__(self, epsilon: float, delta: float, max_grad_norm: float, sample_rate: float, steps: int,
                 device="cpu"):
        if not 0 < sample_rate <= 1:
            raise CxrError(f"DP-SGD's sampling rate batch / images must be in (0, 1], got {sample_rate:g}: "
                           "use a batch no larger than the training set")
        self.epsilon, self.delta, self.max_grad_norm = float(epsilon), float(delta), float(max_grad_norm)
        self.sample_rate, self.steps = float(sample_rate), int(steps)
        self.noise_multiplier = noise_multiplier(self.epsilon, self.delta, self.sample_rate, self.steps)
        self.history: list[list] = []
        self.noise = torch.Generator(device).manual_seed(secrets.randbits(63))
        self.sampling = torch.Generator(device).manual_seed(secrets.randbits(63))

    @property
    def steps_taken(self) -> int:
        return sum(int(h[2]) for h in self.history)

    def spent(self, more: int = 0) -> float:
        """ε spent so far (with ``more``: after that many more steps at this run's σ and q)."""
        extra = [[self.noise_multiplier, self.sample_rate, more]] if more else []
        return epsilon_spent(self.history + extra, self.delta)

    def check_fits(self, more: int | None) -> None:
        """Refuse, in one line, ``more`` D steps (None: an open-ended run) that would spend more than ε."""
        if more is None:
            raise CxrError("DP-SGD spends its budget per D step: give the run a number of steps (not only minutes)")
        if self.steps_taken + more > self.steps and self.spent(more) > self.epsilon:
            raise CxrError(f"{self.steps_taken + more} D steps would spend ε = {self.spent(more):.3g} > {self.epsilon:g} "
                           f"(σ = {self.noise_multiplier:.3g} was calibrated for {self.steps}): train fewer steps, "
                           "or start a new run with more steps (or a larger --dp-epsilon)")

    def step(self) -> None:
        """Count one D step (after checking that it fits the budget)."""
        self.check_fits(1)
        if self.history and self.history[-1][:2] == [self.noise_multiplier, self.sample_rate]:
            self.history[-1][2] += 1
        else:
            self.history.append([self.noise_multiplier, self.sample_rate, 1])

    def record(self) -> dict:
        """What a run reports (``config.json``'s "privacy", the log's "epsilon"): ε spent and the settings."""
        return {"epsilon_spent": self.spent(), "epsilon": self.epsilon, "delta": self.delta,
                "noise_multiplier": self.noise_multiplier, "max_grad_norm": self.max_grad_norm,
                "sample_rate": self.sample_rate, "d_steps": self.steps_taken, "d_steps_planned": self.steps,
                "accountant": "rdp (opacus)"}

    def state_dict(self) -> dict:
        return {"epsilon": self.epsilon, "delta": self.delta, "noise_multiplier": self.noise_multiplier,
                "sample_rate": self.sample_rate, "steps": self.steps, "history": [list(h) for h in self.history],
                "noise": self.noise.get_state(), "sampling": self.sampling.get_state()}

    def load_state_dict(self, state: dict) -> None:
        """Continue a checkpoint's accountant exactly: its σ, plan, steps taken, noise and sampling streams.
        Refused in one line when this run's ε, δ or Poisson rate q = batch / images differs from the checkpoint's:
        the accountant composes the steps at the checkpoint's q and δ, so another batch or data set would make it
        report the wrong ε, and a resume may not raise the budget it started with."""
        rate = "the sampling rate q = batch / training images (--batch, the data)"
        saved = {rate: state["sample_rate"], "δ (--dp-delta)": state["delta"], "ε (--dp-epsilon)": state.get("epsilon")}
        ours = {rate: self.sample_rate, "δ (--dp-delta)": self.delta, "ε (--dp-epsilon)": self.epsilon}
        for what, value in saved.items():
            if value is not None and not math.isclose(float(value), ours[what], rel_tol=1e-9):
                raise CxrError(f"this DP-SGD checkpoint was trained at {what} {float(value):.6g}, this resume would "
                               f"be at {ours[what]:.6g}: resume with the run's own settings and training set (a new "
                               "budget or batch is a new run)")
        self.delta, self.noise_multiplier = float(state["delta"]), float(state["noise_multiplier"])
        self.sample_rate, self.steps = float(state["sample_rate"]), int(state["steps"])
        self.history = [[float(s), float(q), int(k)] for s, q, k in state["history"]]
        self.noise.set_state(state["noise"])
        if "sampling" in state:  # a checkpoint from before the batches had their own secret stream: a fresh one
            self.sampling.set_state(state["sampling"])

    def __str__(self) -> str:
        return (f"DP-SGD on D: ε ≤ {self.epsilon:g} at δ = {self.delta:.3g} over {self.steps} D steps · clip "
                f"C = {self.max_grad_norm:g} · noise σ = {self.noise_multiplier:.3g} · Poisson rate q = "
                f"{self.sample_rate:.3g}")
