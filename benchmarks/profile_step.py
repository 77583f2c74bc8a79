"""Where the time of one training step goes: each trick switched off in turn, and the ops that dominate.

    python benchmarks/profile_step.py                      # course, 64 px, batch 32 (about 2 minutes on 2 cores)
    python benchmarks/profile_step.py --threads 1 --ops    # one thread, plus torch.profiler's top ops
    python benchmarks/profile_step.py --quick              # seconds: checks that it runs

Each variant builds a ``Trainer`` on random uint8 images (no data loading in the way), runs ``--warmup`` untimed
steps and then ``--steps`` timed ones. The variants run one after another in one process, so run this on a quiet
machine and compare rows of the same run only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cxrlib import config  # noqa: E402
from cxrlib.config import make_config  # noqa: E402
from cxrlib.train import Trainer  # noqa: E402

VARIANTS = {
    "as shipped": {},
    "without lazy R1": {"r1_gamma": 0.0},
    "without DiffAugment/ADA": {"augment": "", "ada": False},
    "without EMA": {"ema_half_life_kimg": 0.0},
    "without R1, augmentation, EMA": {"r1_gamma": 0.0, "augment": "", "ada": False, "ema_half_life_kimg": 0.0},
    "channels_last off": {"channels_last": False},
}


def time_steps(trainer: Trainer, warmup: int, steps: int) -> float:
    """Seconds per ``train_step`` after ``warmup`` untimed steps."""
    for _ in range(warmup):
        trainer.train_step()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    return (time.perf_counter() - t0) / steps


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="course")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, help="default: the preset's")
    ap.add_argument("--steps", type=int, default=15, help="timed steps per variant (default 15)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    ap.add_argument("--threads", type=int, help="torch threads (default: usable cores)")
    ap.add_argument("--ops", action="store_true", help="also print torch.profiler's top ops of the shipped step")
    ap.add_argument("--quick", action="store_true", help="32 px, batch 8, 2 steps: a functional check")
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.batch, args.steps, args.warmup = 32, 8, 2, 1
    threads = config.set_threads(args.threads)
    if args.threads:  # the Trainer calls config.set_threads() again: keep this number
        os.environ["CXRLIB_THREADS"] = str(args.threads)
    images = torch.randint(0, 256, (256, 1, args.size, args.size), dtype=torch.uint8)
    base = {"size": args.size, "steps": None, "minutes": 60.0, **({"batch": args.batch} if args.batch else {})}
    print(f"# {args.preset}, {args.size} px, {threads} threads, load {os.getloadavg()[0]:.1f}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print(f"{'variant':<32} {'ms/step':>8} {'images/s':>9}")
    shipped = None
    for name, changes in VARIANTS.items():
        trainer = Trainer(make_config(args.preset, **base, **changes), images)
        dt = time_steps(trainer, args.warmup, args.steps)
        print(f"{name:<32} {1000 * dt:>8.0f} {trainer.cfg.batch / dt:>9.1f}", flush=True)
        shipped = shipped or trainer
    if args.ops:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            time_steps(shipped, 0, max(1, args.steps // 3))
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
