"""Phantom generator throughput: images per second at 64, 256 and 512 px on this machine's CPU.

Each size is rendered once to warm up, then timed over whole calls of ``cxrlib.phantom.generate`` (the best
of ``--repeats``). The generator renders chunks of images in parallel, one per usable core, each with one
torch thread; ``--workers`` limits the chunks in flight. The goal is >= 100 images/s at 256 px on a 2-core
laptop; run it on a quiet machine (two busy processes on two cores slow each other several times).

    python benchmarks/bench_phantom.py              # 64/256/512 px, 256/64/16 images, best of 3
    python benchmarks/bench_phantom.py --quick      # a few images per size: checks that it runs
    python benchmarks/bench_phantom.py --sizes 256 --n 128 --workers 1
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cxrlib import phantom  # noqa: E402
from cxrlib.config import cpu_cores  # noqa: E402

DEFAULT_N = {64: 256, 256: 64, 512: 16}


def measure(size: int, n: int, repeats: int, masks: bool = False, workers: int | None = None) -> dict:
    """Best-of-``repeats`` wall-clock and CPU seconds of ``generate(n, size)`` (after one warm-up call)."""
    phantom.generate(min(n, 8), size=size, seed=99, masks=masks, workers=workers)
    best_wall, best_cpu = float("inf"), float("inf")
    for r in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        phantom.generate(n, size=size, seed=r, masks=masks, workers=workers)
        best_wall = min(best_wall, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return {"size": size, "n": n, "seconds": best_wall, "images_per_s": n / best_wall,
            "cpu_ms_per_image": 1000 * best_cpu / n}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 512], help="image sides in px")
    ap.add_argument("--n", type=int, help="images per timed call (default: 256/64/16 for 64/256/512 px)")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per size; the best counts")
    ap.add_argument("--workers", type=int, help="chunks rendered in parallel (default: every usable core)")
    ap.add_argument("--masks", action="store_true", help="also render the anatomy masks")
    ap.add_argument("--quick", action="store_true", help="a few images per size, one timed call")
    args = ap.parse_args(argv)
    workers = args.workers or cpu_cores()
    repeats = 1 if args.quick else args.repeats
    print(f"phantom throughput · {platform.processor() or platform.machine()} · {cpu_cores()} usable cores, "
          f"{workers} workers · "
          f"torch {torch.__version__} · {time.strftime('%Y-%m-%d')}" + (" · masks" if args.masks else ""))
    print()
    print("| size (px) | images | seconds | images/s | CPU ms/image |")
    print("|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        n = args.n or (8 if args.quick else DEFAULT_N.get(size, max(8, 2**22 // size**2)))
        r = measure(size, n, repeats, args.masks, workers)
        print(f"| {size} | {n} | {r['seconds']:.2f} | {r['images_per_s']:.1f} | {r['cpu_ms_per_image']:.1f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
