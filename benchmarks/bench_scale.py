"""Scale benchmarks (issue 14): first decode of a big folder (Pillow vs torchvision), memory-mapped vs in-memory
training throughput, and a 20,000-image folder at 128 px trained from the CLI with its memory measured.

    python benchmarks/bench_scale.py decode --files 3000,20000      # images/s per core, Pillow vs torchvision
    python benchmarks/bench_scale.py throughput --sizes 64,128      # memmap / in-memory, interleaved rounds
    python benchmarks/bench_scale.py cli --files 20000              # `train --memmap` on a 20,000-file folder
    python benchmarks/bench_scale.py all --quick                    # seconds: checks that everything runs

Files: 512-px JPEG phantoms (quality 90, like CheXpert's downsampled JPEGs), 200 distinct ones repeated under new
names (hard links) up to the count, decoded to 128 px. Pillow decodes with ``Image.draft`` (the JPEG is
decoded at 1/2, 1/4 or 1/8 scale by the DCT) and resizes; torchvision decodes the whole JPEG
(``torchvision.io.decode_jpeg``, libjpeg-turbo) and resizes with antialiasing. Timed per core: 1 thread, then
every core (the library's thread pool).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cxrlib import config, phantom  # noqa: E402
from cxrlib.config import make_config  # noqa: E402
from cxrlib.data import decode_square, load_dataset  # noqa: E402
from cxrlib.train import Trainer  # noqa: E402


def cpu() -> str:
    try:
        name = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{name} ({config.cpu_cores()} cores; {' '.join(isa)})"


def make_folder(root: Path, n_files: int, distinct: int = 200, size: int = 512) -> Path:
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    ph = phantom.generate(min(distinct, n_files), size=size, seed=3)
    originals = []
    for i, img in enumerate(ph.images):
        cls = ph.classes[int(ph.labels[i])]
        (root / cls).mkdir(exist_ok=True)
        p = root / cls / f"src_{i:05d}.jpg"
        Image.fromarray(np.asarray(img, dtype=np.uint8).reshape(size, size)).save(p, quality=90)
        originals.append(p)
    for k in range(len(originals), n_files):
        src = originals[k % len(originals)]
        os.link(src, src.with_name(f"copy_{k:06d}.jpg"))
    return root


def tv_decode(path: Path, size: int) -> np.ndarray:
    import torchvision
    from torchvision.io import ImageReadMode

    x = torchvision.io.decode_jpeg(torchvision.io.read_file(str(path)), mode=ImageReadMode.GRAY)
    h, w = x.shape[-2:]
    s = min(h, w)
    x = x[:, (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s].float()[None]
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8)[0, 0].numpy()


def time_decode(files, fn, threads: int) -> float:
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(fn, files):
            pass
    return len(files) / (time.perf_counter() - t0)


def bench_decode(counts, size: int = 128) -> dict:
    out = {}
    cores = config.cpu_cores()
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_folder(Path(tmp) / "xr", max(counts))
        files = sorted(folder.rglob("*.jpg"))
        a, b = decode_square(files[0], size)[0], tv_decode(files[0], size)
        out["pillow_vs_torchvision_mean_abs_diff"] = float(np.abs(a.astype(float) - b).mean())
        for n in counts:
            sub = files[:n]
            row = {}
            for name, fn in (("pillow", lambda p: decode_square(p, size)), ("torchvision", lambda p: tv_decode(p, size))):
                row[f"{name}_1_thread"] = round(time_decode(sub, fn, 1), 1)
                row[f"{name}_{2 * cores}_threads"] = round(time_decode(sub, fn, 2 * cores), 1)
            out[str(n)] = row
            print(n, row, flush=True)
    torch.set_num_threads(cores)
    return out


def bench_throughput(sizes, rounds: int = 4, steps: int = 5, preset: str = "dcgan") -> dict:
    out = {}
    for size in sizes:
        mapped = load_dataset("phantom", size=size, n=3000, mmap=True)
        plain = load_dataset("phantom", size=size, n=3000, mmap=False)
        trainers = {"memmap": Trainer(make_config(preset, size=size, steps=10**9), mapped),
                    "in_memory": Trainer(make_config(preset, size=size, steps=10**9), plain)}
        for t in trainers.values():
            t.fit(steps=2, progress=False)
        secs = {k: 0.0 for k in trainers}
        for _ in range(rounds):  # interleaved: both see the same machine load
            for k, t in trainers.items():
                t0 = time.perf_counter()
                t.fit(steps=steps, progress=False)
                secs[k] += time.perf_counter() - t0
        ips = {k: round(rounds * steps * trainers[k].cfg.batch / v, 1) for k, v in secs.items()}
        out[str(size)] = {**ips, "ratio": round(ips["memmap"] / ips["in_memory"], 3), "preset": preset}
        print(size, out[str(size)], flush=True)
    return out


def bench_cli(n_files: int, steps: int = 60) -> dict:
    """``train --memmap`` on a fresh folder (first decode included), then the same run with the set in memory
    (its cache now warm): the two peak RSS figures differ by what holding the data costs."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_folder(Path(tmp) / "xr", n_files)
        env = {**os.environ, "CXRLIB_CACHE": str(Path(tmp) / "cache")}
        for mode in ("memmap", "in_memory"):
            run_dir = Path(tmp) / f"run_{mode}"
            cmd = [sys.executable, str(Path(__file__).resolve()), "_child", str(folder), str(run_dir), str(steps), mode]
            t0 = time.perf_counter()
            run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            if run.returncode:
                out[mode] = {"returncode": run.returncode, "stderr": run.stderr[-500:]}
                continue
            child = json.loads(run.stdout.strip().splitlines()[-1])
            out[mode] = {**child, "wall_s": round(time.perf_counter() - t0, 1)}
        out["data_mb"] = round(sum(p.stat().st_size for p in (Path(tmp) / "cache").rglob("*.npy")) / 1e6)
    out["files"] = n_files
    return out


def _child(folder: str, run_dir: str, steps: str, mode: str) -> None:
    """One CLI training run in this process; prints its peak RSS (MB) and what it announced."""
    import contextlib
    import io

    from cxrlib.cli import main as cli_main

    args = ["train", "--data", folder, "--size", "128", "--preset", "dcgan", "--batch", "16", "--steps", steps,
            "--out", run_dir, "--quiet"] + (["--memmap"] if mode == "memmap" else [])
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli_main(args)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rc": rc, "peak_rss_mb": round(peak), "announce": buf.getvalue().splitlines()[0]}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("decode", "throughput", "cli", "all"))
    ap.add_argument("--files", default="3000,20000")
    ap.add_argument("--sizes", default="64,128")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    counts = [int(x) for x in args.files.split(",")]
    sizes = [int(x) for x in args.sizes.split(",")]
    if args.quick:
        counts, sizes = [40], [32]
    result = {"cpu": cpu(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M")}
    if args.what in ("decode", "all"):
        result["decode"] = bench_decode(counts)
    if args.what in ("throughput", "all"):
        result["throughput"] = bench_throughput(sizes, rounds=1 if args.quick else 4, steps=2 if args.quick else 5)
    if args.what in ("cli", "all"):
        result["cli"] = bench_cli(max(counts), steps=4 if args.quick else 60)
        print(result["cli"])
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["_child"]:
        _child(*sys.argv[2:6])
        sys.exit(0)
    sys.exit(main())
