"""The one-command GPU check (issue 14): tests on CUDA, throughput and memory per preset, a 2-minute 256-px run.

    bash benchmarks/gpu_check.sh                 # on a machine with a GPU: ≤ 8 minutes on one H100/H200
    python benchmarks/gpu_check.py --dry-run     # anywhere, in ~1 minute: tiny sizes on the CPU (checks the script)

Sections, each with its own time limit, each recorded even when it fails:

1. **tests** -- ``pytest tests/test_gpu.py`` (the CUDA-only paths: fused Adam, bf16, CUDA random streams in
   checkpoints, resume on the GPU, staged host batches, CPU → GPU resume, the NaN flag on a second GPU) and
   the trainer, checkpoint and scale tests, which run on the GPU through ``device="auto"``;
2. **throughput** -- images/s and peak memory of every preset at 128 / 256 / 512 px with bf16 autocast
   (where the GPU has native bf16) and channels_last, the preset's batch; ``course`` also at 512 px batch 8
   (the memory goal: ≤ 15 GB, so a T4/L4 fits) and with ``torch.compile`` at 256 px (recorded if it fails);
3. **run** -- ``course`` at 256 px for 2 minutes on 2,000 phantoms: its samples grid and the SWD of 500 EMA
   samples against 500 held-out phantoms;
4. **multi-GPU** -- with two or more GPUs visible, ``torchrun --nproc_per_node=2`` trains 20 steps.

Goals on one H100/H200: ``course`` at 512 px ≥ 300 images/s; peak memory at 512 px batch 8 ≤ 15 GB.
Writes ``--out`` (default ``benchmarks/gpu_check_<date>.json``) and the run's samples beside it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cxrlib import metrics  # noqa: E402
from cxrlib.config import make_config  # noqa: E402
from cxrlib.data import load_dataset  # noqa: E402
from cxrlib.train import Trainer, throughput  # noqa: E402

PRESETS = ("course", "dcgan", "original", "style", "modern")  # the network presets timed (cxrlib.models.NETWORKS)


def machine() -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(), "cpu": platform.processor()}
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        info["memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return info


def section(results: dict, name: str, fn, *args):
    t0 = time.perf_counter()
    try:
        results[name] = {"ok": True, **fn(*args)}
    except Exception as e:  # a failed section is a finding: record it and go on
        results[name] = {"ok": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
    results[name]["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"[{name}] {'ok' if results[name]['ok'] else 'FAILED'} in {results[name]['seconds']} s", flush=True)


def run_tests(dry: bool) -> dict:
    files = ["tests/test_gpu.py"] if dry else ["tests/test_gpu.py", "tests/test_train.py", "tests/test_checkpoint.py",
                                               "tests/test_scale.py"]
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files], cwd=ROOT,
                         capture_output=True, text=True, timeout=240)
    tail = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-300:]
    return {"files": files, "returncode": out.returncode, "summary": tail, "passed": out.returncode == 0}


def run_throughput(dry: bool) -> dict:
    sizes = (32,) if dry else (128, 256, 512)
    rows = []
    for size in sizes:
        for preset in PRESETS:
            rows.append(_one(preset, size, None, dry))
    big = 32 if dry else 512
    rows.append(_one("course", big, 8, dry))  # the memory goal's configuration
    for preset in ("course", "dcgan"):  # torch.compile: where it pays (course's spectral norm may refuse it)
        rows.append(_one(preset, 32 if dry else 256, None, dry, compile=True))
    course512 = next((r for r in rows if r.get("preset") == "course" and r.get("size") == 512 and r.get("batch") != 8
                      and not r.get("compile")), {})
    mem512 = next((r for r in rows if r.get("size") == 512 and r.get("batch") == 8), {})
    return {"rows": rows, "goal_course_512_images_per_s": course512.get("images_per_s"),
            "goal_peak_memory_512_b8_gb": mem512.get("peak_memory_gb")}


def _one(preset, size, batch, dry, compile=False) -> dict:
    try:
        r = throughput(preset, size=size, batch=batch, steps=2 if dry else 10, warmup=1 if dry else 3,
                       compile=compile)
        r = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}
    except Exception as e:
        r = {"preset": preset, "size": size, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
    r["compile"] = compile
    print(f"  {preset:8s} {size:4d}px batch {r.get('batch', batch)}{' compiled' if compile else ''}: "
          f"{r.get('images_per_s', r.get('error'))} img/s, peak {r.get('peak_memory_gb', '-')} GB", flush=True)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return r


def run_training(dry: bool, out_dir: Path) -> dict:
    size, n, minutes = (32, 200, 0.2) if dry else (256, 2000, 2.0)
    n_eval = 100 if dry else 500
    train_set = load_dataset("phantom", size=size, n=n, seed=0)
    held_out = load_dataset("phantom", size=size, n=n_eval, seed=11)
    cfg = make_config("course", size=size, steps=None, minutes=minutes, seed=0, log_every=50, sample_every=10**9,
                      checkpoint_every=10**9)
    t = Trainer(cfg, train_set, out=out_dir)
    t.fit(progress=False)
    fake = t.sample(n_eval, seed=5)
    score = metrics.swd(held_out.images, fake)["avg"]  # already ×10³
    floor = metrics.swd_floor(held_out.images)["avg"]
    return {"size": size, "minutes": minutes, "steps": t.step, "images_seen": t.images_seen,
            "images_per_s": round(t.images_seen / max(t.seconds, 1e-9), 1), "swd_x1e3": round(score, 2),
            "swd_floor_x1e3": round(floor, 2), "samples": str(out_dir / "samples")}


def run_multi_gpu(dry: bool, out_dir: Path) -> dict:
    n = torch.cuda.device_count()
    if n < 2 and not dry:
        return {"skipped": f"{n} GPU visible"}
    size = 32 if dry else 128
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "cxrlib",
           "train", "--data", "phantom", "--n-images", "256", "--size", str(size), "--steps", "20", "--batch", "16",
           "--quiet", "--out", str(out_dir)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    return {"returncode": out.returncode, "stdout": out.stdout[-500:], "stderr": out.stderr[-500:] if out.returncode else ""}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes, also on a CPU: checks that the script runs")
    ap.add_argument("--out", type=Path, help="results JSON (default benchmarks/gpu_check_<date>.json)")
    ap.add_argument("--skip", default="", help="comma-separated sections to leave out: tests,throughput,run,multi_gpu")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available() and not args.dry_run:
        print("no CUDA GPU visible: run this on a machine with one (or --dry-run to check the script)")
        return 2
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H%M")
    out = args.out or ROOT / "benchmarks" / f"gpu_check_{stamp}{'_dry' if args.dry_run else ''}.json"
    work = out.with_suffix("")
    work.mkdir(parents=True, exist_ok=True)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    results = {"date": stamp, "machine": machine(), "dry_run": args.dry_run}
    t0 = time.perf_counter()
    if "tests" not in skip:
        section(results, "tests", run_tests, args.dry_run)
    if "throughput" not in skip:
        section(results, "throughput", run_throughput, args.dry_run)
    if "run" not in skip:
        section(results, "run", run_training, args.dry_run, work / "run")
    if "multi_gpu" not in skip:
        section(results, "multi_gpu", run_multi_gpu, args.dry_run, work / "ddp")
    results["seconds"] = round(time.perf_counter() - t0, 1)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out} ({results['seconds']} s)")
    return 0 if all(v.get("ok", True) for v in results.values() if isinstance(v, dict) and "ok" in v) else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
