"""The course step's FLOP rate against the dcgan step's, measured in one process (issue 10's goal: course ≥ dcgan).

    python benchmarks/flop_rate.py            # 64 px, batch 32, bf16 autocast where the CPU has it, then fp32

Interleaves dcgan / course / dcgan / course so both see the same machine; FLOPs per step from
``models.flops_per_image`` (forward + backward of a training step, the whole batch).
"""

from __future__ import annotations

import argparse

import torch

from cxrlib import models
from cxrlib.train import throughput


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{'amp':>4} {'preset':<7} {'dtype':>8} {'ms/step':>8} {'GFLOP/step':>11} {'GFLOP/s':>8}")
    for amp in ("auto", "off"):
        rate = {}
        for preset in ("dcgan", "course", "dcgan", "course"):
            r = throughput(preset, size=args.size, batch=args.batch, steps=args.steps, warmup=2, amp=amp)
            G, D = models.build_models(preset, args.size)
            flops = models.flops_per_image(G, D, args.size)["train_step"] * args.batch
            rate.setdefault(preset, []).append(flops / (r["ms_per_step"] / 1000) / 1e9)
            print(f"{amp:>4} {preset:<7} {r['amp']:>8} {r['ms_per_step']:>8.0f} {flops / 1e9:>11.1f} "
                  f"{rate[preset][-1]:>8.1f}", flush=True)
        ratio = [c / d for c, d in zip(rate["course"], rate["dcgan"])]
        print(f"{amp}: course / dcgan FLOP rate {min(ratio):.2f}–{max(ratio):.2f}")


if __name__ == "__main__":
    main()
