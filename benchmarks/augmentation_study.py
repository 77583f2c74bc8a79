"""Notebook 07's augmentation study end to end, at any size: what a conditional GAN's images are worth to a classifier.

    python benchmarks/augmentation_study.py --size 64                       # the CPU figures (≈ 30 min)
    python benchmarks/augmentation_study.py --size 256 --gan-steps 5000     # on a GPU
    python benchmarks/augmentation_study.py --data data/chest_xray/train --test data/chest_xray/test --size 128
    python benchmarks/augmentation_study.py --quick                         # seconds: checks that it runs

For every seed and every real training-set size (``--n-train``, default 100 and 1,000, balanced), a small real
set is drawn (phantoms: fresh patients per seed; a folder: a seeded stratified subset), a conditional ``course``
GAN trains on it alone, and ``cxrlib.experiments.synthetic_data_study`` trains the classifier four ways (real;
real + offline augmentation; real + synthetic; synthetic only) and scores ROC-AUC on the test set (phantoms of
other patients, seed 1; or ``--test``), which never reaches the GAN or a classifier's training. Prints mean ± std
over seeds per arm and the verdict against "real" (above / within twice the larger spread). The results bank
(``make lessons``, lessons ``synthetic-100`` and ``synthetic-1000``) holds the 64-px CPU figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cxrlib import config  # noqa: E402
from cxrlib.data import load_dataset  # noqa: E402
from cxrlib.experiments import SYNTHETIC_ARMS, synthetic_data_study  # noqa: E402


def balanced_subset(data, n: int, seed: int):
    """n images of ``data``, as equal a share of each class as the data allow (seeded)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    per_class = n // len(data.classes)
    idx = []
    for c in range(len(data.classes)):
        members = torch.nonzero(data.labels == c).flatten()
        idx.append(members[torch.randperm(len(members), generator=g)[:per_class]])
    return data.subset(torch.cat(idx))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--n-train", type=lambda s: [int(v) for v in s.split(",")], default=[100, 1000])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--gan-steps", type=int, default=600)
    p.add_argument("--clf-steps", type=int, default=400)
    p.add_argument("--n-synthetic", type=int, default=1000)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--data", help="a labelled folder to draw the small training sets from (default: phantoms)")
    p.add_argument("--test", help="a labelled folder of other patients to score on (needed with --data)")
    p.add_argument("--json", help="write every figure here")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.size, args.n_train, args.seeds, args.gan_steps, args.clf_steps = 32, [24], 1, 2, 3
        args.n_synthetic, args.n_test = 16, 40
    if args.data and not args.test:
        raise SystemExit("error: --data needs --test (a folder of other patients)")
    config.set_threads()
    pool = load_dataset(args.data, size=args.size) if args.data else None
    test = (load_dataset(args.test, size=args.size) if args.test
            else load_dataset("phantom", size=args.size, n=args.n_test, seed=1))
    results = {}
    for n in args.n_train:
        runs = []
        for seed in range(args.seeds):
            train = (balanced_subset(pool, n, seed) if pool is not None
                     else load_dataset("phantom", size=args.size, n=n, seed=100 + seed))
            r = synthetic_data_study(train, test, gan_steps=args.gan_steps, n_synthetic=args.n_synthetic,
                                     clf_steps=args.clf_steps, seed=seed)
            runs.append(r)
            print(f"n={n} seed {seed}: " + " · ".join(f"{a} {r['arms'][a]:.3f}" for a in SYNTHETIC_ARMS)
                  + f" · consistency {r['consistency']:.0%} · GAN SWD {r['gan_swd']:.1f} ({r['seconds']:.0f} s)",
                  flush=True)
        results[n] = runs
        stats = {a: [r["arms"][a] for r in runs] for a in SYNTHETIC_ARMS}
        base = stats["real"]
        for a, v in stats.items():
            m, sd = statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)
            line = f"  {n} real · {a:<18} AUC {m:.3f} ± {sd:.3f}"
            if a != "real" and len(v) < 2:
                line += f"   {m - statistics.fmean(base):+.3f} vs real (one seed: no spread to compare with)"
            elif a != "real":
                diff = m - statistics.fmean(base)
                noise = 2 * max(sd, statistics.stdev(base) if len(base) > 1 else 0.0)
                line += f"   {diff:+.3f} vs real: {'above' if abs(diff) > noise else 'within'} twice the spread ({noise:.3f})"
            print(line)
    if args.json:
        Path(args.json).write_text(json.dumps({str(k): v for k, v in results.items()}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
