"""The course step's FLOP rate against the dcgan step's, measured in one process (issue 10's goal: course ≥ dcgan).

    python benchmarks/flop_rate.py            # 64 px, batch 32, bf16 autocast where the CPU has it, then fp32
    python benchmarks/flop_rate.py --widths   # also wider / reshaped course networks: does width buy FLOP rate?
    python benchmarks/flop_rate.py --split    # then where each step's time goes: convolutions vs everything else
    python benchmarks/flop_rate.py --layers   # course networks with spectral norm / BatchNorm / skips: their cost

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
    ap.add_argument("--layers", action="store_true",
                    help="then the course networks with spectral norm, BatchNorm, skip outputs (amp auto)")
    ap.add_argument("--split", action="store_true",
                    help="then torch.profiler per preset (fp32): convolution time and FLOP rate vs the rest of the step")
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
    for flag, variants in ((args.widths, VARIANTS), (args.layers, LAYER_VARIANTS)):
        if flag:
            print(f"\n{'preset':<7} {'model_kwargs':<40} {'ms/step':>8} {'GFLOP/step':>11} {'GFLOP/s':>8}")
            for preset, kw in variants:
                r = throughput(preset, size=args.size, batch=args.batch, steps=args.steps, warmup=2, model_kwargs=kw)
                G, D = models.build_models(preset, args.size, **kw)
                flops = models.flops_per_image(G, D, args.size)["train_step"] * args.batch
                print(f"{preset:<7} {str(kw):<40} {r['ms_per_step']:>8.0f} {flops / 1e9:>11.1f} "
                      f"{flops / (r['ms_per_step'] / 1000) / 1e9:>8.1f}", flush=True)
    if args.split:
        print(f"\n{'preset':<7} {'step ms':>8} {'conv ms':>8} {'other ms':>9} {'conv GFLOP/s':>13} {'top other ops (ms/step)'}")
        for preset in ("dcgan", "course", "dcgan", "course"):
            split_step(preset, args.size, args.batch, args.steps)


CONV_OPS = ("convolution", "conv2d", "conv_transpose", "mkldnn_conv", "slow_conv")  # forward and backward


def split_step(preset: str, size: int, batch: int, steps: int) -> None:
    """One preset's fp32 step under torch.profiler: self time of the convolution ops (forward and backward)
    against all other ops, and the FLOP rate of the convolutions alone. The profiler adds a few per cent."""
    from torch.profiler import ProfilerActivity, profile

    from cxrlib.train import Trainer, make_config

    cfg = make_config(preset, size=size, batch=batch, steps=steps + 3, amp="off")
    t = Trainer(cfg, torch.randint(0, 256, (max(batch, 64), 1, size, size), dtype=torch.uint8))
    for _ in range(3):
        t.train_step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            t.train_step()
    ops = [(e.key, e.self_cpu_time_total / 1e3 / steps) for e in prof.key_averages()]
    conv = sum(ms for k, ms in ops if any(c in k for c in CONV_OPS))
    total = sum(ms for _, ms in ops)
    G, D = models.build_models(preset, size)
    flops = models.flops_per_image(G, D, size)["train_step"] * batch
    top = sorted(((ms, k.removeprefix("aten::")) for k, ms in ops if not any(c in k for c in CONV_OPS)), reverse=True)
    print(f"{preset:<7} {total:>8.0f} {conv:>8.0f} {total - conv:>9.0f} {flops / (conv / 1000) / 1e9:>13.0f} "
          + ", ".join(f"{k} {ms:.1f}" for ms, k in top[:6]), flush=True)


# the course networks with more channels (ch_out: channels at full size, doubling per halving up to ch_max)
VARIANTS = [("dcgan", {}), ("course", {}), ("course", {"ch_out": 24}), ("course", {"ch_out": 32}),
            ("course", {"ch_out": 32, "ch_max": 256}), ("course", {"ch_out": 32, "convs_per_block": 1}),
            ("dcgan", {}), ("course", {})]
# the course networks with the layers whose per-element work the FLOP count does not see (the same convolutions),
# one at a time and all three (the course's networks before checkpoint version 2, models.LEGACY_NETWORKS)
LAYER_VARIANTS = [("dcgan", {}), ("course", {}), ("course", {"spectral_norm": True}), ("course", {"norm": "batch"}),
                  ("course", {"skips": True}), ("course", models.LEGACY_NETWORKS["course"]),
                  ("dcgan", {}), ("course", {})]


if __name__ == "__main__":
    main()
