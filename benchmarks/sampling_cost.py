"""What a sample costs: seconds per 1,000 images from the course GAN's generator and from the diffusion model
(``cxrlib.diffusion``, a U-Net of about G's parameter count at 64 px) at several DDIM step counts, and one
training step of each, on this machine.

    python benchmarks/sampling_cost.py                          # 64 px; DDIM 10, 50, 250 steps (≈ 5 min, 2 cores)
    python benchmarks/sampling_cost.py --size 256 --device cuda # the GPU recipe's size
    python benchmarks/sampling_cost.py --quick                  # seconds: checks that it runs

Untrained networks (the cost of a pass does not depend on the weights), bf16 autocast where the CPU has it (as
``sample`` uses), ``--n`` images per measurement in calls of ``SAMPLE_BATCH`` (the one ``sample`` makes),
scaled to 1,000. The measurements alternate for ``--rounds`` rounds and the best round counts (the least
disturbed by other processes). Prints seconds per 1,000 images, the ratio to the GAN, parameters, and the training
step of each (``cxrlib.train.throughput``) with its ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cxrlib import config  # noqa: E402
from cxrlib.config import make_config  # noqa: E402
from cxrlib.engine.families import FAMILIES  # noqa: E402
from cxrlib.engine.hardware import amp_dtype  # noqa: E402
from cxrlib.engine.sampling import SAMPLE_BATCH, draw_images  # noqa: E402
from cxrlib.train import throughput  # noqa: E402


def generator(preset: str, size: int, device, steps: int | None = None):
    cfg = make_config(preset, size=size)
    G, _ = FAMILIES[cfg.family].build_models(cfg)
    G = G.to(device).eval().requires_grad_(False)
    if steps is not None:
        G.sampling_steps = steps
    return G, cfg


def seconds_per_1000(G, cfg, n: int, device) -> float:
    dtype = amp_dtype(cfg.amp, device)
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        draw_images(G, min(n, SAMPLE_BATCH))  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        draw_images(G, n)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1000 / n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", default="10,50,250", help="DDIM step counts (each must divide 1,000)")
    ap.add_argument("--n", type=int, default=32, help="images per measurement (default 32: two SAMPLE_BATCH calls)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    ks = [int(k) for k in args.steps.split(",")]
    if args.quick:
        args.size, ks, args.n, args.rounds = 32, [2], 16, 1
    config.set_threads()
    device = config.get_device(args.device)
    arms = {"GAN (course G)": generator("course", args.size, device)}
    arms.update({f"diffusion, {k} DDIM steps": generator("diffusion", args.size, device, k) for k in ks})
    best = {name: float("inf") for name in arms}
    for _ in range(args.rounds):
        for name, (G, cfg) in arms.items():
            best[name] = min(best[name], seconds_per_1000(G, cfg, args.n, device))
    print(f"{config.cpu_model() if device.type == 'cpu' else torch.cuda.get_device_name()} · {device} · "
          f"{torch.get_num_threads()} threads · {args.size} px · best of {args.rounds} rounds of {args.n} images")
    gan = best["GAN (course G)"]
    for name, (G, _) in arms.items():
        params = sum(p.numel() for p in G.parameters())
        print(f"{name:<26} {best[name]:9.2f} s per 1,000 images · {best[name] / gan:7.1f} × the GAN · "
              f"{params / 1e6:.2f} M parameters")
    steps = {p: throughput(p, size=args.size, steps=3 if args.quick else 20, warmup=2 if args.quick else 5,
                           device=args.device)["ms_per_step"] for p in ("course", "diffusion")}
    print(f"training step, batch 32: GAN {steps['course']:.0f} ms (D and G) · diffusion {steps['diffusion']:.0f} ms "
          f"· {steps['diffusion'] / steps['course']:.2f} × the GAN")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
