"""Data loading benchmark: cxrlib.data.load_images (first and cached load) vs a plain PIL DataLoader.

The folder imitates the Kaggle "Chest X-Ray Images (Pneumonia)" set the seed used: N grayscale JPEGs at 512 px
in normal/ and pneumonia/ (written from phantoms). The baseline is what a tutorial would write: a Dataset that
opens each file with PIL, converts to "L", resizes the shorter side and centre-crops with torchvision, then
``ToTensor``, read through a ``DataLoader`` with 2 workers. Each contender reads the whole folder once into
memory at the target size; files are in the OS page cache for all of them (the folder was just written).

    python benchmarks/bench_data.py                 # 3,000 JPEGs, 64 and 256 px (a few minutes)
    python benchmarks/bench_data.py --quick         # 200 JPEGs: checks that it runs
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


def write_jpeg_folder(out: Path, n: int, size: int, seed: int = 0, quality: int = 95) -> float:
    """n phantom radiographs as ``out/{normal,pneumonia}/cxr_#####.jpeg``; returns seconds taken."""
    from cxrlib import phantom

    t0 = time.perf_counter()
    for start in range(0, n, 100):
        ph = phantom.generate(min(100, n - start), size=size, seed=seed + start)
        for i, (img, label) in enumerate(zip(ph.images, ph.labels.tolist())):
            folder = out / ph.classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img[0].numpy()).save(folder / f"cxr_{start + i:05d}.jpeg", quality=quality)
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


def time_dataloader(root: Path, size: int, workers: int = 2, batch: int = 64) -> tuple[float, int]:
    t0 = time.perf_counter()
    loader = torch.utils.data.DataLoader(PlainPILDataset(root, size), batch_size=batch, num_workers=workers)
    n = sum(len(x) for x in loader)
    return time.perf_counter() - t0, n


def time_load(root: Path, size: int, cache_dir: Path) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    first = data.load_images(root, size, cache_dir=cache_dir)
    t1 = time.perf_counter()
    cached = data.load_images(root, size, cache_dir=cache_dir)
    t2 = time.perf_counter()
    assert torch.equal(first.images, cached.images)
    return t1 - t0, t2 - t1, len(first)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000, help="number of JPEG files (default 3000)")
    ap.add_argument("--src-size", type=int, default=512, help="side of the written JPEGs (default 512)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 256], help="target sizes (default 64 256)")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the baseline (default 2)")
    ap.add_argument("--quick", action="store_true", help="200 files: a quick check that everything runs")
    ap.add_argument("--dir", type=Path, help="benchmark this folder instead of writing phantom JPEGs")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    n = 200 if args.quick else args.n

    tmp = Path(tempfile.mkdtemp(prefix="cxrlib-bench-data-"))
    try:
        if args.dir:
            root = args.dir
            print(f"folder: {root}")
        else:
            root = tmp / "xrays"
            secs = write_jpeg_folder(root, n, args.src_size)
            print(f"wrote {n} phantom JPEGs at {args.src_size} px in {secs:.1f} s")
        print(f"machine: {platform.machine()} · {cpu_cores()} cores · torch {torch.__version__} · {platform.python_version()}")
        print(f"{'size':>5} | {'PIL DataLoader':>16} | {'load_images first':>20} | {'cached':>18}")
        rows = []
        for size in args.sizes:
            base_s, n_base = time_dataloader(root, size, args.workers)
            first_s, cached_s, n_ours = time_load(root, size, tmp / f"cache-{size}")
            assert n_base == n_ours, (n_base, n_ours)
            row = {
                "size": size, "files": n_ours, "dataloader_s": base_s, "first_s": first_s, "cached_s": cached_s,
                "first_speedup": base_s / first_s, "cached_speedup": base_s / cached_s,
            }  # fmt: skip
            rows.append(row)
            print(
                f"{size:>5} | {base_s:7.2f} s {n_ours / base_s:5.0f}/s | {first_s:6.2f} s {row['first_speedup']:5.1f}x faster"
                f" | {cached_s:6.3f} s {row['cached_speedup']:5.0f}x"
            )
        if args.json:
            args.json.write_text(json.dumps({"n": n, "src_size": args.src_size, "rows": rows}, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
