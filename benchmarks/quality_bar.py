"""The quality bar: the ``course`` recipe against a plain DCGAN, same images, same wall-clock.

    python benchmarks/quality_bar.py                 # 10 minutes each on 64-px phantoms (≈ 20 min)
    python benchmarks/quality_bar.py --minutes 2     # a tuning run
    python benchmarks/quality_bar.py --quick         # seconds: checks that it runs
    python benchmarks/quality_bar.py --variant a:course --variant b:course:'r1_gamma=1;augment=translation,cutout'

Each variant (default: ``course`` and ``dcgan``) trains on the same 64-px phantoms (1,000, seed 0) for the
same wall-clock. The variants train *interleaved* in one process -- a few seconds of one, then of the next,
each charged only for its own time -- so a busy shared machine slows them all alike. Then 1,000 samples
(EMA generator when the recipe has one, else G) are compared with 1,000 held-out phantoms (seed 1) by the
sliced Wasserstein distance (``cxrlib.metrics.swd``, ×10³, average over the pyramid levels). For a generator
without EMA the better of eval-mode and train-mode BatchNorm sampling is kept (generous to DCGAN).

Goal: SWD(course) ≤ 0.5 × SWD(dcgan). ``--amp`` compares bf16 with fp32 for the first variant (quality must
hold with bf16).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cxrlib import config, metrics  # noqa: E402
from cxrlib.config import make_config  # noqa: E402
from cxrlib.data import load_dataset  # noqa: E402
from cxrlib.train import Trainer, to_uint8  # noqa: E402


def parse_variant(text: str, size: int, quick: bool):
    """``name:preset[:key=value;key=value]`` → (name, TrainConfig); values are JSON when they parse."""
    parts = text.split(":", 2)
    name, preset = parts[0], parts[1] if len(parts) > 1 else parts[0]
    overrides = {}
    if len(parts) > 2 and parts[2]:
        for pair in parts[2].split(";"):
            k, _, v = pair.partition("=")
            try:
                overrides[k] = json.loads(v)
            except ValueError:
                overrides[k] = v
    if quick:
        overrides.setdefault("batch", 8)
    return name, make_config(preset, size=size, steps=10**9, **overrides)


def phantoms(size: int, n: int, seed: int) -> torch.Tensor:
    """n phantoms (uint8 (n, 1, size, size)), cached under the cxrlib cache folder between runs."""
    path = config.cache_dir() / "quality_bar" / f"phantoms_{size}px_{n}_seed{seed}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    images = load_dataset("phantom", size=size, n=n, seed=seed).images
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(images, tmp)
    os.replace(tmp, path)
    return images


@torch.no_grad()
def samples(trainer: Trainer, n: int, train_mode_bn: bool = False) -> torch.Tensor:
    """n uint8 samples; EMA generator when there is one, else G (eval-mode or train-mode BatchNorm)."""
    if not train_mode_bn:
        return trainer.sample(n, seed=123)
    g = torch.Generator().manual_seed(123)
    trainer.G.train()
    out = [to_uint8(trainer.G(torch.randn(64, trainer.z_dim, generator=g).to(trainer.device))).cpu()
           for _ in range((n + 63) // 64)]
    return torch.cat(out)[:n]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="training wall-clock per variant (default 10)")
    ap.add_argument("--variant", action="append", help="name:preset[:key=value;...] (default course and dcgan)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--n-eval", type=int, default=1000)
    ap.add_argument("--chunk", type=float, default=5.0, help="seconds per interleaved turn")
    ap.add_argument("--amp", action="store_true", help="also train the first variant with amp='off' (fp32) "
                    "and amp='bf16' to show whether bf16 keeps quality")
    ap.add_argument("--out", help="folder for sample grids and results.json")
    ap.add_argument("--quick", action="store_true", help="tiny: 32 px, 64 images, a few seconds")
    ap.add_argument("--threads", type=int, help="torch threads (default: all cores; 1 on a crowded machine)")
    args = ap.parse_args(argv)
    if args.quick:
        args.size, args.n_train, args.n_eval, args.minutes, args.chunk = 32, 64, 64, min(args.minutes, 0.1), 1.0
    if args.threads:  # the Trainer calls config.set_threads(); make it keep this number
        config.set_threads = lambda n=None, k=args.threads: torch.set_num_threads(k) or k
    config.set_threads()

    variants = [parse_variant(v, args.size, args.quick) for v in (args.variant or ["course:course", "dcgan:dcgan"])]
    if args.amp:
        name, cfg = variants[0]
        variants += [(f"{name}-fp32", cfg.replace(amp="off")), (f"{name}-bf16", cfg.replace(amp="bf16"))]
    train = phantoms(args.size, args.n_train, seed=0)
    heldout = phantoms(args.size, args.n_eval, seed=1)
    print(f"# {len(train)} training phantoms, {len(heldout)} held-out, {args.size}px, {args.minutes:g} min each, "
          f"{config.cpu_cores()} cores, load {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    floor = metrics.swd_floor(heldout)["avg"]
    print(f"# SWD floor (two halves of the held-out set): {floor:.2f}", flush=True)

    trainers = {name: Trainer(cfg, train) for name, cfg in variants}
    spent = dict.fromkeys(trainers, 0.0)
    budget = 60.0 * args.minutes
    while min(spent.values()) < budget:
        name = min(spent, key=spent.get)  # whoever is furthest behind gets the next turn
        t, t0 = trainers[name], time.perf_counter()
        turn = min(args.chunk, budget - spent[name])
        while time.perf_counter() - t0 < turn:
            t.train_step()
        spent[name] += time.perf_counter() - t0

    results = {}
    for name, t in trainers.items():
        fakes = {"eval": samples(t, args.n_eval)}
        if t.ema is None:
            fakes["train-mode BN"] = samples(t, args.n_eval, train_mode_bn=True)
        scored = {mode: metrics.swd(heldout, f) for mode, f in fakes.items()}
        mode = min(scored, key=lambda m: scored[m]["avg"])
        results[name] = {"preset": t.cfg.preset, "amp": str(t.amp_dtype or "fp32"), "steps": t.step,
                         "images_seen": t.images_seen, "seconds": round(spent[name], 1), "sampling": mode,
                         "swd": scored[mode], "config": t.cfg.to_dict()}
        r = results[name]
        levels = " ".join(f"{k}={v:.1f}" for k, v in r["swd"].items() if k != "avg")
        print(f"{name:<14} {r['preset']:<7} {r['amp']:<15} {r['steps']:>6} steps {r['images_seen'] / 1000:>7.1f} kimg "
              f"SWD {r['swd']['avg']:7.2f} ({levels}; {mode})", flush=True)
        if args.out:
            from torchvision.utils import save_image

            Path(args.out).mkdir(parents=True, exist_ok=True)
            save_image(fakes[mode][:64].float() / 255, Path(args.out) / f"{name}.png", nrow=8)
    names = list(results)
    if "course" in results and "dcgan" in results:
        ratio = results["course"]["swd"]["avg"] / results["dcgan"]["swd"]["avg"]
        print(f"course / dcgan SWD = {ratio:.2f} (goal ≤ 0.5: {'met' if ratio <= 0.5 else 'NOT met'})")
    elif len(names) > 1:
        base = results[names[-1]]["swd"]["avg"]
        print("relative to " + names[-1] + ": " + ", ".join(f"{n} {results[n]['swd']['avg'] / base:.2f}" for n in names))
    print(f"# load at the end {os.getloadavg()[0]:.1f}")
    if args.out:
        (Path(args.out) / "results.json").write_text(json.dumps({"floor": floor, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
