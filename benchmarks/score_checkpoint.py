"""Score a checkpoint as ``quality_bar.py`` scores its runs: SWD ×10³ of 1,000 samples of its EMA generator (z seed
123) against 1,000 held-out 64-px phantoms (seed 1), with the floor (two halves of the held-out set).

    python benchmarks/score_checkpoint.py pretrained            # the shipped generator
    python benchmarks/score_checkpoint.py runs/pretrained       # a run folder or a .pt file
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quality_bar import phantoms  # noqa: E402

from cxrlib import metrics  # noqa: E402
from cxrlib.engine.sampling import draw_images, load_generator  # noqa: E402


@torch.no_grad()
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpt", nargs="+")
    ap.add_argument("--n", type=int, default=1000)
    args = ap.parse_args(argv)
    for ckpt in args.ckpt:
        G, cfg = load_generator(ckpt, device="cpu")
        heldout = phantoms(cfg.size, args.n, seed=1)
        fakes = draw_images(G, args.n, seed=123)
        swd = metrics.swd(heldout, fakes)
        levels = " · ".join(f"{k} {v:.1f}" for k, v in swd.items() if k != "avg")
        print(f"{ckpt}: {cfg.preset}, {cfg.size} px, {cfg.steps} steps, {cfg.model_kwargs or 'default networks'}: "
              f"SWD {swd['avg']:.2f} ({levels}); floor {metrics.swd_floor(heldout)['avg']:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
