"""How the conditional generator should read its class: e(y) beside z, class-conditional BatchNorm, or both.

    python benchmarks/conditional_variants.py                       # 800 steps per variant at 32 px (≈ 6 min)
    python benchmarks/conditional_variants.py --steps 1600 --variant '{"class_dim": 0, "class_norm": true}'

Each variant (``model_kwargs`` of ``models.build_models``) trains the conditional ``course`` recipe on 1,000
32-px phantoms (seed 0), then 300 EMA samples per class are scored against 600 held-out phantoms of that class
(seed 1): the share a ``cxrlib.classifier`` trained on 1,000 other real phantoms (seed 7) calls their own class,
per-class SWD ×10³, and MS-SSIM diversity (higher = more alike; real phantoms ≈ 0.75). One training seed per
variant: a screening run, not a verdict (RESULTS.md says what it was used for).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cxrlib import classifier, metrics  # noqa: E402
from cxrlib.config import make_config  # noqa: E402
from cxrlib.data import load_dataset  # noqa: E402
from cxrlib.train import Trainer  # noqa: E402

DEFAULT_VARIANTS = ['{"class_dim": 64, "class_norm": false}', '{"class_dim": 0, "class_norm": true}']


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--variant", action="append", help="model_kwargs as JSON (repeatable)")
    args = p.parse_args(argv)
    size = args.size
    train = load_dataset("phantom", size=size, n=1000, seed=0)
    test = load_dataset("phantom", size=size, n=600, seed=1)
    clf = classifier.train_classifier(load_dataset("phantom", size=size, n=1000, seed=7), steps=300, seed=0)
    print(f"classifier ROC-AUC on held-out real: {classifier.evaluate_classifier(clf, test)['auc']:.3f}")
    print(f"real diversity {metrics.diversity(test.images, 300):.3f}")
    for text in args.variant or DEFAULT_VARIANTS:
        kw = json.loads(text)
        t0 = time.perf_counter()
        cfg = make_config("course", size=size, steps=args.steps, family="conditional", model_kwargs=kw,
                          log_every=100, sample_every=10**9, checkpoint_every=10**9)
        t = Trainer(cfg, train)
        t.fit(progress=False)
        cells = []
        for c, name in enumerate(t.cfg.classes):
            x = t.sample(300, seed=5, label=c)
            cells.append(f"{name}: own class {classifier.class_consistency(clf, x, c)['overall']:.0%} · "
                         f"SWD {metrics.swd(test.images[test.labels == c], x)['avg']:.1f} · "
                         f"diversity {metrics.diversity(x, 300):.3f}")
        print(f"{text} ({args.steps} steps, {time.perf_counter() - t0:.0f} s): " + " | ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
