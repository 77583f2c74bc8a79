"""The image-to-image quality bar (issue 12): Pix2Pix masks → X-ray and CycleGAN normal → pneumonia, 64-px phantoms.

    python benchmarks/image_to_image_bar.py pix2pix --minutes 10 --seeds 0      # L1 + GAN and L1 only, 10 min each
    python benchmarks/image_to_image_bar.py cyclegan --minutes 10               # one CycleGAN, 10 minutes
    python benchmarks/image_to_image_bar.py cyclegan --ckpt runs/cyc            # judge an existing run
    python benchmarks/image_to_image_bar.py pix2pix --quick                     # seconds: checks that it runs

Training data: 1,000 phantoms (``--n-train``; seed 0, half with pneumonia) with their masks. Held out: 200 other
patients (seed 11). Pix2Pix is scored on their (mask, image) pairs against the training mean image, a per-pixel
linear model of the masks, the nearest training anatomy and what an ideal model would answer (another film of the
same masks, and the average of 16 such films: ``translation.evaluate_pix2pix``, ``ideal_translations``); the
*L1 only* arm (``gan_weight=0``) trains for the same wall-clock. CycleGAN translates the 200 held-out patients' normal X-rays and is compared with the
same patients' ill twins (``pneumonia_fraction=1``); the judge is trained here on 2,000 other real phantoms
(seed 7): the course classifier with three seeds (default; the spread over them is reported), or torchvision's
ResNet-18 from scratch (``--judge resnet18``, see ``conditional_bar.py``; ~12 min on a 2-core AVX2 CPU).

Goals: Pix2Pix correlation ≥ 0.88, deviation correlation ≥ 0.3, SWD(L1 + GAN) < SWD(L1 only) at equal time;
CycleGAN ≥ 70 % judged pneumonia, outside-lung L1 ≤ 0.05, lung brightening 0.5–2× the twins'.
Prints a table and writes ``--json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from conditional_bar import judge_proba, train_judge  # noqa: E402

from cxrlib import classifier, config  # noqa: E402
from cxrlib.config import make_config  # noqa: E402
from cxrlib.data import load_dataset  # noqa: E402
from cxrlib.train import Trainer  # noqa: E402
from cxrlib.translation import evaluate_cyclegan, evaluate_pix2pix, ideal_translations, load_translator  # noqa: E402

SIZE, N_TRAIN, N_TEST, TEST_SEED = 64, 1000, 200, 11


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def train(family: str, minutes: float, seed: int, out: Path | None, train_set, **overrides) -> Trainer:
    cfg = make_config(family, size=SIZE, steps=None, minutes=minutes, seed=seed, log_every=50,
                      sample_every=10**9, checkpoint_every=10**9, **overrides)
    t = Trainer(cfg, train_set, out=out)
    t0 = time.perf_counter()
    t.fit(progress=False)
    print(f"  {family} seed {seed} {overrides}: {t.step} steps in {time.perf_counter() - t0:.0f} s", flush=True)
    return t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("family", choices=("pix2pix", "cyclegan"))
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0])
    p.add_argument("--width", type=float, help="network width (default: pix2pix 0.5, cyclegan 0.25)")
    p.add_argument("--ckpt", help="evaluate this run instead of training")
    p.add_argument("--out", help="keep the runs under this folder")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="other config fields (JSON values)")
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--judge", choices=("course", "resnet18"), default="course",
                   help="cyclegan: the independent classifier (default: the course classifier, 3 seeds)")
    p.add_argument("--arms", type=lambda s: s.split(","), default=["gan", "l1"], help="pix2pix: gan, l1 or both")
    p.add_argument("--n-train", type=int, default=N_TRAIN, help=f"training phantoms (default {N_TRAIN:,})")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    n_train, n_test, minutes, judge_steps = args.n_train, N_TEST, args.minutes, 600
    if args.quick:
        n_train, n_test, minutes, judge_steps = 64, 16, 0.05, 3
    width = args.width or (0.5 if args.family == "pix2pix" else 0.25)
    extra = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    config.set_threads()
    flags = open("/proc/cpuinfo").read() if Path("/proc/cpuinfo").exists() else ""
    machine = {"cpu": cpu_model(), "threads": torch.get_num_threads(), "avx512_bf16": "avx512_bf16" in flags,
               "avx512f": "avx512f" in flags, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M")}
    print(machine, flush=True)
    train_set = load_dataset("phantom", size=SIZE, n=n_train, seed=0, masks=True)
    result = {"machine": machine, "minutes": minutes, "width": width, "n_train": n_train, "n_test": n_test, "runs": {}}

    if args.family == "pix2pix":
        test = load_dataset("phantom", size=SIZE, n=n_test, seed=TEST_SEED, masks=True)
        ideal = ideal_translations(n_test, SIZE, TEST_SEED, draws=16)  # what a perfect model would answer
        arms = {"L1 + GAN": {}, "L1 only": {"gan_weight": 0.0}}
        arms = {k: v for k, v in arms.items() if {"L1 + GAN": "gan", "L1 only": "l1"}[k] in args.arms}
        for seed in args.seeds:
            for arm, kw in arms.items():
                if args.ckpt:
                    G, cfg = load_translator(args.ckpt)
                    steps = None
                else:
                    out = Path(args.out) / f"pix2pix_{arm.replace(' ', '').replace('+', '_')}_s{seed}" if args.out else None
                    t = train("pix2pix", minutes, seed, out, train_set, width=width, **kw, **extra)
                    G, cfg, steps = t.G, t.cfg, t.step
                scores = evaluate_pix2pix(G, cfg, test, train_set, extra=ideal)
                scores["steps"] = steps
                result["runs"][f"{arm} seed {seed}"] = scores
                row = scores["pix2pix"]
                print(f"{arm:9s} seed {seed}: corr {row['corr']:.3f} dev_corr {row['dev_corr']:.3f} L1 {row['l1']:.4f} "
                      f"PSNR {row['psnr']:.2f} SSIM {row['ssim']:.3f} SWD {row['swd']:.1f} sharpness {row['sharpness']:.5f}"
                      f" (steps {steps})", flush=True)
                if args.ckpt:
                    break
            if args.ckpt:
                break
        base = next(iter(result["runs"].values()))
        for name in ("mean image", "linear model", "nearest anatomy", *ideal):
            row = base[name]
            print(f"{name:15s}: corr {row['corr']:.3f} dev_corr {row['dev_corr']:.3f} L1 {row['l1']:.4f} "
                  f"SWD {row['swd'] if row['swd'] is None else round(row['swd'], 1)} sharpness {row['sharpness']:.5f}")
        print(f"real images sharpness {base['real sharpness']:.5f}, SWD floor {base['swd floor']:.1f}")
    else:
        normals = load_dataset("phantom", size=SIZE, n=n_test, seed=TEST_SEED, masks=True, pneumonia_fraction=0.0)
        twins = load_dataset("phantom", size=SIZE, n=n_test, seed=TEST_SEED, masks=True, pneumonia_fraction=1.0)
        t0 = time.perf_counter()
        judge_set = load_dataset("phantom", size=SIZE, n=200 if args.quick else 2000, seed=7)
        if args.judge == "resnet18":  # torchvision's ResNet-18 from scratch (slow on a CPU: ~12 min)
            judges = [train_judge(judge_set.images, judge_set.labels, judge_steps)]

            def judge_fn(net, x):
                return judge_proba(net, x)[:, 1]
        else:  # the course classifier, three seeds: its spread is the judge's
            judges = [classifier.train_classifier(judge_set, steps=judge_steps // 2, seed=s) for s in range(3)]
            judge_fn = None
        print(f"  {len(judges)} {args.judge} judge(s) trained in {time.perf_counter() - t0:.0f} s", flush=True)

        for seed in args.seeds:
            if args.ckpt:
                G, cfg = load_translator(args.ckpt)
                steps = None
            else:
                out = Path(args.out) / f"cyclegan_s{seed}" if args.out else None
                t = train("cyclegan", minutes, seed, out, train_set, width=width, **extra)
                G, cfg, steps = t.G, t.cfg, t.step
            reps = [evaluate_cyclegan(G, cfg, normals, twins, j, judge_fn=judge_fn) for j in judges]
            rep = dict(reps[0])
            for k in [k for k in rep if k.startswith("judged")]:
                v = torch.tensor([r[k] for r in reps])
                rep[k], rep[k + " sd"] = float(v.mean()), float(v.std()) if len(v) > 1 else 0.0
            rep["steps"] = steps
            result["runs"][f"seed {seed}"] = rep
            print(f"seed {seed}: judged pneumonia {rep['judged pneumonia: translated']:.1%} ± {rep['judged pneumonia: translated sd']:.1%} (real normals "
                  f"{rep['judged pneumonia: real normals']:.1%}, twins {rep['judged pneumonia: ill twins']:.1%}); "
                  f"outside-lung L1 {rep['outside_l1']:.4f}; lung change {rep['lung_change']:.4f} vs twins "
                  f"{rep['twin_lung_change']:.4f} (×{rep['change_ratio']:.2f}); round trip L1 {rep['round_trip_l1']:.4f}"
                  f" (steps {steps})", flush=True)
            if args.ckpt:
                break
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
