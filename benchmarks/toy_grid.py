"""Notebook 04's trick × seed grid and notebook 02's data-volume grid on the 8-Gaussian ring, with timings.

    python benchmarks/toy_grid.py                    # both grids, 4 seeds, 2,000 / 3,000 steps per run
    python benchmarks/toy_grid.py --first-seed 4     # the same grids with fresh seeds: do the verdicts survive?
    python benchmarks/toy_grid.py --json out.json    # also write the numbers

Prints each grid's table (mean ± seed-to-seed std, differences against twice the spread) and its wall-clock, so
the figures in benchmarks/RESULTS.md can be reproduced. The recipes are those of the notebooks
(``cxrlib.toy.TRICK_VARIANTS`` and ``cxrlib.toy.DATA_VOLUME_VARIANTS``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from cxrlib import toy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--only", choices=("tricks", "data"), help="run one grid only")
    ap.add_argument("--json", help="write the numbers to this file")
    args = ap.parse_args()
    print(f"torch {torch.__version__} · {platform.processor() or platform.machine()} · "
          f"seeds {args.first_seed}–{args.first_seed + args.seeds - 1}")
    out = {}
    grids = {"tricks": toy.trick_variants(), "data": toy.data_volume_variants()}
    for name, variants in grids.items():
        if args.only and args.only != name:
            continue
        t0 = time.perf_counter()
        results = toy.grid(variants, seeds=args.seeds, first_seed=args.first_seed)
        seconds = time.perf_counter() - t0
        print(f"\n== {name} grid: {len(variants)} recipes × {args.seeds} seeds in {seconds:.1f} s")
        if name == "tricks":
            print(toy.grid_table(results))
            print(toy.conclusions(results))
        else:
            print(toy.data_volume_table(results))
        out[name] = {"seconds": seconds, "recipes": {
            k: {"modes_covered": r.modes_covered.tolist(), "good_share": r.good_share.tolist(),
                "distance": r.distance.tolist(),
                "copied_share": None if r.copied_share is None else r.copied_share.tolist()}
            for k, r in results.items()}}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
