"""The CycleGAN family (Zhu et al. 2017): translate between two domains -- normal ↔ pneumonia -- without pairs.

Nobody has the same patient's X-ray with and without pneumonia, so there are no pairs to learn from; there
are only two piles of images. CycleGAN learns two generators, G_ab (A → B) and G_ba (B → A), and two
discriminators, D_a and D_b, each judging one domain. This file is the whole algorithm:

* **adversarial** -- G_ab(a) must look like a B to D_b (and G_ba(b) like an A to D_a); least-squares GAN
  loss (``loss="lsgan"``): D regresses real to 1 and fake to 0, G pushes its fakes to 1.
* **cycle consistency** (λ = ``cycle_weight`` = 10) -- ``G_ba(G_ab(a)) ≈ a`` and ``G_ab(G_ba(b)) ≈ b`` (L1).
  Without it G_ab could draw *any* pneumonia image; with it the output must keep enough of the input to get
  it back: the same patient, with pneumonia.
* **identity** (``identity_weight`` × λ = 0.5 × 10) -- ``G_ab(b) ≈ b``: an image already in B should pass
  unchanged, which keeps the generators from shifting overall brightness.
* **image pool** (``pool_size`` = 50, Shrivastava et al. 2017) -- D is shown a mix of the newest fakes and
  older ones from a history buffer (:class:`ImagePool`), so it does not chase only G's latest move.
* **learning rates** -- Adam 2e-4, β1 0.5, constant for the first half and linearly decayed to 0 over the
  second (``lr_decay_start = 0.5``; the engine applies it).

Order of one iteration: the reference implementation updates G first and then D on the fakes G just made;
here the engine runs the D step first, on the fakes of the previous G step (kept as ``pending``), then the
G step -- the same sequence of updates. G and D are ``ModuleDict``s (``G["a2b"]``, ``G["b2a"]``,
``D["a"]``, ``D["b"]``): one Adam each over both networks, one checkpoint.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from cxrlib import models
from cxrlib.config import TrainConfig
from cxrlib.errors import CxrError
from cxrlib.gan.family import Family
from cxrlib.gan.steps import frozen, grad_norm
from cxrlib.pix2pix import run_eval

MODEL_KEYWORDS = ("ngf", "ndf", "n_blocks", "n_layers", "generator")
DIRECTIONS = ("a2b", "b2a")
N_GRID = 4  # images per domain in a sample grid
# D's depth: the paper's 70-px patches at every size (at 64 px: the whole image). Scaled to 70/256 of the image
# (16 px at 64 px, as Pix2Pix does here), D could not see that a translated normal lacked the opacities: 0 % of
# them judged pneumonia after 10 minutes, against 97 % with 70-px patches after 4 (benchmarks/RESULTS.md).
PATCH_LAYERS = 3


class ImagePool:
    """A history of up to ``size`` earlier fakes. ``query(fakes)`` returns a batch of the same size: while
    the pool fills, the fakes themselves (and they are stored); then each fake is, with probability 1/2,
    swapped for a random stored one (which it replaces), else passed through. size 0: no pool."""

    def __init__(self, size: int, generator: torch.Generator | None = None):
        self.size, self.generator = int(size), generator
        self.images: list[torch.Tensor] = []

    def query(self, fakes: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return fakes
        out = []
        for img in fakes.detach():
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif torch.rand((), generator=self.generator, device=img.device) < 0.5:
                j = int(torch.randint(self.size, (), generator=self.generator, device=img.device))
                out.append(self.images[j])
                self.images[j] = img.clone()
            else:
                out.append(img)
        return torch.stack(out)

    def state_dict(self) -> dict:
        return {"images": torch.stack(self.images).cpu() if self.images else torch.zeros(0)}

    def load_state_dict(self, state: dict, device=None) -> None:
        self.images = [img.to(device) for img in state["images"]] if len(state["images"]) else []


def cycle_loss(real_a: torch.Tensor, real_b: torch.Tensor, g_ab, g_ba) -> torch.Tensor:
    """The cycle-consistency loss (unweighted): mean |G_ba(G_ab(a)) − a| + mean |G_ab(G_ba(b)) − b|, a 0-d
    tensor. :func:`cycle_g_step` passes the round trips it has already made to :func:`cycle_l1`."""
    return cycle_l1(real_a, g_ba(g_ab(real_a)), real_b, g_ab(g_ba(real_b)))


def cycle_l1(real_a: torch.Tensor, rec_a: torch.Tensor, real_b: torch.Tensor, rec_b: torch.Tensor) -> torch.Tensor:
    """mean |rec_a − a| + mean |rec_b − b| in float32 (``rec``: an image after its round trip A → B → A, or
    B → A → B, perhaps bf16 under autocast), a 0-d tensor: the cycle loss once the round trips are made."""
    return (rec_a.float() - real_a).abs().mean() + (rec_b.float() - real_b).abs().mean()


def domain_indices(classes, domains) -> tuple[int, int]:
    """Indices of the two domain names among the data's classes (any case); one line when one is missing."""
    lowered = [c.lower() for c in classes]
    out = []
    for d in domains:
        if d.lower() not in lowered:
            raise CxrError(f"domain {d!r} is not a class of the training data (it has: {', '.join(classes)})")
        out.append(lowered.index(d.lower()))
    return out[0], out[1]


# ----------------------------------------------------------------------------------------------- the two steps
def cycle_d_step(D, d_opt, real_a, real_b, fake_a, fake_b, *, loss, autocast=contextlib.nullcontext) -> dict:
    """Update D_a and D_b (``D["a"]``, ``D["b"]``): each calls its domain's real images real and the fakes
    translated into it fake (``loss(real_logits, fake_logits) -> (loss, stats)``, one logit per patch); D's loss is
    the mean of the two. Returns 0-d tensors: d_loss, the two Ds' mean statistics and d_grad_norm."""
    with autocast():
        logits = {d: (D[d](r), D[d](f)) for d, r, f in (("a", real_a, fake_a), ("b", real_b, fake_b))}
    (la, sa), (lb, sb) = (loss(r.float().flatten(), f.float().flatten()) for r, f in logits.values())
    d_loss = 0.5 * (la + lb)
    d_opt.zero_grad(set_to_none=True)
    d_loss.backward()
    stats = {k: (sa[k] + sb[k]) / 2 for k in sa}
    stats["d_grad_norm"] = grad_norm(D)
    d_opt.step()
    return {"d_loss": d_loss.detach(), **stats}


def cycle_g_step(G, D, g_opt, real_a, real_b, *, loss, cycle_weight: float = 10.0, identity_weight: float = 0.5,
                 autocast=contextlib.nullcontext) -> tuple[dict, tuple[torch.Tensor, torch.Tensor]]:
    """Update both generators (``G["a2b"]``, ``G["b2a"]``): the GAN loss through the frozen Ds (``loss(fake_logits)``)
    + λ·cycle + λ·λ_id·identity (L1 in [-1, 1] units; λ = ``cycle_weight``, λ_id = ``identity_weight``).
    Returns 0-d tensors g_loss (the total), g_gan, cycle, identity, g_grad_norm, and the fakes (fake_a, fake_b)
    in float32, which the next D step judges."""
    with frozen(D), autocast():  # D is not trained in the G step
        fake_b, fake_a = G["a2b"](real_a), G["b2a"](real_b)
        rec_a, rec_b = G["b2a"](fake_b), G["a2b"](fake_a)
        g_gan = loss(D["b"](fake_b).float().flatten())[0] + loss(D["a"](fake_a).float().flatten())[0]
        cycle = cycle_l1(real_a, rec_a, real_b, rec_b)
        if identity_weight > 0:
            identity = (G["a2b"](real_b).float() - real_b).abs().mean() + (G["b2a"](real_a).float() - real_a).abs().mean()
        else:
            identity = torch.zeros((), device=real_a.device)
    g_loss = g_gan + cycle_weight * cycle + cycle_weight * identity_weight * identity
    g_opt.zero_grad(set_to_none=True)
    g_loss.backward()
    stats = {"g_loss": g_loss.detach(), "g_gan": g_gan.detach(), "cycle": cycle.detach(),
             "identity": identity.detach(), "g_grad_norm": grad_norm(G)}
    g_opt.step()
    return stats, (fake_a.detach().float(), fake_b.detach().float())


# ----------------------------------------------------------------------------------------------- the family
class CycleGAN(Family):
    """CycleGAN on the shared engine: G = {a2b, b2a}, D = {a, b}; batches are unpaired (a, b); the steps are
    :func:`cycle_d_step` and :func:`cycle_g_step`."""

    name = "cyclegan"
    extra_stats = ("cycle", "identity", "g_gan")
    draws_from_z = False  # it translates images
    needs_domains = True
    losses = ("bce", "hinge", "lsgan")  # no pairing of reals with fakes from z (rpgan), no WGAN-GP
    sync_batchnorm = False  # instance norm

    @staticmethod
    def configure(cfg: TrainConfig, data) -> TrainConfig:
        classes = list(getattr(data, "classes", None) or [])
        labels = getattr(data, "labels", None)
        if labels is None or not classes:
            raise CxrError("cyclegan needs two domains: give a folder with two class sub-folders (e.g. normal/ and "
                           "pneumonia/) or two folders")
        domains = tuple(cfg.domains)
        if not domains:
            if len(classes) != 2:
                raise CxrError(f"the data has {len(classes)} classes ({', '.join(classes)}): say which two are the "
                               "domains with --domains A,B (domains=('a', 'b'))")
            domains = tuple(sorted(classes))
        ia, ib = domain_indices(classes, domains)
        counts = torch.bincount(labels, minlength=len(classes))
        for i in (ia, ib):
            if counts[i] == 0:
                raise CxrError(f"domain {classes[i]!r} has no training images")
        return cfg.replace(classes=tuple(classes), domains=(classes[ia], classes[ib]))

    @staticmethod
    def build_models(cfg: TrainConfig) -> tuple[nn.Module, nn.Module]:
        """Two generators (ResNet-block by default, or ``generator="unet"``, cheaper on a CPU) and two PatchGANs
        (``n_layers`` default ``PATCH_LAYERS``: 70-px patches), instance norm."""
        kw = dict(cfg.model_kwargs)
        unknown = set(kw) - set(MODEL_KEYWORDS)
        if unknown:
            raise CxrError(f"cyclegan does not take {', '.join(sorted(unknown))} (it takes {', '.join(MODEL_KEYWORDS)})")
        ngf = models.scaled(kw.get("ngf", 64), cfg.width)
        ndf = models.scaled(kw.get("ndf", 64), cfg.width)
        kind = kw.get("generator", "resnet")
        if kind not in ("resnet", "unet"):
            raise CxrError(f"cyclegan generator {kind!r}: choose resnet or unet")

        def generator():
            if kind == "unet":
                return models.UNetGenerator(1, cfg.size, ngf=ngf, norm="instance")
            return models.ResnetGenerator(1, 1, ngf=ngf, n_blocks=kw.get("n_blocks") or (6 if cfg.size <= 128 else 9))

        n_layers = kw.get("n_layers") or PATCH_LAYERS
        G = nn.ModuleDict({"a2b": generator(), "b2a": generator()})
        D = nn.ModuleDict({d: models.PatchDiscriminator(1, ndf=ndf, n_layers=n_layers, norm="instance") for d in "ab"})
        return G, D

    def __init__(self, trainer, data=None):
        super().__init__(trainer, data)
        t = trainer
        ia, ib = domain_indices(t.cfg.classes, t.cfg.domains)
        self.idx = {"a": torch.nonzero(t.labels == ia).flatten(), "b": torch.nonzero(t.labels == ib).flatten()}
        self.pools = {d: ImagePool(t.cfg.pool_size, t.rng) for d in "ab"}
        self.pending = None  # (real_a, real_b, fake_a, fake_b) of the last G step, for the next D step
        g = torch.Generator().manual_seed(1234)
        self.grid_idx = {d: self.idx[d].cpu()[torch.randperm(len(self.idx[d]), generator=g)[:N_GRID]] for d in "ab"}

    def real_batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n random images of each domain (unpaired): (a, b), float in [-1, 1] on the device."""
        t = self.t
        pick = {d: self.idx[d][torch.randint(len(self.idx[d]), (n,), generator=t.rng, device=t.device)] for d in "ab"}
        return t.images_at(pick["a"]), t.images_at(pick["b"])

    # ------------------------------------------------------------------ the training step
    def d_step(self, real=None, labels=None) -> tuple[dict, int]:
        """Update D_a and D_b (least squares, each halved): real images against pooled fakes. The fakes are
        the last G step's (the first step makes its own). Returns the statistics and 0: the real images were
        counted by the G step that drew them."""
        t = self.t
        if self.pending is not None:
            real_a, real_b, fake_a, fake_b = self.pending
        else:
            real_a, real_b = self.real_batch(t.batch)
            with torch.no_grad(), t.autocast():
                fake_b, fake_a = t.G["a2b"](real_a).float(), t.G["b2a"](real_b).float()
        fake_a, fake_b = self.pools["a"].query(fake_a), self.pools["b"].query(fake_b)
        return cycle_d_step(t.D, t.d_opt, real_a, real_b, fake_a, fake_b, loss=t.d_loss, autocast=t.autocast), 0

    def g_step(self) -> tuple[dict, int]:
        """Update both generators (:func:`cycle_g_step`) on a fresh unpaired batch; its fakes wait for the next D
        step. Returns g_loss (the total), g_gan, cycle, identity, g_grad_norm, and the batch's size per domain
        (the real images counted as shown)."""
        t, cfg = self.t, self.t.cfg
        real_a, real_b = self.real_batch(t.batch)
        stats, (fake_a, fake_b) = cycle_g_step(t.G, t.D, t.g_opt, real_a, real_b, loss=t.g_loss_fn,
                                               cycle_weight=cfg.cycle_weight, identity_weight=cfg.identity_weight,
                                               autocast=t.autocast)
        self.pending = (real_a, real_b, fake_a, fake_b)
        return stats, len(real_a)

    # ------------------------------------------------------------------ translating, samples, state
    @staticmethod
    @torch.no_grad()
    def apply(G: nn.Module, images: torch.Tensor, direction: str = "a2b") -> torch.Tensor:
        """One generator of a CycleGAN (eval mode) on images: uint8 (B, 1, S, S) or float in [-1, 1] → float
        (B, 1, S, S) in [-1, 1]. direction: "a2b" (e.g. normal → pneumonia) or "b2a"."""
        if direction not in DIRECTIONS:
            raise CxrError(f"direction {direction!r}: choose a2b or b2a")
        return run_eval(G[direction], images)

    def translate(self, images: torch.Tensor, direction: str = "a2b", ema: bool = True) -> torch.Tensor:
        t = self.t
        return self.apply(t.ema.model if (ema and t.ema is not None) else t.G, images, direction)

    def sample_grid(self) -> tuple[torch.Tensor, int]:
        """Rows of real | translated | translated back: N_GRID images of A, then N_GRID of B."""
        t, rows = self.t, []
        for d, there, back in (("a", "a2b", "b2a"), ("b", "b2a", "a2b")):
            x = t.images_at(self.grid_idx[d].to(t.device))
            y = self.translate(x, there)
            rows.append(torch.stack([x.float(), y, self.translate(y, back)], 1).flatten(0, 1))
        return torch.cat(rows), 3

    def state_dict(self) -> dict:
        state = {f"pool_{d}": self.pools[d].state_dict() for d in "ab"}
        if self.pending is not None:
            state["pending"] = [x.detach().cpu() for x in self.pending]
        return state

    def load_state_dict(self, state: dict) -> None:
        for d in "ab":
            self.pools[d].load_state_dict(state[f"pool_{d}"], self.t.device)
        self.pending = tuple(x.to(self.t.device) for x in state["pending"]) if "pending" in state else None
