"""The conditional generator's quality bar, judged by a network that is *not* ``cxrlib.classifier``.

    python benchmarks/conditional_bar.py                       # the shipped pretrained conditional generator
    python benchmarks/conditional_bar.py --ckpt runs/cond      # a run of `train --conditional`
    python benchmarks/conditional_bar.py --quick               # seconds: checks that it runs

The judge is torchvision's ResNet-18 (one input channel, trained from scratch here, no pretrained weights: no
download), a different architecture and training recipe from the course's own classifier, trained on
``--n-judge`` fresh real phantoms (seed 7: patients neither generator saw) and scored on 1,000 others (seed 1).
Then ``--n`` samples of each class from the conditional generator: the share the judge calls their own class,
and per-class SWD (×10³) against the held-out real images of that class; beside them the SWD of the shipped
*unconditional* generator against all held-out images and against each class.

Goals (issue 11): each class called its own ≥ 90 %; per-class SWD ≤ 1.2 × the unconditional generator's SWD.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cxrlib import classifier, config, metrics  # noqa: E402
from cxrlib.data import load_dataset  # noqa: E402
from cxrlib.engine.sampling import draw_images, load_generator  # noqa: E402


def resnet_judge(n_classes: int = 2) -> nn.Module:
    import torchvision

    net = torchvision.models.resnet18(weights=None, num_classes=n_classes)
    net.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)  # grayscale
    return net


def train_judge(images, labels, steps: int, batch: int = 64, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = resnet_judge(int(labels.max()) + 1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x_all = images.float() / 127.5 - 1
    net.train()
    for _ in range(steps):
        idx = torch.randint(len(x_all), (batch,), generator=g)
        shift = torch.randint(-3, 4, (2,), generator=g).tolist()
        x = torch.roll(x_all[idx], shifts=shift, dims=(2, 3))
        loss = nn.functional.cross_entropy(net(x), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@torch.no_grad()
def judge_proba(net, images, batch: int = 256) -> torch.Tensor:
    return torch.cat([net(x.float() / 127.5 - 1).softmax(1) for x in images.split(batch)])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", default="pretrained-conditional", help="conditional checkpoint (default: the shipped one)")
    p.add_argument("--unconditional", default="pretrained", help="unconditional checkpoint to compare with")
    p.add_argument("--n", type=int, default=1000, help="samples per class")
    p.add_argument("--n-judge", type=int, default=2000, help="real phantoms the judge trains on")
    p.add_argument("--judge-steps", type=int, default=600)
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.n_judge, args.judge_steps = 32, 64, 3
    config.set_threads()
    t0 = time.perf_counter()
    G, cfg = load_generator(args.ckpt, device="cpu")
    if cfg.family != "conditional":
        raise SystemExit(f"error: '{args.ckpt}' is not a conditional generator")
    size, classes = cfg.size, list(cfg.classes)
    judge_set = load_dataset("phantom", size=size, n=args.n_judge, seed=7)
    test = load_dataset("phantom", size=size, n=max(args.n, 64), seed=1)
    judge = train_judge(judge_set.images, judge_set.labels, args.judge_steps)
    auc = classifier.roc_auc(judge_proba(judge, test.images)[:, 1], test.labels)
    result = {"ckpt": str(args.ckpt), "size": size, "classes": classes, "judge": "torchvision resnet18 (scratch)",
              "judge_auc_real": auc, "per_class": {}}
    U, _ = load_generator(args.unconditional, device="cpu")
    fake_u = draw_images(U, args.n, seed=11)
    result["unconditional_swd_all"] = float(metrics.swd(test.images, fake_u)["avg"])
    for c, name in enumerate(classes):
        real_c = test.images[test.labels == c]
        fake = draw_images(G, args.n, seed=11, labels=torch.full((args.n,), c))
        called = judge_proba(judge, fake).argmax(1)
        result["per_class"][name] = {
            "called_own_class": float((called == c).float().mean()),
            "swd": float(metrics.swd(real_c, fake)["avg"]),
            "unconditional_swd_vs_class": float(metrics.swd(real_c, fake_u)["avg"]),
        }
    result["seconds"] = time.perf_counter() - t0
    print(f"judge (ResNet-18, {args.n_judge} real phantoms, {args.judge_steps} steps): ROC-AUC on held-out real "
          f"{auc:.3f}")
    print(f"unconditional generator '{args.unconditional}': SWD against all held-out images "
          f"{result['unconditional_swd_all']:.1f}")
    for name, r in result["per_class"].items():
        ratio = r["swd"] / result["unconditional_swd_all"]
        print(f"class {name:<10} called its own class {r['called_own_class']:.1%} (goal ≥ 90 %) · SWD {r['swd']:.1f}"
              f" = {ratio:.2f} × the unconditional's (goal ≤ 1.2) · unconditional vs this class "
              f"{r['unconditional_swd_vs_class']:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
