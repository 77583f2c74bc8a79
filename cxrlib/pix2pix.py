"""The Pix2Pix family (Isola et al. 2017): anatomy masks → a chest X-ray, learned from (mask, image) pairs.

Paired image-to-image translation: every training image comes with its input -- here one mask per
structure (lungs, heart, ribs, clavicles: the phantoms have them, lung-segmentation sets have some) -- and G
learns the mapping from the input to *that* image, not just to any plausible X-ray. This file is the whole
algorithm:

* **the networks** -- G is a U-Net (``models.UNetGenerator``): the masks go in as channels, skip
  connections carry their edges straight to the output, dropout is its only noise (there is no z). D is a
  PatchGAN (``models.PatchDiscriminator``) that sees the pair (masks, image) stacked as channels and gives one
  logit per patch (70×70 of 256 px; the same share of the image at other sizes): "is this patch of X-ray
  real, *for these masks*?".
* **D step** -- D learns to call (m, x) real and (m, G(m)) fake; its loss is halved, as in the paper, to
  slow D against G.
* **G step** -- on the same pairs: G learns to fool D (``gan_weight`` × non-saturating GAN loss) *and* to be
  close to the true image, ``l1_weight`` (λ = 100) × L1. L1 alone gets the layout right but is blurry (the
  mean of all plausible images is a blur); the GAN term is what makes it sharp. ``gan_weight = 0`` is that
  L1-only ablation (D is then not trained at all).

Samples are strips: masks | G(masks) | the true image. ``translate(masks)`` maps uint8 masks to uint8
images. The engine (loop, logging, checkpoints, exact resume, NaN guard) is ``cxrlib.train.Trainer``.
"""

from __future__ import annotations

import contextlib

import torch

from cxrlib import models
from cxrlib.config import TrainConfig
from cxrlib.errors import CxrError
from cxrlib.gan.ema import norm_layers
from cxrlib.gan.family import Family
from cxrlib.gan.steps import frozen, grad_norm
from cxrlib.images import to_float

MODEL_KEYWORDS = ("ngf", "ndf", "n_layers", "dropout")
STRUCTURE_SHADES = {"lungs": 0.35, "heart": 0.6, "ribs": 0.85, "clavicles": 1.0}  # gray level in mask pictures
N_GRID = 8  # pairs in a sample grid


def mask_picture(masks: torch.Tensor, structures=None) -> torch.Tensor:
    """Masks (B, C, S, S) (uint8 0/255, bool, or float in [-1, 1]) → one gray picture (B, 1, S, S) in [-1, 1]:
    each structure drawn in its own shade (``STRUCTURE_SHADES``; later channels on top), background black."""
    m = masks.float()
    on = m > 0 if masks.dtype != torch.uint8 else m > 127
    structures = list(structures or [])
    pic = torch.zeros(m.shape[0], 1, *m.shape[-2:], device=m.device)
    for c in range(m.shape[1]):
        name = structures[c] if c < len(structures) else ""
        shade = STRUCTURE_SHADES.get(name, (c + 1) / m.shape[1])
        pic = torch.where(on[:, c : c + 1], torch.full_like(pic, shade), pic)
    return pic * 2 - 1


@torch.no_grad()
def run_eval(net: torch.nn.Module, x: torch.Tensor, batch_stats: bool = False) -> torch.Tensor:
    """``net`` in eval mode (no dropout) on x: uint8 0..255 or float in [-1, 1], moved to the net's device →
    float output; the net's modes are restored afterwards. BatchNorm uses its running statistics, or with
    ``batch_stats`` the statistics of this batch (without updating the running ones)."""
    x = to_float(x)
    norms = norm_layers(net) if batch_stats else []
    tracking = [m.track_running_stats for m in norms]
    with models.evaluating(net):
        for m in norms:
            m.train()
            m.track_running_stats = False  # batch statistics, and the running ones stay as they are
        try:
            return net(x.to(next(net.parameters()).device)).float()
        finally:
            for m, was in zip(norms, tracking):
                m.track_running_stats = was


def check_structures(have, want, where: str) -> None:
    """Raise one line when the masks at ``where`` are not the structures a generator was trained on."""
    have, want = [s.lower() for s in have], [s.lower() for s in want]
    missing = [s for s in want if s not in have]
    if missing:
        raise CxrError(f"{where} has no {', '.join(missing)} masks: this pix2pix generator reads "
                       f"{', '.join(want)} (it has {', '.join(have) or 'none'})")


# ----------------------------------------------------------------------------------------------- the two steps
def paired_d_step(G, D, d_opt, real, masks, *, loss, autocast=contextlib.nullcontext) -> dict:
    """One D update on pairs: D learns to call (masks, image) real and (masks, G(masks)) fake.

    G, D: the U-Net and the PatchGAN; d_opt: D's optimiser; real: (B, 1, S, S) and masks (B, C, S, S), float in
    [-1, 1]; loss: ``loss(real_logits, fake_logits) -> (loss, stats)``, given one logit per patch; autocast: the
    context of the forward passes. Returns 0-d tensors: d_loss, the loss's statistics and d_grad_norm."""
    with torch.no_grad(), autocast():  # G is not trained in the D step
        fake = G(masks)
    with autocast():
        real_logits = D(torch.cat([masks, real], 1))
        fake_logits = D(torch.cat([masks, fake], 1))
    d_loss, stats = loss(real_logits.float().flatten(), fake_logits.float().flatten())  # one per patch
    d_opt.zero_grad(set_to_none=True)
    (0.5 * d_loss).backward()  # the paper halves D's objective, so D learns more slowly than G
    stats["d_grad_norm"] = grad_norm(D)
    d_opt.step()
    return {"d_loss": d_loss.detach(), **stats}


def paired_g_step(G, D, g_opt, real, masks, *, loss, gan_weight: float = 1.0, l1_weight: float = 100.0,
                  autocast=contextlib.nullcontext) -> dict:
    """One G update on the same pairs: fool D (``gan_weight`` × ``loss(fake_logits)``; 0: L1 only, D unused) and
    match the true image (``l1_weight`` × L1). Returns 0-d tensors: g_loss (the total), l1 (mean |G(m) − x| in
    [-1, 1] units), g_gan and g_grad_norm."""
    with frozen(D), autocast():  # D is not trained in the G step
        fake = G(masks)
        if gan_weight > 0:
            fake_logits = D(torch.cat([masks, fake], 1))
    if gan_weight > 0:
        g_gan, _ = loss(fake_logits.float().flatten())
    else:
        g_gan = torch.zeros((), device=real.device)
    l1 = (fake.float() - real).abs().mean()
    g_loss = gan_weight * g_gan + l1_weight * l1
    g_opt.zero_grad(set_to_none=True)
    g_loss.backward()
    stats = {"g_loss": g_loss.detach(), "l1": l1.detach(), "g_gan": g_gan.detach(), "g_grad_norm": grad_norm(G)}
    g_opt.step()
    return stats


# ----------------------------------------------------------------------------------------------- the family
class Pix2Pix(Family):
    """Pix2Pix on the shared engine: ``real_batch`` gives (images, masks); the D and G steps are the paper's
    (:func:`paired_d_step`, :func:`paired_g_step`)."""

    name = "pix2pix"
    extra_stats = ("l1", "g_gan")
    draws_from_z = False  # it translates masks
    needs_masks = True
    losses = ("bce", "hinge", "lsgan")  # no pairing of reals with fakes from z (rpgan), no WGAN-GP
    sync_batchnorm = False

    @staticmethod
    def configure(cfg: TrainConfig, data) -> TrainConfig:
        masks = getattr(data, "masks", None)
        if masks is None:
            raise CxrError("pix2pix trains on (mask, image) pairs, and this data has no masks: load phantoms with "
                           "masks=True (`phantom --masks`) or a folder with masks/<structure>/<image stem>.png")
        structures = tuple(getattr(data, "structures", None) or [f"mask{c}" for c in range(masks.shape[1])])
        if len(masks) != len(data.images) or masks.shape[-2:] != data.images.shape[-2:]:
            raise CxrError(f"masks {tuple(masks.shape)} do not match the images {tuple(data.images.shape)}")
        if cfg.structures:
            check_structures(structures, cfg.structures, "the training data")
            if [s.lower() for s in structures] != [s.lower() for s in cfg.structures]:
                raise CxrError(f"the masks come as {', '.join(structures)} but the run was trained on "
                               f"{', '.join(cfg.structures)}, in that order")
        return cfg.replace(structures=structures)

    @staticmethod
    def build_models(cfg: TrainConfig) -> tuple[torch.nn.Module, torch.nn.Module]:
        """U-Net G (masks → image) and PatchGAN D (masks + image) for the config's size and width."""
        kw = dict(cfg.model_kwargs)
        unknown = set(kw) - set(MODEL_KEYWORDS)
        if unknown:
            raise CxrError(f"pix2pix does not take {', '.join(sorted(unknown))} (it takes {', '.join(MODEL_KEYWORDS)})")
        n_in = len(cfg.structures)
        if n_in < 1:
            raise CxrError("pix2pix needs at least one mask structure (cfg.structures)")
        G = models.UNetGenerator(n_in, cfg.size, ngf=models.scaled(kw.get("ngf", 64), cfg.width),
                                 dropout=kw.get("dropout", 0.5))
        D = models.PatchDiscriminator(n_in + 1, ndf=models.scaled(kw.get("ndf", 64), cfg.width),
                                      n_layers=kw.get("n_layers") or models.patch_layers(cfg.size))
        return G, D

    def __init__(self, trainer, data=None):
        super().__init__(trainer, data)
        t = trainer
        self.masks = data.masks.to(t.device)  # (N, C, S, S) uint8 0/255, aligned with t.images
        self._pair = None  # the pair the last D step used: the G step trains on the same one, as in the paper
        self.trains_d = t.cfg.gan_weight > 0  # L1 only: D is never trained (nor are its steps counted)
        self.grid_idx = torch.randperm(len(self.masks), generator=torch.Generator().manual_seed(1234))[:N_GRID]

    # ------------------------------------------------------------------ the batch
    def condition_at(self, idx: torch.Tensor) -> torch.Tensor:
        """The masks of images ``idx`` as G's input: (B, C, S, S) float, −1 outside and +1 inside."""
        return to_float(self.masks[idx]).contiguous(memory_format=self.t.memory_format)

    def real_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n random pairs: (images (n, 1, S, S), masks (n, C, S, S)), float in [-1, 1] on the device."""
        t = self.t
        idx = torch.randint(len(self.masks), (n,), generator=t.rng, device=t.device)
        return t.images_at(idx), self.condition_at(idx)

    # ------------------------------------------------------------------ the training step
    def d_step(self, real: torch.Tensor | None = None, masks: torch.Tensor | None = None) -> tuple[dict, int]:
        """One D update on pairs (:func:`paired_d_step`): (masks, image) real, (masks, G(masks)) fake; the pair
        is kept for the G step. real/masks: a batch to use (default: random pairs). With ``gan_weight = 0``
        (L1 only, ``trains_d`` False) D is not trained: the pair is drawn for the G step and the statistics
        are 0. Returns the statistics and the number of pairs (counted as images shown either way)."""
        t = self.t
        if real is None:
            real, masks = self.real_batch(t.batch)
        self._pair = (real, masks)
        if not self.trains_d:
            zero = torch.zeros((), device=t.device)
            return {"d_loss": zero, "d_loss_real": zero, "d_loss_fake": zero, "D(x)": zero, "D(G(z))": zero,
                    "d_grad_norm": zero}, len(real)
        return paired_d_step(t.G_fwd, t.D_fwd, t.d_opt, real, masks, loss=t.d_loss, autocast=t.autocast), len(real)

    def g_step(self) -> tuple[dict, int]:
        """One G update (:func:`paired_g_step`) on the pair of the last D step (its images are already counted)."""
        t, cfg = self.t, self.t.cfg
        real, masks = self._pair if self._pair is not None else self.real_batch(t.batch)
        self._pair = None
        stats = paired_g_step(t.G_fwd, t.D_fwd, t.g_opt, real, masks, loss=t.g_loss_fn, gan_weight=cfg.gan_weight,
                              l1_weight=cfg.l1_weight, autocast=t.autocast)
        return stats, 0

    # ------------------------------------------------------------------ translating
    @staticmethod
    @torch.no_grad()
    def apply(G: torch.nn.Module, masks: torch.Tensor) -> torch.Tensor:
        """G on masks: uint8 (B, C, S, S) 0/255 or float in [-1, 1] → float (B, 1, S, S) in [-1, 1].

        As in the paper, BatchNorm normalises with the statistics of the batch being translated, not with the
        running averages from training (which lag behind the weights early in a run: after 40 steps they made
        an L1-only G look twice as bad as with batch statistics). Unlike the paper, dropout is off, so the
        same batch always gives the same images."""
        return run_eval(G, masks, batch_stats=True)

    def translate(self, masks: torch.Tensor, ema: bool = True) -> torch.Tensor:
        """The trainer's (EMA) generator on masks → float (B, 1, S, S) in [-1, 1] on the device."""
        t = self.t
        return self.apply(t.ema.model if (ema and t.ema is not None) else t.G, masks)

    def sample_grid(self) -> tuple[torch.Tensor, int]:
        """Strips of fixed training pairs: masks | G(masks) | the true image, one pair per row."""
        t, idx = self.t, self.grid_idx.to(self.t.device)
        masks = self.masks[idx]
        out = self.translate(masks)
        cols = [mask_picture(masks, t.cfg.structures), out, t.images_at(idx).float()]
        return torch.stack(cols, 1).flatten(0, 1), 3
