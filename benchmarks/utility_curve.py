"""The utility task's learning curve: ROC-AUC of the course's small classifier vs the number of real images.

    python benchmarks/utility_curve.py                                   # the utility task: 0.25-0.6, 1,000 steps
    python benchmarks/utility_curve.py --severity 0.4-0.8 --steps 300 --sizes 50,100,200 --seeds 5
    python benchmarks/utility_curve.py --severity 1                      # today's phantoms: no headroom (AUC ≈ 1)
    python benchmarks/utility_curve.py --quick                           # seconds: checks that it runs
    python benchmarks/utility_curve.py --figure docs/mild_pneumonia.png --sizes 0   # only the figure

``--figure``: 8 ill patients at the range's mildest severity beside the same patients healthy and at the
default severity, with the lung mask (green) and the finding (red: where the ill film is brighter than the same
patient's healthy one by ``cxrlib.viz.FINDING_LEVELS`` grey levels or more; pneumonia has its own random stream, so
``pneumonia_fraction=0`` gives the same patients healthy).

The task: pneumonia vs normal on phantoms whose ill images draw their severity from ``--severity`` (a share of
the default patch area and density, ``cxrlib.phantom``). For each seed s the training pool is the first
max(sizes) phantoms of seed 100 + s (every prefix is class-balanced, so the size-n set is the first n: nested
sets, one patient draw per seed); ``cxrlib.classifier.train_classifier`` (``--steps``, default 1,000: the
utility study's classifier; augmentation on; seed s) trains on the first n, and ROC-AUC is scored on one held-out test set of other patients (``--n-test``
phantoms of seed 1 at the same severity) that no size or seed trains on. Prints every run and mean ± std
(sample std over seeds) per n, and a Markdown table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cxrlib import config  # noqa: E402
from cxrlib.classifier import evaluate_classifier, train_classifier  # noqa: E402
from cxrlib.data import load_dataset  # noqa: E402
from cxrlib.phantom import check_severity  # noqa: E402


def parse_severity(text: str):
    parts = text.split("-")
    try:
        return check_severity(tuple(float(v) for v in parts) if len(parts) == 2 else float(text))
    except ValueError:
        raise SystemExit(f"error: --severity must be LO-HI or one number in (0, 1], got {text!r}") from None


def mild_cases_figure(path, severity, size: int) -> None:
    """``--figure``: ``cxrlib.viz.mild_cases`` saved as a 256-colour PNG (greys, green and red: under 200 KB)."""
    import io

    from PIL import Image

    from cxrlib.viz import mild_cases

    buf = io.BytesIO()
    mild_cases(severity, size).savefig(buf, format="png", dpi=80)
    buf.seek(0)
    Image.open(buf).convert("RGB").quantize(256).save(path, optimize=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--severity", default="0.25-0.6",
                   help="LO-HI within (0, 1] (default 0.25-0.6: the utility study's task)")
    p.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")], default=[50, 100, 200, 500, 2000])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--size", type=int, default=64, help="image side in px (default 64)")
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--steps", type=int, default=1000, help="classifier steps (default 1000, as the utility study's)")
    p.add_argument("--json", help="write every figure here")
    p.add_argument("--figure", help="save the mild-cases figure here (a .png)")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.seeds, args.size, args.n_test, args.steps = [8, 16], 2, 32, 40, 3
    severity = parse_severity(args.severity)
    config.set_threads()
    if args.figure:
        mild_cases_figure(args.figure, severity or (1.0, 1.0), args.size)
        print(f"saved {args.figure}")
    args.sizes = [n for n in args.sizes if n > 0]
    if not args.sizes:
        return 0
    test = load_dataset("phantom", size=args.size, n=args.n_test, seed=1, severity=severity)
    runs = {n: [] for n in args.sizes}
    for seed in range(args.seeds):
        pool = load_dataset("phantom", size=args.size, n=max(args.sizes), seed=100 + seed, severity=severity)
        for n in args.sizes:
            t0 = time.perf_counter()
            model = train_classifier(pool.subset(list(range(n))), seed=seed, steps=args.steps)
            auc = evaluate_classifier(model, test)["auc"]
            runs[n].append(auc)
            print(f"n={n} seed {seed}: AUC {auc:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    sev = f"{severity[0]:g}-{severity[1]:g}" if severity else "default"
    print(f"\n| real images | ROC-AUC (mean ± std, {args.seeds} seeds) | per seed |\n|---:|---|---|")
    for n, v in runs.items():
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        print(f"| {n:,} | {statistics.fmean(v):.3f} ± {sd:.3f} | {' · '.join(f'{a:.3f}' for a in v)} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"severity": sev, "size": args.size, "n_test": args.n_test,
                                               "auc": {str(k): v for k, v in runs.items()}}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
