"""The course step's FLOP rate against the dcgan step's, measured in one process (issue 10's goal: course ≥ dcgan).

    python benchmarks/flop_rate.py            # 64 px, batch 32, bf16 autocast where the CPU has it, then fp32
    python benchmarks/flop_rate.py --widths   # also wider / reshaped course networks: does width buy FLOP rate?

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
    ap.add_argument("--widths", action="store_true", help="then course variants with more channels (amp auto)")
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
    if args.widths:
        print(f"\n{'preset':<7} {'model_kwargs':<40} {'ms/step':>8} {'GFLOP/step':>11} {'GFLOP/s':>8}")
        for preset, kw in VARIANTS:
            r = throughput(preset, size=args.size, batch=args.batch, steps=args.steps, warmup=2, model_kwargs=kw)
            G, D = models.build_models(preset, args.size, **kw)
            flops = models.flops_per_image(G, D, args.size)["train_step"] * args.batch
            print(f"{preset:<7} {str(kw):<40} {r['ms_per_step']:>8.0f} {flops / 1e9:>11.1f} "
                  f"{flops / (r['ms_per_step'] / 1000) / 1e9:>8.1f}", flush=True)


# the course networks with more channels (ch_out: channels at full size, doubling per halving up to ch_max)
VARIANTS = [("dcgan", {}), ("course", {}), ("course", {"ch_out": 24}), ("course", {"ch_out": 32}),
            ("course", {"ch_out": 32, "ch_max": 256}), ("course", {"ch_out": 32, "convs_per_block": 1}),
            ("dcgan", {}), ("course", {})]


if __name__ == "__main__":
    main()
