"""Data loading benchmark: cxrlib.data.load_images (first and cached load) vs a plain PIL DataLoader.

The folder imitates the Kaggle "Chest X-Ray Images (Pneumonia)" set the seed used: N grayscale JPEGs at 512 px
in normal/ and pneumonia/ (written from phantoms). The baseline is what a tutorial would write: a Dataset that
opens each file with PIL, converts to "L", resizes the shorter side and centre-crops with torchvision, then
``ToTensor``, read through a ``DataLoader`` with 2 workers. Each contender reads the whole folder once into
memory at the target size; files are in the OS page cache for all of them (the folder was just written).

    python benchmarks/bench_data.py                 # 3,000 JPEGs, 64 and 256 px (a few minutes)
    python benchmarks/bench_data.py --quick         # 200 JPEGs (from 20 phantoms): checks that it runs
    python benchmarks/bench_data.py --dir DATA      # an existing folder instead of phantoms
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cxrlib import data  # noqa: E402
from cxrlib.config import cpu_cores  # noqa: E402


def write_jpeg_folder(out: Path, n: int, size: int, unique: int = 100, seed: int = 0, quality: int = 95) -> float:
    """n radiographs as ``out/{normal,pneumonia}/cxr_#####.jpeg``; returns seconds taken.

    Rendering phantoms at 512 px is the slow part and not what is measured here, so ``unique`` phantoms are
    rendered and each file is one of them with its own film grain (Gaussian noise, sigma 3 gray levels),
    which gives every JPEG its own bytes and a realistic size (~60–90 KB at 512 px)."""
    import numpy as np

    from cxrlib import phantom

    t0 = time.perf_counter()
    ph = phantom.generate(min(n, unique), size=size, seed=seed)
    rng = np.random.default_rng(seed)
    for i in range(n):
        k = i % len(ph)
        img = ph.images[k, 0].numpy().astype(np.float32) + rng.normal(0.0, 3.0, (size, size)).astype(np.float32)
        folder = out / ph.classes[int(ph.labels[k])]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"cxr_{i:05d}.jpeg", quality=quality)
    return time.perf_counter() - t0


class PlainPILDataset(torch.utils.data.Dataset):
    """The naive baseline: PIL open → grayscale → Resize(shorter side) → CenterCrop → ToTensor."""

    def __init__(self, root: Path, size: int):
        from torchvision import transforms

        self.files = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in {".jpeg", ".jpg", ".png"})
        self.transform = transforms.Compose(
            [transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor()]
        )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        with Image.open(self.files[i]) as im:
            return self.transform(im.convert("L"))


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (DataLoader workers): a figure that a busy
    machine distorts less than wall time."""
    try:
        import resource
    except ImportError:  # Windows
        return float("nan")
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def time_dataloader(root: Path, size: int, workers: int = 2, batch: int = 64, repeat: int = 1) -> tuple[float, int]:
    """Best wall time of ``repeat`` full passes (worker start-up included, as a training script pays it)."""
    best, n = float("inf"), 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        loader = torch.utils.data.DataLoader(PlainPILDataset(root, size), batch_size=batch, num_workers=workers)
        n = sum(len(x) for x in loader)
        best = min(best, time.perf_counter() - t0)
    return best, n


def time_load(root: Path, size: int, cache_root: Path, repeat: int = 1) -> tuple[float, float, int]:
    """Best wall times of ``repeat`` first loads (each into a fresh cache) and of ``repeat`` cached loads."""
    first_best = cached_best = float("inf")
    for r in range(repeat):
        cache_dir = cache_root / f"run{r}"
        t0 = time.perf_counter()
        first = data.load_images(root, size, cache_dir=cache_dir)
        first_best = min(first_best, time.perf_counter() - t0)
        t0 = time.perf_counter()
        cached = data.load_images(root, size, cache_dir=cache_dir)
        cached_best = min(cached_best, time.perf_counter() - t0)
        assert torch.equal(first.images, cached.images)
        shutil.rmtree(cache_dir, ignore_errors=True)
    return first_best, cached_best, len(first)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000, help="number of JPEG files (default 3000)")
    ap.add_argument("--src-size", type=int, default=512, help="side of the written JPEGs (default 512)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 256], help="target sizes (default 64 256)")
    ap.add_argument("--unique", type=int, default=100, help="distinct phantoms rendered for the files (default 100)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the baseline (default 2)")
    ap.add_argument("--repeat", type=int, default=3, help="report the best of this many runs (default 3)")
    ap.add_argument("--quick", action="store_true", help="200 files: a quick check that everything runs")
    ap.add_argument("--dir", type=Path, help="benchmark this folder instead of writing phantom JPEGs")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    n = 200 if args.quick else args.n
    if args.quick:
        args.repeat = min(args.repeat, 2)

    tmp = Path(tempfile.mkdtemp(prefix="cxrlib-bench-data-"))
    try:
        if args.dir:
            root = args.dir
            print(f"folder: {root}")
        else:
            root = tmp / "xrays"
            secs = write_jpeg_folder(root, n, args.src_size, unique=20 if args.quick else args.unique)
            kb = sum(p.stat().st_size for p in root.rglob("*.jpeg")) / n / 1024
            print(f"wrote {n} phantom JPEGs at {args.src_size} px ({kb:.0f} KB each) in {secs:.1f} s")
        print(f"machine: {platform.machine()} · {cpu_cores()} cores · torch {torch.__version__} · {platform.python_version()}")
        print(f"best of {args.repeat} · baseline: DataLoader, {args.workers} workers, batch 64 · ours: {data.default_workers()} threads")
        print(f"{'size':>5} | {'PIL DataLoader':>16} | {'load_images first':>20} | {'cached':>18}")
        rows = []
        for size in args.sizes:
            c0 = cpu_seconds()
            base_s, n_base = time_dataloader(root, size, args.workers, repeat=args.repeat)
            c1 = cpu_seconds()
            first_s, cached_s, n_ours = time_load(root, size, tmp / f"cache-{size}", repeat=args.repeat)
            c2 = cpu_seconds()
            assert n_base == n_ours, (n_base, n_ours)
            row = {
                "size": size, "files": n_ours, "dataloader_s": base_s, "first_s": first_s, "cached_s": cached_s,
                "first_speedup": base_s / first_s, "cached_speedup": base_s / cached_s,
                "dataloader_cpu_s": (c1 - c0) / args.repeat, "load_cpu_s": (c2 - c1) / args.repeat,
            }  # fmt: skip
            rows.append(row)
            print(
                f"{size:>5} | {base_s:7.2f} s {n_ours / base_s:5.0f}/s | {first_s:6.2f} s {row['first_speedup']:5.1f}x faster"
                f" | {cached_s:6.3f} s {row['cached_speedup']:5.0f}x"
                f" | CPU {row['dataloader_cpu_s']:.2f} s vs {row['load_cpu_s']:.2f} s (first + cached)"
            )
        if args.json:
            args.json.write_text(json.dumps({"n": n, "src_size": args.src_size, "rows": rows}, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
