"""Time and peak memory of ``cxrlib.metrics.evaluate`` on phantoms (target: 2,000 vs 2,000 at 64 px in ≤ 60 s
and ≤ 2 GB on a 2-core CPU).

    python benchmarks/bench_metrics.py            # 2,000 real vs 2,000 fake (+ 2,000 train), 64 px
    python benchmarks/bench_metrics.py --quick    # 200 vs 200: checks the script works

Prints wall time, CPU time (user + system of this process: less sensitive to a busy machine than wall time)
and peak resident memory, per metric and in total, as one JSON line last. Run it on a quiet machine: two busy
processes on two cores slow each other several times.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return kb / 1024 / (1024 if sys.platform == "darwin" else 1)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000, help="images per set (default 2000)")
    p.add_argument("--size", type=int, default=64, help="image side in px (default 64)")
    p.add_argument("--quick", action="store_true", help="200 images per set: a smoke check of the script")
    p.add_argument("--no-train", action="store_true", help="leave out the memorisation audit")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: usable cores)")
    args = p.parse_args(argv)
    n = 200 if args.quick else args.n

    import torch

    from cxrlib.config import set_threads
    from cxrlib.data import load_dataset
    from cxrlib.metrics import evaluate

    threads = set_threads(args.threads)
    # real and train from one phantom stream, fakes from another seed: the audit sees fresh images.
    # load_dataset caches the phantoms (generating 6,000 takes minutes), so only the first run pays for them.
    pool = load_dataset("phantom", args.size, n=2 * n, seed=0).images
    real, train = pool[:n], pool[n:]
    fake = load_dataset("phantom", args.size, n=n, seed=1).images
    rss_data = _peak_rss_mb()

    t0, c0 = time.perf_counter(), _cpu_seconds()
    result = evaluate(real, fake, None if args.no_train else train, seed=0)
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0

    for name, s in result["seconds"].items():
        print(f"  {name:<20} {s:7.2f} s")
    print(f"evaluate {n} vs {n} at {args.size} px: {wall:.1f} s wall, {cpu:.1f} s CPU, "
          f"peak RSS {_peak_rss_mb():.0f} MB (data alone {rss_data:.0f} MB), {threads} torch threads")
    figures = {
        "n": n, "size": args.size, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
        "peak_rss_mb": round(_peak_rss_mb()), "threads": threads, "torch": torch.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "per_metric_s": result["seconds"],
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
