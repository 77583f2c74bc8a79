"""The results bank: lesson experiments run longer and with several seeds than a notebook cell can, stored small.

    python -m cxrlib.lessons run                  # every lesson, 3 seeds (resumable: finished parts are kept)
    python -m cxrlib.lessons run --only leak      # one lesson
    python -m cxrlib.lessons show                 # what the bank holds, mean ± std per arm

``make lessons`` runs it. The bank is ``cxrlib/assets/lessons.json``: per lesson its settings, the machine and date,
and one number per arm and seed. A notebook shows its own short run beside :func:`bank_summary`, which names the
command that made the figures. Each (lesson, seed) part is written as soon as it finishes (atomically), so an
interrupted run continues where it stopped; a part made with other settings is redone.

Lessons in the bank:

* ``leak`` (notebook 01): the augmentation-leak experiment (``experiments.leak_runs``) on phantoms, the exposure
  spread of each arm's samples; 3 seeds × 3 arms at 600 steps, 32 px, batch 16.
* ``finetune`` (notebook 05): from the shipped pretrained generator, notebook 05's three continuations
  (``experiments.finetune_arms``: the same rates with the Adam moments kept, the original project's fine-tuning rates, the
  adaptive schedule), SWD ×10³ of the EMA generator against 500 unseen phantoms, and of the raw G beside it (the
  lesson "sample from the EMA"); 3 seeds × 150 steps at 64 px.
* ``width`` (notebook 03): the ``course`` recipe at width 0.5 and 2.0 for the same FLOPs (``experiments.width_runs``:
  the wide model 300 steps, the narrow one as many as the same compute buys), SWD ×10³ against 1,000 held-out
  phantoms; 3 seeds at 32 px, batch 16.
* ``volume`` (notebook 03): the same ``course`` recipe and steps on 50, 200 and 1,000 phantoms
  (``experiments.data_volume_runs``): SWD ×10³ against 1,000 held-out phantoms, and the memorisation audit's share
  of samples flagged as copies of the arm's training set beside the share of held-out real images it flags by
  chance; 3 seeds × 1,500 steps at 32 px, batch 32.
* ``membership`` (notebook 11, issue 30): the same recipe and sets trained to 500, 2,000 and 8,000 steps, each
  attacked there (``experiments.membership_runs``: ``cxrlib.privacy``'s white-box D-logit attack and black-box
  nearest-sample attacks, members vs as many held-out phantoms): ROC-AUC and TPR at 1 % FPR per arm, SWD; 3 seeds.
* ``dp`` (notebook 11, issue 30): a conditional ``course`` GAN on 1,000 phantoms at 32 px, 3,000 steps, as it is, with
  the DP recipe and no noise, and with DP-SGD at ε = 10 and 1 (``experiments.privacy_tradeoff``): SWD, class
  consistency by a judge trained on other phantoms, the three attacks' AUCs and the white-box TPR at 1 % FPR; 3 seeds.
* ``diffusion`` (notebook 12, issue 31): the course GAN and the diffusion model (a U-Net of G's size) on the same 1,000
  phantoms at 64 px, each scored after 5 and 20 minutes of its own training time (``experiments.gan_vs_diffusion``):
  SWD, precision/recall/density/coverage, the memorisation audit, the black-box attacks' AUC and seconds per 1,000
  samples, the diffusion model at 10 and 50 DDIM steps; 3 seeds. Its times are the bank machine's.
* ``utility-100`` and ``utility-200`` (notebook 07, issue 29): ``experiments.utility_study`` on phantoms with a
  mild finding (severity 0.25-0.6) -- a conditional GAN trained on the n real images alone until a judge trained on
  5,000 other phantoms reads 85 % of its images as their intended class (checked every 1,000 steps, at most
  12,000), and the same classifier on real, real + offline aug, real + k×n synthetic (k = 1, 3, 10), synthetic only
  and real + k×n more real (k = 1, 3); ROC-AUC and sensitivity at 90 % specificity on 1,000 held-out phantoms, the
  GAN's consistency on another draw of its images (a seed whose GAN is under 80 % is kept in the bank and left out
  of the synthetic arms' verdicts), SWD and the memorisation audit; 3 seeds at 64 px, about an hour each on a
  2-core CPU (the GAN resumes from its checkpoints in the temporary folder when the bank is stopped).
* ``layers`` (notebook 02): the ``course`` networks as they are and with the three layers they left out (BatchNorm in
  G, skip outputs, spectral norm in D), 900 steps each on the same 1,000 64-px phantoms; SWD ×10³ of the EMA
  generator against 1,000 held-out phantoms and each arm's training seconds; 3 seeds.
* ``modern`` (notebook 10): the ``course`` recipe (BCE + R1) and the ``modern`` one (RpGAN + R1 + R2) on the same
  1,000 64-px phantoms, 2,300 steps each (their time: benchmarks/RESULTS.md), SWD ×10³ of the EMA generator
  against 1,000 held-out phantoms and each arm's training seconds; 3 seeds.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import inspect
import json
import math
import platform
import shutil
import sys
import tempfile
from pathlib import Path

from cxrlib.errors import CxrError

UTILITY = ("utility-100", "utility-200")  # the utility study's lessons, one per n
BANK = Path(__file__).resolve().parent / "assets" / "lessons.json"
COMMAND = "make lessons"

LESSONS = {
    # nets: which course networks made the figures (2: no BatchNorm, skip outputs or spectral norm, the defaults
    # since checkpoint version 2; a lesson without it was made with all three)
    "leak": dict(notebook="01", steps=600, size=32, batch=16, n_images=1000, strong=0.4, copies=3, seeds=3, nets=2),
    "finetune": dict(notebook="05", steps=150, warmup=8, n_images=800, n_heldout=500, seeds=3, raw_g=True, nets=2),
    "width": dict(notebook="03", wide_steps=300, size=32, batch=16, widths=[0.5, 2.0], n_images=1000,
                  n_heldout=1000, seeds=3, nets=2),
    # notebook 02: the course networks as they are, and with the three layers they dropped (BatchNorm in G, skip
    # outputs, spectral norm in D), the same steps each; train_seconds says what the layers cost in time
    "layers": dict(notebook="02", size=64, batch=32, n_images=1000, n_heldout=1000,
                   arms={"course": {"preset": "course", "steps": 900},
                         "+ BatchNorm, skips, spectral norm": {"preset": "course", "steps": 900, "set": {
                             "model_kwargs": {"norm": "batch", "skips": True, "spectral_norm": True}}}},
                   seeds=3, nets=2),
    "volume": dict(notebook="03", steps=1500, size=32, batch=32, volumes=[50, 200, 1000], n_heldout=1000, seeds=3,
                   nets=2),
    # the privacy notebook (issue 30): membership attacks on notebook 03's recipe and sets, at three training lengths
    "membership": dict(notebook="11", size=32, batch=32, volumes=[50, 200, 1000], lengths=[500, 2000, 8000],
                       n_generated=1000, n_boot=200, n_heldout=1000, seeds=3),
    # the privacy notebook: the privacy-quality trade-off, a conditional GAN on 1,000 phantoms, ε ∈ {∞, 10, 1}
    "dp": dict(notebook="11", size=32, batch=32, n_train=1000, steps=3000, epsilons=[10, 1], n_generated=1000,
               n_boot=200, n_heldout=1000, judge=dict(n=2000, steps=300), seeds=3),
    # the diffusion notebook (issue 31): the course GAN and a diffusion model of G's size at 64 px, trained on the same
    # 1,000 phantoms for 5 and then 20 minutes of training time each
    "diffusion": dict(notebook="12", size=64, n_train=1000, budgets=[5, 20], sampling_steps=[10, 50], n_eval=500,
                      n_heldout=1000, seeds=3),
    # notebook 07 (issue 29): the utility study on phantoms with a mild finding (severity 0.25-0.6: a classifier on
    # 100 real images reaches AUC ~0.83, benchmarks/RESULTS.md), a conditional GAN trained on the n real images alone
    # (the GAN trains until the judge's check reads 85 % -- the verdict's bar is 80 %, read on another draw -- or
    # 12,000 steps; on 100 mild phantoms it reached 73 % after 6,000: benchmarks/RESULTS.md)
    **{name: dict(notebook="07", n_train=int(name.split("-")[1]), size=64, severity=[0.25, 0.6], gan_steps=12000,
                  check_every=1000, target=0.85, ks=[1, 3, 10], extra=[1, 3], clf_steps=1000, copies=3,
                  n_test=1000, judge=dict(n=5000, steps=3000, n_val=500), seeds=3)
       for name in UTILITY},
    # notebook 08: Pix2Pix with its GAN term and without it (L1 only), about the same training time each
    "pix2pix": dict(notebook="08", size=64, n_train=1000, n_test=200, width=0.5, gan_steps=300,
                    l1_steps=540, seeds=3),
    # notebook 10: the course recipe (BCE + R1) against the modern one (RpGAN + R1 + R2), the same 2,300 steps
    # (fixed steps keep the bank reproducible): ~6 minutes each on a quiet 2-core AMX/bf16 CPU with the lean course
    # networks, a modern step costing ~6 % more (2026-12-03; train_seconds holds each arm's)
    "modern": dict(notebook="10", size=64, batch=32, n_images=1000, n_heldout=1000,
                   arms={"course": {"preset": "course", "steps": 2300}, "modern": {"preset": "modern", "steps": 2300}},
                   seeds=3, nets=2),
}
# what a lesson's numbers are: "arms" is every part's main figure, other keys are extra figures per arm
METRICS = {
    "leak": {"arms": "exposure spread of the samples (std of their mean brightness; higher: more varied exposure)"},
    "finetune": {"arms": "SWD ×10³ of the EMA generator against unseen phantoms",
                 "raw": "SWD ×10³ of the raw G (no EMA) against the same phantoms, the same latents"},
    "width": {"arms": "SWD ×10³ against held-out phantoms, the same compute (FLOPs) for every width"},
    **{name: {"arms": "ROC-AUC (normal vs pneumonia, mild findings) on 1,000 held-out real phantoms",
              "sensitivity": "sensitivity at 90 % specificity on the same held-out phantoms",
              "consistency": "share of the GAN's images (and of held-out real ones) a judge trained on 5,000 other "
                             "real phantoms calls their own class",
              "gan_swd": "SWD ×10³ of the GAN's images against the held-out phantoms",
              "memorisation": "share of the GAN's images (and of held-out real ones, by chance) the memorisation "
                              "audit flags as copies of the n training images"}
       for name in UTILITY},
    "membership": {"arms": "ROC-AUC of the white-box attack (D's logit, LOGAN): members vs as many held-out phantoms",
                   "pixel": "ROC-AUC of the black-box attack: distance to the nearest of 1,000 samples, pixels",
                   "embedding": "ROC-AUC of the black-box attack: nearest sample in the memorisation audit's embedding",
                   "tpr1": "white-box attack: share of members found at 1 % false positives",
                   "swd": "SWD ×10³ of the EMA generator against 1,000 held-out phantoms"},
    "dp": {"arms": "SWD ×10³ of the conditional GAN's samples against 1,000 held-out phantoms",
           "consistency": "share of its samples a classifier trained on 2,000 other phantoms calls their own class",
           "attack": "ROC-AUC of the white-box attack (D's logit): the 1,000 members vs 1,000 held-out phantoms",
           "pixel": "ROC-AUC of the black-box nearest-sample attack, pixels",
           "embedding": "ROC-AUC of the black-box nearest-sample attack, the audit's embedding",
           "tpr1": "white-box attack: share of members found at 1 % false positives"},
    "diffusion": {"arms": "SWD ×10³ of 500 samples against 1,000 held-out phantoms",
                  **{m: f"{m} (k-NN in the random-CNN feature space, k = 3) of the same samples"
                     for m in ("precision", "recall", "density", "coverage")},
                  "flagged": "share of the samples the memorisation audit flags as copies of the training images",
                  "pixel": "ROC-AUC of the black-box nearest-sample attack (pixels): 500 members vs 500 held-out",
                  "embedding": "ROC-AUC of the nearest-sample attack in the audit's embedding",
                  "sample_s": "seconds to draw 1,000 images on the bank's machine (from 500 drawn)",
                  "steps": "training steps reached in the budget"},
    "pix2pix": {"arms": "SWD ×10³ of the translations of 200 held-out patients' masks against their true images",
                "corr": "mean pixel correlation with the true image (the training mean image alone: see its row)",
                "dev_corr": "correlation of the deviations from the training mean image (what is the patient's own)",
                "sharpness": "variance of the Laplacian ×10³ (real images: see its row; lower = blurrier)",
                "train_seconds": "training seconds of each arm on the machine that made the bank"},
    "modern": {"arms": "SWD ×10³ of the EMA generator against 1,000 held-out phantoms, the same steps per arm",
               "train_seconds": "training seconds of each arm on the machine that made the bank"},
    "layers": {"arms": "SWD ×10³ of the EMA generator against 1,000 held-out phantoms, the same steps per arm",
               "train_seconds": "training seconds of each arm on the machine that made the bank"},
    "volume": {"arms": "SWD ×10³ against held-out phantoms",
               "flagged": "share of samples the memorisation audit flags as copies of the arm's training images",
               "chance": "share of held-out real images it flags against the same training images (chance level)"},
}


def load_bank(path=BANK) -> dict:
    """The bank as a dict ({} when there is none)."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise CxrError(f"'{path}' is not a results bank (not JSON: {e})") from None


def _save(bank: dict, path) -> None:
    from cxrlib.files import atomic_write

    text = json.dumps(bank, indent=1) + "\n"
    atomic_write(Path(path), lambda tmp: tmp.write_text(text))


def _machine() -> str:
    import torch

    from cxrlib import config

    return (f"{config.cpu_model()} ({platform.machine()}) · {config.cpu_cores()} cores, "
            f"{torch.get_num_threads()} threads · bf16 {'yes' if config.cpu_has_bf16() else 'no'} · "
            f"torch {torch.__version__}")


def run_leak(seed: int, settings: dict) -> dict:
    """One seed of the leak lesson: {arm: exposure spread of its samples} plus the held-out references."""
    from cxrlib import augment, data, experiments

    small = data.load_dataset("phantom", size=settings["size"], n=settings["n_images"])
    train, _, holdout = small.split((0.8, 0.1, 0.1), seed=0)
    jittered = augment.augment_images(train.images, copies=settings["copies"], seed=0, brightness=settings["strong"])
    runs = experiments.leak_runs(train.images, jittered, steps=settings["steps"], size=settings["size"],
                                 batch=settings["batch"], p=augment.AdaptiveAugment().p_max, seed=seed,
                                 n_samples=max(len(holdout), 256))
    return {"arms": {k: v["exposure_spread"] for k, v in runs.items()},
            "steps": {k: v["steps"] for k, v in runs.items()},
            "seconds": sum(v["seconds"] for v in runs.values()),
            "reference": {"clean holdout": experiments.exposure_spread(holdout.images),
                          "offline-jittered data": experiments.exposure_spread(jittered)}}


def run_finetune(seed: int, settings: dict) -> dict:
    """One seed of the fine-tuning lesson: {arm: SWD of its EMA generator against unseen phantoms}."""
    from cxrlib import assets, data, experiments
    from cxrlib.train import load_checkpoint

    found = assets.pretrained_checkpoint()
    if found is None:
        raise CxrError("the fine-tuning lesson starts from the shipped pretrained generator, which is missing "
                       "(`make pretrained` rebuilds it)")
    shipped = load_checkpoint(found)
    size = shipped["config"]["size"]
    train = data.load_dataset("phantom", size=size, n=settings["n_images"])
    heldout = data.load_dataset("phantom", size=size, n=settings["n_heldout"], seed=1)  # patients it never saw
    with tempfile.TemporaryDirectory() as tmp:
        arms = experiments.finetune_arms(shipped, train, heldout, out=tmp, steps=settings["steps"],
                                         warmup=settings["warmup"], seed=seed)
    return {"arms": {k: v["swd"] for k, v in arms.items()}, "raw": {k: v["swd_raw"] for k, v in arms.items()},
            "seconds": sum(v["seconds"] for v in arms.values())}


def run_width(seed: int, settings: dict) -> dict:
    """One seed of the width lesson: {arm: SWD} of each width at the same compute, plus the steps each got."""
    from cxrlib import data, experiments

    train = data.load_dataset("phantom", size=settings["size"], n=settings["n_images"])
    heldout = data.load_dataset("phantom", size=settings["size"], n=settings["n_heldout"], seed=1)
    runs = experiments.width_runs(train, heldout, widths=settings["widths"], wide_steps=settings["wide_steps"],
                                  batch=settings["batch"], seed=seed)
    return {"arms": {experiments.width_arm(w): r["swd"] for w, r in runs.items()},
            "steps": {experiments.width_arm(w): r["steps"] for w, r in runs.items()},
            "seconds": sum(r["seconds"] for r in runs.values())}


def run_volume(seed: int, settings: dict) -> dict:
    """One seed of the data-volume lesson: {arm: SWD}, plus the audit's flagged and chance shares per arm."""
    from cxrlib import data, experiments

    pool = data.load_dataset("phantom", size=settings["size"], n=max(settings["volumes"]))
    heldout = data.load_dataset("phantom", size=settings["size"], n=settings["n_heldout"], seed=1)
    arms = experiments.data_volume_runs(pool, heldout, volumes=settings["volumes"], steps=settings["steps"],
                                        batch=settings["batch"], seed=seed, n_eval=settings["n_heldout"])
    return {"arms": {k: v["swd"] for k, v in arms.items()},
            "flagged": {k: v["flagged"] for k, v in arms.items()},
            "chance": {k: v["chance"] for k, v in arms.items()},
            "steps": {k: v["steps"] for k, v in arms.items()},
            "seconds": sum(v["seconds"] for v in arms.values())}


def attack_columns(arms: dict, white_box: str) -> dict:
    """The privacy lessons' bank figures from ``experiments.attack_figures`` per arm: the white-box attack's AUC
    under the key ``white_box``, the black-box ones' under "pixel" and "embedding", the white-box TPR at 1 % FPR
    under "tpr1"; each {arm: value}."""
    figure = {white_box: ("discriminator", "auc"), "pixel": ("distance_pixel", "auc"),
              "embedding": ("distance_embedding", "auc"), "tpr1": ("discriminator", "tpr1")}
    return {key: {arm: v["attacks"][attack][what] for arm, v in arms.items()} for key, (attack, what) in figure.items()}


def run_membership(seed: int, settings: dict) -> dict:
    """One seed of the privacy notebook's membership lesson (``experiments.membership_runs``): {arm: the white-box
    attack's AUC}, the black-box attacks' AUCs, its TPR at 1 % FPR, the SWD, and every attack's figures with their
    intervals ("detail")."""
    from cxrlib import data, experiments

    pool = data.load_dataset("phantom", size=settings["size"], n=max(settings["volumes"]))
    heldout = data.load_dataset("phantom", size=settings["size"], n=settings["n_heldout"], seed=1)
    with tempfile.TemporaryDirectory(prefix="cxrlib-bank-membership-") as scratch:
        arms = experiments.membership_runs(pool, heldout, volumes=settings["volumes"], lengths=settings["lengths"],
                                           batch=settings["batch"], seed=seed, n_generated=settings["n_generated"],
                                           n_boot=settings["n_boot"], out=scratch)
    return {**attack_columns(arms, "arms"),
            "swd": {arm: v["swd"] for arm, v in arms.items()},
            "detail": {arm: v["attacks"] for arm, v in arms.items()},
            "seconds": sum(v["seconds"] for arm, v in arms.items()
                           if arm.endswith(f" {max(settings['lengths'])} steps"))}


def run_dp(seed: int, settings: dict) -> dict:
    """One seed of the privacy notebook's trade-off lesson (``experiments.privacy_tradeoff``): {arm: SWD}, the
    judge's consistency, the three attacks' AUCs, the white-box TPR at 1 % FPR; ε spent and every attack's
    intervals in "detail". The training set is the first ``n_train`` phantoms of seed 300 + seed (other patients
    per seed), the held-out ones of seed 1, the judge's 2,000 of seed 7."""
    from cxrlib import classifier, data, experiments

    size, j = settings["size"], settings["judge"]
    train = data.load_dataset("phantom", size=size, n=settings["n_train"], seed=300 + seed)
    heldout = data.load_dataset("phantom", size=size, n=settings["n_heldout"], seed=1)
    key = ("dp", size, j["n"], j["steps"])
    if key not in _JUDGES:
        _JUDGES[key] = classifier.train_classifier(data.load_dataset("phantom", size=size, n=j["n"], seed=7),
                                                   steps=j["steps"], seed=0)
    with tempfile.TemporaryDirectory(prefix="cxrlib-bank-dp-") as scratch:
        arms = experiments.privacy_tradeoff(train, heldout, judge=_JUDGES[key], epsilons=settings["epsilons"],
                                            steps=settings["steps"], batch=settings["batch"], seed=seed,
                                            n_generated=settings["n_generated"], n_boot=settings["n_boot"],
                                            out=scratch)
    return {"arms": {arm: v["swd"] for arm, v in arms.items()},
            "consistency": {arm: v["consistency"] for arm, v in arms.items()}, **attack_columns(arms, "attack"),
            "detail": {arm: {"attacks": v["attacks"], "epsilon_spent": v["epsilon_spent"]} for arm, v in arms.items()},
            "seconds": sum(v["seconds"] for v in arms.values())}


def run_diffusion(seed: int, settings: dict, log=None) -> dict:
    """One seed of the diffusion notebook's lesson (``experiments.gan_vs_diffusion``): {row: SWD} and every other
    figure per row. The training set is the first ``n_train`` phantoms of seed 400 + seed, the held-out ones of seed 1."""
    from cxrlib import data, experiments

    train = data.load_dataset("phantom", size=settings["size"], n=settings["n_train"], seed=400 + seed)
    heldout = data.load_dataset("phantom", size=settings["size"], n=settings["n_heldout"], seed=1)
    rows = experiments.gan_vs_diffusion(train, heldout, budgets=settings["budgets"],
                                        sampling_steps=settings["sampling_steps"], n_eval=settings["n_eval"],
                                        seed=seed, log=log)
    figures = [m for m in METRICS["diffusion"] if m != "arms"]
    return {"arms": {r: v["swd"] for r, v in rows.items()}, **{m: {r: v[m] for r, v in rows.items()} for m in figures},
            "seconds": sum(max(v["seconds"] for r, v in rows.items() if r.startswith(m)) for m in ("GAN", "diffusion"))}


_JUDGES: dict = {}


def utility_judge(settings: dict):
    """The judge of the utility study: the course classifier trained on ``judge["n"]`` real phantoms of other
    patients (seed 7; the best of its validation checks on ``n_val`` more, seed 8), at the lesson's severity.
    Deterministic; kept for the process, so the seeds and sizes of one run train it once."""
    from cxrlib import classifier, data

    sev, j = tuple(settings["severity"]), settings["judge"]
    key = (settings["size"], sev, j["n"], j["steps"], j["n_val"])
    if key not in _JUDGES:
        train = data.load_dataset("phantom", size=settings["size"], n=j["n"], seed=7, severity=sev)
        val = data.load_dataset("phantom", size=settings["size"], n=j["n_val"], seed=8, severity=sev)
        _JUDGES[key] = classifier.train_classifier(train, steps=j["steps"], seed=0, val=val)
    return _JUDGES[key]


def run_utility(seed: int, settings: dict, log=None) -> dict:
    """One seed of the utility study (``experiments.utility_study``): the n training phantoms are the first n of
    seed 100 + seed (class-balanced, as every prefix is), the extra real ones the next max(extra) × n of the same
    draw (other patients), the test set 1,000 phantoms of seed 1 (others again); all at the lesson's severity."""
    from cxrlib import data, experiments

    sev, n = tuple(settings["severity"]), settings["n_train"]
    drawn = data.load_dataset("phantom", size=settings["size"], n=n * (1 + max(settings["extra"])),
                              seed=100 + seed, severity=sev)
    test = data.load_dataset("phantom", size=settings["size"], n=settings["n_test"], seed=1, severity=sev)
    # the GAN's checkpoints, so that a stopped bank resumes a seed's GAN (its own folder per settings and seed)
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    scratch = Path(tempfile.gettempdir()) / f"cxrlib-bank-utility-{n}-seed{seed}-{key}"
    r = experiments.utility_study(drawn.subset(range(n)), test, judge=utility_judge(settings),
                                  gan_steps=settings["gan_steps"], pool=drawn.subset(range(n, len(drawn))),
                                  ks=settings["ks"], extra=settings["extra"], clf_steps=settings["clf_steps"],
                                  copies=settings["copies"], seed=seed, gan_config=settings.get("gan"),
                                  check_every=settings.get("check_every"), target=settings.get("target"),
                                  out=scratch, log=log)
    shutil.rmtree(scratch, ignore_errors=True)
    return {k: r[k] for k in ("arms", "sensitivity", "consistency", "gan_swd", "memorisation", "usable",
                              "gan_steps", "gan_checks", "seconds")}


def run_pix2pix(seed: int, settings: dict) -> dict:
    """One seed of notebook 08's ablation: Pix2Pix with L1 + GAN and with L1 only (``gan_weight=0``, cheaper per
    step, so it gets more steps for about the same time), scored on held-out (mask, image) pairs; the training
    mean image and the per-pixel linear model of the masks as reference rows."""
    import time

    from cxrlib import data, translation
    from cxrlib.config import make_config
    from cxrlib.train import Trainer

    size = settings["size"]
    train = data.load_dataset("phantom", size=size, n=settings["n_train"], seed=0, masks=True)
    test = data.load_dataset("phantom", size=size, n=settings["n_test"], seed=11, masks=True)
    out = {"arms": {}, "corr": {}, "dev_corr": {}, "sharpness": {}, "train_seconds": {}}
    t_all = time.perf_counter()
    for arm, steps, kw in (("L1 + GAN", settings["gan_steps"], {}), ("L1 only", settings["l1_steps"], {"gan_weight": 0.0})):
        cfg = make_config("pix2pix", size=size, steps=steps, seed=seed, width=settings["width"], log_every=steps,
                          sample_every=10**9, checkpoint_every=10**9, **kw)
        t = Trainer(cfg, train)
        t.fit(progress=False)
        scores = translation.evaluate_pix2pix(t.G, t.cfg, test, train)
        out["arms"][arm] = scores["pix2pix"]["swd"]
        for k in ("corr", "dev_corr"):
            out[k][arm] = scores["pix2pix"][k]
        out["sharpness"][arm] = 1e3 * scores["pix2pix"]["sharpness"]
        out["train_seconds"][arm] = t.seconds
    for ref in ("mean image", "linear model"):
        for k in ("corr", "dev_corr"):
            out[k][ref] = scores[ref][k]
        out["sharpness"][ref] = 1e3 * scores[ref]["sharpness"]
    out["sharpness"]["real images"] = 1e3 * scores["real sharpness"]
    out["arms"]["linear model"] = scores["linear model"]["swd"]
    out["seconds"] = time.perf_counter() - t_all
    return out


def run_recipes(seed: int, settings: dict) -> dict:
    """One seed of a recipe comparison: every arm ({name: {"preset", "steps", "set": {option: value}}}) trained on
    the same phantoms for its steps, its EMA generator scored by SWD against held-out phantoms (as
    ``benchmarks/quality_bar.py`` scores), with the training seconds it took."""
    import time

    from cxrlib import data, experiments
    from cxrlib.config import make_config
    from cxrlib.train import Trainer

    size = settings["size"]
    train = data.load_dataset("phantom", size=size, n=settings["n_images"])
    heldout = data.load_dataset("phantom", size=size, n=settings["n_heldout"], seed=1)
    out = {"arms": {}, "train_seconds": {}}
    t_all = time.perf_counter()
    for arm, spec in settings["arms"].items():
        steps = spec["steps"]
        cfg = make_config(spec["preset"], size=size, batch=settings["batch"], steps=steps, seed=seed,
                          log_every=max(1, steps // 10), sample_every=10**9, checkpoint_every=10**9,
                          **spec.get("set", {}))
        t = Trainer(cfg, train)
        t.fit(progress=False)
        out["arms"][arm] = experiments.evaluate(t, heldout)["swd"]["avg"]
        out["train_seconds"][arm] = t.seconds
    out["seconds"] = time.perf_counter() - t_all
    return out


RUNNERS = {"leak": run_leak, "finetune": run_finetune, "width": run_width, "volume": run_volume,
           "membership": run_membership, "dp": run_dp, "diffusion": run_diffusion,
           "pix2pix": run_pix2pix, "modern": run_recipes, "layers": run_recipes,
           **{name: run_utility for name in UTILITY}}
# what each lesson's arms are compared with
BASELINES = {"leak": "clean control", "finetune": "before", "width": "width 0.5", "volume": "1000 images",
             "membership": "1000 images · 500 steps", "dp": "DP recipe, ε = ∞", "diffusion": "GAN · 20 min",
             "pix2pix": "L1 only", "modern": "course", "layers": "course", **{name: "real" for name in UTILITY}}


def _arm_order(name: str, arms: list[str]) -> list[str]:
    from cxrlib.experiments import FINETUNE_ARMS, LEAK_ARMS

    order = {"leak": LEAK_ARMS, "finetune": ("before",) + FINETUNE_ARMS}.get(name, ())
    if name == "volume":  # by training-set size
        return sorted(arms, key=lambda a: int(a.split()[0]) if a.split()[0].isdigit() else math.inf)
    return [a for a in order if a in arms] + [a for a in arms if a not in order]


#: lessons trained for a wall-clock budget: ``run(jobs=N)`` runs their parts one at a time on all cores
TIMED = ("diffusion",)
#: how ``run(jobs=N)`` starts its worker processes ("spawn": a fresh interpreter, no forked OpenMP thread pool)
MP_CONTEXT = "spawn"


def run(only: str | None = None, seeds: int | None = None, path=BANK, log=print, jobs: int = 1) -> dict:
    """Run the missing parts of the bank (every lesson, or ``only``), writing after each finished part.

    ``jobs`` N > 1 runs N parts at a time, each in a process of its own with cores // N torch threads: on a 2-core
    CPU two single-thread GAN trainings finished 1.1–1.3× sooner than the same two in turn on two threads
    (``benchmarks/bench_jobs.py``, ``benchmarks/RESULTS.md``). With N > 1 a part that fails leaves the others
    running and saved and the first failure is raised at the end (as a ``CxrError`` naming it); an interrupt cancels
    the parts not started. Lessons trained for a wall-clock budget (``TIMED``) always run one part at a time on all
    cores: their figures would depend on N."""
    if only is not None and only not in LESSONS:
        raise CxrError(f"unknown lesson {only!r} (the bank has: {', '.join(LESSONS)})")
    bank = load_bank(path)
    todo = []
    for name, settings in LESSONS.items():
        if only and name != only:
            continue
        entry = bank.get(name)
        if entry is None or entry.get("settings") != settings:
            entry = bank[name] = {"settings": settings, "parts": {}}  # new settings: start this lesson over
        for seed in range(seeds or settings["seeds"]):
            if str(seed) in entry["parts"]:
                log(f"{name}, seed {seed}: in the bank already")
            else:
                todo.append((name, seed))

    def keep(name: str, seed: int, part: dict) -> None:
        bank[name]["parts"][str(seed)] = part
        _save(bank, path)
        log(f"{name}, seed {seed}: done in {part['seconds']:.0f} s · "
            + " · ".join(f"{k} {v:.3f}" for k, v in part["arms"].items()))

    serial = todo if jobs <= 1 else [(name, seed) for name, seed in todo if name in TIMED]
    todo = [] if jobs <= 1 else [(name, seed) for name, seed in todo if name not in TIMED]
    if len(todo) == 1:
        serial, todo = todo + serial, []
    for name, seed in serial:
        keep(name, seed, run_part(name, seed, log=log))
    if not todo:
        return bank
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from cxrlib import config

    threads = max(1, config.cpu_cores() // jobs)
    failures = []
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context(MP_CONTEXT), initializer=_worker_threads,
                               initargs=(threads,))
    try:
        futures = {pool.submit(_worker_part, name, seed, LESSONS[name]): (name, seed) for name, seed in todo}
        for future in as_completed(futures):
            name, seed = futures[future]
            try:
                keep(name, seed, future.result())
            except Exception as e:  # the other parts go on; this one is reported and raised at the end
                log(f"{name}, seed {seed}: failed ({type(e).__name__}: {e})")
                failures.append(e)
    except BaseException:  # an interrupt: the parts not started are cancelled, the running ones end with the workers
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    if failures:
        raise failures[0]
    return bank


def _worker_threads(threads: int) -> None:
    """A ``run(jobs=N)`` worker's torch threads (``config.set_threads`` reads $CXRLIB_THREADS inside the runners)."""
    import os

    from cxrlib import config

    os.environ["CXRLIB_THREADS"] = str(threads)
    config.set_threads(threads)


def _worker_part(name: str, seed: int, settings: dict) -> dict:
    """``run_part`` in a ``run(jobs=N)`` worker, with the parent's settings; a failure comes back as a ``CxrError``
    naming it (some of the course's exceptions cannot be rebuilt in the parent, which would break the pool)."""
    try:
        return run_part(name, seed, settings)
    except CxrError:
        raise
    except Exception as e:
        raise CxrError(f"{type(e).__name__}: {e}") from None


def run_part(name: str, seed: int, settings: dict | None = None, log=None) -> dict:
    """One seed of one lesson (``RUNNERS[name]`` with ``settings``, default the lesson's), stamped with the machine
    and date. Without ``log`` a long runner's progress is printed with the lesson and seed in front."""
    runner = RUNNERS[name]  # (a long one takes the log for its progress)
    settings = LESSONS[name] if settings is None else settings
    if log is None:
        def log(*parts):
            print(f"{name}, seed {seed}:", *parts, flush=True)
    part = runner(seed, settings, **({"log": log} if "log" in inspect.signature(runner).parameters else {}))
    part.update(machine=_machine(), date=datetime.datetime.now().isoformat(timespec="minutes"))
    return part


def run_live(name: str, seeds: int | None = None, log=print) -> Path:
    """Train one lesson of the bank now, with its settings and seeds, into a new bank file of its own (returned;
    the shipped bank is left alone): what a notebook does on a GPU budget, where the bank's runs take minutes.
    ``bank_summary(name, path=run_live(name))`` prints it as it prints the shipped figures."""
    path = Path(tempfile.mkdtemp(prefix="cxrlib-live-")) / "lessons.json"
    run(name, seeds, path=path, log=log)
    return path


def _mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, sd


def counts_for(part: dict, arm: str) -> bool:
    """Whether a part's figure of ``arm`` enters the verdicts: not a synthetic arm of a seed whose GAN the judge
    rejected (the utility study's ``usable``, ``experiments.utility_study``); every other figure does."""
    return part.get("usable", True) or "synthetic" not in arm


REJECTED_NOTE = "  * its GAN drew its classes too rarely (the judge's consistency < 80 %): left out of the mean"


def _lesson_parts(name: str, path, *figures: str) -> tuple[dict | None, list[dict]]:
    """A lesson's bank entry and its parts in seed order ([] when the bank has none); a figure that the parts do
    not hold is a one-line error naming the ones they do."""
    entry = load_bank(path).get(name)
    if not entry or not entry.get("parts"):
        return entry, []
    parts = [entry["parts"][k] for k in sorted(entry["parts"], key=int)]
    for figure in figures:
        if figure not in parts[0]:
            known = [k for k in parts[0] if isinstance(parts[0][k], dict) and k not in ("steps", "reference")]
            raise CxrError(f"lesson '{name}' has no figure {figure!r} (it has: {', '.join(known)})")
    return entry, parts


def bank_summary(name: str, baseline: str | None = None, path=BANK, metric: str = "arms",
                 per_seed: bool = False, compare: bool = True) -> str:
    """The bank's figures of one lesson as text: each arm's mean ± seed-to-seed std and, against ``baseline``,
    whether the difference stands above twice the larger std (default baseline: the lesson's control, ``BASELINES``);
    the first line says how, when and where the figures were made, and what the numbers are (``METRICS``).
    ``metric``: the lesson's main figure ("arms") or one of its extra figures (e.g. the volume lesson's "flagged").
    ``per_seed``: also each seed's value, in columns before the mean. ``compare=False``: no verdict column (where
    the arms share seeds and are read seed by seed with ``bank_paired`` instead).
    Says so in one line when the bank has no such lesson."""
    entry, parts = _lesson_parts(name, path, metric)
    if not parts:
        return f"the results bank has no '{name}' figures yet ({COMMAND} makes them)"
    arms = _arm_order(name, list(parts[0][metric]))
    baseline = baseline or BASELINES.get(name, arms[-1])
    if not compare or baseline not in arms:  # an extra figure of other arms (e.g. the GAN's consistency): none
        baseline = None
    kept = {a: [p[metric][a] for p in parts if counts_for(p, a)] for a in arms}
    if baseline is not None and not kept[baseline]:
        baseline = None
    stats = {a: _mean_std(kept[a]) for a in arms if kept[a]}  # a synthetic arm with no usable GAN: no mean
    s = entry["settings"]
    shape = f" ({s['size']} px, batch {s['batch']})" if "size" in s and "batch" in s else ""
    what = METRICS.get(name, {}).get(metric)
    if "steps" in s:
        steps = f"{s['steps']} steps"
    elif "l1_steps" in s:
        steps = f"L1 + GAN {s['gan_steps']} steps, L1 only {s['l1_steps']} steps, {s['n_train']} training pairs"
    elif "gan_steps" in s:
        until = (f"up to {s['gan_steps']} steps (until the judge reads {s['target']:.0%})" if s.get("target")
                 else f"{s['gan_steps']} steps")
        steps = f"GAN {until} on {s['n_train']} real images, classifiers {s['clf_steps']} steps"
    elif "lengths" in s:  # the membership lesson: one run per set size, read at each length
        steps = f"{' / '.join(str(n) for n in s['lengths'])} steps on sets of {' / '.join(str(n) for n in s['volumes'])}"
    elif "budgets" in s:  # the diffusion lesson: each model to each budget of its own training time
        steps = f"{' and '.join(f'{b:g}' for b in s['budgets'])} min of training each, {s['n_train']} images"
    elif "arms" in s:  # a recipe comparison: each arm its own steps
        counts = {spec["steps"] for spec in s["arms"].values()}
        steps = (f"{counts.pop()} steps per arm" if len(counts) == 1
                 else ", ".join(f"{a} {spec['steps']}" for a, spec in s["arms"].items()) + " steps")
    else:
        steps = f"equal compute (widest: {s['wide_steps']} steps)"
    lines = [f"results bank, lesson '{name}': {len(parts)} seed{'s' if len(parts) > 1 else ''} × {steps}{shape} — made "
             f"{parts[0]['date'][:10]} on {parts[0]['machine']}" + (f"\n  metric: {what}" if what else "")]
    width = max([18] + [len(a) + 1 for a in arms])  # the arm names in one column
    spreads = [sd for m, sd in stats.values() if sd > 1e-9 * max(1.0, abs(m))]  # (not rounding noise)
    d = min(6, max(3, 1 - math.floor(math.log10(min(spreads))))) if spreads else 3  # the spread to 2 digits
    if per_seed:
        lines.append(f"  {'':<{width}} " + "".join(f"{'seed ' + k:>9}" for k in _seed_keys(entry))
                     + "   mean ± std")
    for a in arms:
        if a not in stats:  # every seed's GAN rejected: its figures shown, starred, without a mean
            if per_seed:
                lines.append(f"  {a:<{width}} " + "".join(f"{p[metric][a]:>9.{d}f}*" for p in parts)
                             + "  (no seed counts)")
            continue
        m, sd = stats[a]
        seeds = "".join(f"{p[metric][a]:>9.{d}f}" + ("" if counts_for(p, a) else "*") for p in parts) + "  " \
            if per_seed else ""  # (a star after a figure left out: REJECTED_NOTE)
        spread = f" ± {sd:.{d}f}" if len(kept[a]) > 1 else " (1 seed)"  # one seed counts: no spread to show
        line = f"  {a:<{width}} {seeds}{m:.{d}f}{spread}"
        if baseline is not None and a != baseline:
            diff, noise = m - stats[baseline][0], 2 * max(sd, stats[baseline][1])
            if min(len(kept[a]), len(kept[baseline])) < 2:
                line += f"   {diff:+.{d}f} vs {baseline}: one seed, no spread to read it against: no verdict yet"
            elif diff == 0 and noise == 0:
                line += f"   the same as {baseline} in every seed"
            else:
                line += (f"   {diff:+.{d}f} vs {baseline}: {'above' if abs(diff) > noise else 'within'} twice the "
                         f"larger spread ({noise:.{d}f})")
        lines.append(line)
    if any(not counts_for(p, a) for p in parts for a in parts[0][metric]):
        lines.append(REJECTED_NOTE if per_seed else REJECTED_NOTE.replace("  * its GAN", "  a seed whose GAN"))
    refs = parts[0].get("reference", {})
    if refs:
        lines.append("  references: " + " · ".join(f"{k} {v:.{d}f}" for k, v in refs.items()))
    return "\n".join(lines)


def _seed_keys(entry: dict) -> list[str]:
    return sorted(entry["parts"], key=int)


def bank_paired(name: str, arm: str, baseline: str | None = None, metric: str = "arms", path=BANK) -> str:
    """Seed by seed, ``arm`` − ``baseline`` of one lesson's figure (default baseline: the lesson's control): every
    seed's two arms were trained on the same data from the same start, so the pairs' differences show the effect
    with less run-to-run noise than two means do. Their mean ± std, and whether the mean stands above twice that
    std (the course's rule, applied to the paired differences)."""
    entry, parts = _lesson_parts(name, path, metric)
    if not parts:
        return f"the results bank has no '{name}' figures yet ({COMMAND} makes them)"
    arms = list(parts[0][metric])
    baseline = baseline or BASELINES.get(name, arms[-1])
    for a in (arm, baseline):
        if a not in arms:
            raise CxrError(f"lesson '{name}' has no arm {a!r} in {metric!r} (it has: {', '.join(arms)})")
    keys = [k for k, p in zip(_seed_keys(entry), parts) if counts_for(p, arm)]
    if not keys:  # what the rejected GANs' images did, shown but not read as a verdict
        rejected = " · ".join(f"seed {k}: {p[metric][arm] - p[metric][baseline]:+.3f}"
                              for k, p in zip(_seed_keys(entry), parts))
        return (f"results bank, lesson '{name}', {metric}: {arm} − {baseline}: no seed's GAN drew its classes (the "
                f"judge's consistency < 80 %), so no verdict\n  what their images did: {rejected}")
    diffs = [p[metric][arm] - p[metric][baseline] for p in parts if counts_for(p, arm)]
    m, sd = _mean_std(diffs)
    seeds = " · ".join(f"seed {k}: {d:+.3f}" for k, d in zip(keys, diffs))
    if len(keys) < len(parts):
        seeds += f" (seed{'s' if len(parts) - len(keys) > 1 else ''} " + ", ".join(
            k for k in _seed_keys(entry) if k not in keys) + " left out: its GAN drew its classes too rarely)"
    if len(diffs) < 2:
        return (f"results bank, lesson '{name}', {metric}: {arm} − {baseline}, paired by seed\n  {seeds}\n"
                "  one seed: no spread to read it against, so no verdict yet")
    signs = {(d > 0) - (d < 0) for d in diffs}
    same = ("same sign in every seed" if len(signs) == 1 and 0 not in signs else "signs differ between seeds")
    # the spread to two significant digits, and enough that the mean and the threshold differ where they are close
    digits = min(6, max(3, 1 - math.floor(math.log10(sd)))) if sd > 1e-9 * max(1.0, abs(m)) else 3
    while digits < 6 and abs(m) != 2 * sd and round(abs(m), digits) == round(2 * sd, digits):
        digits += 1
    return (f"results bank, lesson '{name}', {metric}: {arm} − {baseline}, paired by seed\n"
            f"  {seeds}\n  mean {m:+.{digits}f} ± {sd:.{digits}f}: {'above' if abs(m) > 2 * sd else 'within'} "
            f"twice the spread of the differences ({2 * sd:.{digits}f}); {same}")


def bank_difference(name: str, metric: str, minus: str = "arms", path=BANK) -> str:
    """Per arm, the seed-by-seed difference ``metric − minus`` (two figures of the same runs, e.g. the fine-tuning
    lesson's raw G minus its EMA generator) as mean ± std over seeds, and whether the mean stands above twice that
    std. Paired by seed: each seed's two figures come from the same run, so run-to-run noise partly cancels."""
    _, parts = _lesson_parts(name, path, metric, minus)
    if not parts:
        return f"the results bank has no '{name}' figures yet ({COMMAND} makes them)"
    what = METRICS.get(name, {})
    lines = [f"results bank, lesson '{name}', {len(parts)} seeds: {metric} − {minus}, seed by seed"
             + (f" ({what[metric].split(' against')[0]} minus {what[minus].split(' against')[0]})"
                if metric in what and minus in what else "")]
    for a in _arm_order(name, list(parts[0][metric])):
        m, sd = _mean_std([p[metric][a] - p[minus][a] for p in parts])
        verdict = "above" if abs(m) > 2 * sd else "within"
        lines.append(f"  {a:<16} {m:+.3f} ± {sd:.3f}   {verdict} twice the spread ({2 * sd:.3f})")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cxrlib.lessons", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the missing parts of the bank")
    r.add_argument("--only", help=f"one lesson ({', '.join(LESSONS)})")
    r.add_argument("--seeds", type=int, help="seeds per lesson (default: the lesson's)")
    r.add_argument("--bank", default=str(BANK), help="the bank file (default: cxrlib/assets/lessons.json)")
    r.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="parts at a time, each in its own process with cores / N threads (default 1)")
    s = sub.add_parser("show", help="print the bank's figures")
    s.add_argument("--bank", default=str(BANK))
    args = ap.parse_args(argv)
    try:
        if args.cmd == "run":
            run(args.only, args.seeds, args.bank, jobs=args.jobs)
        held = load_bank(args.bank)
        for name in LESSONS:
            for metric in METRICS.get(name, {"arms": None}) if held.get(name, {}).get("parts") else ["arms"]:
                print(bank_summary(name, path=args.bank, metric=metric))  # (a lesson not in the bank: one line)
    except CxrError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
