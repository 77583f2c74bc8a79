"""What a *perfect* masks → X-ray model would score on the Pix2Pix bar (issue 12), measured on the phantoms.

    python benchmarks/pix2pix_ceiling.py                  # 200 held-out patients (seed 11), 64 px, 16 draws each
    python benchmarks/pix2pix_ceiling.py --draws 4 --n 50 # seconds

The phantom generator draws every patient's parameters independently, so the answer to "which X-rays fit these
masks?" is known exactly here: keep the parameters that shape the masks (geometry, lungs, diaphragm, heart, ribs,
clavicles) and draw everything else afresh — body outline, soft tissue, bone density, vessels, exposure and film,
pneumonia (with the prior's 50 % chance). Each such film is a **posterior sample**: what an ideal Pix2Pix, one that
has learned the distribution of X-rays given the masks, would draw. Their pixel average over ``--draws`` films is
the **posterior mean**: about what the best possible L1/L2 predictor outputs (a blur).

The script scores both against the patients' true films with the bar's own figures (``metrics.paired_scores``:
pixel correlation, correlation of the deviations from the training mean image, L1, SSIM; SWD ×10³ against the true
images; sharpness), next to the share of mask pixels that differ from the true masks (near 0: the kept parameters
are the ones that shape the masks). If the ideal sampler's correlation stays below the bar (0.88) while the
posterior mean's is above it, the bar is reachable only by averaging — the perception–distortion tradeoff (Blau &
Michaeli 2018) — and a realistic generator must lose correlation to gain realism.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cxrlib import metrics, phantom  # noqa: E402
from cxrlib.data import load_dataset  # noqa: E402
from cxrlib.translation import ideal_samples  # noqa: E402

SIZE, N_TEST, TEST_SEED, TRAIN_SEED, N_MEAN = 64, 200, 11, 0, 1000


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=N_TEST)
    p.add_argument("--draws", type=int, default=16)
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    test = load_dataset("phantom", size=SIZE, n=args.n, seed=TEST_SEED, masks=True)
    train = load_dataset("phantom", size=SIZE, n=N_MEAN, seed=TRAIN_SEED)
    mean = train.images.float().mean(0, keepdim=True)
    films = ideal_samples(args.n, SIZE, TEST_SEED, args.draws)
    masks = phantom.generate(args.n, size=SIZE, seed=TEST_SEED + 7919, masks=True, anatomy_seed=TEST_SEED).masks
    m = torch.cat([masks[s] for s in test.structures], 1)
    disagree = float((m != (test.masks > 127)).float().mean())
    rows = [metrics.paired_scores(f, test.images, reference=mean) for f in films]
    sample = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    sample_sd = {k: float(np.std([r[k] for r in rows], ddof=1)) if len(rows) > 1 else 0.0 for k in rows[0]}
    one = films[0]
    sample["swd"] = float(metrics.swd(test.images, one)["avg"])
    sample["sharpness"] = metrics.sharpness(one)
    avg = torch.stack([f.float() for f in films]).mean(0).round().to(torch.uint8)
    post_mean = metrics.paired_scores(avg, test.images, reference=mean)
    post_mean["swd"] = float(metrics.swd(test.images, avg)["avg"])
    post_mean["sharpness"] = metrics.sharpness(avg)
    real = {"sharpness": metrics.sharpness(test.images), "swd floor": float(metrics.swd_floor(test.images)["avg"])}
    keys = ("corr", "dev_corr", "l1", "ssim")
    print(f"{args.n} held-out patients (seed {TEST_SEED}), {SIZE} px, {args.draws} posterior draws each, "
          f"{time.perf_counter() - t0:.0f} s")
    print(f"{'':22s} " + " ".join(f"{k:>9s}" for k in (*keys, "swd", "sharpness")))
    print(f"{'posterior sample':22s} " + " ".join(f"{sample[k]:9.4f}" for k in keys)
          + f" {sample['swd']:9.1f} {sample['sharpness'] * 1e3:9.2f}e-3")
    print(f"{'  ± sd over draws':22s} " + " ".join(f"{sample_sd[k]:9.4f}" for k in keys))
    print(f"{f'posterior mean of {args.draws}':22s} " + " ".join(f"{post_mean[k]:9.4f}" for k in keys)
          + f" {post_mean['swd']:9.1f} {post_mean['sharpness'] * 1e3:9.2f}e-3")
    print(f"mask pixels that differ from the true masks: {disagree:.4%}; real films: sharpness "
          f"{real['sharpness'] * 1e3:.2f}e-3, SWD floor {real['swd floor']:.1f}")
    if args.json:
        figures = {"n": args.n, "draws": args.draws, "sample": sample, "sample_sd": sample_sd,
                   "mask_disagreement": disagree, "posterior_mean": post_mean, **real}
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
