"""Membership inference: can an attacker tell whether a patient's film was in a GAN's training set?

Sharing synthetic X-rays is meant to reveal nothing about the patients they were learnt from. A membership-inference
attack tests that promise: given a film, it outputs a *score*, higher for "this film was trained on". Run on
known members (the training images) and known non-members (films of other patients from the same distribution,
never trained on), the scores say how well an attacker would do:

* ``discriminator_scores`` — white-box (LOGAN, Hayes et al. 2019): D's logit on the film. D learnt to call its
  training images real, so an overfitted D calls members "more real" than fresh films. Assumes the attacker holds
  D (a leaked checkpoint); a conditional D also needs each film's class.
* ``distance_scores`` — black-box (Hilprecht et al. 2019; GAN-Leaks, Chen et al. 2020): minus the distance from
  the film to the nearest of N generated samples, in pixel space or in the memorisation audit's embedding
  (``cxrlib.metrics.memorisation.audit_embedding``). Assumes only that the attacker can draw samples: a generator
  that reproduces its training films puts a sample next to each member.
* ``membership_report`` — how well the scores separate members from non-members: ROC-AUC (0.5 = a coin flip) and,
  as Carlini et al. 2022 ask, the true-positive rate at a low false-positive rate (1 % and 0.1 %): an attack that
  identifies a few members with certainty matters even when its AUC is near 0.5. Each figure has a percentile
  bootstrap interval (members and non-members resampled separately) and the report a one-line ``verdict``.
* ``audit_checkpoint`` — all attacks on one checkpoint and two image sets.

What the numbers license: an attack that fails says that *this* attack, at *this* sample size, found nothing —
not that the generator is private (differentially private training gives a guarantee; an attack only a
lower bound). An attack that succeeds is only evidence of leakage if the non-members really come from the
members' distribution (other patients, same hospital, same preprocessing): otherwise it detects the difference
between the two folders, not membership.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from cxrlib.classifier import roc_auc, sensitivity_at_specificity
from cxrlib.errors import CxrError
from cxrlib.gan.steps import run
from cxrlib.images import as_images, to_float
from cxrlib.metrics.common import _float_chunks, _k_smallest, _pairwise_distances
from cxrlib.metrics.memorisation import audit_embedding

FPRS = (0.01, 0.001)  # the false-positive rates the true-positive rate is read at (Carlini et al. 2022)
N_BOOT = 1000  # bootstrap resamples behind each interval
LEVEL = 0.95  # the intervals' coverage
N_GENERATED = 1000  # samples the distance attacks compare each film with (more: a stronger attack, slower)
MIN_IMAGES = 10  # members and non-members each: below this an interval means nothing
SPACES = ("pixel", "embedding")
ATTACKS = {
    "discriminator": "white-box: D's logit (LOGAN)",
    "distance_pixel": "black-box: nearest sample, pixels",
    "distance_embedding": "black-box: nearest sample, audit embedding",
}


# ------------------------------------------------------------------ the attacks: one score per film
@torch.no_grad()
def discriminator_scores(D, images, labels=None, *, batch: int = 64, seed: int = 0) -> torch.Tensor:
    """White-box attack (LOGAN): D's logit on each image, higher = "member". images: (N, 1, S, S) uint8 or
    float in [-1, 1] at D's size; labels: (N,) class indices for a conditional D (None: unconditional) →
    (N,) float on the CPU, in the images' order.

    D's minibatch-std layer looks at small groups of images at once, so an image's logit depends a little on
    its group: the images are scored in a random order (``seed``), ``batch`` distinct images per call (the last
    call is filled up with images from the start), so members and non-members passed together share groups
    and neither set's groups are made of its own kind only."""
    x = as_images(images)
    n = len(x)
    device = next(D.parameters()).device
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    batch = min(batch, n)
    padded = torch.cat([order, order[: -n % batch]]) if n % batch else order
    out = torch.empty(len(padded))
    for i in range(0, len(padded), batch):
        idx = padded[i : i + batch]
        y = None if labels is None else torch.as_tensor(labels)[idx].to(device)
        out[i : i + batch] = run(D, to_float(x[idx]).to(device), y).float().flatten().cpu()
    scores = torch.empty(n)
    scores[order] = out[:n]
    return scores


@torch.no_grad()
def nearest_distance(queries, generated, space: str = "pixel") -> torch.Tensor:
    """For each query image, the distance to its nearest generated image: (N, 1, S, S), (M, 1, S', S') uint8 or
    float [-1, 1] → (N,) float, 0 = a copy.

    space "pixel": the RMS pixel difference in [-1, 1] units (same sizes only; no alignment, no normalisation:
    what GAN-Leaks' full black-box attack measures); "embedding": the memorisation audit's distance
    (``audit_embedding``: 32 px, lightly blurred, each image standardised, so a brightened copy still counts).
    Both chunked: the generated set may be large."""
    if space not in SPACES:
        raise CxrError(f"unknown distance space {space!r}: use one of {', '.join(SPACES)}")
    q, g = as_images(queries), as_images(generated)
    if space == "embedding":
        return _k_smallest(audit_embedding(q), audit_embedding(g), 1)[0][:, 0]
    if q.shape[-2:] != g.shape[-2:]:
        raise CxrError(f"query images are {q.shape[-1]}x{q.shape[-2]} px but generated ones "
                       f"{g.shape[-1]}x{g.shape[-2]} px: pixel distances need one size")
    best = torch.full((len(q),), math.inf)
    for gf in _float_chunks(g):
        nearest = [_pairwise_distances(qf.flatten(1), gf.flatten(1)).amin(1) for qf in _float_chunks(q)]
        best = torch.minimum(best, torch.cat(nearest))
    return best / math.sqrt(q[0].numel())


def distance_scores(queries, generated, space: str = "pixel") -> torch.Tensor:
    """Black-box attack (Hilprecht et al. 2019; GAN-Leaks, Chen et al. 2020): minus the distance from each query
    image to the nearest generated one (``nearest_distance``), higher = "member" → (N,) float."""
    return -nearest_distance(queries, generated, space)


# ------------------------------------------------------------------ how well the scores separate the two sets
def _both(member_scores, nonmember_scores) -> tuple[np.ndarray, np.ndarray]:
    m, n = (np.asarray(torch.as_tensor(s, dtype=torch.float64).flatten()) for s in (member_scores, nonmember_scores))
    if len(m) == 0 or len(n) == 0:
        raise CxrError(f"membership scores need members and non-members, got {len(m)} and {len(n)}")
    return m, n


def tpr_at_fpr(member_scores, nonmember_scores, fpr: float) -> float:
    """The share of members an attacker calls members at the strictest threshold that calls at most ``fpr`` of
    the non-members members (ties count against the attacker; ``classifier.sensitivity_at_specificity``).

    With fewer than 1 / ``fpr`` non-members that threshold is the highest non-member score (observed false
    positives: none), so the figure is the TPR at "no non-member above it", not at ``fpr``:
    ``membership_report`` marks it ``resolvable: False``."""
    m, n = _both(member_scores, nonmember_scores)
    labels = np.r_[np.ones(len(m)), np.zeros(len(n))]
    return sensitivity_at_specificity(np.r_[m, n], labels, 1 - fpr)


def _check_enough(n_members: int, n_nonmembers: int) -> None:
    if min(n_members, n_nonmembers) < MIN_IMAGES:
        raise CxrError(f"a membership report needs at least {MIN_IMAGES} members and {MIN_IMAGES} non-members "
                       f"(got {n_members} and {n_nonmembers}): fewer give intervals that mean nothing")


def _resolvable(n_nonmembers: int, fpr: float) -> bool:
    return n_nonmembers * fpr >= 1 - 1e-9  # at least one non-member may sit above the threshold


def membership_report(member_scores, nonmember_scores, *, seed: int = 0, n_boot: int = N_BOOT,
                      level: float = LEVEL) -> dict:
    """How well an attack's scores (higher = "member") tell members from non-members, JSON-ready.

    ``auc``: ROC-AUC (``classifier.roc_auc``), the chance a random member outscores a random non-member;
    ``tpr_at_fpr``: ``{"1%": …, "0.1%": …}``, each ``{"tpr", "interval", "resolvable"}`` (``tpr_at_fpr``; not
    resolvable with fewer than 1 / FPR non-members: then the TPR above every non-member's score).
    Intervals: percentile bootstrap at ``level`` over ``n_boot`` resamples (seeded), members and non-members
    resampled separately (each set keeps its size). ``verdict``: one line (``verdict``)."""
    m, n = _both(member_scores, nonmember_scores)
    _check_enough(len(m), len(n))
    labels = np.r_[np.ones(len(m)), np.zeros(len(n))]

    def figures(mm, nn):
        s = np.r_[mm, nn]
        return [roc_auc(s, labels)] + [sensitivity_at_specificity(s, labels, 1 - f) for f in FPRS]

    rng = np.random.default_rng(seed)
    boot = np.array([figures(rng.choice(m, len(m)), rng.choice(n, len(n))) for _ in range(n_boot)])
    lo, hi = np.percentile(boot, [50 * (1 - level), 50 * (1 + level)], axis=0)
    point = figures(m, n)
    report = {
        "auc": point[0], "auc_interval": [float(lo[0]), float(hi[0])],
        "tpr_at_fpr": {f"{100 * f:g}%": {"tpr": point[k + 1], "interval": [float(lo[k + 1]), float(hi[k + 1])],
                                         "resolvable": _resolvable(len(n), f)} for k, f in enumerate(FPRS)},
        "n_members": len(m), "n_nonmembers": len(n), "n_boot": n_boot, "level": level,
    }
    report["verdict"] = verdict(report)
    return report


def verdict(report: dict) -> str:
    """One line from a ``membership_report``'s intervals: identifiable when the AUC's interval lies above 0.5 (or
    the TPR at 1 % FPR's lies above 1 %, when resolvable); no evidence when it includes 0.5.

    On a generator that leaks nothing, a 95 % interval still lies above its chance value now and then: in 300
    simulated attacks with 100 and 1,000 members and non-members of equal scores, the AUC's in 2–3 %, the TPR's
    in about 3 %, so an attack says "identifiable" about once in 20 by chance. Read one such verdict beside the
    other attacks' and, before concluding, repeat it on more images."""
    auc, (lo, hi) = report["auc"], report["auc_interval"]
    pct = f"{100 * report['level']:g} %"
    at1 = report["tpr_at_fpr"]["1%"]
    figures = f"AUC {auc:.2f}, {pct} interval {lo:.2f}–{hi:.2f}"
    if lo > 0.5:
        where = "at 1 % FPR" if at1["resolvable"] else "above every non-member's score"
        return f"members are identifiable ({figures} lies above 0.5; TPR {at1['tpr']:.1%} {where})"
    if hi < 0.5:
        return (f"members score lower than non-members ({figures} lies below 0.5): the sets differ, so an attacker "
                "who reverses the score identifies members; check that the non-members match the members")
    if at1["resolvable"] and at1["interval"][0] > 0.01:
        return (f"some members are identifiable: TPR {at1['tpr']:.1%} at 1 % FPR (interval "
                f"{at1['interval'][0]:.1%}–{at1['interval'][1]:.1%} lies above 1 %), though {figures} includes 0.5")
    return f"no evidence of membership leakage at this sample size ({figures} includes 0.5)"


# ------------------------------------------------------------------ a checkpoint, audited
def _labels_for(images, classes: tuple, what: str) -> torch.Tensor:
    """Class indices of ``images`` (an ``ImageSet``: class = first sub-folder) in a conditional run's ``classes``."""
    own = getattr(images, "classes", None)
    where = f"the {what} images {getattr(images, 'origin', '')}".rstrip()
    if own is None:
        raise CxrError(f"a conditional discriminator needs each image's class: give the {what} as an ImageSet "
                       "(a folder with one sub-folder per class)")
    known = {c.lower(): i for i, c in enumerate(classes)}
    unknown = sorted({c for c in own if c.lower() not in known})
    if unknown:
        raise CxrError(f"{where} are in class {', '.join(map(repr, unknown))} (files directly in a folder take its "
                       f"name), which the conditional checkpoint does not know ({', '.join(classes)}): put them in "
                       "sub-folders named after their classes")
    return torch.tensor([known[c.lower()] for c in own])[torch.as_tensor(images.labels)]


def _subsample(images, n: int, seed: int):
    """A seeded random ``n`` of ``images`` (an ``ImageSet`` stays one), in their order."""
    if len(images) == n:
        return images
    keep = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return images.subset(keep) if hasattr(images, "subset") else as_images(images)[keep]


@torch.no_grad()
def checkpoint_config(ckpt):
    """The config of a checkpoint the attacks can audit (a model that draws from noise: an unconditional or
    conditional GAN, or a diffusion model); an image-to-image one is a one-line error naming its family."""
    from cxrlib.config import TrainConfig
    from cxrlib.engine.checkpoints import load_checkpoint

    return _attackable(TrainConfig.from_dict(load_checkpoint(ckpt)["config"]), ckpt)


def _attackable(cfg, ckpt):
    from cxrlib.engine.families import FAMILIES

    if not FAMILIES[cfg.family].draws_from_z:
        raise CxrError(f"'{ckpt}' is a {cfg.family} checkpoint, which translates images rather than drawing them "
                       "from noise: the membership attacks need a model that draws from noise (an unconditional or "
                       "conditional GAN, or a diffusion model)")
    return cfg


def audit_checkpoint(ckpt, members, nonmembers, *, n_generated: int = N_GENERATED, seed: int = 0,
                     n_boot: int = N_BOOT, subsample: bool = False, ema: bool = True, device: str = "auto") -> dict:
    """Every attack on one checkpoint: ``{"attacks": {name: membership_report}, "scores": {name: {"members": […],
    "nonmembers": […]}}, "skipped": {name: why}, …}``, JSON-ready (the scores in the images' order: ROC curves).

    ckpt: a run folder, a checkpoint file or ``"pretrained"`` of a model that draws from noise: an unconditional or
    conditional GAN, or a diffusion model (an image-to-image one is refused). members: the training images,
    un-augmented; nonmembers: images of other patients from the same distribution, as many (``subsample``: draw a
    seeded random equal number from the larger set instead of refusing). Both ``ImageSet``s or (N, 1, S, S) tensors at the generator's size; a
    conditional checkpoint's D needs ImageSets whose classes (sub-folders) it knows. The black-box attacks compare
    with ``n_generated`` samples of the EMA generator (``ema``); the white-box one runs when the checkpoint holds a
    trained D (else ``skipped`` says why: an exported generator, a diffusion model). ``seed`` seeds the samples, D's batches, the subsample and the bootstrap."""
    from cxrlib.engine.families import FAMILIES
    from cxrlib.engine.sampling import draw_images
    from cxrlib.train import load_discriminator, load_generator

    if n_generated < 1:
        raise CxrError(f"the distance attacks need at least 1 generated sample, got n_generated={n_generated}")
    G, cfg = load_generator(ckpt, ema=ema, device=device)
    _attackable(cfg, ckpt)
    sets = {"members": members, "non-members": nonmembers}
    for what, images in sets.items():
        x = as_images(images)
        if x.shape[-2:] != (cfg.size, cfg.size):
            raise CxrError(f"the {what} images are {x.shape[-1]}x{x.shape[-2]} px but the generator draws "
                           f"{cfg.size}x{cfg.size} px: load them at {cfg.size} px")
    n_m, n_n = (len(as_images(images)) for images in sets.values())
    if n_m != n_n:
        if not subsample:
            raise CxrError(f"{n_m} members but {n_n} non-members: give as many of each, or draw that many at random "
                           "from the larger set (--subsample; subsample=True)")
        n_m = n_n = min(n_m, n_n)
        sets = {what: _subsample(images, n_m, seed) for what, images in sets.items()}
    _check_enough(n_m, n_n)  # before the costly part
    members, nonmembers = sets["members"], sets["non-members"]
    queries = torch.cat([as_images(members), as_images(nonmembers)])
    scores, skipped = {}, {}
    trains_d = FAMILIES[cfg.family].trains_d  # False: its D slot holds a stand-in nothing trains (diffusion's raises)
    D = load_discriminator(ckpt, device=device) if trains_d else None
    if not trains_d:
        skipped["discriminator"] = f"the {cfg.family} model has no discriminator"
    elif D is None:
        skipped["discriminator"] = "the checkpoint holds no discriminator (an exported generator)"
    else:
        labels = (torch.cat([_labels_for(members, cfg.classes, "member"),
                             _labels_for(nonmembers, cfg.classes, "non-member")])
                  if FAMILIES[cfg.family].takes_labels else None)
        scores["discriminator"] = discriminator_scores(D, queries, labels, seed=seed)
    fakes = draw_images(G, n_generated, seed)
    for space in SPACES:
        scores[f"distance_{space}"] = distance_scores(queries, fakes, space)
    attacks = {name: membership_report(s[:n_m], s[n_m:], seed=seed, n_boot=n_boot) for name, s in scores.items()}
    return {
        "ckpt": str(ckpt), "family": cfg.family, "preset": cfg.preset, "size": cfg.size,
        "n_members": n_m, "n_nonmembers": n_n, "n_generated": n_generated, "seed": seed,
        "attacks": attacks, "skipped": skipped,
        "scores": {name: {"members": s[:n_m].tolist(), "nonmembers": s[n_m:].tolist()} for name, s in scores.items()},
    }


def format_report(result: dict) -> str:
    """``audit_checkpoint``'s result as a table (AUC and TPR at 1 % / 0.1 % FPR with intervals) and a verdict
    per attack."""
    first = next(iter(result["attacks"].values()))
    lines = [f"membership inference on '{result['ckpt']}' ({result['family']} {result['preset']}, {result['size']} px): "
             f"{result['n_members']} members, {result['n_nonmembers']} non-members, {result['n_generated']} generated "
             f"samples; {100 * first['level']:g} % bootstrap intervals ({first['n_boot']} resamples)",
             f"{'attack':<44} {'AUC':>18} {'TPR @ 1% FPR':>20} {'TPR @ 0.1% FPR':>21}"]
    for name, r in result["attacks"].items():
        cells = [f"{r['auc']:.2f} [{r['auc_interval'][0]:.2f}, {r['auc_interval'][1]:.2f}]"]
        for t in r["tpr_at_fpr"].values():
            cells.append(f"{t['tpr']:.2f} [{t['interval'][0]:.2f}, {t['interval'][1]:.2f}]"
                         + ("" if t["resolvable"] else "*"))
        lines.append(f"{ATTACKS[name]:<44} {cells[0]:>18} {cells[1]:>20} {cells[2]:>21}")
        lines.append(f"  → {r['verdict']}")
    if any(not t["resolvable"] for r in result["attacks"].values() for t in r["tpr_at_fpr"].values()):
        lines.append(f"* fewer non-members than 1 / FPR ({result['n_nonmembers']}): the TPR above every "
                     "non-member's score")
    lines += [f"skipped {name}: {why}" for name, why in result["skipped"].items()]
    return "\n".join(lines)
