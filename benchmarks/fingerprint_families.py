"""A fingerprint of a few training steps of every GAN family, to show a refactoring of the engine changes nothing.

    python benchmarks/fingerprint_families.py            # one line per case: its hashes
    python benchmarks/fingerprint_families.py --json F   # also write them to F (compare two with diff)

Each case trains a tiny run (32 px, width 0.25, batch 4, CPU, fp32) for 6 steps into a temporary run folder
(a log line every step, samples and a periodic checkpoint every 3), then hashes what a refactoring of the engine
must not change: the state dict (weights, EMA, optimiser moments, counters, every random stream, ADA, the
family's own state: all of it but the wall-clock ``seconds``), the log (without its timings), the sample grids'
PNG bytes, the EMA's beta of every update, ``images_seen`` / ``d_updates``, and a run resumed from the step-3
checkpoint to step 6 (its state must hash as the straight run's) and a 2-step ``Trainer.finetune`` of it.
The cases cover the four families: unconditional with ``d_steps_per_g_step=2``, conditional, Pix2Pix
(and its L1-only ``gan_weight=0``), CycleGAN; the image-to-image ones with an EMA switched on, so its betas
depend on when images are counted. The hashes are of one machine's arithmetic: compare runs on one machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's cxrlib, not an installed one

import cxrlib  # noqa: E402
from cxrlib import config  # noqa: E402
from cxrlib.config import make_config  # noqa: E402
from cxrlib.data import load_dataset  # noqa: E402
from cxrlib.gan import ema as gan_ema  # noqa: E402
from cxrlib.train import Trainer  # noqa: E402

BASE = dict(size=32, width=0.25, batch=4, steps=6, amp="off", device="cpu", log_every=1, sample_every=3,
            checkpoint_every=3, compile=False)
CASES = {
    "unconditional-d2": ("course", dict(d_steps_per_g_step=2, r1_gamma=1.0, reg_every=2)),
    "conditional": ("course", dict(family="conditional")),
    "pix2pix": ("pix2pix", dict(ema_half_life_kimg=0.01, ema_rampup=0.5)),
    "pix2pix-l1only": ("pix2pix", dict(gan_weight=0.0, ema_half_life_kimg=0.01)),
    "cyclegan": ("cyclegan", dict(pool_size=3, ema_half_life_kimg=0.01, ema_rampup=0.5)),
}
TIMINGS = ("seconds", "images_per_s")


def digest(obj) -> str:
    """sha256 (12 hex digits) of a nest of dicts, lists, tensors and plain values, tensors by their bytes."""
    h = hashlib.sha256()

    def feed(x):
        if isinstance(x, torch.Tensor):
            h.update(f"T{x.dtype}{tuple(x.shape)}".encode())
            h.update(x.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(x, dict):
            for k in sorted(x, key=str):
                h.update(f"K{k}".encode())
                feed(x[k])
        elif isinstance(x, (list, tuple)):
            h.update(f"L{len(x)}".encode())
            for v in x:
                feed(v)
        else:
            h.update(f"V{x!r}".encode())

    feed(obj)
    return h.hexdigest()[:12]


def state_hash(t: Trainer) -> str:
    state = t.state_dict()
    state.pop("seconds")
    return digest(state)


def case(name: str, preset: str, kw: dict, data) -> dict:
    betas: list[float] = []
    update = gan_ema.EMA.update

    def record(self, G, beta):
        betas.append(beta)
        return update(self, G, beta)

    gan_ema.EMA.update = record
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run = Path(tmp) / "run"
            t = Trainer(make_config(preset, **{**BASE, **kw}), data, out=run)
            t.fit(progress=False)
            log = [{k: v for k, v in json.loads(line).items() if k not in TIMINGS}
                   for line in (run / "log.jsonl").read_text().splitlines()]
            samples = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:12] for p in sorted((run / "samples").glob("*.png"))}
            out = {"images_seen": t.images_seen, "d_updates": t.d_updates, "state": state_hash(t), "log": digest(log),
                   "samples": digest(samples), "betas": digest(betas), "n_betas": len(betas)}
            if t.family.draws_from_z:
                out["sample"] = digest(t.sample(6, seed=5))
            resumed = Trainer.resume(run / "checkpoints" / "step_000003.pt", data, out=Path(tmp) / "resumed")
            resumed.fit(progress=False)
            out["resumed"] = state_hash(resumed)
            out["resume_exact"] = out["resumed"] == out["state"]
            tuned = Trainer.finetune(run, data, out=Path(tmp) / "tuned", steps=2)
            tuned.fit(progress=False)
            out["finetune"] = state_hash(tuned)
            out["finetune_counts"] = [tuned.step, tuned.images_seen, tuned.d_updates]
    finally:
        gan_ema.EMA.update = update
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the fingerprints to this file")
    ap.add_argument("--case", action="append", choices=sorted(CASES), help="only these cases (default: all)")
    args = ap.parse_args(argv)
    config.set_threads(1)
    print(f"cxrlib from {Path(cxrlib.__file__).parent}")  # the checkout being fingerprinted
    pairs = load_dataset("phantom", size=32, n=24, seed=3, masks=True)  # masks for pix2pix, two classes for the rest
    results = {}
    for name in args.case or CASES:
        preset, kw = CASES[name]
        results[name] = r = case(name, preset, kw, pairs)
        print(name, " ".join(f"{k}={v}" for k, v in r.items()), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
