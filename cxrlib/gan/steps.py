"""The D step and the G step of a GAN: one update of each network, as plain functions of explicit arguments.

This is the whole algorithm of one training iteration (Goodfellow et al. 2014, with the course's tricks):

* **D step** -- show D a batch of real images x and of fakes G(z); D learns to call x real and G(z) fake.
  G is not trained here (``no_grad``). Optional R1 penalty on the real images, R2 on the fakes, WGAN-GP's penalty on
  random points between them.
* **G step** -- G makes a batch G(z); G learns to make D call it real. D is frozen (no weight gradients).
  With a relativistic loss ("rpgan") D also scores a real batch and each fake must look more real than its pair.
* Both steps pass reals and fakes through the *same* augmentation, so an augmentation never tells reals from
  fakes and G is not pushed to reproduce it.

Everything a step uses is an argument: the networks, the optimiser, the batch, the latents, the labels, the
loss and the augmentation (which hold the random generator they draw from). A step never looks anything up
elsewhere, so a notebook, a test, the trainer and the toy GAN (``cxrlib.toy``: 2-D points, many runs at once)
call it alike. What the engine (``cxrlib.train.Trainer.run_d_step`` / ``run_g_step``) decides stays out:
*whether* this step adds R1/R2 (lazy regularisation: it passes ``r1_gamma=0`` on the other steps), mixed
precision (``autocast``), the uncompiled D on the steps that differentiate twice (it passes that D), feeding ADA
(``on_real_logits``), and, after the step returns, counting images and updating the EMA of G
(``Trainer.d_step`` / ``g_step``, for every family).

Why networks and a precision context, not ready-made callables that wrap compile and autocast: the reader
should see where G and D run, which passes keep gradients and what runs in reduced precision (the forward
passes and the augmentation, never the losses nor the penalties' gradients); the engine's choices come in as
values -- a compiled D or the plain one, ``torch.autocast`` or nothing.
"""

from __future__ import annotations

import contextlib

import torch

from cxrlib import losses
from cxrlib.errors import CxrError


def grad_norm(module: torch.nn.Module) -> torch.Tensor:
    """L2 norm of all of a module's gradients, as a 0-d tensor (no host synchronisation)."""
    norms = [p.grad.detach().float().norm() for p in module.parameters() if p.grad is not None]
    return torch.stack(norms).norm() if norms else torch.zeros(())


@contextlib.contextmanager
def frozen(module: torch.nn.Module):
    """Inside the block the module's parameters get no gradients (saves the weight-gradient compute)."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield module
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)


def identity(x: torch.Tensor) -> torch.Tensor:
    """No augmentation."""
    return x


def run(net, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """``net(x)``, or ``net(x, labels)`` for a conditional network (labels: class indices; None: unconditional)."""
    return net(x) if labels is None else net(x, labels)


def d_step(G, D, d_opt, real, z, *, real_labels=None, fake_labels=None, loss, augment=identity,
           r1_gamma: float = 0.0, r2_gamma: float = 0.0, reg_every: int = 1, gp_weight: float = 0.0,
           generator: torch.Generator | None = None, autocast=contextlib.nullcontext, on_real_logits=None) -> dict:
    """One discriminator update: D learns to call the real images real and G(z) fake.

    G, D: the networks (``nn.Module``s; compiled ones work alike); d_opt: D's optimiser; real: (B, 1, S, S) float
    in [-1, 1]; z: (B, z_dim) latents; real_labels, fake_labels: class indices of a conditional GAN (None:
    unconditional); loss: ``loss(real_logits, fake_logits) -> (loss, stats)`` (``cxrlib.losses``); augment: the
    augmentation of reals and fakes alike; r1_gamma, r2_gamma: the strength γ of the R1 / R2 penalty (0: none this
    step), weighted γ/2 · ``reg_every`` (``losses.r1_weight``) when only every ``reg_every``-th step adds them;
    gp_weight: λ of WGAN-GP's penalty ``losses.gradient_penalty`` (0: none; the paper's λ = 10, every step) on
    ``losses.interpolates`` of the images D scored (after the augmentation), one ε per image drawn from
    ``generator`` (drawn only when λ > 0, after everything else this step draws), scored with ``real_labels``
    (a conditional GAN must give the fakes the reals' labels); autocast: returns the context the forward passes
    run in; on_real_logits: called with D's logits on the reals after the update (ADA's overfitting signal).
    Returns 0-d tensors: d_loss, the loss's statistics (d_loss_real, d_loss_fake, D(x), D(G(z))), r1, r2, gp
    (when added) and d_grad_norm.
    """
    real = real.detach().requires_grad_(r1_gamma > 0)  # R1 differentiates D(x) with respect to x
    with torch.no_grad(), autocast():  # G is not trained in the D step
        fake = run(G, z, fake_labels)
    fake.requires_grad_(r2_gamma > 0)
    with autocast():
        real_in = augment(real)
        real_logits = run(D, real_in, real_labels)
        fake_in = augment(fake)
        fake_logits = run(D, fake_in, fake_labels)
    d_loss, stats = loss(real_logits.float(), fake_logits.float())
    total = d_loss
    if r1_gamma > 0:  # γ/2 · E‖∇ₓD(x)‖² on the real images
        r1 = losses.r1_penalty(real_logits, real).mean()
        total = total + losses.r1_weight(r1_gamma, reg_every) * r1
        stats["r1"] = r1.detach()
    if r2_gamma > 0:  # the same on the fakes
        r2 = losses.r2_penalty(fake_logits, fake).mean()
        total = total + losses.r1_weight(r2_gamma, reg_every) * r2
        stats["r2"] = r2.detach()
    if gp_weight > 0:  # WGAN-GP: λ · E(‖∇D(x̂)‖ − 1)² on random points between the reals and fakes D scored
        if real_labels is not None and (fake_labels is None or not torch.equal(real_labels, fake_labels)):
            raise CxrError("the gradient penalty scores each point between a real and a fake with one label: "
                           "give the fakes the reals' labels")
        points = losses.interpolates(real_in, fake_in, generator)
        with autocast():
            point_logits = run(D, points, real_labels)
        gp = losses.gradient_penalty(point_logits, points).mean()
        total = total + gp_weight * gp
        stats["gp"] = gp.detach()
    d_opt.zero_grad(set_to_none=True)
    total.backward()
    stats["d_grad_norm"] = grad_norm(D)
    d_opt.step()
    if on_real_logits is not None:
        on_real_logits(real_logits.detach())
    return {"d_loss": d_loss.detach(), **stats}


def g_step(G, D, g_opt, z, *, fake_labels=None, loss, augment=identity, real_batch=None,
           autocast=contextlib.nullcontext) -> dict:
    """One generator update: G learns to make D call G(z) real.

    G, D: the networks; g_opt: G's optimiser; z: (B, z_dim) latents; fake_labels: the classes G is asked for (None:
    unconditional); loss: ``loss(fake_logits) -> (loss, stats)``, or for a relativistic loss
    ``loss(fake_logits, real_logits)``: then ``real_batch()`` returns the real images and labels each fake is
    judged against (a function: it is called after the fakes are augmented, the order in which the trainer
    draws its random numbers); augment, autocast: as for :func:`d_step`. Returns 0-d tensors: g_loss, the loss's
    statistics but D's view of the batch (the D step logs that) and g_grad_norm.
    """
    with frozen(D), autocast():  # D is not trained in the G step
        fake = run(G, z, fake_labels)
        fake_logits = run(D, augment(fake), fake_labels)
    if real_batch is None:
        g_loss, stats = loss(fake_logits.float())
    else:  # relativistic: each fake is judged against a real image
        real, real_labels = real_batch()
        with torch.no_grad(), autocast():
            real_logits = run(D, augment(real), real_labels)
        g_loss, stats = loss(fake_logits.float(), real_logits.float())
    g_opt.zero_grad(set_to_none=True)
    g_loss.backward()
    stats = {k: v for k, v in stats.items() if k not in ("D(x)", "D(G(z))")}  # D's view: logged by the D step
    stats["g_grad_norm"] = grad_norm(G)
    g_opt.step()
    return {"g_loss": g_loss.detach(), **stats}
