"""Do a GAN's images help a classifier that has few real ones? The utility study (issue 29) on phantoms or on any
labelled folder of real X-rays.

    python benchmarks/utility_study.py                                  # phantoms, severity 0.25-0.6, n = 100, 200
    python benchmarks/utility_study.py --data ~/chest_xray/train --size 256 --sizes 100,500 --gan-steps 30000
    python benchmarks/utility_study.py --quick                          # seconds: checks that it runs

For each seed and each size n: a conditional ``course`` GAN (DiffAugment + ADA) trains on n real images alone, until
the judge calls ``--target`` of a check draw of its images their class (or ``--gan-steps``); the
same classifier trains on every arm of ``cxrlib.experiments.utility_arms`` (real; real + the original project's
offline augmentation; real + k×n synthetic; synthetic only; real + k×n more real) and is scored on held-out real
images of other patients: ROC-AUC and the sensitivity at 90 % specificity. A judge trained on other real images
says which share of the GAN's images shows the class it was asked for; a GAN under ``--min-consistency`` is
reported and its seed left out of the synthetic arms' verdicts. Prints every run, then per arm the mean ± std and
the paired per-seed differences against "real", read against twice their spread.

Data. Phantoms (default): the judge learns from ``--judge-n`` phantoms of seed 7, the test set is ``--n-test`` of
seed 1, and seed s draws its n training and extra real images from seed 100 + s (``cxrlib.lessons.run_utility``
does the same for the results bank). A folder (``--data DIR``: one sub-folder per class, e.g. a Kaggle pneumonia
set's ``NORMAL``/``PNEUMONIA``): its patients are shuffled once (``--split-seed``) and cut into a test set
(``--n-test`` images), a judge set (``--judge-n``) and a pool, one patient's films in one part (``--patient-regex``
says which files are one patient's, e.g. ``'^(person\\d+)_'``; without it each image counts as its own patient, and
films of one patient in two parts would inflate every AUC); seed s draws its n training images and the extra real
ones from the pool, reshuffled with s. A GPU, when present, trains everything; the defaults suit 64-px phantoms on
a CPU: raise ``--gan-steps`` and ``--size`` for real films.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from cxrlib import classifier, config, experiments  # noqa: E402
from cxrlib.data import load_dataset  # noqa: E402
from cxrlib.errors import CxrError  # noqa: E402
from cxrlib.phantom import check_severity  # noqa: E402


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def phantom_sets(args, severity):
    """(judge set, val set, test set, draw(seed, count) → the seed's first ``count`` pool images)."""
    kw = dict(size=args.size, severity=severity)
    judge = load_dataset("phantom", n=args.judge_n, seed=7, **kw)
    val = load_dataset("phantom", n=args.n_val, seed=8, **kw)
    test = load_dataset("phantom", n=args.n_test, seed=1, **kw)
    return judge, val, test, lambda seed, count: load_dataset("phantom", n=count, seed=100 + seed, **kw)


def folder_sets(args):
    """The same four from one labelled folder, cut into disjoint parts after one seeded shuffle."""
    everything = load_dataset(args.data, size=args.size)
    if len(everything.classes) != 2:
        raise CxrError(f"{args.data}: the study needs two classes (one sub-folder each), found "
                       f"{len(everything.classes)}: {', '.join(everything.classes) or 'none'}")
    cuts = [args.n_test, args.judge_n, args.n_val]
    per_n = 1 + max(args.extra, default=0)
    need = sum(cuts) + max(args.sizes) * per_n
    if len(everything) < need:
        raise CxrError(f"{args.data}: {len(everything)} images; the study needs {need} (test {args.n_test}, "
                       f"judge {args.judge_n} + {args.n_val}, and n × (1 + max extra) for the largest n): "
                       "lower --n-test/--judge-n/--sizes/--extra")
    # one patient's films stay in one part: shuffle the patients, then cut between them
    names = [Path(p).name for p in everything.paths] or [str(i) for i in range(len(everything))]
    if args.patient_regex:
        keys = []
        for name in names:
            m = re.search(args.patient_regex, name)
            if m is None:
                raise CxrError(f"--patient-regex {args.patient_regex!r} does not match '{name}'")
            keys.append(m.group(1) if m.groups() else m.group(0))
    else:
        print("each image is taken as its own patient: give --patient-regex when a patient has several films "
              "(e.g. '^(person\\d+)_' for the Kaggle pediatric set)", flush=True)
        keys = names
    patients = sorted(set(keys))
    shuffled = torch.randperm(len(patients), generator=torch.Generator().manual_seed(args.split_seed)).tolist()
    rank_of = {patients[i]: r for r, i in enumerate(shuffled)}
    order = sorted(range(len(keys)), key=lambda i: (rank_of[keys[i]], i))
    parts, start = [], 0
    for c in cuts:
        stop = start + c
        while 0 < stop < len(order) and keys[order[stop]] == keys[order[stop - 1]]:
            stop += 1  # the rest of this patient's films go with it
        parts.append(everything.subset(order[start:stop]))
        start = stop
    pool = everything.subset(order[start:])
    balanced = len(pool.classes) * int(torch.bincount(pool.labels, minlength=len(pool.classes)).min())
    if balanced < max(args.sizes) * per_n:
        raise CxrError(f"{args.data}: the pool left after the test and judge sets holds {balanced} class-balanced "
                       f"images (its smallest class × {len(pool.classes)}); the largest n needs "
                       f"{max(args.sizes) * per_n}: lower --sizes/--extra/--n-test/--judge-n")

    def draw(seed, count):  # a class-balanced prefix of the pool, reshuffled per seed
        g = torch.Generator().manual_seed(seed)
        by_class = [torch.nonzero(pool.labels == c).flatten() for c in range(len(pool.classes))]
        by_class = [idx[torch.randperm(len(idx), generator=g)] for idx in by_class]
        interleaved = torch.stack([idx[:min(len(i) for i in by_class)] for idx in by_class], 1).flatten()
        if len(interleaved) < count:
            raise CxrError(f"{args.data}: the pool holds {len(interleaved)} class-balanced images, {count} needed")
        return pool.subset(interleaved[:count])

    test, judge, val = parts
    return judge, val, test, draw


def summary(runs: list[dict], arms: list[str], metric: str) -> list[str]:
    """Per arm: mean ± std over seeds, and the paired differences against "real" with the verdict. Synthetic
    arms count only the seeds whose GAN was usable."""
    lines = []
    for arm in arms:
        keep = [r for r in runs if r["usable"] or "synthetic" not in arm]
        v = [r[metric][arm] for r in keep]
        if not v:
            lines.append(f"  {arm:<24} no usable GAN")
            continue
        spread = f" ± {statistics.stdev(v):.3f} ({len(v)} seeds)" if len(v) > 1 else " (1 seed)"
        line = f"  {arm:<24} {statistics.fmean(v):.3f}{spread}"
        if arm != "real":
            d = [r[metric][arm] - r[metric]["real"] for r in keep]
            line += f" · paired vs real {statistics.fmean(d):+.3f} (per seed {' '.join(f'{x:+.3f}' for x in d)})"
            if len(d) > 1:
                dsd = statistics.stdev(d)
                line += f", twice the spread {2 * dsd:.3f}: {'above' if abs(statistics.fmean(d)) > 2 * dsd else 'within'}"
            else:
                line += ": one seed, no spread, no verdict"
        lines.append(line)
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="phantom", help="phantom (default) or a folder with one sub-folder per class")
    p.add_argument("--severity", default="0.25-0.6", help="phantoms: LO-HI within (0, 1] (default 0.25-0.6)")
    p.add_argument("--sizes", type=ints, default=[100, 200], help="real training images n (default 100,200)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--size", type=int, default=64, help="image side in px (default 64)")
    p.add_argument("--gan-steps", type=int, default=12000, help="the GAN's most steps (default 12000)")
    p.add_argument("--target", type=float, default=0.85, help="stop the GAN at the first check where the judge "
                   "calls this share of its images their class (default 0.85; 0: train --gan-steps)")
    p.add_argument("--check-every", type=int, default=1000, help="steps between the judge's checks (default 1000)")
    p.add_argument("--clf-steps", type=int, default=1000)
    p.add_argument("--ks", type=ints, default=[1, 3, 10], help="synthetic images per real one (default 1,3,10)")
    p.add_argument("--extra", type=ints, default=[1, 3], help="extra real images per real one (default 1,3)")
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--judge-n", type=int, default=5000)
    p.add_argument("--judge-steps", type=int, default=3000)
    p.add_argument("--n-val", type=int, default=500, help="images the judge picks its best checkpoint on")
    p.add_argument("--min-consistency", type=float, default=0.8)
    p.add_argument("--split-seed", type=int, default=0, help="a folder: the shuffle that cuts it into parts")
    p.add_argument("--patient-regex", help="a folder: the patient of a file, from its name (the first group, or the "
                   "whole match), so one patient's films stay in one part; default: one patient per image")
    p.add_argument("--out", help="keep each GAN's checkpoints in OUT/n<n>-seed<s> (a stopped study resumes a seed's "
                                 "GAN from there; default: a temporary folder, removed after the seed)")
    p.add_argument("--json", help="write every figure here")
    p.add_argument("--quick", action="store_true", help="tiny sizes and steps: checks that it runs")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.seeds, args.size, args.gan_steps, args.clf_steps = [8], 2, 32, 2, 3
        args.check_every = 1
        args.ks, args.extra, args.n_test, args.judge_n, args.judge_steps, args.n_val = [1, 2], [1], 40, 40, 3, 20
    config.set_threads()
    try:
        if args.data == "phantom":
            parts = phantom_sets(args, check_severity(tuple(float(v) for v in args.severity.split("-"))))
        else:
            parts = folder_sets(args)
    except (CxrError, ValueError) as e:
        raise SystemExit(f"error: {e}") from None
    judge_set, val, test, draw = parts
    t0 = time.perf_counter()
    judge = classifier.train_classifier(judge_set, steps=args.judge_steps, seed=0, val=val)
    j = classifier.evaluate_classifier(judge, test)
    print(f"judge: {len(judge_set)} real images, {args.judge_steps} steps · on the test set AUC {j['auc']:.3f}, "
          f"accuracy {j['accuracy']:.3f} (" + ", ".join(f"{c} {v:.3f}" for c, v in j["per_class_accuracy"].items())
          + "; validation AUC by step: " + " ".join(f"{h['step']}: {h['auc']:.3f}" for h in judge.val_history)
          + f") ({time.perf_counter() - t0:.0f} s)", flush=True)
    arms = experiments.utility_arms(args.ks, args.extra)
    results = {n: [] for n in args.sizes}
    for seed in range(args.seeds):
        for n in args.sizes:
            drawn = draw(seed, n * (1 + max(args.extra, default=0)))
            out = Path(args.out) / f"n{n}-seed{seed}" if args.out else Path(tempfile.mkdtemp()) / "gan"
            try:
                r = experiments.utility_study(drawn.subset(range(n)), test, judge=judge, gan_steps=args.gan_steps,
                                              pool=drawn.subset(range(n, len(drawn))), ks=args.ks, extra=args.extra,
                                              clf_steps=args.clf_steps, seed=seed,
                                              min_consistency=args.min_consistency, check_every=args.check_every,
                                              target=args.target or None, out=out)
            finally:
                if not args.out:
                    shutil.rmtree(out.parent, ignore_errors=True)
            results[n].append(r)
            print(f"n={n} seed {seed} ({r['seconds']:.0f} s): GAN {r['gan_steps']} steps, consistency {r['consistency']['GAN']:.3f} "
                  f"(judge on real {r['consistency']['real']:.3f}){'' if r['usable'] else ' NOT USABLE'} · "
                  f"flagged copies {r['memorisation']['GAN']:.3f} (held-out {r['memorisation']['held-out']:.3f}) · "
                  + " · ".join(f"{a} {v:.3f}" for a, v in r["arms"].items()), flush=True)
    for n, runs in results.items():
        for metric in ("arms", "sensitivity"):
            print(f"\nn = {n}, {'ROC-AUC' if metric == 'arms' else 'sensitivity at 90 % specificity'}:")
            print("\n".join(summary(runs, arms, metric)))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": {k: v for k, v in vars(args).items()}, "judge": j,
                                               "results": {str(n): v for n, v in results.items()}}, indent=1,
                                              default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
