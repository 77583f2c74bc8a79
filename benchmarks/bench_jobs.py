"""Parts in parallel: is a 2-core CPU's results bank faster as two single-thread trainings at once
(``python -m cxrlib.lessons run --jobs 2``) than as one training at a time on both cores?

    python benchmarks/bench_jobs.py                 # the course GAN at 64 px, 150 steps per run (≈ 6 min on 2 cores)
    python benchmarks/bench_jobs.py --quick         # seconds: checks that it runs

Each arm runs in fresh processes: **in turn** — ``cores`` trainings one after the other, each with ``cores``
threads; **at once** — ``cores`` trainings side by side, one thread each. Both do the same work (``cores`` × the
steps), so the ratio of their training times is the speed-up of ``--jobs cores`` (the children time their own
steps after 5 warm-up steps: process starts are left out; at once, the slower child counts). The arms alternate for
``--rounds`` rounds, so both see the same machine; every time and the ratio per round are printed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def child(threads: int, steps: int, size: int) -> None:
    from cxrlib import config
    from cxrlib.train import throughput

    config.set_threads(threads)
    r = throughput("course", size=size, steps=steps, warmup=5)
    print(f"{r['ms_per_step']:.1f}", flush=True)


def arm(cores: int, threads: int, at_once: bool, steps: int, size: int) -> float:
    """Seconds of training (process starts and warm-up steps left out): in turn, their sum; at once, the
    slowest of the simultaneous ones."""
    cmd = [sys.executable, __file__, "--child", str(threads), "--steps", str(steps), "--size", str(size)]
    env = {**os.environ, "CXRLIB_THREADS": str(threads)}
    if at_once:
        procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(cores)]
        outs = [p.communicate()[0] for p in procs]
        if any(p.returncode for p in procs):
            raise SystemExit(f"a training failed (exit codes {[p.returncode for p in procs]})")
        ms = [float(out.split()[-1]) for out in outs]
        return max(ms) * steps / 1000
    ms = [float(subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True).stdout.split()[-1])
          for _ in range(cores)]
    return sum(ms) * steps / 1000


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150, help="timed steps per training (default 150)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.steps, args.size)
        return 0
    if args.quick:
        args.steps, args.size, args.rounds = 3, 32, 1
    from cxrlib import config

    cores = config.cpu_cores()
    print(f"{config.cpu_model()} · {cores} cores · course GAN {args.size} px · {cores} trainings of {args.steps} steps")
    for r in range(args.rounds):
        turn = arm(cores, cores, False, args.steps, args.size)
        once = arm(cores, 1, True, args.steps, args.size)
        print(f"round {r + 1}: in turn ({cores} threads each) {turn:.1f} s · at once (1 thread each) {once:.1f} s · "
              f"speed-up {turn / once:.2f}×", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
