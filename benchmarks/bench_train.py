"""Training throughput: the Trainer's fast path against a plain PyTorch loop, and every preset × size.

    python benchmarks/bench_train.py --sizes 64,128,256               # part 1 and the table (~15 min, 2-core CPU)
    python benchmarks/bench_train.py --skip-plain --sizes 512 --batch 8 --warmup 1 --steps 1   # 512 px on a CPU
    python benchmarks/bench_train.py --quick    # seconds: checks that everything runs

Part 1 -- the ``dcgan`` preset at 64 px, batch 64, two ways, in one process, *interleaved* (rounds of a few
steps each, alternating), so both see the same machine load:

* **plain**: what a tutorial does -- PNG files read by a ``Dataset`` with PIL and torchvision transforms, a
  ``DataLoader`` with 2 workers, fp32, standard ``torch.optim.Adam``, the pytorch/examples dcgan step;
* **fast**: ``cxrlib.train.Trainer`` -- the uint8 data set in memory on the device, random-index batches,
  ``channels_last``, bf16 autocast where the CPU/GPU has bf16 (``amp="auto"``), fused Adam on CUDA.

Goal: fast ≥ 1.8 × plain on a 2-core CPU with AVX512-BF16.

Part 2 -- images/s and ms/step of each preset at 64/128/256/512 px (small step counts), FLOPs per image
(``models.flops_per_image``) and the fraction of this device's measured peak (a large matmul in the same
precision) that the training step reaches. On CUDA also the peak memory.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cxrlib import config, models  # noqa: E402
from cxrlib.config import make_config  # noqa: E402
from cxrlib.train import Trainer, throughput  # noqa: E402


# ======================================================================= part 1: plain loop vs fast path
class PngFolder(torch.utils.data.Dataset):
    """PNG files → (1, S, S) float in [-1, 1] with PIL + torchvision transforms (the tutorial way)."""

    def __init__(self, root: Path):
        from torchvision import transforms

        self.files = sorted(root.glob("*.png"))
        self.tf = transforms.Compose(
            [transforms.Grayscale(1), transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))]
        )

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        from PIL import Image

        with Image.open(self.files[i]) as im:
            return self.tf(im.convert("L"))


class PlainLoop:
    """The pytorch/examples dcgan training step on a DataLoader, fp32, standard Adam."""

    def __init__(self, folder: Path, batch: int, size: int, workers: int = 2):
        torch.manual_seed(0)
        self.G, self.D = models.build_models("dcgan", size)
        self.g_opt = torch.optim.Adam(self.G.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.d_opt = torch.optim.Adam(self.D.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.loader = torch.utils.data.DataLoader(
            PngFolder(folder), batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
            persistent_workers=workers > 0,
        )
        self.batches = iter(())
        self.batch = batch
        self.bce = torch.nn.BCEWithLogitsLoss()

    def next_real(self):
        try:
            return next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            return next(self.batches)

    def step(self):
        real = self.next_real()
        ones, zeros = torch.ones(self.batch), torch.zeros(self.batch)
        z = torch.randn(self.batch, self.G.z_dim)
        fake = self.G(z)
        self.d_opt.zero_grad()
        d_loss = self.bce(self.D(real), ones) + self.bce(self.D(fake.detach()), zeros)
        d_loss.backward()
        self.d_opt.step()
        self.g_opt.zero_grad()
        g_loss = self.bce(self.D(fake), ones)
        g_loss.backward()
        self.g_opt.step()


def plain_vs_fast(size: int, batch: int, rounds: int, steps_per_round: int, n_images: int) -> dict:
    from PIL import Image

    from cxrlib.data import load_dataset

    data = load_dataset("phantom", size=size, n=n_images, seed=0)
    with tempfile.TemporaryDirectory(prefix="cxrlib-bench-") as tmp:
        for i, img in enumerate(data.images):
            Image.fromarray(img[0].numpy()).save(Path(tmp) / f"img_{i:05d}.png")
        plain = PlainLoop(Path(tmp), batch, size)
        fast = Trainer(make_config("dcgan", size=size, batch=batch, steps=10**9), data)
        timings = {"plain": 0.0, "fast": 0.0}
        for _ in range(2):  # warm-up: workers started, kernels chosen
            plain.step()
            fast.train_step()
        for _ in range(rounds):
            for name, step in (("plain", plain.step), ("fast", fast.train_step)):
                t0 = time.perf_counter()
                for _ in range(steps_per_round):
                    step()
                timings[name] += time.perf_counter() - t0
        n = rounds * steps_per_round * batch
        result = {name: n / t for name, t in timings.items()}
        result["speedup"] = result["fast"] / result["plain"]
        result["fast_amp"] = str(fast.amp_dtype or "fp32").replace("torch.", "")
        return result


# ======================================================================= part 2: presets × sizes
def matmul_peak(dtype: torch.dtype, device: torch.device, n: int = 2048, reps: int = 5) -> float:
    """Measured FLOP/s of an n×n matmul in ``dtype`` (the 'peak' the training step is compared with)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def preset_table(presets, sizes, steps: int, device: str, batch: int | None, warmup: int = 2) -> list[dict]:
    dev = config.get_device(device)
    peaks = {}
    rows = []
    for preset in presets:
        for size in sizes:
            try:
                r = throughput(preset, size, batch=batch, steps=steps, warmup=warmup, device=device)
            except (RuntimeError, MemoryError) as e:  # e.g. out of memory at 512 px
                print(f"{preset:<7} {size:>4}  skipped: {str(e).splitlines()[0][:80]}", flush=True)
                continue
            G, D = models.build_models(preset, size)
            flops = models.flops_per_image(G, D, size)["train_step"]
            dtype = torch.bfloat16 if r["amp"] == "bfloat16" else torch.float32
            if dtype not in peaks:
                peaks[dtype] = matmul_peak(dtype, dev, n=1024 if dev.type == "cpu" else 8192)
            r["gflop_per_image"] = flops / 1e9
            r["fraction_of_peak"] = flops * r["images_per_s"] / peaks[dtype]
            r["peak_tflops"] = peaks[dtype] / 1e12
            rows.append(r)
            mem = f" {r['peak_memory_gb']:6.2f} GB" if "peak_memory_gb" in r else ""
            print(f"{preset:<7} {size:>4} {r['batch']:>5} {r['amp']:>8} {r['images_per_s']:>9.1f} "
                  f"{r['ms_per_step']:>9.1f} {r['gflop_per_image']:>9.2f} {100 * r['fraction_of_peak']:>6.1f}%{mem}",
                  flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes and step counts: a functional check")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--skip-plain", action="store_true", help="only the preset table")
    ap.add_argument("--presets", default="seed,dcgan,course")
    ap.add_argument("--sizes", default=None, help="comma-separated (default 64,128,256,512; --quick: 32,64)")
    ap.add_argument("--batch", type=int, default=None, help="batch for the preset table (default: each preset's)")
    ap.add_argument("--steps", type=int, help="timed steps per preset and size (default 3 on CPU, 20 on CUDA)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps before them (default 2)")
    ap.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds of plain vs fast (default 6; --quick 2)")
    ap.add_argument("--steps-per-round", type=int, help="steps per round and side (default 10; --quick 2)")
    args = ap.parse_args(argv)
    if args.threads:  # the Trainer calls config.set_threads(); make it keep this number
        config.set_threads = lambda n=None, k=args.threads: torch.set_num_threads(k) or k
    config.set_threads()
    dev = config.get_device(args.device)
    print(f"# {platform.processor() or platform.machine()} · {config.cpu_cores()} cores, {torch.get_num_threads()} threads · torch {torch.__version__} "
          f"· device {dev.type} · bf16 CPU: {config.cpu_has_bf16()} · load {os.getloadavg()[0]:.1f} · "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    if not args.skip_plain and dev.type == "cpu":
        q = args.quick
        r = plain_vs_fast(size=32 if q else 64, batch=16 if q else 64, rounds=args.rounds or (2 if q else 6),
                          steps_per_round=args.steps_per_round or (2 if q else 10), n_images=64 if q else 1000)
        print(f"dcgan {32 if q else 64}px batch {16 if q else 64}: plain PIL DataLoader fp32 {r['plain']:.1f} images/s · "
              f"Trainer fast path ({r['fast_amp']}, channels_last) {r['fast']:.1f} images/s · "
              f"speed-up {r['speedup']:.2f}× (goal ≥ 1.8×)", flush=True)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([32, 64] if args.quick else [64, 128, 256, 512])
    steps = args.steps or (2 if args.quick else (20 if dev.type == "cuda" else 3))
    print(f"{'preset':<7} {'size':>4} {'batch':>5} {'amp':>8} {'images/s':>9} {'ms/step':>9} {'GFLOP/im':>9} "
          f"{'peak':>7}" + (" memory" if dev.type == "cuda" else ""))
    preset_table(args.presets.split(","), sizes, steps, args.device, args.batch, warmup=args.warmup)
    print(f"# load at the end {os.getloadavg()[0]:.1f}; FLOPs/image: train_step = 4·G + 8·D forward FLOPs (models.flops_per_image)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
